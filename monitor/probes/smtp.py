"""SMTP probe: greeting, EHLO, optional STARTTLS and a second EHLO, QUIT; exposes `probe`, `Options`, `TLS_MODES`.

`details["extensions"]` maps each EHLO keyword, upper case, to its parameters, e.g.
{"SIZE": "35882577", "STARTTLS": "", "AUTH": "PLAIN LOGIN"}; after STARTTLS the second EHLO's
answer is in `details["extensions_after_tls"]`. The banner is the greeting as the server sent it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re

from monitor.probes.errors import ConnectionClosed, ProtocolError, ServerRejected, StartTLSUnavailable
from monitor.probes.mailreply import read_reply
from monitor.probes.net import Connection, preview
from monitor.probes.options import ConnectionOptions, OptionsError
from monitor.probes.result import Result
from monitor.probes.session import Session, Target, converse

TLS_MODES = ("none", "starttls", "implicit")
MAX_REPLY_LINES = 100  # lines in one reply; a real EHLO reply has about fifteen
MAX_REPLY_BYTES = 32 * 1024  # bytes in one reply; RFC 5321 caps a reply line at 512
_REPLY_LINE = re.compile(rb"(\d{3})(?:([ -])(.*))?", re.DOTALL)  # "250", "250 text" or "250-text"
_EHLO_NAME = re.compile(r"[!-~]+")  # printable ASCII without spaces: a CR or LF would inject commands


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
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
    async def dialogue(session: Session) -> None:
        conn = session.conn
        greeting = await read_smtp_reply(conn, what="the SMTP greeting")
        session.set_banner("\n".join(f"{greeting.code} {line}".rstrip() for line in greeting.lines))
        expect(greeting, 220, "server refused the SMTP session", what="the SMTP greeting")
        extensions = session.details["extensions"] = await ehlo(conn, options.ehlo_name)
        if target.tls == "starttls":
            if "STARTTLS" not in extensions:
                raise StartTLSUnavailable("STARTTLS not offered in EHLO reply")
            await conn.write(b"STARTTLS\r\n", what="STARTTLS")
            reply = await read_smtp_reply(conn, what="the reply to STARTTLS")
            expect(reply, 220, "server rejected STARTTLS", what="the reply to STARTTLS")
            await session.start_tls()
            session.details["extensions_after_tls"] = await ehlo(conn, options.ehlo_name)
        await quit_session(conn)

    return await converse(target, options, dialogue, deadline=deadline)


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
