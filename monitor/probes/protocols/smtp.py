"""SMTP probe: greeting, EHLO, optional STARTTLS and a second EHLO, optional AUTH, QUIT; exposes `probe`, `Options`.

`details["extensions"]` maps each EHLO keyword, upper case, to its parameters, e.g.
{"SIZE": "35882577", "STARTTLS": "", "AUTH": "PLAIN LOGIN"}; after STARTTLS the second EHLO's
answer is in `details["extensions_after_tls"]`. The banner is the greeting as the server sent it.
`details["plaintext_login_offered"]` says whether AUTH was offered before TLS (for the audit).
With a username, the probe logs in (RFC 4954: PLAIN, else LOGIN) and records `auth_mechanism` and
`login_seconds`; a refusal is `auth_failed` with the server's answer.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import re

from monitor.probes.errors import AuthFailed, ConnectionClosed, ProtocolError, ServerRejected, StartTLSUnavailable
from monitor.probes.mailreply import ensure_private, login_refusal, login_timer, masking, quote_server, read_reply
from monitor.probes.net import Connection, preview
from monitor.probes.options import LoginOptions, OptionsError, TLSOptions
from monitor.probes.protocol import Protocol, Scheme, login_url_options
from monitor.probes.result import Result
from monitor.probes.session import Session, Target, converse
from monitor.probes.text import printable

TLS_MODES = ("none", "starttls", "implicit")
MAX_REPLY_LINES = 100  # lines in one reply; a real EHLO reply has about fifteen
MAX_REPLY_BYTES = 32 * 1024  # bytes in one reply; RFC 5321 caps a reply line at 512
_REPLY_LINE = re.compile(rb"(\d{3})(?:([ -])(.*))?", re.DOTALL)  # "250", "250 text" or "250-text"
_EHLO_NAME = re.compile(r"[!-~]+")  # printable ASCII without spaces: a CR or LF would inject commands
AUTH_MECHANISMS = ("PLAIN", "LOGIN")  # in order of preference; both carry the password, so only over TLS


@dataclasses.dataclass(frozen=True)
class Options(TLSOptions, LoginOptions):
    ehlo_name: str = "portwatch.localdomain"  # the name we give in EHLO

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _EHLO_NAME.fullmatch(self.ehlo_name):
            raise OptionsError("ehlo_name", f"must be a host name without spaces, not {self.ehlo_name!r}")


@dataclasses.dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text after the code, one item per line

    def __str__(self) -> str:
        return f"{self.code} {' / '.join(line for line in self.lines if line)}".rstrip()


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    if (refusal := login_refusal(target, options)) is not None:
        return refusal

    async def dialogue(session: Session) -> None:
        conn = session.conn
        greeting = await read_smtp_reply(conn, what="the SMTP greeting")
        session.set_banner("\n".join(f"{greeting.code} {line}".rstrip() for line in greeting.lines))
        expect(greeting, 220, "server refused the SMTP session", what="the SMTP greeting")
        extensions = await ehlo(conn, options.ehlo_name)
        session.details["extensions"] = shown(extensions)
        session.details["plaintext_login_offered"] = target.tls != "implicit" and "AUTH" in extensions
        if target.tls == "starttls":
            if "STARTTLS" not in extensions:
                raise StartTLSUnavailable("STARTTLS not offered in EHLO reply")
            await conn.write(b"STARTTLS\r\n", what="STARTTLS")
            reply = await read_smtp_reply(conn, what="the reply to STARTTLS")
            expect(reply, 220, "server rejected STARTTLS", what="the reply to STARTTLS")
            await session.start_tls()
            extensions = await ehlo(conn, options.ehlo_name)
            session.details["extensions_after_tls"] = shown(extensions)
        if options.logs_in:
            await authenticate(session, options, extensions)
        await quit_session(conn)

    return await converse(target, options, dialogue, deadline=deadline)


async def authenticate(session: Session, options: Options, extensions: dict[str, str]) -> None:
    """Log in with AUTH PLAIN (one round trip), or AUTH LOGIN when the server offers only that.

    1. Pick the mechanism from the EHLO AUTH list; none of ours offered is `auth_failed`: the
       account cannot log in here (many servers offer AUTH only after STARTTLS).
    2. PLAIN sends the credentials with the command (RFC 4954 initial response); LOGIN answers the
       server's two 334 prompts. `login_seconds` counts from the line that carries the password.
    3. 235 is success; 5xx is `auth_failed` and 4xx (a temporary failure) `server_rejected`, with the answer.
    """
    offered = extensions.get("AUTH")
    if offered is None:
        raise AuthFailed("AUTH not offered in EHLO reply; the server accepts no login on this connection")
    mechanism = next((name for name in AUTH_MECHANISMS if name in offered.upper().split()), None)
    if mechanism is None:
        raise AuthFailed(f"none of the AUTH mechanisms offered is PLAIN or LOGIN: {quote_server(offered)}")
    ensure_private(session, options)
    session.details["auth_mechanism"] = mechanism
    conn, command = session.conn, f"AUTH {mechanism}"
    user, password = options.username.encode("utf-8"), (options.password or "").encode("utf-8")
    plain = b64(b"\0" + user + b"\0" + password)
    secrets = [options.password or "", plain.decode("ascii"), b64(password).decode("ascii")]
    with masking(secrets):
        if mechanism == "PLAIN":
            with login_timer(session.details):
                await conn.write(b"AUTH PLAIN " + plain + b"\r\n", what=command)
                reply = await read_smtp_reply(conn, what=f"the login answer to {command}")
        else:
            await conn.write(b"AUTH LOGIN\r\n", what=command)
            check_auth_reply(await read_smtp_reply(conn, what=f"the reply to {command}"), 334, command, secrets)
            await conn.write(b64(user) + b"\r\n", what="the username")
            check_auth_reply(await read_smtp_reply(conn, what="the reply to the username"), 334, command, secrets)
            with login_timer(session.details):
                await conn.write(b64(password) + b"\r\n", what="the password")
                reply = await read_smtp_reply(conn, what=f"the login answer to {command}")
        check_auth_reply(reply, 235, command, secrets)


def check_auth_reply(reply: Reply, code: int, command: str, secrets: list[str]) -> None:
    """Raise `AuthFailed` for a 5xx, `ServerRejected` for a 4xx and `ProtocolError` for any other code but `code`."""
    if reply.code == code:
        return
    answer = quote_server(str(reply), secrets=secrets)
    if 500 <= reply.code < 600:
        raise AuthFailed(f"login refused ({command}): {answer}")
    if 400 <= reply.code < 500:
        raise ServerRejected(f"login failed for now ({command}): {answer}")
    raise ProtocolError(f"expected {code} in the reply to {command}, got {answer}")


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


async def ehlo(conn: Connection, name: str) -> dict[str, str]:
    """Send EHLO and return the extensions the server lists, keyword (upper case) to parameters."""
    await conn.write(f"EHLO {name}\r\n".encode("ascii"), what="EHLO")
    reply = await read_smtp_reply(conn, what="the reply to EHLO")
    expect(reply, 250, "server rejected EHLO", what="the reply to EHLO")
    extensions: dict[str, str] = {}
    for line in reply.lines[1:]:  # the first line is the server's name
        keyword, _, parameters = line.strip().partition(" ")
        if keyword:
            extensions[keyword.upper()] = parameters.strip()
    return extensions


def shown(extensions: dict[str, str]) -> dict[str, str]:
    """Return the extensions for details through `printable()`; the dialogue decides on them as the server sent them."""
    return {printable(keyword): printable(parameters) for keyword, parameters in extensions.items()}


async def quit_session(conn: Connection) -> None:
    """Say goodbye; a server that hangs up instead of answering has still done its job."""
    await conn.write(b"QUIT\r\n", what="QUIT")
    with contextlib.suppress(ConnectionClosed):
        await read_smtp_reply(conn, what="the reply to QUIT")


async def read_smtp_reply(conn: Connection, *, what: str) -> Reply:
    """Return one reply, all its "NNN-" lines and the final "NNN " line; raise on anything else."""

    def is_last(line: bytes) -> bool:
        return not _REPLY_LINE.fullmatch(line) or line[3:4] != b"-"  # a malformed line ends it too

    raw = await read_reply(conn, is_last, what=what, max_lines=MAX_REPLY_LINES, max_bytes=MAX_REPLY_BYTES)
    codes: set[int] = set()
    lines: list[str] = []
    for line in raw:
        match = _REPLY_LINE.fullmatch(line)
        if match is None:
            raise ProtocolError(f"{what} is not an SMTP reply: {preview(line)}")
        codes.add(int(match[1]))
        lines.append((match[3] or b"").decode("utf-8", "replace"))
    if len(codes) > 1:
        raise ProtocolError(f"{what} mixes reply codes {', '.join(map(str, sorted(codes)))}")
    return Reply(codes.pop(), tuple(lines))


def expect(reply: Reply, code: int, refusal: str, *, what: str) -> None:
    """Raise `ServerRejected` for a 4xx or 5xx reply and `ProtocolError` for any other code but `code`."""
    if reply.code == code:
        return
    if 400 <= reply.code < 600:
        raise ServerRejected(f"{refusal}: {reply}")
    raise ProtocolError(f"expected {code} in {what}, got {reply}")


PROTOCOL = Protocol(
    key="smtp",
    label="SMTP",
    summary="greeting, EHLO, optional STARTTLS and a second EHLO, optional AUTH login, QUIT",
    options=Options,
    probe=probe,
    url_options=login_url_options,  # smtp://alice@host names the account to log in as
    blackbox_prober="tcp",
    tls_modes=TLS_MODES,
    schemes=(Scheme("smtp", "none", 25), Scheme("submission", "starttls", 587), Scheme("smtps", "implicit", 465)),
    shown=(
        ("extensions", "EHLO"),
        ("extensions_after_tls", "EHLO after STARTTLS"),
        ("plaintext_login_offered", "Login offered without TLS"),
        ("auth_mechanism", "AUTH mechanism"),
        ("login_seconds", "Login time (s)"),
    ),
)
