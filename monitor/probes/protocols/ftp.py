"""FTP probe: greeting, FEAT, optional AUTH TLS and a second FEAT, optional login, QUIT; exposes `probe` and `Options`.

`details["features"]` lists the FEAT reply's feature lines as sent, e.g. ["AUTH TLS", "EPSV", "REST STREAM"],
and is empty when the server does not implement FEAT (RFC 2389 is optional); after AUTH TLS the second
FEAT is in `details["features_after_tls"]`. The banner is the 220 greeting, every line of it.

`details["plaintext_login_offered"]`: FTP has no capability that says "no login before TLS" (IMAP's
LOGINDISABLED), so a server only shows it by refusing USER. Without TLS (mode none) it is True unless
the USER we sent was refused with 530 (vsftpd: "Non-anonymous sessions must use encryption"); without a
login to try, a server greeting in plaintext is taken at its word. With implicit TLS it is False: nothing
on the port is plaintext. With AUTH TLS it is left out: the probe never sends USER over plaintext there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re

from monitor.probes.errors import (
    AuthFailed,
    ConfigError,
    ConnectionClosed,
    ProtocolError,
    ServerRejected,
    StartTLSUnavailable,
)
from monitor.probes.mailreply import PLAINTEXT_REFUSAL, read_reply
from monitor.probes.net import Connection, preview
from monitor.probes.options import LoginOptions, TLSOptions
from monitor.probes.protocol import Protocol, Scheme, login_url_options
from monitor.probes.result import Phases, Result
from monitor.probes.session import Session, Target, converse
from monitor.probes.text import printable

TLS_MODES = ("none", "starttls", "implicit")
MAX_REPLY_LINES = 100  # lines in one reply; vsftpd's FEAT has about twelve, ProFTPD's about twenty
MAX_REPLY_BYTES = 32 * 1024  # bytes in one reply
MAX_REPLY_CHARS = 300  # of a reply quoted in a reason: a welcome message can be a page of ASCII art
MAX_FEATURE_CHARS = 200  # of one feature line kept in details
NOT_IMPLEMENTED = (500, 502)  # RFC 2389: what a server without FEAT answers it with
_REPLY_LINE = re.compile(rb"(\d{3})(?:([ -])(.*))?", re.DOTALL)  # "220", "220 text" or "220-text"


@dataclasses.dataclass(frozen=True)
class Options(TLSOptions, LoginOptions):
    """FTP needs nothing beyond the connection, TLS and login options."""


@dataclasses.dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text of each line, without its code, through `printable()`

    def __str__(self) -> str:
        return printable(f"{self.code} {' / '.join(line for line in self.lines if line)}", limit=MAX_REPLY_CHARS)


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    if options.logs_in and target.tls == "none" and not options.allow_plaintext_login:
        # Known before connecting: nothing is measured, and the server never sees the account.
        return Result(ConfigError.status, ConfigError.failure, PLAINTEXT_REFUSAL, Phases())

    async def dialogue(session: Session) -> None:
        conn = session.conn
        greeting = await read_ftp_reply(conn, what="the FTP greeting")
        if greeting.code == 120:  # RFC 959: "service ready in nnn minutes"; the 220 follows when it is
            greeting = await read_ftp_reply(conn, what="the FTP greeting after 120")
        session.set_banner("\n".join(f"{greeting.code} {line}".rstrip() for line in greeting.lines))
        expect(greeting, (220,), "server refused the FTP session", what="the FTP greeting")
        if target.tls != "starttls":
            session.details["plaintext_login_offered"] = target.tls == "none"
        features = await feat(conn)
        session.details["features"] = features or []
        if target.tls == "starttls":
            await auth_tls(session, features)
            session.details["features_after_tls"] = await feat(conn) or []
        if options.logs_in:
            await login(session, options)
        await quit_session(conn)

    return await converse(target, options, dialogue, deadline=deadline)


async def feat(conn: Connection) -> list[str] | None:
    """Send FEAT and return the feature lines; None when the server does not implement FEAT."""
    reply = await command(conn, "FEAT")
    if reply.code in NOT_IMPLEMENTED:
        return None
    expect(reply, (211,), "server rejected FEAT", what="the reply to FEAT")
    # The first and last lines are "Features:" and "End"; each feature line between starts with a space.
    return [line[:MAX_FEATURE_CHARS] for line in reply.lines[1:-1] if line]  # printable() stripped them


async def auth_tls(session: Session, features: list[str] | None) -> None:
    """Upgrade with AUTH TLS (RFC 4217); a server whose FEAT lists no AUTH TLS is not asked.

    RFC 4217 requires a server that implements FEAT to list AUTH there, so its absence is an answer.
    """
    if features is not None and not offers_auth_tls(features):
        raise StartTLSUnavailable("AUTH TLS not offered in FEAT reply")
    reply = await command(session.conn, "AUTH TLS")
    if reply.code in (*NOT_IMPLEMENTED, 504):  # 504: "security mechanism not understood"
        raise StartTLSUnavailable(f"server does not support AUTH TLS: {reply}")
    expect(reply, (234,), "server rejected AUTH TLS", what="the reply to AUTH TLS")
    await session.start_tls()


def offers_auth_tls(features: list[str]) -> bool:
    """Return whether a FEAT list offers AUTH TLS: "AUTH TLS", or a list such as "AUTH TLS;TLS-C;SSL"."""
    for line in features:
        keyword, _, mechanisms = line.partition(" ")
        if keyword.upper() == "AUTH" and {"TLS", "TLS-C"} & set(re.split(r"[;,\s]+", mechanisms.upper())):
            return True
    return False


async def login(session: Session, options: Options) -> None:
    """Log in with USER and PASS; under TLS, then PBSZ 0 and PROT P, as clients do before a transfer.

    A 530 to USER or PASS is the login refused (auth_failed); other refusals are the server's (421 above all).
    """
    conn = session.conn
    reply = await command(conn, f"USER {options.username}", name="USER")
    if session.target.tls == "none" and reply.code == 530:
        session.details["plaintext_login_offered"] = False
    expect(reply, (230, 232, 331), "server refused the user name", what="the reply to USER", login=True)
    if reply.code == 331:  # 230 and 232 (RFC 4217): logged in without a password
        # With no password set, send an empty one, as curl does; the reply says whether that was enough.
        reply = await command(conn, f"PASS {options.password or ''}", name="PASS")
        expect(reply, (202, 230), "server refused the password", what="the reply to PASS", login=True)
    if conn.tls is not None:
        for line in ("PBSZ 0", "PROT P"):
            expect(await command(conn, line), (200,), f"server rejected {line}", what=f"the reply to {line}")


async def quit_session(conn: Connection) -> None:
    """Say goodbye; a server that hangs up instead of answering has still done its job."""
    await conn.write(b"QUIT\r\n", what="QUIT")
    with contextlib.suppress(ConnectionClosed):
        await read_ftp_reply(conn, what="the reply to QUIT")


async def command(conn: Connection, line: str, *, name: str | None = None) -> Reply:
    """Send one command line and return its reply; `name` is what errors call it (never the password)."""
    name = name or line
    await conn.write(f"{line}\r\n".encode(), what=name)
    return await read_ftp_reply(conn, what=f"the reply to {name}")


async def read_ftp_reply(conn: Connection, *, what: str) -> Reply:
    """Return one reply: "NNN text", or "NNN-text" and every line up to the one starting "NNN " (RFC 959 4.2).

    Lines between the first and last may hold anything, digits included; only the same code followed
    by a space ends the reply, within the named bounds.
    """
    first = await conn.read_line(what=what)
    match = _REPLY_LINE.fullmatch(first)
    if match is None:
        raise ProtocolError(f"{what} is not an FTP reply: {preview(first)}")
    code, texts = match[1], [match[3] or b""]
    if match[2] == b"-":
        rest = await read_reply(
            conn,
            lambda line: line.startswith(code + b" ") or line == code,
            what=what,
            max_lines=MAX_REPLY_LINES,
            max_bytes=MAX_REPLY_BYTES,
        )
        texts += [*rest[:-1], rest[-1][4:]]
    return Reply(int(code), tuple(printable(text) for text in texts))


def expect(reply: Reply, codes: tuple[int, ...], refusal: str, *, what: str, login: bool = False) -> None:
    """Raise unless the reply has one of `codes`: a 530 to a login is `AuthFailed`, other 4xx and 5xx refusals."""
    if reply.code in codes:
        return
    if login and reply.code == 530:
        raise AuthFailed(f"{refusal}: {reply}")
    if 400 <= reply.code < 600:
        raise ServerRejected(f"{refusal}: {reply}")
    raise ProtocolError(f"expected {' or '.join(map(str, codes))} in {what}, got {reply}")


PROTOCOL = Protocol(
    key="ftp",
    label="FTP",
    summary="greeting, FEAT, optional AUTH TLS and a second FEAT, optional login, QUIT",
    options=Options,
    probe=probe,
    blackbox_prober="tcp",  # blackbox would probe it with its tcp prober: connection and TLS families
    tls_modes=TLS_MODES,
    schemes=(Scheme("ftp", "none", 21), Scheme("ftps", "implicit", 990)),
    url_options=login_url_options,
    shown=(
        ("features", "FEAT"),
        ("features_after_tls", "FEAT after AUTH TLS"),
        ("plaintext_login_offered", "Login offered without TLS"),
    ),
)
