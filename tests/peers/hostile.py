"""Small asyncio servers that misbehave on purpose: silent, endless lines, floods, garbage, slow, lying STARTTLS.

`HostileServer(behaviour, protocol)` is an async context manager listening on 127.0.0.1; each
behaviour is a coroutine handling one client. Every loop is bounded so a server stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

FLOOD_LIMIT = 64 * 1024 * 1024  # bytes a flooding server sends at most before giving up
DRIP_INTERVAL = 0.2  # seconds between bytes for the slow server


@dataclass(frozen=True)
class Script:
    """How a protocol's server opens, and what a flood of valid-looking lines looks like for it."""

    greeting: bytes  # sent on connect; empty when the client speaks first
    flood_head: bytes  # sent after the client's first line, before the flood
    flood_line: bytes


SCRIPTS = {
    "smtp": Script(b"220 hostile.test ESMTP\r\n", b"250-hostile.test\r\n", b"250-X-FLOOD\r\n"),
    "pop3": Script(b"+OK hostile ready\r\n", b"+OK capabilities\r\n", b"X-FLOOD\r\n"),
    "imap": Script(b"* OK hostile ready\r\n", b"", b"* X-FLOOD\r\n"),
    "http": Script(b"", b"HTTP/1.1 200 OK\r\n", b"X-Flood: yes\r\n"),
    "tcp": Script(b"", b"", b"flood\r\n"),
}

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Script], Awaitable[None]]


async def silent(reader, writer, script):
    """Accept, then never say a word."""
    await reader.read()  # until the client gives up


async def endless_line(reader, writer, script):
    """Send one line that never ends."""
    writer.write(script.greeting)
    await _first_line(reader, script)
    await _pour(writer, b"A" * 4096)


async def flood(reader, writer, script):
    """Send well-formed continuation lines forever."""
    writer.write(script.greeting or b"")
    await _first_line(reader, script)
    writer.write(script.flood_head)
    await _pour(writer, script.flood_line * 256)


async def garbage(reader, writer, script):
    """Answer with binary noise instead of the protocol."""
    writer.write(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(200) + b"\r\n")
    await writer.drain()
    await reader.read()


async def slow(reader, writer, script):
    """Speak the greeting one byte at a time, too slowly to finish in time."""
    for byte in (script.greeting or b"HTTP/1.1 200 OK\r\n") * 10:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(DRIP_INTERVAL)


async def close_mid_dialogue(reader, writer, script):
    """Greet, then hang up as soon as the client speaks."""
    writer.write(script.greeting)
    await writer.drain()
    await reader.readline()


async def starttls_then_plaintext(reader, writer, script):
    """Agree to STARTTLS, then keep talking in plaintext instead of starting the handshake."""
    writer.write(b"220 hostile.test ESMTP\r\n")
    await writer.drain()
    while line := await reader.readline():
        command = line.strip().upper()
        if command.startswith(b"EHLO"):
            writer.write(b"250-hostile.test\r\n250 STARTTLS\r\n")
        elif command == b"STARTTLS":
            writer.write(b"220 Ready to start TLS\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)  # a separate segment, so the client sees it only after its hello
            writer.write(b"250 this is still plaintext\r\n")
        await writer.drain()


async def _first_line(reader, script):
    if script.greeting or script.flood_head:
        await reader.readline()


async def _pour(writer, chunk: bytes) -> None:
    sent = 0
    while sent < FLOOD_LIMIT:
        writer.write(chunk)
        await writer.drain()
        sent += len(chunk)


class HostileServer:
    def __init__(self, behaviour: Behaviour, protocol: str = "smtp") -> None:
        self.behaviour = behaviour
        self.script = SCRIPTS[protocol]
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> HostileServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader, writer) -> None:
        self._tasks.add(asyncio.current_task())
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await self.behaviour(reader, writer, self.script)
        writer.close()
