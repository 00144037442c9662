"""Connections for every protocol: resolve, connect address by address, bounded reads, STARTTLS.

`open_connection()` returns a `Connection` whose reads are bounded by size (named constants
below) and by the probe's single deadline, and whose `start_tls()` upgrades in place.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field

from monitor.probes import resolver as names
from monitor.probes import tls as tlslib
from monitor.probes.errors import (
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    ProbeTimeout,
    RefusedError,
    ResolutionError,
    ResponseTooLarge,
    TLSHandshakeError,
)
from monitor.probes.options import ConnectionOptions, TLSOptions
from monitor.probes.result import TLSFacts
from monitor.probes.timing import PhaseClock

MAX_LINE_LENGTH = 8192  # longest line accepted from a server, as aiosmtplib allows
MAX_FRAME_SIZE = 1024 * 1024  # largest binary frame read_exact() accepts unless a protocol sets its own
RECV_SIZE = 65536
_FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


@dataclass
class Connection:
    """One TCP connection, plaintext or TLS, read and written against the probe's deadline."""

    sock: socket.socket
    address: str
    port: int
    deadline: float
    clock: PhaseClock
    attempts: list[str] = field(default_factory=list)  # addresses tried before this one, with why they failed
    tls: TLSFacts | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _tls_object: ssl.SSLObject | None = None
    _incoming: ssl.MemoryBIO | None = None
    _outgoing: ssl.MemoryBIO | None = None

    async def read_line(self, *, what: str, limit: int = MAX_LINE_LENGTH) -> bytes:
        """Return the next line without its line ending; raise if it passes `limit` bytes."""
        while True:
            end = self._buffer.find(b"\n", 0, limit + 1)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line.removesuffix(b"\r")
            if len(self._buffer) > limit:
                raise ResponseTooLarge(f"{what} has a line longer than {limit} bytes")
            await self._fill(what)

    async def read_exact(self, size: int, *, what: str, limit: int = MAX_FRAME_SIZE) -> bytes:
        """Return exactly `size` bytes, for binary framing (a length the server sent); raise past `limit`.

        The limit is checked before waiting: a hostile length field asks for 4 GiB and gets an error
        at once, not a buffer that grows until the deadline.
        """
        if size > limit:
            raise ResponseTooLarge(f"{what} would be {size} bytes, more than the {limit} accepted")
        while len(self._buffer) < size:
            await self._fill(what)
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    async def read_some(self, *, what: str, limit: int) -> bytes:
        """Return whatever bytes are buffered or arrive next, at most `limit`; b"" once the peer closed."""
        if not self._buffer:
            try:
                await self._fill(what)
            except ConnectionClosed:
                return b""
        chunk = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        return chunk

    async def write(self, data: bytes, *, what: str) -> None:
        if self._tls_object is not None:
            self._tls_object.write(data)
            data = self._outgoing.read()
        await self._send(data, what)

    async def start_tls(self, options: TLSOptions, *, server_name: str, what: str = "TLS handshake") -> None:
        """Upgrade to TLS in place; record the certificate facts even when verification fails.

        Bytes already buffered mean the server spoke before the handshake, which is what a
        STARTTLS injection looks like; they are refused rather than mixed into the TLS stream.
        """
        if self._buffer:
            raise TLSHandshakeError(f"server sent plaintext after agreeing to start TLS: {preview(self._buffer)}")
        context = tlslib.client_context(verify=options.tls_verify, ca_file=options.tls_ca_file)
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_name)
        with self.clock.phase("tls"):
            try:
                await self._handshake(tls, what)
            except ssl.SSLCertVerificationError as error:
                message = (error.verify_message or str(error)).rstrip(".")
                self.tls = tlslib.facts(tls, server_name=server_name, verified=False, error=message)
                raise tlslib.verify_error(error, server_name) from None
            except ssl.SSLError as error:
                raise TLSHandshakeError(f"TLS handshake failed: {error.reason or error}") from None
        self._tls_object = tls
        self.tls = tlslib.facts(tls, server_name=server_name, verified=options.tls_verify, error=None)

    def close(self) -> None:
        self.sock.close()

    async def _handshake(self, tls: ssl.SSLObject, what: str) -> None:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._send(self._outgoing.read(), what)
                data = await self._recv(what)
                if not data:
                    raise TLSHandshakeError("server closed the connection during the TLS handshake") from None
                self._incoming.write(data)
        await self._send(self._outgoing.read(), what)

    async def _fill(self, what: str) -> None:
        """Append at least one byte to the buffer, decrypting when TLS is on.

        The first byte of data ends the processing phase; a TLS 1.3 session ticket, which servers
        send right after the handshake, is not the server's answer and does not end it.
        """
        while True:
            if self._tls_object is not None:
                try:
                    chunk = self._tls_object.read(RECV_SIZE)
                except ssl.SSLWantReadError:
                    chunk = None
                except ssl.SSLError as error:
                    raise ConnectionClosed(f"TLS error while waiting for {what}: {error.reason or error}") from None
                if chunk == b"":
                    raise ConnectionClosed(f"server closed the connection while we waited for {what}")
                if chunk:
                    self._buffer += chunk
                    self.clock.first_byte()
                    return
            data = await self._recv(what)
            if not data:
                raise ConnectionClosed(f"server closed the connection while we waited for {what}")
            if self._tls_object is None:
                self._buffer += data
                self.clock.first_byte()
                return
            self._incoming.write(data)
            pending = self._outgoing.read()  # TLS 1.3 post-handshake messages may want an answer
            if pending:
                await self._send(pending, what)

    async def _recv(self, what: str) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(self.deadline):
                data = await loop.sock_recv(self.sock, RECV_SIZE)
        except TimeoutError:
            raise ProbeTimeout(f"timed out waiting for {what}") from None
        except OSError as error:
            raise ConnectionClosed(f"connection lost while waiting for {what}: {error.strerror or error}") from None
        return data

    async def _send(self, data: bytes, what: str) -> None:
        if not data:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(self.deadline):
                await loop.sock_sendall(self.sock, data)
        except TimeoutError:
            raise ProbeTimeout(f"timed out sending {what}") from None
        except OSError as error:
            raise ConnectionClosed(f"connection lost while sending {what}: {error.strerror or error}") from None


