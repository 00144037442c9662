"""Receivers for channel tests, on 127.0.0.1:0 in threads: a webhook endpoint that records what it gets, and raw peers.

`receiver(Reply(...), tls=leaf)` starts tests/peers/http_server.py's server answering every path with the
reply (204 by default) and keeping each request, body included; `raw_peer(behaviour)` starts a socket
server that misbehaves (silent, garbage, drip, flood_head, flood_body);
`mail_server(refuse=...)` runs aiosmtpd in a thread, `line_server(...)` a scripted SMTP peer, both with
Django's mail settings pointed at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from django.db import connections

from tests.peers.http_server import HTTPServer, Reply, Request
from tests.peers.smtp_server import LineServer, smtp_server

FLOOD_LIMIT = 64 * 1024 * 1024  # bytes a flooding peer sends at most before giving up by itself
POLL_INTERVAL = 0.05
DRIP_INTERVAL = 0.2  # seconds between the dripping peer's bytes


class Receiver(HTTPServer):
    """A webhook endpoint: answers every path with `reply` (which a test may change), keeping each request."""

    def __init__(self, reply: Reply, tls: trustme.LeafCert | None) -> None:
        super().__init__({}, tls=tls, fallback=lambda request: self.reply)
        self.reply = reply
        self.start()

    @property
    def received(self) -> list[Request]:
        return self.requests

    def url(self, path: str = "/hook") -> str:
        return super().url(path)


def silent(conn: socket.socket) -> None:
    """Accept and read, never answer, until the client hangs up."""
    while conn.recv(65536):
        pass


def flood_head(conn: socket.socket) -> None:
    """Answer a status line, then header lines that never end."""
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    _pour(conn, b"X-Flood: yes\r\n" * 256)


def flood_body(conn: socket.socket) -> None:
    """Answer 500 with a body that never ends."""
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n")
    _pour(conn, b"\x00\x07boom " * 4096)


def garbage(conn: socket.socket) -> None:
    """Answer binary noise instead of HTTP, then keep the connection open."""
    conn.recv(65536)
    conn.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(256)) + b"\r\n")
    while conn.recv(65536):
        pass


def drip(conn: socket.socket) -> None:
    """Answer a valid head one byte at a time, too slowly for any deadline of a few seconds."""
    conn.recv(65536)
    for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Drip: yes\r\n" * 10:
        conn.sendall(bytes([byte]))
        time.sleep(DRIP_INTERVAL)


def _pour(conn: socket.socket, chunk: bytes) -> None:
    sent = 0
    while sent < FLOOD_LIMIT:
        conn.sendall(chunk)
        sent += len(chunk)


class RawPeer:
    def __init__(self, behaviour: Callable[[socket.socket], None]) -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(POLL_INTERVAL)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}{path}"

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.behaviour(conn)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.listener.close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(reply: Reply | None = None, *, tls: trustme.LeafCert | None = None) -> Receiver:
        started.append(Receiver(reply or Reply(204), tls))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def raw_peer() -> Iterator[Callable[[Callable[[socket.socket], None]], RawPeer]]:
    started: list[RawPeer] = []

    def start(behaviour: Callable[[socket.socket], None]) -> RawPeer:
        started.append(RawPeer(behaviour))
        return started[-1]

    yield start
    for peer in started:
        peer.close()


@pytest.fixture
def refused_url() -> str:
    """A URL on a port nothing listens on: bound for a free number, then closed."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# --- A real SMTP server (aiosmtpd), for the email channel -------------------------------------------


class MailRecorder:
    """An aiosmtpd handler that keeps every message and answers RCPT for `refuse`d addresses with their reply."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.refuse = refuse or {}
        self.messages: list[email.message.EmailMessage] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


class ThreadedServer:
    """Run an async server context manager (tests/peers/smtp_server.py's) on its own loop in a thread.

    Those servers run on a test's loop; the email channel is synchronous (Django's SMTP backend), so its
    server needs a loop of its own. `port` is what the context manager yields (or its `.port`).
    """

    def __init__(self, manager: contextlib.AbstractAsyncContextManager) -> None:
        self.manager = manager
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        entered = asyncio.run_coroutine_threadsafe(manager.__aenter__(), self.loop).result(timeout=10)
        self.port = entered if isinstance(entered, int) else entered.port

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.manager.__aexit__(None, None, None), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def mail_server(settings) -> Iterator[Callable[..., tuple[ThreadedServer, MailRecorder]]]:
    """Start aiosmtpd on 127.0.0.1:0 and point Django's EMAIL_HOST and EMAIL_PORT at it."""
    started: list[ThreadedServer] = []

    def start(refuse: dict[str, str] | None = None) -> tuple[ThreadedServer, MailRecorder]:
        recorder = MailRecorder(refuse)
        started.append(ThreadedServer(smtp_server(handler=recorder)))
        point_mail_settings(settings, started[-1].port)
        return started[-1], recorder

    yield start
    for server in started:
        server.close()


@pytest.fixture
def line_server(settings) -> Iterator[Callable[..., ThreadedServer]]:
    """Start tests/peers' scripted LineServer in a thread and point Django's mail settings at it."""
    started: list[ThreadedServer] = []

    def start(greeting: bytes, answer: Callable[[bytes], bytes | None]) -> ThreadedServer:
        started.append(ThreadedServer(LineServer(greeting, answer)))
        point_mail_settings(settings, started[-1].port)
        return started[-1]

    yield start
    for server in started:
        server.close()


def point_mail_settings(settings, port: int) -> None:
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "portwatch@example.com"


@pytest.fixture(autouse=True)
def quiet_monitor_health(settings) -> None:
    """Tests here move time hours ahead with no worker beating: the monitor's own health alerts would join every
    message. tests/alerting/test_conditions.py turns them back on where they are the subject."""
    settings.PORTWATCH_ALERT_MONITOR_HEALTH = False


def at_once(work: Callable[[], Any]) -> list[Any]:
    """Run `work` in two threads released together; return what each returned."""
    barrier, results, failures = threading.Barrier(2), [], []

    def run() -> None:
        try:
            barrier.wait()
            results.append(work())
        except Exception as error:  # reported by the assertion below
            failures.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    return results
