"""Mail servers for tests on 127.0.0.1: `smtp_server()` runs aiosmtpd, `LineServer` plays a scripted dialogue.

aiosmtpd is a real SMTP server, with AUTH PLAIN and LOGIN against `Accounts` when given one;
`LineServer` covers the well-formed refusals and oddities that no real server can be told to
produce (a 554 greeting, a POP3 -ERR greeting, an IMAP * BYE).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import trustme
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

SERVER_NAME = "mail.test"  # what aiosmtpd calls itself in its greeting and EHLO reply
MAX_SCRIPT_LINES = 1000  # lines a LineServer answers before hanging up, so no test can spin forever


def server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    """Return a server-side TLS context presenting `leaf`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    return context


class Accounts:
    """An aiosmtpd authenticator: these users log in with these passwords; `attempts` lists (mechanism, user)."""

    def __init__(self, passwords: Mapping[str, str]) -> None:
        self.passwords = dict(passwords)
        self.attempts: list[tuple[str, str]] = []

    def __call__(self, server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        user, password = auth_data.login.decode("utf-8"), auth_data.password.decode("utf-8")
        self.attempts.append((mechanism, user))
        # handled=False: aiosmtpd answers a refusal with its own "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=self.passwords.get(user) == password, handled=False)


@contextlib.asynccontextmanager
async def smtp_server(
    *,
    starttls: trustme.LeafCert | None = None,
    implicit: trustme.LeafCert | None = None,
    handler: Any = None,
    accounts: Accounts | None = None,
    auth_require_tls: bool = True,
    auth_exclude: Sequence[str] = (),
) -> AsyncIterator[int]:
    """Run aiosmtpd on the test's own loop and yield its port.

    `starttls` offers STARTTLS with that certificate; `implicit` speaks TLS from the first byte.
    `accounts` checks AUTH logins; aiosmtpd offers AUTH only after STARTTLS unless `auth_require_tls`
    is off (which implicit TLS needs: aiosmtpd counts only STARTTLS as TLS). `auth_exclude` drops
    mechanisms from the AUTH list, e.g. ["PLAIN"] to leave LOGIN alone.
    """
    tls_context = server_context(starttls) if starttls else None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler or Sink(),
            hostname=SERVER_NAME,
            tls_context=tls_context,
            loop=loop,
            authenticator=accounts,
            auth_require_tls=auth_require_tls,
            auth_exclude_mechanism=auth_exclude,
        ),
        "127.0.0.1",
        0,
        ssl=server_context(implicit) if implicit else None,
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


Answer = Callable[[bytes], bytes | None]


class LineServer:
    """Greet with `greeting`, then answer each line (without CRLF) with `answer(line)`; None hangs up."""

    def __init__(self, greeting: bytes, answer: Answer = lambda line: None) -> None:
        self.greeting = greeting
        self.answer = answer
        self.received: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> LineServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            writer.write(self.greeting)
            await writer.drain()
            for _ in range(MAX_SCRIPT_LINES):
                line = await reader.readline()
                if not line:
                    break
                self.received.append(line.rstrip(b"\r\n"))
                reply = self.answer(self.received[-1])
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        writer.close()
