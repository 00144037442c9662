"""What the mail protocols share: bounded multi-line replies (`read_reply()`) and the login guards.

SMTP replies, POP3's CAPA list and IMAP's untagged lines before a tagged status all share one
risk: a server that never sends the last line. Each protocol passes its own named bounds.
SMTP AUTH, POP3 USER/PASS and IMAP LOGIN share the rest: `login_refusal()` before connecting,
`ensure_private()` before sending, `login_timer()` around the wait, `quote_server()` and `masking()`
so a reason quotes the server's answer and never the password.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from monitor.probes.errors import ConfigError, ProbeError, ResponseTooLarge
from monitor.probes.net import Connection
from monitor.probes.options import LoginOptions
from monitor.probes.result import Failure, Phases, Result, Status
from monitor.probes.session import Session, Target
from monitor.probes.text import printable


async def read_reply(
    conn: Connection, is_last: Callable[[bytes], bool], *, what: str, max_lines: int, max_bytes: int
) -> list[bytes]:
    """Return the lines of one reply, through the first line `is_last` accepts.

    Raise `ResponseTooLarge` once the reply passes `max_lines` lines or `max_bytes` bytes, so a
    server flooding continuation lines costs at most that much memory and never the deadline.
    """
    lines: list[bytes] = []
    size = 0
    while True:
        line = await conn.read_line(what=what)
        lines.append(line)
        size += len(line) + 2
        if is_last(line):
            return lines
        if len(lines) >= max_lines:
            raise ResponseTooLarge(f"{what} is longer than {max_lines} lines")
        if size > max_bytes:
            raise ResponseTooLarge(f"{what} is longer than {max_bytes} bytes")


# --- Logging in (SMTP AUTH, POP3 USER/PASS, IMAP LOGIN) ---------------------------------------------------------

MAX_QUOTED_CHARS = 200  # characters of a server's answer quoted in a reason; a hostile one can send 8 KiB lines
PLAINTEXT_REFUSAL = "refusing to send the password without TLS; set allow_plaintext_login to allow it"
MISSING_PASSWORD = "a username is set but no password was handed in; nothing was sent"
_MASK = "***"


def login_refusal(target: Target, options: LoginOptions) -> Result | None:
    """Return a `config_error` result (status unknown) when the login cannot be sent as configured, else None.

    Checked before connecting: with TLS mode none the password would cross the network in the clear,
    which only `allow_plaintext_login` permits, and a username without a password has nothing to send.
    """
    if not options.logs_in:
        return None
    if options.password is None:
        reason = MISSING_PASSWORD
    elif target.tls == "none" and not options.allow_plaintext_login:
        reason = PLAINTEXT_REFUSAL
    else:
        return None
    return Result(Status.UNKNOWN, Failure.CONFIG_ERROR, reason, Phases())


def ensure_private(session: Session, options: LoginOptions) -> None:
    """Raise `ConfigError` unless the connection is TLS or plaintext login is allowed: the last guard before sending."""
    if session.conn.tls is None and not options.allow_plaintext_login:
        raise ConfigError(PLAINTEXT_REFUSAL)


def quote_server(text: bytes | str, *, secrets: Iterable[str] = ()) -> str:
    """Return a server's answer fit for a reason: secrets masked, then `printable()` within MAX_QUOTED_CHARS.

    A hostile or broken server may echo what we sent; masking comes before the cut so no piece of a secret survives.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    return printable(text, limit=MAX_QUOTED_CHARS)


@contextlib.contextmanager
def masking(secrets: Iterable[str]) -> Iterator[None]:
    """Re-raise a `ProbeError` from the block with `secrets` masked in its message (a server echoing our login)."""
    secrets = [secret for secret in secrets if secret]
    try:
        yield
    except ProbeError as error:
        message = str(error)
        masked = message
        for secret in secrets:
            masked = masked.replace(secret, _MASK)
        if masked == message:
            raise
        raise type(error)(masked) from None


@contextlib.contextmanager
def login_timer(details: dict[str, Any]) -> Iterator[None]:
    """Record `details["login_seconds"]`: from sending the credentials to the server's answer, failed or not.

    Servers delay a wrong password on purpose (Dovecot's auth_failure_delay is 2 s by default); the
    probe's one deadline covers that wait, and this figure shows how much of the latency it was.
    """
    started = time.monotonic()
    try:
        yield
    finally:
        details["login_seconds"] = round(time.monotonic() - started, 3)
