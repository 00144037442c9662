"""ICMP echo (ping) probe: `count` echo requests, with loss and round-trip times (min, avg, max, jitter) in details.

Status: `down` (timeout) when no request got a reply; `warning` (packet_loss) when more than
`max_loss_percent` of them got none (default 0: any loss warns); `up` otherwise. RTTs and jitter are in
seconds; jitter is the mean absolute difference of consecutive RTTs (RFC 3550's idea, without smoothing).
The latency phases are the round trip's: `processing` is the average RTT, and `total` is that after
resolve and socket setup, not the `interval`s the probe waits between requests.

Socket: an unprivileged ICMP socket (SOCK_DGRAM) where `net.ipv4.ping_group_range` admits the process's
group, since the kernel then fills in and matches the identifier itself; otherwise a raw socket (root or
CAP_NET_RAW), where a BPF filter drops other processes' echo replies and replies are matched by identifier,
sequence and payload; neither gives `config_error` (status unknown). A destination unreachable answer is
`unreachable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import itertools
import os
import random
import socket
import struct
import time
from dataclasses import dataclass, field

from monitor.probes.datagram import Channel, converse
from monitor.probes.errors import ConfigError, ConnectError, ProbeError, ProbeTimeout, ResponseTooLarge
from monitor.probes.options import ConnectionOptions, OptionsError
from monitor.probes.protocol import Flag, Protocol, Scheme
from monitor.probes.result import Phases, Result, Status
from monitor.probes.session import Exchange, Target

MAX_COUNT = 20  # echo requests in one probe; more belongs to a dedicated tool (smokeping), not a service check
MAX_INTERVAL = 5.0  # seconds between requests
MIN_INTERVAL = 0.01  # faster than this is a flood, which routers rate-limit anyway
MAX_PAYLOAD_SIZE = 8972  # fills a 9000-byte jumbo frame; larger pings would be fragmented
MAX_STRAY_PACKETS = 1000  # packets that are not our replies (other pings on a raw socket) before giving up
ECHO = {socket.AF_INET: (8, 0), socket.AF_INET6: (128, 129)}  # (request, reply) types
UNREACHABLE = {
    socket.AF_INET: {3: "destination unreachable", 11: "time exceeded"},
    socket.AF_INET6: {1: "destination unreachable", 3: "time exceeded"},
}
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)


class PacketLoss(ProbeError):
    """Some echo requests got no reply, more than the service allows: the host is up but the path is lossy."""

    failure = "packet_loss"
    status = Status.WARNING


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    count: int = 3  # echo requests sent (blackbox_exporter sends one, its #115)
    interval: float = 0.2  # seconds between requests
    payload_size: int = 56  # bytes of data in each request, as ping sends by default
    max_loss_percent: float = 0.0  # lose more than this and the result is a warning; losing all is down

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.count <= MAX_COUNT:
            raise OptionsError("count", f"must be between 1 and {MAX_COUNT}, not {self.count}")
        if not MIN_INTERVAL <= self.interval <= MAX_INTERVAL:
            raise OptionsError(
                "interval", f"must be between {MIN_INTERVAL} and {MAX_INTERVAL} seconds, not {self.interval}"
            )
        if not 0 <= self.payload_size <= MAX_PAYLOAD_SIZE:
            raise OptionsError(
                "payload_size", f"must be between 0 and {MAX_PAYLOAD_SIZE} bytes, not {self.payload_size}"
            )
        if not 0 <= self.max_loss_percent < 100:
            raise OptionsError("max_loss_percent", f"must be at least 0 and below 100, not {self.max_loss_percent}")


@dataclass
class Pinger:
    """What tells our replies apart: the socket kind, identifier (raw sockets only) and payload."""

    family: int
    kind: str = ""  # "dgram" or "raw", set when the socket is made
    identifier: int = field(default_factory=lambda: random.getrandbits(16))
    payload: bytes = b""

    def make_socket(self, family: int) -> socket.socket:
        """Return an ICMP socket: unprivileged where ping_group_range allows, else raw; ConfigError if neither."""
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        self.family = family
        try:
            sock, self.kind = socket.socket(family, socket.SOCK_DGRAM, proto), "dgram"
        except PermissionError:
            try:
                sock, self.kind = socket.socket(family, socket.SOCK_RAW, proto), "raw"
            except PermissionError:
                raise ConfigError(
                    "cannot open an ICMP socket: this process's group is outside net.ipv4.ping_group_range and it "
                    "may not open raw sockets; widen the range (sysctl net.ipv4.ping_group_range) or grant CAP_NET_RAW"
                ) from None
            attach_identifier_filter(sock, family, self.identifier)
        return sock

    def request(self, sequence: int) -> bytes:
        header = struct.pack("!BBHHH", ECHO[self.family][0], 0, 0, self.identifier, sequence)
        if self.family == socket.AF_INET6:  # the kernel computes ICMPv6 checksums (and all checksums on dgram sockets)
            return header + self.payload
        return header[:2] + struct.pack("!H", checksum(header + self.payload)) + header[4:] + self.payload

    def reply_sequence(self, data: bytes) -> int | None:
        """Return the sequence number `data` answers if it is our echo reply; raise ConnectError for our unreachable."""
        message = self._icmp(data)
        if message is None or len(message) < 8:
            return None
        kind, code, _, identifier, sequence = struct.unpack("!BBHHH", message[:8])
        if kind == ECHO[self.family][1]:
            ours = self.kind == "dgram" or identifier == self.identifier  # a dgram socket's id is the kernel's
            return sequence if ours and message[8:] == self.payload else None
        meaning = UNREACHABLE[self.family].get(kind)
        if meaning and self._embeds_our_request(message[8:]):
            raise ConnectError(f"ICMP {meaning} (code {code}) for echo request {sequence_of(message)}")
        return None

    def _icmp(self, data: bytes) -> bytes | None:
        """Return the ICMP message: an IPv4 raw socket hands over the IP header too."""
        if self.family == socket.AF_INET6 or self.kind == "dgram":
            return data
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        return data[(data[0] & 0x0F) * 4 :]

    def _embeds_our_request(self, original: bytes) -> bool:
        """Return whether an ICMP error quotes one of our echo requests (the IP header, then 8 bytes of ICMP)."""
        if self.family == socket.AF_INET:
            if len(original) < 20 or original[0] >> 4 != 4:
                return False
            inner = original[(original[0] & 0x0F) * 4 :]
        else:
            inner = original[40:]  # the fixed IPv6 header; echo requests carry no extension headers
        if len(inner) < 8:
            return False
        kind, _, _, identifier, _ = struct.unpack("!BBHHH", inner[:8])
        return kind == ECHO[self.family][0] and (self.kind == "dgram" or identifier == self.identifier)


def sequence_of(message: bytes) -> str:
    """Return the sequence number an ICMP error quotes, for its reason; "?" when it is cut short."""
    original = message[8:]
    inner = original[(original[0] & 0x0F) * 4 :] if original and original[0] >> 4 == 4 else original[40:]
    return str(struct.unpack("!H", inner[6:8])[0]) if len(inner) >= 8 else "?"


def checksum(data: bytes) -> int:
    """Return the Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def attach_identifier_filter(sock: socket.socket, family: int, identifier: int) -> None:
    """Make the kernel drop echo replies and requests of other pings, as iputils' ping does.

    A raw ICMP socket receives every ICMP packet the host gets: with a thousand probes running, each
    would wake for every other probe's replies. The classic BPF program keeps packets carrying our
    identifier and ICMP errors; best effort, since `reply_sequence` checks the identifier anyway.
    """
    request, reply = ECHO[family]
    load_id, load_type = ((0x48, 4), (0x50, 0)) if family == socket.AF_INET else ((0x28, 4), (0x30, 0))
    program = [
        (0xB1, 0, 0, 0),  # x = IPv4 header length (ldxb 4*([0]&0xf)); unused for IPv6, whose data starts at ICMP
        (load_id[0], 0, 0, load_id[1]),  # a = identifier
        (0x15, 0, 1, identifier),  # ours?
        (0x06, 0, 0, 0xFFFFFFFF),  # yes: keep
        (load_type[0], 0, 0, load_type[1]),  # a = type
        (0x15, 2, 0, reply),  # someone else's reply: drop
        (0x15, 1, 0, request),  # someone else's request (pings of this host): drop
        (0x06, 0, 0, 0xFFFFFFFF),  # anything else (unreachable, time exceeded): keep
        (0x06, 0, 0, 0),
    ]
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code)
    with contextlib.suppress(OSError):  # no BPF here: the stray bound and identifier check still hold
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(program), ctypes.addressof(buffer)))


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    pinger = Pinger(socket.AF_INET, payload=(os.urandom(8) * (options.payload_size // 8 + 1))[: options.payload_size])

    async def dialogue(state: Exchange, channel: Channel) -> None:
        state.details["socket"] = pinger.kind
        try:
            sent, rtts = await ping(channel, pinger, options)
        except ConnectError as error:  # the datagram layer names "port 0", which means nothing for ICMP
            raise type(error)(str(error).replace(channel.where, channel.address)) from None
        summarize(state, sent, rtts)
        lost = sent - len(rtts)
        if not rtts:
            raise ProbeTimeout(f"no echo reply from {channel.address} to {lost} request(s)")
        if state.details["loss_percent"] > options.max_loss_percent:
            raise PacketLoss(f"{lost} of {sent} echo requests to {channel.address} got no reply")

    # ICMP has no port: the Target's is ignored, and the socket is left unconnected so that errors sent
    # by a router on the way (not the target itself) reach a raw socket too.
    result = await converse(
        Target(target.host, 0), options, dialogue, deadline=deadline, connected=False, make_socket=pinger.make_socket
    )
    return latency_is_the_round_trip(result)


def latency_is_the_round_trip(result: Result) -> Result:
    """Return `result` with the average round trip as its processing phase and its total after resolve and setup.

    The probe spends `interval` between requests by design: timed by the clock, a host answering in
    0.1 ms would show 400 ms of latency. With no reply there is no round trip, and the time waited stays.
    """
    rtt = result.details.get("rtt_avg")
    if rtt is None:
        return result
    measured = result.phases
    total = measured.resolve + measured.connect + rtt
    return dataclasses.replace(
        result, phases=Phases(resolve=measured.resolve, connect=measured.connect, processing=rtt, total=total)
    )


async def ping(channel: Channel, pinger: Pinger, options: Options) -> tuple[int, list[float]]:
    """Send the requests `interval` apart while collecting replies; return how many were sent and the RTTs.

    The RTTs are in the order of the requests. It stops when every request is answered or at the
    deadline; requests that would leave after the deadline are not sent (and not counted as lost).
    Sequences start at 1, as ping's do.
    """
    loop = asyncio.get_running_loop()
    sent: dict[int, float] = {}
    rtts: dict[int, float] = {}
    next_send, strays = loop.time(), 0
    while True:
        sending = len(sent) < options.count and next_send < channel.deadline
        if sending and loop.time() >= next_send:
            sequence = len(sent) + 1
            sent[sequence] = time.perf_counter()
            await channel.send(pinger.request(sequence), what=f"echo request {sequence}")
            next_send = loop.time() + options.interval
            continue
        if not sending and len(rtts) == len(sent):
            break
        try:
            if sending:
                async with asyncio.timeout_at(next_send):
                    data, _ = await channel.receive(what="an echo reply")
            else:
                data, _ = await channel.receive(what="an echo reply")
        except TimeoutError:
            continue  # time for the next request
        except ProbeTimeout:
            break  # the deadline: what is unanswered is lost
        sequence = pinger.reply_sequence(data)
        if sequence in sent and sequence not in rtts:
            rtts[sequence] = time.perf_counter() - sent[sequence]
            continue
        strays += 1  # someone else's packet, a duplicate or a corrupted reply
        if strays > MAX_STRAY_PACKETS:
            raise ResponseTooLarge(f"{MAX_STRAY_PACKETS} ICMP packets came back that were not our echo replies")
    return len(sent), [rtts[sequence] for sequence in sorted(rtts)]


def summarize(state: Exchange, sent: int, rtts: list[float]) -> None:
    """Put sent, received, loss percent and RTT min, avg, max and jitter (seconds) into the details."""
    state.details.update(sent=sent, received=len(rtts), loss_percent=round(100 * (sent - len(rtts)) / sent, 2))
    if not rtts:
        return
    steps = [abs(later - earlier) for earlier, later in itertools.pairwise(rtts)]
    state.details.update(
        rtt_min=round(min(rtts), 6),
        rtt_avg=round(sum(rtts) / len(rtts), 6),
        rtt_max=round(max(rtts), 6),
        jitter=round(sum(steps) / len(steps), 6) if steps else 0.0,
    )


PROTOCOL = Protocol(
    key="icmp",
    label="ICMP (ping)",
    summary="echo requests with packet loss and round-trip times; down when none is answered",
    options=Options,
    probe=probe,
    schemes=(Scheme("icmp", "none"),),
    transport="icmp",
    needs_port=False,
    flags=(
        Flag("--count", "count", f"echo requests to send (default 3, at most {MAX_COUNT})", metavar="N"),
        Flag("--max-loss", "max_loss_percent", "loss above this percentage is a warning (default 0)", metavar="PCT"),
    ),
    failures={"packet_loss": "some echo requests got no reply, more than max_loss_percent allows (a warning)"},
    blackbox_prober="icmp",
    shown=(
        ("sent", "Sent"),
        ("received", "Received"),
        ("loss_percent", "Loss (%)"),
        ("rtt_min", "RTT min (s)"),
        ("rtt_avg", "RTT avg (s)"),
        ("rtt_max", "RTT max (s)"),
        ("jitter", "Jitter (s)"),
    ),
)
