"""POP3 probe: greeting, CAPA, optional STLS and a second CAPA, QUIT; exposes `probe`, `Options`, `TLS_MODES`.

`details["capabilities"]` lists the CAPA reply's lines as sent, e.g. ["TOP", "UIDL", "STLS", "SASL PLAIN"],
and is empty when the server answers CAPA with -ERR (RFC 2449 is optional); after STLS the second
CAPA is in `details["capabilities_after_tls"]`. The banner is the greeting line.
"""

from __future__ import annotations

import contextlib
import dataclasses

from monitor.probes.errors import ConnectionClosed, ProtocolError, ServerRejected, StartTLSUnavailable
from monitor.probes.mailreply import read_reply
from monitor.probes.net import Connection, preview
from monitor.probes.options import ConnectionOptions
from monitor.probes.result import Result
from monitor.probes.session import Session, Target, converse

TLS_MODES = ("none", "starttls", "implicit")
MAX_CAPA_LINES = 100  # lines in the CAPA list; Dovecot sends about ten
MAX_CAPA_BYTES = 32 * 1024  # bytes in the CAPA list


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    """POP3 needs nothing beyond the connection options."""


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    async def dialogue(session: Session) -> None:
        conn = session.conn
        greeting = await read_status(conn, what="the POP3 greeting")
        session.set_banner(greeting)
        expect_ok(greeting, "server refused the POP3 session")
        capabilities = session.details["capabilities"] = await capa(conn)
        if target.tls == "starttls":
            if "STLS" not in {line.split(" ")[0].upper() for line in capabilities}:
                raise StartTLSUnavailable("STLS not offered in CAPA reply")
            await conn.write(b"STLS\r\n", what="STLS")
            expect_ok(await read_status(conn, what="the reply to STLS"), "server rejected STLS")
            await session.start_tls()
            session.details["capabilities_after_tls"] = await capa(conn)
        await quit_session(conn)

    return await converse(target, options, dialogue, deadline=deadline)


async def capa(conn: Connection) -> list[str]:
    """Send CAPA and return the capability lines; an -ERR means the server predates CAPA: none."""
    await conn.write(b"CAPA\r\n", what="CAPA")
    if (await read_status(conn, what="the reply to CAPA")).startswith("-ERR"):
        return []
    lines = await read_reply(
        conn, lambda line: line == b".", what="the CAPA list", max_lines=MAX_CAPA_LINES, max_bytes=MAX_CAPA_BYTES
    )
    # RFC 1939 dot-stuffing: a line that starts with "." was sent with one more.
    return [line.removeprefix(b".").decode("utf-8", "replace") for line in lines[:-1]]


async def quit_session(conn: Connection) -> None:
    """Say goodbye; a server that hangs up instead of answering has still done its job."""
    await conn.write(b"QUIT\r\n", what="QUIT")
    with contextlib.suppress(ConnectionClosed):
        await read_status(conn, what="the reply to QUIT")


async def read_status(conn: Connection, *, what: str) -> str:
    """Return a "+OK ..." or "-ERR ..." status line; raise `ProtocolError` for anything else."""
    line = await conn.read_line(what=what)
    if not line.startswith((b"+OK", b"-ERR")):
        raise ProtocolError(f"{what} is not a POP3 reply: {preview(line)}")
    return line.decode("utf-8", "replace")


def expect_ok(status: str, refusal: str) -> None:
    if status.startswith("-ERR"):
        raise ServerRejected(f"{refusal}: {status}")
