"""POP3 probe: greeting, CAPA, optional STLS and a second CAPA, optional login and STAT, QUIT; exposes `probe`.

`details["capabilities"]` lists the CAPA reply's lines as sent, e.g. ["TOP", "UIDL", "STLS", "SASL PLAIN"],
and is empty when the server answers CAPA with -ERR (RFC 2449 is optional); after STLS the second
CAPA is in `details["capabilities_after_tls"]`. The banner is the greeting line.
`details["plaintext_login_offered"]` says whether CAPA offered USER or SASL before TLS (absent when
the server answered CAPA with -ERR: nothing tells). With a username, the probe logs in with USER/PASS
and counts the mailbox with STAT: `messages`, `mailbox_bytes`, `login_seconds`; a refusal is `auth_failed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
MAX_CAPA_LINES = 100  # lines in the CAPA list; Dovecot sends about ten
MAX_CAPA_BYTES = 32 * 1024  # bytes in the CAPA list
_STAT = re.compile(rb"\+OK (\d{1,18}) (\d{1,18})(?: .*)?")  # "+OK 3 516": bounded digits, int() stays cheap
# RFC 3206 codes that blame the server, not the account: the login itself may have been fine.
SERVER_CODES = ("[SYS/TEMP]", "[SYS/PERM]", "[IN-USE]")


@dataclasses.dataclass(frozen=True)
class Options(TLSOptions, LoginOptions):
    """The connection options, and the account to log in with (USER/PASS, only over TLS unless allowed)."""


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    if (refusal := login_refusal(target, options)) is not None:
        return refusal

    async def dialogue(session: Session) -> None:
        conn = session.conn
        greeting = await read_status(conn, what="the POP3 greeting")
        session.set_banner(greeting)
        expect_ok(greeting, "server refused the POP3 session")
        capabilities = await capa(conn)
        session.details["capabilities"] = [printable(line) for line in capabilities or []]
        # Implicit TLS offers nothing in the clear; a server that answers CAPA with -ERR tells nothing.
        if target.tls == "implicit" or capabilities is not None:
            session.details["plaintext_login_offered"] = target.tls != "implicit" and offers_login(capabilities)
        if target.tls == "starttls":
            if "STLS" not in keywords(capabilities):
                raise StartTLSUnavailable("STLS not offered in CAPA reply")
            await conn.write(b"STLS\r\n", what="STLS")
            expect_ok(await read_status(conn, what="the reply to STLS"), "server rejected STLS")
            await session.start_tls()
            capabilities = await capa(conn)
            session.details["capabilities_after_tls"] = [printable(line) for line in capabilities or []]
        if options.logs_in:
            await login(session, options, capabilities)
            await stat(session)
        await quit_session(conn)

    return await converse(target, options, dialogue, deadline=deadline)


async def login(session: Session, options: Options, capabilities: list[str] | None) -> None:
    """Log in with USER and PASS (RFC 1939); a server whose CAPA lacks USER does not take them.

    An -ERR is `auth_failed` with the server's answer, unless an RFC 3206 code blames the server
    ([SYS/TEMP], [SYS/PERM], [IN-USE]): then it is `server_rejected`.
    """
    if capabilities is not None and "USER" not in keywords(capabilities):
        raise AuthFailed("USER not offered in CAPA reply; the server accepts no USER/PASS login on this connection")
    ensure_private(session, options)
    conn, secrets = session.conn, [options.password or ""]
    with masking(secrets):
        await conn.write(f"USER {options.username}\r\n".encode(), what="USER")
        check_login(await read_status(conn, what="the reply to USER"), "USER", secrets)
        with login_timer(session.details):
            await conn.write(f"PASS {options.password}\r\n".encode(), what="PASS")
            answer = await read_status(conn, what="the login answer to PASS")
        check_login(answer, "PASS", secrets)


def check_login(status: str, command: str, secrets: list[str]) -> None:
    if not status.startswith("-ERR"):
        return
    answer = quote_server(status, secrets=secrets)
    if status[4:].lstrip().upper().startswith(SERVER_CODES):
        raise ServerRejected(f"login failed on the server's side ({command}): {answer}")
    raise AuthFailed(f"login refused ({command}): {answer}")


async def stat(session: Session) -> None:
    """Count the mailbox with STAT: `messages` and `mailbox_bytes` (RFC 1939 "+OK nn mm")."""
    await session.conn.write(b"STAT\r\n", what="STAT")
    status = await read_status(session.conn, what="the reply to STAT")
    expect_ok(status, "server rejected STAT")
    match = _STAT.fullmatch(status.encode("utf-8"))
    if match is None:
        raise ProtocolError(f'the reply to STAT is not "+OK count size": {quote_server(status)}')
    session.details["messages"], session.details["mailbox_bytes"] = int(match[1]), int(match[2])


def keywords(capabilities: list[str] | None) -> set[str]:
    return {line.split(" ")[0].upper() for line in capabilities or []}


def offers_login(capabilities: list[str] | None) -> bool:
    """Return whether CAPA offers a password login: USER, or SASL with at least one mechanism."""
    for line in capabilities or []:
        words = line.upper().split()
        if words[:1] == ["USER"] or (words[:1] == ["SASL"] and len(words) > 1):
            return True
    return False


async def capa(conn: Connection) -> list[str] | None:
    """Send CAPA and return the capability lines; None when the server answers -ERR (it predates CAPA)."""
    await conn.write(b"CAPA\r\n", what="CAPA")
    if (await read_status(conn, what="the reply to CAPA")).startswith("-ERR"):
        return None
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
        raise ServerRejected(f"{refusal}: {quote_server(status)}")


PROTOCOL = Protocol(
    key="pop3",
    label="POP3",
    summary="greeting, CAPA, optional STLS and a second CAPA, optional USER/PASS login and STAT, QUIT",
    options=Options,
    probe=probe,
    url_options=login_url_options,  # smtp://alice@host names the account to log in as
    blackbox_prober="tcp",
    tls_modes=TLS_MODES,
    schemes=(Scheme("pop3", "none", 110), Scheme("pop3s", "implicit", 995)),
    shown=(
        ("capabilities", "Capabilities"),
        ("capabilities_after_tls", "Capabilities after STLS"),
        ("plaintext_login_offered", "Login offered without TLS"),
        ("messages", "Messages"),
        ("mailbox_bytes", "Mailbox bytes"),
        ("login_seconds", "Login time (s)"),
    ),
)
