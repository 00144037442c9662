"""DHCP probe (67/UDP, IPv4): a DHCPINFORM (default) or DHCPDISCOVER sent unicast to one server, its answer reported.

- inform: the probe asks for configuration only, with its own address in `ciaddr`; the server answers
  DHCPACK to that address on the client port (RFC 2131 4.3.5). No address is involved at all.
- discover: the probe acts as a relay agent (its address in `giaddr`, as check_dhcp's unicast mode
  does), so the server answers DHCPOFFER to the relay port 67 of the probe's address and offers from
  the pool of the probe's subnet. It never sends DHCPREQUEST, so no lease is taken; the offer lapses.

The socket is bound to the source address towards the server and `client_port` (68, or 67 for
discover; root is needed for either), and only a BOOTREPLY carrying our `xid` is the answer.
`docs/dhcp.md` says what this can and cannot tell about a DHCP service.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import os
import random
import socket
import struct

from monitor.probes.datagram import Channel, open_channel
from monitor.probes.errors import ConfigError, ProbeError, ProtocolError, ResolutionError, ServerRejected
from monitor.probes.net import resolve
from monitor.probes.options import ConnectionOptions, OptionsError
from monitor.probes.protocol import Flag, Protocol, Scheme
from monitor.probes.result import Result, Status
from monitor.probes.session import Exchange, Target, exchange
from monitor.probes.text import printable

MESSAGES = ("inform", "discover")
MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 3: the options field starts with it
BOOTP_SIZE = 236  # the fixed BOOTP header before the cookie
MAX_REPLY = 1500  # bytes read of a reply: a DHCP message fits an Ethernet frame unless option 57 says more
MAX_OPTIONS = 255  # options read from one reply before calling it malformed
MAX_TEXT = 255  # characters kept of a text option (domain name, server message)
PORT_RETRY = 0.02  # seconds between tries of a reply port another probe holds
DISCOVER, OFFER, NAK, ACK, INFORM = 1, 2, 6, 5, 8
TYPE_NAMES = {1: "DHCPDISCOVER", 2: "DHCPOFFER", 3: "DHCPREQUEST", 4: "DHCPDECLINE", 5: "DHCPACK", 6: "DHCPNAK"}
TYPE_NAMES |= {7: "DHCPRELEASE", 8: "DHCPINFORM"}
# Parameter request list: subnet mask, router, DNS servers, domain name, NTP servers, lease time, server id
REQUESTED = bytes([1, 3, 6, 15, 42, 51, 54])
DEFAULT_MAC = "02:70:77:00:00:01"  # locally administered, and stable so a server re-offers the same address


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    message: str = "inform"  # inform or discover (see the module docstring)
    client_port: int | None = None  # the port the answer comes to: 68 for inform, 67 (the relay port) for discover
    client_mac: str = DEFAULT_MAC  # chaddr; a server may hand out addresses per MAC

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.message not in MESSAGES:
            raise OptionsError("message", f"must be inform or discover, not {self.message!r}")
        if self.client_port is not None and not 1 <= self.client_port <= 65535:
            raise OptionsError("client_port", f"must be between 1 and 65535, not {self.client_port}")
        if self.ip_family == "ipv6":
            raise OptionsError("ip_family", "DHCP is IPv4 (DHCPv6 is another protocol); use any or ipv4")
        try:
            mac = bytes.fromhex(self.client_mac.replace(":", "").replace("-", ""))
        except ValueError:
            mac = b""
        if len(mac) != 6:
            raise OptionsError("client_mac", f"must be a MAC address such as {DEFAULT_MAC}, not {self.client_mac!r}")

    @property
    def reply_port(self) -> int:
        return self.client_port or (68 if self.message == "inform" else 67)


def build_request(options: Options, xid: int, source: str) -> bytes:
    """Return a BOOTREQUEST carrying a DHCPINFORM (ciaddr = us) or a relayed DHCPDISCOVER (giaddr = us)."""
    inform = options.message == "inform"
    ours = socket.inet_aton(source)
    mac = bytes.fromhex(options.client_mac.replace(":", "").replace("-", ""))
    header = struct.pack("!BBBBIHH", 1, 1, 6, 0 if inform else 1, xid, 0, 0)
    addresses = (
        (ours if inform else bytes(4)) + bytes(8) + (bytes(4) if inform else ours)
    )  # ciaddr yiaddr siaddr giaddr
    body = header + addresses + mac.ljust(16, b"\0") + bytes(64 + 128)
    kind = INFORM if inform else DISCOVER
    fields = bytes([53, 1, kind, 61, 7, 1, *mac, 55, len(REQUESTED), *REQUESTED, 255])
    return body + MAGIC_COOKIE + fields


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    async def steps(state: Exchange) -> None:
        with state.clock.phase("resolve"):
            addresses = await resolve(target.host, target.port, options, deadline=deadline)
        server = next((sockaddr[0] for family, sockaddr in addresses if family == socket.AF_INET), None)
        if server is None:
            raise ResolutionError(f"{target.host} has no IPv4 address, and DHCP is IPv4")
        source = source_address(server, target.port)
        state.details["message"] = TYPE_NAMES[INFORM if options.message == "inform" else DISCOVER]

        with state.clock.phase("connect"):
            sock = await bind_reply_port(source, options.reply_port, deadline)
        channel = await open_channel(
            Target(server, target.port), options, deadline=deadline, clock=state.clock, make_socket=lambda _: sock
        )
        state.address = server
        try:
            await ask(state, channel, options, source)
        finally:
            channel.close()

    return await exchange(target, options, steps, deadline=deadline)


class ReplyPortBusy(ProbeError):
    """Other DHCP probes of this host held the reply port until the deadline: nothing was measured."""

    failure = "reply_port_busy"
    status = Status.UNKNOWN


async def bind_reply_port(source: str, port: int, deadline: float) -> socket.socket:
    """Return a socket bound to `port` on `source`; while another probe holds it, wait for it until the deadline.

    Every DHCP probe of this host is answered on the same port (68, or 67 as a relay), in this process or
    another worker's, so probes that run at once take turns; each holds it for one exchange.
    """
    loop = asyncio.get_running_loop()
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((source, port))
            return sock
        except OSError as error:
            sock.close()
            if error.errno != errno.EADDRINUSE:
                why = "root is needed" if isinstance(error, PermissionError) else error.strerror
                raise ConfigError(f"cannot listen on {source} port {port} for the answer: {why}") from None
        if loop.time() + PORT_RETRY >= deadline:
            raise ReplyPortBusy(f"{source} port {port} stayed busy with other DHCP probes until the deadline")
        await asyncio.sleep(PORT_RETRY * random.uniform(0.5, 1.5))  # jittered, so waiting probes do not march


def source_address(server: str, port: int) -> str:
    """Return the address this host sends from towards `server` (a route lookup: connecting UDP sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((server, port))
        except OSError as error:
            raise ConfigError(f"no route to {server}: {error.strerror}") from None
        return sock.getsockname()[0]


async def ask(state: Exchange, channel: Channel, options: Options, source: str) -> None:
    """Send the request and read the answer with our xid; raise unless it is the DHCPACK or DHCPOFFER expected."""
    xid = int.from_bytes(os.urandom(4), "big")
    expected = ACK if options.message == "inform" else OFFER
    await channel.send(build_request(options, xid, source), what=f"the {state.details['message']}")

    def ours(data: bytes, sender: tuple) -> bool:  # a BOOTREPLY to our transaction; anything else is ignored
        return len(data) >= 8 and data[0] == 2 and int.from_bytes(data[4:8], "big") == xid

    reply, _ = await channel.receive_matching(ours, what=f"the {TYPE_NAMES[expected]}", limit=MAX_REPLY)
    found = parse_options(reply)
    kind = found.get(53, b"\0")[0] if found.get(53) else None
    state.details["reply"] = TYPE_NAMES.get(kind, f"type {kind}")
    if kind == NAK:
        message = text(found.get(56, b"")) or "no message"
        raise ServerRejected(f"the server answered DHCPNAK ({message})")
    if kind != expected:
        raise ProtocolError(f"the server answered {state.details['reply']}, not {TYPE_NAMES[expected]}")
    record(state, reply, found, offered=expected == OFFER)


def parse_options(reply: bytes) -> dict[int, bytes]:
    """Return the options of a DHCP reply, code -> value (the first of a repeated code); bounded and checked."""
    if len(reply) < BOOTP_SIZE + 4 or reply[BOOTP_SIZE : BOOTP_SIZE + 4] != MAGIC_COOKIE:
        raise ProtocolError(f"the reply ({len(reply)} bytes) is not a DHCP message: no magic cookie")
    found: dict[int, bytes] = {}
    offset = BOOTP_SIZE + 4
    for _ in range(MAX_OPTIONS):
        if offset >= len(reply) or reply[offset] == 255:
            return found
        code = reply[offset]
        if code == 0:  # pad
            offset += 1
            continue
        if offset + 2 > len(reply) or offset + 2 + reply[offset + 1] > len(reply):
            raise ProtocolError(f"option {code} runs past the end of the reply")
        length = reply[offset + 1]
        found.setdefault(code, reply[offset + 2 : offset + 2 + length])
        offset += 2 + length
    raise ProtocolError(f"the reply has more than {MAX_OPTIONS} options")


def record(state: Exchange, reply: bytes, found: dict[int, bytes], *, offered: bool) -> None:
    """Put the server id, offered address, lease time, mask, routers, DNS servers and domain into the details."""
    details = state.details
    if offered:
        details["offered_address"] = socket.inet_ntoa(reply[16:20])
    for key, code in (("server_id", 54), ("subnet_mask", 1)):
        if len(found.get(code, b"")) == 4:
            details[key] = socket.inet_ntoa(found[code])
    for key, code in (("routers", 3), ("dns_servers", 6), ("ntp_servers", 42)):
        if code in found:
            value = found[code]
            details[key] = [socket.inet_ntoa(value[i : i + 4]) for i in range(0, len(value) - len(value) % 4, 4)]
    if len(found.get(51, b"")) == 4:
        details["lease_time"] = int.from_bytes(found[51], "big")
    if 15 in found:
        details["domain"] = text(found[15])
    if "subnet_mask" in details and offered:
        with contextlib.suppress(ValueError):  # a mask with holes names no network
            network = ipaddress.ip_network(f"{details['offered_address']}/{details['subnet_mask']}", strict=False)
            details["network"] = str(network)


def text(raw: bytes) -> str:
    """Return a text option with control characters replaced and its length bounded: the server's, and untrusted."""
    return printable(raw.rstrip(b"\0"), limit=MAX_TEXT, replacement="?")


PROTOCOL = Protocol(
    key="dhcp",
    label="DHCP",
    summary="a DHCPINFORM (or a relayed DHCPDISCOVER, never followed by a REQUEST) and the options answered",
    options=Options,
    probe=probe,
    schemes=(Scheme("dhcp", "none", 67),),
    transport="datagram",
    flags=(
        Flag("--dhcp-message", "message", "inform (default) or discover", metavar="KIND"),
        Flag("--client-port", "client_port", "the port the answer comes to (68; 67 for discover)", metavar="PORT"),
    ),
    failures={
        "reply_port_busy": "status unknown: other DHCP probes of this host held the reply port until the deadline"
    },
    shown=(
        ("message", "Sent"),
        ("reply", "Answer"),
        ("server_id", "Server identifier"),
        ("offered_address", "Offered address"),
        ("network", "Network"),
        ("subnet_mask", "Subnet mask"),
        ("routers", "Routers"),
        ("dns_servers", "DNS servers"),
        ("ntp_servers", "NTP servers"),
        ("domain", "Domain"),
        ("lease_time", "Lease time (s)"),
    ),
)
