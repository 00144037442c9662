"""The udp prober against asyncio datagram servers on 127.0.0.1: an echo, a fixed answer, and silence."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from monitor.probes import Status, Target, run_probe
from monitor.probes.options import OptionsError
from monitor.probes.protocols import udp

TIMEOUT = 5.0


class Responder(asyncio.DatagramProtocol):
    """Answer each datagram with `answer(datagram)`; None stays silent."""

    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        reply = self.answer(data)
        if reply is not None:
            self.transport.sendto(reply, addr)


@contextlib.asynccontextmanager
async def udp_server(answer: Callable[[bytes], bytes | None]) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: Responder(answer), local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def probe(port: int, timeout: float = TIMEOUT, **raw):
    return await run_probe("udp", Target("127.0.0.1", port), udp.Options.from_mapping(raw), timeout=timeout)


async def test_it_is_up_when_the_reply_matches_expect():
    async with udp_server(lambda data: b"pong " + data) as port:
        result = await probe(port, send=r"ping\r\n", expect=r"^pong ping\r$")

    assert result.status is Status.UP, result.reason
    assert result.details["reply"] == r"pong ping\r\n"
    assert result.details["reply_bytes"] == 11


async def test_a_reply_that_does_not_match_is_keyword_missing():
    async with udp_server(lambda data: b"ERROR busy") as port:
        result = await probe(port, send="status", expect="^OK")

    assert (str(result.failure), result.reason) == ("keyword_missing", "the reply does not match /^OK/: ERROR busy")


async def test_it_sends_hex_and_checks_the_replys_bytes():
    heard: list[bytes] = []

    def answer(data: bytes) -> bytes:
        heard.append(data)
        return b"\x02\x00\x01\xffrest\x03"

    async with udp_server(answer) as port:
        prefix = await probe(port, send_hex="02 00:01", expect_hex="^020001")
        contained = await probe(port, send_hex="02", expect_hex="ff72")
        not_prefix = await probe(port, send_hex="02", expect_hex="^0001")

    assert heard == [b"\x02\x00\x01", b"\x02", b"\x02"]
    assert prefix.status is Status.UP, prefix.reason
    assert contained.status is Status.UP, contained.reason
    assert (str(not_prefix.failure), not_prefix.reason) == (
        "keyword_missing",
        r"the reply does not start with 0001: \x02\x00\x01\xffrest\x03",
    )


async def test_any_reply_is_up_without_expectations():
    async with udp_server(lambda data: b"\x00") as port:
        result = await probe(port, send="hello")

    assert result.status is Status.UP, result.reason
    assert (result.details["reply"], result.details["sent_bytes"]) == (r"\x00", 5)


async def test_nothing_listening_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    result = await probe(port, send="hello")

    assert str(result.failure) == "refused"
    assert "ICMP port unreachable" in result.reason


async def test_a_silent_server_times_out():
    async with udp_server(lambda data: None) as port:
        result = await probe(port, timeout=1.0, send="hello")

    assert (str(result.failure), result.reason) == (
        "timeout",
        f"no answer from 127.0.0.1 port {port} while waiting for a reply",
    )


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({}, "send", "give exactly one of send or send_hex: a UDP service answers what it is sent"),
        (
            {"send": "a", "send_hex": "61"},
            "send",
            "give exactly one of send or send_hex: a UDP service answers what it is sent",
        ),
        ({"send_hex": "abc"}, "send_hex", "must be hexadecimal bytes such as 0a1b2c, not 'abc'"),
        ({"send": "a", "expect_hex": "^zz"}, "expect_hex", "must be hexadecimal bytes such as 0a1b2c, not 'zz'"),
        (
            {"send": "a", "expect": "("},
            "expect",
            "is not a valid regular expression: missing ), unterminated subpattern at position 0",
        ),
    ],
)
def test_it_refuses_options_it_cannot_use(raw, field, message):
    with pytest.raises(OptionsError) as raised:
        udp.Options.from_mapping(raw)

    assert (raised.value.field, raised.value.message) == (field, message)
