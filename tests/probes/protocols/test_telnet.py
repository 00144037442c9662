"""The telnet prober against a real telnetd (inetutils) and scripted or hostile servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from monitor.probes import Status, Target, run_probe
from monitor.probes.options import OptionsError
from monitor.probes.protocols import telnet
from monitor.probes.protocols.telnet import DO, DONT, IAC, SB, SE, WILL, WONT, Negotiator
from tests.peers.hostile import HostileServer, flood, garbage, silent
from tests.peers.telnetd import running_telnetd

TIMEOUT = 5.0
TTYPE, ECHO, SGA = 24, 1, 3


@pytest.fixture(scope="module")
def telnetd() -> Iterator[int]:
    with running_telnetd() as port:
        yield port


async def probe(port: int, timeout: float = TIMEOUT, **raw):
    return await run_probe("telnet", Target("127.0.0.1", port), telnet.Options.from_mapping(raw), timeout=timeout)


@contextlib.asynccontextmanager
async def scripted(*chunks: bytes, then_close: bool = False) -> AsyncIterator[tuple[int, bytearray]]:
    """Serve each client `chunks` a moment apart, then wait (or hang up); yield the port and what clients sent."""
    heard = bytearray()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def listen() -> None:
            while data := await reader.read(1024):
                heard.extend(data)

        listening = asyncio.create_task(listen())
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.05)
        if not then_close:
            await asyncio.sleep(TIMEOUT)
        listening.cancel()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], heard
    finally:
        server.close()


@pytest.mark.peers
async def test_it_reads_telnetds_greeting_up_to_the_login_prompt(telnetd):
    result = await probe(telnetd)

    assert result.status is Status.UP, result.reason
    assert result.banner.endswith("login:")
    assert result.details["plaintext_login_offered"] is True
    assert "DO TTYPE" in result.details["negotiation"]


@pytest.mark.peers
async def test_the_banner_of_a_real_telnetd_has_no_control_bytes(telnetd):
    result = await probe(telnetd)

    assert result.banner
    assert all(char.isprintable() for char in result.banner), repr(result.banner)


@pytest.mark.peers
async def test_it_reports_a_greeting_that_does_not_match_expect(telnetd):
    matching = await probe(telnetd, expect=r"login:\s*$")
    missing = await probe(telnetd, expect="RouterOS")

    assert matching.status is Status.UP, matching.reason
    assert (str(missing.failure), missing.reason) == (
        "keyword_missing",
        "the telnet greeting does not match /RouterOS/",
    )


async def test_it_refuses_every_option_and_skips_subnegotiation():
    greeting = (
        bytes([IAC, DO, TTYPE, IAC, WILL, ECHO, IAC, SB, TTYPE, 1, IAC, SE, IAC, DO, TTYPE]),
        b"\x1b[1;32mWelcome\x07 to \xff\xffRouterOS 6.49\x1b[0m\r\n\r\n",
        b"Username: ",
    )
    async with scripted(*greeting) as (port, heard):
        result = await probe(port)
        await asyncio.sleep(0.05)  # let the server's reader take in the answers

    assert result.status is Status.UP, result.reason
    assert result.banner == "Welcome to \ufffdRouterOS 6.49 | Username:"
    assert result.details["plaintext_login_offered"] is True
    assert bytes(heard) == bytes([IAC, WONT, TTYPE, IAC, DONT, ECHO])  # DO TTYPE answered once, SB skipped


def test_a_command_split_across_reads_is_still_one_command():
    negotiator = Negotiator()

    first = negotiator.feed(b"hi" + bytes([IAC]))
    second = negotiator.feed(bytes([WILL, SGA]) + b" there")

    assert (first, second) == ((b"hi", b""), (b" there", bytes([IAC, DONT, SGA])))


async def test_a_greeting_without_a_prompt_ends_after_a_pause():
    async with scripted(b"Main menu\r\n 1) status\r\n> ") as (port, _):
        result = await probe(port)

    assert result.status is Status.UP, result.reason
    assert result.banner == "Main menu | 1) status | >"
    assert result.details["plaintext_login_offered"] is False


async def test_it_reports_a_server_that_hangs_up_after_its_greeting():
    async with scripted(b"Too many users, try later\r\n", then_close=True) as (port, _):
        result = await probe(port)

    assert (str(result.failure), result.reason) == (
        "connection_closed",
        "the telnet server closed the connection after saying: Too many users, try later",
    )
    assert result.banner == "Too many users, try later"


async def test_cp437_art_with_ansi_colours_is_a_greeting_not_garbage():
    art = b"\x1b[1;34m\xc9" + b"\xcd" * 11 + b"\xbb\r\n\xba Retro BBS \xba\r\n\xc8" + b"\xcd" * 11 + b"\xbc\x1b[0m\r\n"
    async with scripted(art, b"Password: ") as (port, _):
        result = await probe(port)

    assert result.status is Status.UP, result.reason
    assert result.banner.endswith("| Password:")


async def test_a_flood_without_a_pause_is_response_too_large():
    async with HostileServer(flood, "tcp") as server:
        result = await probe(server.port)

    assert str(result.failure) == "response_too_large"
    assert result.details["greeting_bytes"] >= telnet.MAX_GREETING_BYTES


async def test_binary_garbage_is_a_protocol_error():
    async with HostileServer(garbage, "tcp") as server:
        result = await probe(server.port)

    assert str(result.failure) == "protocol_error"
    assert result.reason.startswith("the greeting is not telnet text: ")


async def test_a_silent_server_times_out():
    async with HostileServer(silent, "tcp") as server:
        result = await probe(server.port, timeout=1.0)

    assert (str(result.failure), result.reason) == ("timeout", "no greeting from the telnet server")


def test_it_refuses_an_invalid_expect_pattern():
    with pytest.raises(OptionsError) as raised:
        telnet.Options.from_mapping({"expect": "("})

    assert raised.value.field == "expect"
    assert raised.value.message.startswith("is not a valid regular expression: ")
