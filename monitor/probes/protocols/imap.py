"""IMAP probe: greeting, CAPABILITY, optional STARTTLS and CAPABILITY again, optional LOGIN and EXAMINE, LOGOUT.

`details["capabilities"]` lists the atoms of the untagged CAPABILITY response as sent, e.g.
["IMAP4rev1", "STARTTLS", "LOGINDISABLED"]; after STARTTLS the second answer is in
`details["capabilities_after_tls"]`. The banner is the greeting line.
`details["plaintext_login_offered"]` says whether LOGIN was allowed before TLS (no LOGINDISABLED).
With a username, the probe logs in with LOGIN and counts INBOX with EXAMINE: `messages`,
`login_seconds`; a refusal is `auth_failed` with the server's answer. Exposes `probe` and `Options`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re

from monitor.probes.errors import AuthFailed, ConnectionClosed, ProtocolError, ServerRejected, StartTLSUnavailable
from monitor.probes.mailreply import ensure_private, login_refusal, login_timer, masking, quote_server, read_reply
from monitor.probes.net import Connection, preview
from monitor.probes.options import LoginOptions, TLSOptions
from monitor.probes.protocol import Protocol, Scheme, login_url_options
from monitor.probes.result import Result
from monitor.probes.session import Session, Target, converse
from monitor.probes.text import printable

TLS_MODES = ("none", "starttls", "implicit")
MAX_RESPONSE_LINES = 100  # untagged lines before a command's tagged status
MAX_RESPONSE_BYTES = 32 * 1024  # bytes of one command's response, untagged lines included
_EXISTS = re.compile(rb"\* (\d{1,10}) EXISTS", re.IGNORECASE)  # bounded digits: int() stays cheap
# RFC 5530 codes that blame the server, not the account: the credentials may well be right.
SERVER_CODES = (b"[UNAVAILABLE]", b"[SERVERBUG]", b"[INUSE]", b"[LIMIT]")


@dataclasses.dataclass(frozen=True)
class Options(TLSOptions, LoginOptions):
    """The connection options, and the account to log in with (LOGIN, only over TLS unless allowed)."""


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    if (refusal := login_refusal(target, options)) is not None:
        return refusal
    tags = (f"A{number}" for number in itertools.count(1))

    async def dialogue(session: Session) -> None:
        conn = session.conn
        greeting = await conn.read_line(what="the IMAP greeting")
        session.set_banner(greeting)
        check_greeting(greeting)
        capabilities = await capability(conn, next(tags))
        session.details["capabilities"] = [printable(atom) for atom in capabilities]
        offered_in_clear = target.tls != "implicit" and "LOGINDISABLED" not in atoms(capabilities)
        session.details["plaintext_login_offered"] = offered_in_clear
        if target.tls == "starttls":
            if "STARTTLS" not in atoms(capabilities):
                raise StartTLSUnavailable("STARTTLS not offered in CAPABILITY reply")
            await command(conn, next(tags), "STARTTLS")
            await session.start_tls()
            capabilities = await capability(conn, next(tags))
            session.details["capabilities_after_tls"] = [printable(atom) for atom in capabilities]
        if options.logs_in:
            await login(session, options, next(tags), capabilities)
            await count_messages(session, next(tags))
        await logout(conn, next(tags))

    return await converse(target, options, dialogue, deadline=deadline)


async def login(session: Session, options: Options, tag: str, capabilities: list[str]) -> None:
    """Log in with LOGIN (RFC 3501 6.2.3), each string quoted, or sent as a literal when it is not ASCII.

    1. LOGINDISABLED among the connection's capabilities forbids LOGIN: it is not sent, `auth_failed`.
    2. A synchronizing literal waits for the server's "+" before its bytes; LITERAL+ (RFC 7888) does not.
    3. OK is success. NO is `auth_failed` with the server's answer, unless an RFC 5530 code blames the
       server ([UNAVAILABLE], [SERVERBUG], [INUSE], [LIMIT]); that and BAD are `server_rejected`.
    """
    if "LOGINDISABLED" in atoms(capabilities):
        raise AuthFailed("the server refuses LOGIN on this connection (LOGINDISABLED in CAPABILITY)")
    ensure_private(session, options)
    conn, secrets, what = session.conn, [options.password or ""], "the login answer to LOGIN"
    pieces = login_command(tag, options.username, options.password or "", nonsync="LITERAL+" in atoms(capabilities))
    with masking(secrets):
        with login_timer(session.details):
            for piece in pieces[:-1]:
                await conn.write(piece, what="LOGIN")
                lines = await read_response(conn, "LOGIN", what=what)
                if not lines[-1].startswith(b"+"):
                    break  # refused before the literal's bytes were asked for: that is the answer
            else:
                await conn.write(pieces[-1], what="LOGIN")
                lines = await read_response(conn, "LOGIN", what=what)
        word, status = tagged_status(lines[-1], tag, what=what)
        if word == b"OK":
            return
        answer = quote_server(status, secrets=secrets)
        if word == b"NO" and not status[2:].lstrip().upper().startswith(SERVER_CODES):
            raise AuthFailed(f"login refused (LOGIN): {answer}")
        raise ServerRejected(f"server rejected LOGIN: {answer}")


def login_command(tag: str, username: str, password: str, *, nonsync: bool) -> list[bytes]:
    """Return LOGIN in pieces to send in turn; every piece but the last ends announcing a synchronizing literal."""
    pieces: list[bytes] = []
    current = f"{tag} LOGIN".encode("ascii")
    for value in (username, password):
        if value.isascii():
            current += b" " + quoted(value)
            continue
        data = value.encode("utf-8")
        current += b" {%d%s}\r\n" % (len(data), b"+" if nonsync else b"")
        if not nonsync:
            pieces.append(current)
            current = b""
        current += data
    return [*pieces, current + b"\r\n"]


def quoted(value: str) -> bytes:
    """Return ASCII `value` as an IMAP quoted string, backslash and double quote escaped; options refuse CR LF NUL."""
    return b'"' + value.encode("ascii").replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


async def count_messages(session: Session, tag: str) -> None:
    """Record `messages` in INBOX from EXAMINE's EXISTS count.

    EXAMINE opens the mailbox read-only (RFC 3501 6.3.2), where SELECT would clear the \\Recent flag of
    new mail: a probe every minute would take "new" away from the owner's mail client.
    """
    for line in await command(session.conn, tag, "EXAMINE INBOX"):
        if match := _EXISTS.fullmatch(line):
            session.details["messages"] = int(match[1])
            return
    raise ProtocolError("the response to EXAMINE INBOX has no EXISTS count")


def atoms(capabilities: list[str]) -> set[str]:
    return {atom.upper() for atom in capabilities}


def check_greeting(line: bytes) -> None:
    """Accept "* OK" and "* PREAUTH"; a "* BYE" greeting is a refusal, anything else not IMAP."""
    status = line.split(b" ", 2)[1].upper() if line.startswith(b"* ") else b""
    if status == b"BYE":
        raise ServerRejected(f"server refused the IMAP session: {quote_server(line)}")
    if status not in (b"OK", b"PREAUTH"):
        raise ProtocolError(f"the IMAP greeting is not * OK, * PREAUTH or * BYE: {preview(line)}")


async def capability(conn: Connection, tag: str) -> list[str]:
    """Send CAPABILITY and return the atoms of the untagged CAPABILITY response."""
    atoms: list[str] = []
    for line in await command(conn, tag, "CAPABILITY"):
        words = line.decode("utf-8", "replace").split()
        if len(words) > 1 and words[1].upper() == "CAPABILITY":
            atoms += words[2:]
    return atoms


async def command(conn: Connection, tag: str, name: str) -> list[bytes]:
    """Send `name` under `tag` and return its untagged lines; raise unless the tagged status is OK."""
    await conn.write(f"{tag} {name}\r\n".encode("ascii"), what=name)
    lines = await read_response(conn, name)
    word, status = tagged_status(lines[-1], tag, what=f"the response to {name}")
    if word != b"OK":
        raise ServerRejected(f"server rejected {name}: {quote_server(status)}")
    return lines[:-1]


async def read_response(conn: Connection, name: str, *, what: str | None = None) -> list[bytes]:
    """Return the "* ..." lines of a response through the first other line (a tagged status or a "+").

    The lines are read within the named bounds; an untagged BYE means the server is ending the session.
    """
    lines = await read_reply(
        conn,
        lambda line: not line.startswith(b"* ") or line[2:6].upper() == b"BYE ",
        what=what or f"the response to {name}",
        max_lines=MAX_RESPONSE_LINES,
        max_bytes=MAX_RESPONSE_BYTES,
    )
    if lines[-1].startswith(b"* "):
        raise ServerRejected(f"server ended the session during {name}: {quote_server(lines[-1])}")
    return lines


def tagged_status(line: bytes, tag: str, *, what: str) -> tuple[bytes, bytes]:
    """Return (OK, NO or BAD, the status after the tag) of a tagged line; raise `ProtocolError` for anything else."""
    if not line.startswith(tag.encode("ascii") + b" "):
        raise ProtocolError(f"{what} is not an IMAP response: {preview(line)}")
    status = line[len(tag) + 1 :]
    word = status.split(b" ", 1)[0].upper()
    if word not in (b"OK", b"NO", b"BAD"):
        raise ProtocolError(f"{what} has no OK, NO or BAD status: {preview(line)}")
    return word, status


async def logout(conn: Connection, tag: str) -> None:
    """Say goodbye; the "* BYE" that LOGOUT earns ends the session, whatever comes after it."""
    await conn.write(f"{tag} LOGOUT\r\n".encode("ascii"), what="LOGOUT")
    with contextlib.suppress(ConnectionClosed):
        await read_reply(
            conn,
            lambda line: line.startswith(tag.encode("ascii") + b" "),
            what="the response to LOGOUT",
            max_lines=MAX_RESPONSE_LINES,
            max_bytes=MAX_RESPONSE_BYTES,
        )


PROTOCOL = Protocol(
    key="imap",
    label="IMAP",
    summary="greeting, CAPABILITY, optional STARTTLS and a second CAPABILITY, optional LOGIN and EXAMINE, LOGOUT",
    options=Options,
    probe=probe,
    url_options=login_url_options,  # smtp://alice@host names the account to log in as
    blackbox_prober="tcp",
    tls_modes=TLS_MODES,
    schemes=(Scheme("imap", "none", 143), Scheme("imaps", "implicit", 993)),
    shown=(
        ("capabilities", "Capabilities"),
        ("capabilities_after_tls", "Capabilities after STARTTLS"),
        ("plaintext_login_offered", "Login offered without TLS"),
        ("messages", "Messages in INBOX"),
        ("login_seconds", "Login time (s)"),
    ),
)
