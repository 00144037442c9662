"""The ICMP prober against the kernel's own echo replies on 127.0.0.1 and ::1, and inside throwaway network namespaces.

Loss cannot be made on the host's loopback without a firewall rule, so those tests create a network
namespace of their own (`ip netns add`), with only its loopback up and the kernel's echo replies turned
off there (`icmp_echo_ignore_all`), and run the probe in a thread that entered it (`setns` is per
thread). A small raw-socket `Responder` in the namespace then answers the requests it is told to: some,
none, with junk first, or with a destination unreachable. The namespace is deleted afterwards; the
host's settings are never touched. The same namespaces let `net.ipv4.ping_group_range` differ per test
(it is per namespace), to test the unprivileged and the raw socket alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from monitor.probes import OptionsError, Status, Target, run_probe
from monitor.probes.protocols import REGISTRY, icmp
from tests.conftest import need

TIMEOUT = 2.0
CLONE_NEWNET = 0x40000000
_names = itertools.count()


async def probe(host: str, *, timeout: float = TIMEOUT, **raw):
    return await run_probe("icmp", Target(host, 0), icmp.Options.from_mapping(raw), timeout=timeout)


# --- the host's loopback: the kernel answers ---------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_it_reports_round_trip_times_from_loopback(host):
    result = await probe(host, count=3, interval=0.05)

    assert result.status is Status.UP, result.reason
    assert result.address == host
    details = result.details
    assert (details["sent"], details["received"], details["loss_percent"]) == (3, 3, 0.0)
    assert 0 < details["rtt_min"] <= details["rtt_avg"] <= details["rtt_max"]
    assert details["jitter"] <= details["rtt_max"] - details["rtt_min"]


async def test_it_sends_the_payload_size_asked_for():
    result = await probe("127.0.0.1", count=1, payload_size=1400)

    assert result.status is Status.UP, result.reason
    assert result.details["received"] == 1


def test_it_declares_no_port_and_its_own_failure_kind():
    protocol = REGISTRY["icmp"]

    assert (protocol.needs_port, protocol.transport, protocol.schemes[0].name) == (False, "icmp", "icmp")
    assert "packet_loss" in protocol.failures


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"count": 0}, "count: must be between 1 and 20, not 0"),
        ({"count": 21}, "count: must be between 1 and 20, not 21"),
        ({"interval": 0.001}, "interval: must be between 0.01 and 5.0 seconds, not 0.001"),
        ({"payload_size": 9000}, "payload_size: must be between 0 and 8972 bytes, not 9000"),
        ({"max_loss_percent": 100}, "max_loss_percent: must be at least 0 and below 100, not 100.0"),
    ],
)
def test_it_refuses_options_out_of_range(raw, message):
    with pytest.raises(OptionsError) as caught:
        icmp.Options.from_mapping(raw)

    assert str(caught.value) == message


# --- network namespaces of our own ------------------------------------------------------------------


@contextlib.contextmanager
def namespace(*, answer_echo: bool = True, unprivileged: bool = False) -> Iterator[str]:
    """Create a network namespace with loopback up; yield its name; delete it."""
    need(os.geteuid() == 0 and shutil.which("ip") is not None, "namespace tests need root and iproute2 (ip)")
    name = f"pwicmp{os.getpid()}x{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        settings = [
            f"net.ipv4.icmp_echo_ignore_all={0 if answer_echo else 1}",
            f"net.ipv6.icmp.echo_ignore_all={0 if answer_echo else 1}",
            # root's group 0 inside the range lets it open unprivileged ICMP sockets; "1 0" (the default) is empty
            f"net.ipv4.ping_group_range={'0 2147483647' if unprivileged else '1 0'}",
        ]
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", *settings], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def inside(name: str, work: Callable[[], Awaitable]):
    """Return what the coroutine `work()` returns, run on an event loop in a thread that entered namespace `name`."""
    libc = ctypes.CDLL(None, use_errno=True)
    outcome: dict = {}

    def body() -> None:
        try:
            with open(Path("/run/netns") / name) as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            outcome["value"] = asyncio.run(work())
        except BaseException as error:  # handed to the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Responder:
    """Answer echo requests arriving in the namespace from a raw socket, as `answer(sequence, request)` says.

    `answer` returns the ICMP messages to send back (the checksum is filled in here); every request it
    saw is kept in `requests`.
    """

    def __init__(self, family: int, answer: Callable[[int, bytes], list[bytes]]) -> None:
        self.family = family
        self.answer = answer
        self.requests: list[int] = []
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        self.sock = socket.socket(family, socket.SOCK_RAW, proto)
        self.sock.setblocking(False)
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Responder:
        self.task = asyncio.create_task(self.serve())
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.sock.close()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        request_type = icmp.ECHO[self.family][0]
        while True:
            data, sender = await loop.sock_recvfrom(self.sock, 65535)
            message = data[(data[0] & 0x0F) * 4 :] if self.family == socket.AF_INET else data
            if len(message) < 8 or message[0] != request_type:
                continue  # our own replies, and anything else on the loopback
            sequence = struct.unpack("!H", message[6:8])[0]
            self.requests.append(sequence)
            for reply in self.answer(sequence, data):
                await loop.sock_sendto(self.sock, with_checksum(self.family, reply), sender)


def with_checksum(family: int, message: bytes) -> bytes:
    if family == socket.AF_INET6 or len(message) < 4:  # the kernel fills ICMPv6 checksums in
        return message
    blank = message[:2] + b"\0\0" + message[4:]
    return blank[:2] + struct.pack("!H", icmp.checksum(blank)) + blank[4:]


def echo_reply(family: int, request: bytes, *, identifier: int | None = None, payload: bytes | None = None) -> bytes:
    """Return the echo reply to `request` (as the raw socket read it), optionally with another identifier or data."""
    message = request[(request[0] & 0x0F) * 4 :] if family == socket.AF_INET else request
    ident = struct.unpack("!H", message[4:6])[0] if identifier is None else identifier
    data = message[8:] if payload is None else payload
    return struct.pack("!BBHH", icmp.ECHO[family][1], 0, 0, ident) + message[6:8] + data


async def probe_with(family: int, answer: Callable[[int, bytes], list[bytes]], **raw):
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    async with Responder(family, answer) as responder:
        result = await probe(host, **raw)
    return result, responder.requests


def test_it_uses_an_unprivileged_socket_where_ping_group_range_allows():
    with namespace(unprivileged=True) as name:
        v4 = inside(name, lambda: probe("127.0.0.1", count=2, interval=0.05))
        v6 = inside(name, lambda: probe("::1", count=2, interval=0.05))

    assert (v4.status, v4.details["socket"], v4.details["received"]) == (Status.UP, "dgram", 2), v4.reason
    assert (v6.status, v6.details["socket"], v6.details["received"]) == (Status.UP, "dgram", 2), v6.reason


def test_it_falls_back_to_a_raw_socket_as_root():
    with namespace(unprivileged=False) as name:
        result = inside(name, lambda: probe("127.0.0.1", count=2, interval=0.05))

    assert (result.status, result.details["socket"], result.details["received"]) == (Status.UP, "raw", 2)


def test_it_names_ping_group_range_when_no_icmp_socket_is_allowed():
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to drop privileges")
    script = (
        "import asyncio; from monitor.probes import Target, run_probe; from monitor.probes.protocols import icmp\n"
        "r = asyncio.run(run_probe('icmp', Target('127.0.0.1', 0), icmp.Options(), timeout=2))\n"
        "print(r.status, r.failure); print(r.reason)"
    )
    with namespace() as name:
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
        command = ["ip", "netns", "exec", name, *drop, sys.executable, "-c", script]
        ran = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[3], timeout=60)

    status, reason = ran.stdout.splitlines()[:2] if ran.returncode == 0 else ("", ran.stderr)
    assert status == "unknown config_error", reason
    assert "net.ipv4.ping_group_range" in reason


@pytest.mark.parametrize("unprivileged", [True, False], ids=["dgram", "raw"])
def test_it_is_down_when_no_request_is_answered(unprivileged):
    with namespace(answer_echo=False, unprivileged=unprivileged) as name:
        result = inside(name, lambda: probe("127.0.0.1", count=3, interval=0.05, timeout=1.0))

    assert (result.status, str(result.failure)) == (Status.DOWN, "timeout")
    assert result.reason == "no echo reply from 127.0.0.1 to 3 request(s)"
    assert (result.details["sent"], result.details["received"], result.details["loss_percent"]) == (3, 0, 100.0)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_it_warns_of_partial_loss(family):
    def odd_only(sequence: int, request: bytes) -> list[bytes]:
        return [echo_reply(family, request)] if sequence % 2 else []

    with namespace(answer_echo=False, unprivileged=True) as name:
        result, requests = inside(name, lambda: probe_with(family, odd_only, count=4, interval=0.05, timeout=1.0))

    assert requests == [1, 2, 3, 4]
    assert (result.status, str(result.failure)) == (Status.WARNING, "packet_loss")
    assert result.reason.startswith("2 of 4 echo requests to ")
    assert (result.details["received"], result.details["loss_percent"]) == (2, 50.0)


def test_it_tolerates_loss_up_to_max_loss_percent():
    def odd_only(sequence: int, request: bytes) -> list[bytes]:
        return [echo_reply(socket.AF_INET, request)] if sequence % 2 else []

    with namespace(answer_echo=False) as name:
        result, _ = inside(
            name, lambda: probe_with(socket.AF_INET, odd_only, count=4, interval=0.05, timeout=1.0, max_loss_percent=50)
        )

    assert result.status is Status.UP, result.reason
    assert result.details["loss_percent"] == 50.0


@pytest.mark.parametrize("unprivileged", [True, False], ids=["dgram", "raw"])
def test_it_ignores_replies_that_are_not_its_own(unprivileged):
    def junk_first(sequence: int, request: bytes) -> list[bytes]:
        right = echo_reply(socket.AF_INET, request)
        return [
            b"\x00\x00",  # too short to be ICMP
            echo_reply(socket.AF_INET, request, payload=b"not the payload we sent"),
            right[:6] + struct.pack("!H", sequence + 100) + right[8:],  # a sequence never sent
            right,
            right,  # a duplicate
        ]

    with namespace(answer_echo=False, unprivileged=unprivileged) as name:
        result, _ = inside(name, lambda: probe_with(socket.AF_INET, junk_first, count=3, interval=0.05))

    assert result.status is Status.UP, result.reason
    assert (result.details["sent"], result.details["received"]) == (3, 3)


def test_a_raw_socket_ignores_another_pings_identifier():
    def other_identifier(sequence: int, request: bytes) -> list[bytes]:
        message = request[(request[0] & 0x0F) * 4 :]
        ours = struct.unpack("!H", message[4:6])[0]
        return [echo_reply(socket.AF_INET, request, identifier=ours ^ 0xFFFF)]

    with namespace(answer_echo=False) as name:
        result, _ = inside(
            name, lambda: probe_with(socket.AF_INET, other_identifier, count=2, interval=0.05, timeout=1)
        )

    assert (result.status, str(result.failure), result.details["socket"]) == (Status.DOWN, "timeout", "raw")


@pytest.mark.parametrize("unprivileged", [True, False], ids=["dgram", "raw"])
def test_it_reports_destination_unreachable(unprivileged):
    def unreachable(sequence: int, request: bytes) -> list[bytes]:
        quoted = request[: (request[0] & 0x0F) * 4 + 8]  # the original IP header and 8 bytes of ICMP
        return [struct.pack("!BBHI", 3, 1, 0, 0) + quoted]  # type 3 code 1: host unreachable

    with namespace(answer_echo=False, unprivileged=unprivileged) as name:
        result, _ = inside(name, lambda: probe_with(socket.AF_INET, unreachable, count=2, interval=0.05))

    assert (result.status, str(result.failure)) == (Status.DOWN, "unreachable"), result.reason
    assert "unreachable" in result.reason and "port 0" not in result.reason
