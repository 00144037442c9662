"""Datagram exchanges for every protocol without a stream (dns, udp, tftp, dhcp, netbios, icmp).

`converse(target, options, dialogue, deadline=...)` resolves the host, opens one datagram socket and
runs `dialogue(state, channel)`; it returns the `Result` through the same boundary as stream probes
(`session.exchange`), so a typed error anywhere becomes a failure kind and reason.

A `Channel` sends and receives against the probe's single deadline. Every read is bounded: a
datagram is cut to `limit` bytes, and a dialogue that waits for a matching reply gives up after
`MAX_STRAY` datagrams that do not match (a flood of junk cannot keep it busy until the deadline).

ICMP errors become failure kinds. A connected socket hears them as errors on its next receive;
an unconnected one (TFTP answers from a new port, so it cannot be connected) hears them through
IP_RECVERR, which Linux sets per socket:
- port unreachable: `refused`, as a TCP RST is;
- host, network or protocol unreachable, and "prohibited by filter": `unreachable`;
- silence: `timeout`, since UDP cannot tell a dropped datagram from a slow server.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from monitor.probes.errors import ConnectError, ProbeTimeout, ProtocolError, RefusedError, ResponseTooLarge
from monitor.probes.net import preview, resolve
from monitor.probes.options import ConnectionOptions
from monitor.probes.result import Result
from monitor.probes.session import Exchange, Target, exchange
from monitor.probes.timing import PhaseClock

MAX_DATAGRAM = 65535  # the largest UDP payload; a bigger read buffer could never fill
MAX_STRAY = 100  # datagrams that are not the awaited reply, ignored before giving up
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # Linux values, when the socket module lacks the names
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)

# errno from a receive -> (error class, what it means), for the reason a person reads
_ICMP_ERRORS = {
    errno.ECONNREFUSED: (RefusedError, "ICMP port unreachable"),
    errno.EHOSTUNREACH: (ConnectError, "ICMP host unreachable"),
    errno.ENETUNREACH: (ConnectError, "ICMP network unreachable"),
    errno.EACCES: (ConnectError, "ICMP communication administratively prohibited"),
    errno.EPERM: (ConnectError, "sending was refused by a local firewall rule"),
    errno.ENOPROTOOPT: (ConnectError, "ICMP protocol unreachable"),
    errno.EMSGSIZE: (ConnectError, "the datagram is larger than the path's MTU"),
}


@dataclass
class Channel:
    """One datagram socket towards one server address, used against the probe's deadline."""

    sock: socket.socket
    address: str  # the server's IP address
    port: int
    deadline: float
    clock: PhaseClock
    connected: bool
    sockaddr: tuple = ()
    received: int = field(default=0)  # datagrams received, matching or not

    async def send(self, data: bytes, *, what: str, port: int | None = None) -> None:
        """Send one datagram (to `port` instead of the service's when given); the reply's wait is processing."""
        loop = asyncio.get_running_loop()
        try:
            if self.connected and port is None:
                await loop.sock_sendall(self.sock, data)
            else:
                destination = (self.sockaddr[0], port or self.port, *self.sockaddr[2:])
                await loop.sock_sendto(self.sock, data, destination)
        except OSError as error:
            raise _icmp_error(error, self.where, what) from None
        self.clock.await_first_byte()

    async def receive(self, *, what: str, limit: int = MAX_DATAGRAM) -> tuple[bytes, tuple]:
        """Return the next datagram (cut to `limit` bytes) and who sent it; raise on an ICMP error or the deadline."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(self.deadline):
                if self.connected:
                    data, sender = await loop.sock_recv(self.sock, MAX_DATAGRAM), self.sockaddr
                else:
                    data, sender = await loop.sock_recvfrom(self.sock, MAX_DATAGRAM)
        except TimeoutError:
            raise ProbeTimeout(f"no answer from {self.where} while waiting for {what}") from None
        except OSError as error:
            raise _icmp_error(error, self.where, what) from None
        self.received += 1
        self.clock.first_byte()
        return data[:limit], sender

    async def receive_matching(
        self, accept: Callable[[bytes, tuple], bool], *, what: str, limit: int = MAX_DATAGRAM
    ) -> tuple[bytes, tuple]:
        """Return the first datagram from the server's address that `accept` takes; skip others, at most MAX_STRAY.

        Replies from other addresses are never the answer: a spoofed or stray datagram cannot pass for it.
        A server that only sent datagrams `accept` refused by the deadline speaks something else: that is a
        protocol error naming the first of them, not a timeout.
        """
        strays: list[bytes] = []
        for _ in range(MAX_STRAY + 1):
            try:
                data, sender = await self.receive(what=what, limit=limit)
            except ProbeTimeout:
                if strays:
                    first = preview(strays[0])
                    message = f"{self.where} sent {len(strays)} datagram(s) that are not {what}, the first: {first}"
                    raise ProtocolError(message) from None
                raise
            if sender[0] != self.address:
                continue
            if accept(data, sender):
                return data, sender
            strays.append(data)
        raise ResponseTooLarge(f"{MAX_STRAY} datagrams came back without {what} among them")

    @property
    def where(self) -> str:
        return f"{self.address} port {self.port}"

    def close(self) -> None:
        self.sock.close()


SocketFactory = Callable[[int], socket.socket]


def udp_socket(family: int) -> socket.socket:
    return socket.socket(family, socket.SOCK_DGRAM)


async def open_channel(
    target: Target,
    options: ConnectionOptions,
    *,
    deadline: float,
    clock: PhaseClock,
    connected: bool = True,
    make_socket: SocketFactory = udp_socket,
) -> Channel:
    """Resolve the target and return a Channel on its first address (a datagram has no handshake to fail over)."""
    with clock.phase("resolve"):
        family, sockaddr = (await resolve(target.host, target.port, options, deadline=deadline))[0]
    with clock.phase("connect"):
        sock = make_socket(family)
        sock.setblocking(False)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            if connected:
                sock.connect(sockaddr)
        except OSError as error:
            sock.close()
            raise _icmp_error(error, f"{sockaddr[0]} port {sockaddr[1]}", "the connection") from None
    return Channel(sock, sockaddr[0], sockaddr[1], deadline, clock, connected, sockaddr)


Dialogue = Callable[[Exchange, Channel], Awaitable[None]]


async def converse(
    target: Target,
    options: ConnectionOptions,
    dialogue: Dialogue,
    *,
    deadline: float,
    connected: bool = True,
    make_socket: SocketFactory = udp_socket,
) -> Result:
    """Return the result of opening a Channel to `target` and running `dialogue` on it before `deadline`."""

    async def steps(state: Exchange) -> None:
        channel = await open_channel(
            target, options, deadline=deadline, clock=state.clock, connected=connected, make_socket=make_socket
        )
        state.address = channel.address
        try:
            await dialogue(state, channel)
        finally:
            channel.close()

    return await exchange(target, options, steps, deadline=deadline)


def _icmp_error(error: OSError, where: str, what: str) -> ConnectError:
    kind, meaning = _ICMP_ERRORS.get(error.errno or 0, (ConnectError, error.strerror or str(error)))
    if kind is RefusedError:
        return RefusedError(f"nothing listens on {where} ({meaning}, while waiting for {what})")
    return kind(f"cannot reach {where} for {what}: {meaning}")
