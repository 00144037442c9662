"""IMAP probe: greeting, CAPABILITY, optional STARTTLS and CAPABILITY again, LOGOUT; exposes `probe` and `Options`.

`details["capabilities"]` lists the atoms of the untagged CAPABILITY response as sent, e.g.
["IMAP4rev1", "STARTTLS", "LOGINDISABLED"]; after STARTTLS the second answer is in
`details["capabilities_after_tls"]`. The banner is the greeting line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools

from monitor.probes.errors import ConnectionClosed, ProtocolError, ServerRejected, StartTLSUnavailable
from monitor.probes.mailreply import read_reply
from monitor.probes.net import Connection, preview
from monitor.probes.options import ConnectionOptions
from monitor.probes.result import Result
from monitor.probes.session import Session, Target, converse

TLS_MODES = ("none", "starttls", "implicit")
MAX_RESPONSE_LINES = 100  # untagged lines before a command's tagged status
MAX_RESPONSE_BYTES = 32 * 1024  # bytes of one command's response, untagged lines included


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    """IMAP needs nothing beyond the connection options."""


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    tags = (f"A{number}" for number in itertools.count(1))

    async def dialogue(session: Session) -> None:
        conn = session.conn
        greeting = await conn.read_line(what="the IMAP greeting")
        session.set_banner(greeting)
        check_greeting(greeting)
        capabilities = session.details["capabilities"] = await capability(conn, next(tags))
        if target.tls == "starttls":
            if "STARTTLS" not in {atom.upper() for atom in capabilities}:
                raise StartTLSUnavailable("STARTTLS not offered in CAPABILITY reply")
            await command(conn, next(tags), "STARTTLS")
            await session.start_tls()
            session.details["capabilities_after_tls"] = await capability(conn, next(tags))
        await logout(conn, next(tags))

    return await converse(target, options, dialogue, deadline=deadline)


def check_greeting(line: bytes) -> None:
    """Accept "* OK" and "* PREAUTH"; a "* BYE" greeting is a refusal, anything else not IMAP."""
    status = line.split(b" ", 2)[1].upper() if line.startswith(b"* ") else b""
    if status == b"BYE":
        raise ServerRejected(f"server refused the IMAP session: {line.decode('utf-8', 'replace')}")
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
    """Send `name` under `tag` and return its untagged lines; raise unless the tagged status is OK.

    1. Read "* ..." lines until the first other line, within the named bounds.
    2. That line must carry our tag: OK passes, NO or BAD is a refusal.
    3. An untagged BYE means the server is ending the session.
    """
    await conn.write(f"{tag} {name}\r\n".encode("ascii"), what=name)
    what = f"the response to {name}"
    lines = await read_reply(
        conn,
        lambda line: not line.startswith(b"* ") or line[2:6].upper() == b"BYE ",
        what=what,
        max_lines=MAX_RESPONSE_LINES,
        max_bytes=MAX_RESPONSE_BYTES,
    )
    last = lines[-1]
    if last.startswith(b"* "):
        raise ServerRejected(f"server ended the session during {name}: {last.decode('utf-8', 'replace')}")
    if not last.startswith(tag.encode("ascii") + b" "):
        raise ProtocolError(f"{what} is not an IMAP response: {preview(last)}")
    status = last[len(tag) + 1 :]
    word = status.split(b" ", 1)[0].upper()
    if word == b"OK":
        return lines[:-1]
    if word in (b"NO", b"BAD"):
        raise ServerRejected(f"server rejected {name}: {status.decode('utf-8', 'replace')}")
    raise ProtocolError(f"{what} has no OK, NO or BAD status: {preview(last)}")


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