async def open_connection(
    host: str, port: int, options: ConnectionOptions, *, deadline: float, clock: PhaseClock
) -> Connection:
    """Resolve `host` and connect to its addresses in turn until one answers or the deadline passes.

    Each address gets an equal share of the time left, so one address that drops packets cannot
    use up the whole deadline while its siblings wait untried (blackbox tries only one, its #320).
    """
    with clock.phase("resolve"):
        addresses = await resolve(host, port, options, deadline=deadline)
    loop = asyncio.get_running_loop()
    attempts: list[str] = []
    error: ConnectError | None = None
    connection: Connection | None = None
    with clock.phase("connect"):
        for index, (family, sockaddr) in enumerate(addresses):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break  # resolving used up the time (or an overloaded loop woke us too late)
            share = loop.time() + remaining / (len(addresses) - index)
            try:
                sock = await _connect(family, sockaddr, deadline=share)
            except ConnectError as failed:
                error = failed
                attempts.append(f"{sockaddr[0]}: {failed}")
                continue
            connection = Connection(sock, sockaddr[0], sockaddr[1], deadline, clock, attempts)
            break
    if connection is None:
        if error is None:
            raise ConnectTimeout(f"timed out before connecting to {host} port {port}")
        if len(attempts) > 1:
            raise type(error)(f"all {len(attempts)} addresses of {host} failed; last: {error}")
        raise error
    return connection


async def _connect(family: int, sockaddr: tuple, *, deadline: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    where = f"{sockaddr[0]} port {sockaddr[1]}"
    try:
        async with asyncio.timeout_at(deadline):
            await loop.sock_connect(sock, sockaddr)
    except TimeoutError:
        sock.close()
        raise ConnectTimeout(f"timed out connecting to {where}") from None
    except ConnectionRefusedError:
        sock.close()
        raise RefusedError(f"connection refused by {where}") from None
    except OSError as error:
        sock.close()
        reason = error.strerror or errno.errorcode.get(error.errno or 0, str(error))
        raise ConnectError(f"cannot reach {where}: {reason}") from None
    return sock


async def resolve(host: str, port: int, options: ConnectionOptions, *, deadline: float) -> list[tuple[int, tuple]]:
    """Return (family, sockaddr) pairs for `host`, narrowed by `options.ip_family`, IPv4 first.

    An IP literal is its own address and never touches DNS; a name goes to `resolver.resolve()`
    (the hosts file and the configured nameservers, or the server of the `resolver` option).
    """
    family = _FAMILIES[options.ip_family]
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        wanted = socket.AF_INET if literal.version == 4 else socket.AF_INET6
        if family not in (socket.AF_UNSPEC, wanted):
            raise ResolutionError(f"{host} is not an {options.ip_family.replace('ip', 'IP')} address")
        return [(wanted, names.sockaddr(wanted, str(literal), port))]
    return await names.resolve(host, port, options.ip_family, deadline=deadline, server=options.resolver)


def preview(data: bytes | bytearray, size: int = 40) -> str:
    """Return the start of `data` as a readable, escaped snippet for a failure reason."""
    snippet = bytes(data[:size])
    text = repr(snippet)[2:-1]
    return text + ("..." if len(data) > size else "")
