"""The one boundary where typed errors become results: `converse()` runs a connection dialogue.

A protocol module writes its dialogue as `async def dialogue(session) -> None`, reading and
writing `session.conn` and filling `session.banner` and `session.details` as it learns them;
`converse()` connects, runs it, and returns the `Result`, with whatever was learnt before a failure.
`exchange()` is the same boundary for a probe that opens its own sockets (DNS over UDP). `grade()`
turns a healthy result into a warning when a certificate of any connection's chain is close to expiry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from monitor.probes import tls as tlslib
from monitor.probes.errors import ProbeError
from monitor.probes.net import Connection, open_connection
from monitor.probes.options import ConnectionOptions, TLSOptions
from monitor.probes.result import Failure, Result, Status, TLSFacts
from monitor.probes.text import printable
from monitor.probes.timing import PhaseClock

MAX_BANNER_CHARS = 512

TLSMode = Literal["none", "starttls", "implicit"]


@dataclass(frozen=True)
class Target:
    host: str  # a DNS name in ASCII form, or an IP address
    port: int
    tls: TLSMode = "none"


@dataclass
class Session:
    """What a dialogue works with: the target, its options, the connection, and what it has learnt."""

    target: Target
    options: ConnectionOptions
    conn: Connection
    banner: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)  # every one opened, in order (HTTP redirects)

    def __post_init__(self) -> None:
        if not self.connections:
            self.connections.append(self.conn)

    @property
    def server_name(self) -> str:
        return getattr(self.options, "tls_server_name", None) or self.target.host

    @property
    def tls(self) -> TLSFacts | None:
        """Return the TLS facts of the first connection that used TLS: the certificate users point at.

        https://example.com redirecting to https://www.example.com is a probe of example.com's certificate.
        """
        return next(iter(self.certificates), None)

    @property
    def certificates(self) -> list[TLSFacts]:
        """Return the TLS facts of every connection that handshook, in the order they were opened."""
        return [conn.tls for conn in self.connections if conn.tls is not None]

    def set_banner(self, line: bytes | str) -> None:
        """Set `banner` to the server's greeting, sanitised here once for every protocol (see `text.printable`).

        "\n" is the one control character a banner keeps: SMTP and FTP greetings are several lines, joined
        with it, and a reader of the version audit wants to see them as lines. Any other line break
        (a bare CR, U+2028, ...) becomes "\n" too, so nothing but "\n" can start a line.
        """
        self.banner = printable(line, limit=MAX_BANNER_CHARS, keep_newlines=True)

    async def start_tls(self) -> None:
        await self.conn.start_tls(self.options, server_name=self.server_name)

    async def reconnect(self, target: Target) -> None:
        """Close the connection and open one to `target` on the same clock and deadline (an HTTP redirect).

        Resolve, connect and TLS time add up across connections, as blackbox_exporter sums them over redirects.
        The new connection joins `connections` before its handshake, so its certificate facts are kept
        even when verification fails.
        """
        self.conn.close()
        self.conn = await open_connection(
            target.host, target.port, self.options, deadline=self.conn.deadline, clock=self.conn.clock
        )
        self.connections.append(self.conn)
        self.target = target
        if self.conn.attempts:
            self.details.setdefault("failed_addresses", []).extend(self.conn.attempts)
        if target.tls == "implicit":
            await self.start_tls()


Dialogue = Callable[[Session], Awaitable[None]]


async def converse(target: Target, options: ConnectionOptions, dialogue: Dialogue, *, deadline: float) -> Result:
    """Return the result of connecting to `target` and running `dialogue` before `deadline`.

    1. For a TLS target, build the TLS context first: a CA file missing on this worker is a config
       error (status unknown) found before any packet is sent, not halfway through a dialogue.
    2. Resolve and connect, trying each address in turn.
    3. For implicit TLS, handshake before the dialogue.
    4. Run the dialogue; a `ProbeError` anywhere becomes a result of its status (down, or unknown
       for a config error) and failure kind.
    5. Grade a healthy result `warning` when a certificate of any connection's chain is close to expiry.
    """
    clock = PhaseClock()
    session: Session | None = None
    try:
        if target.tls != "none":
            tlslib.client_context(verify=options.tls_verify, ca_file=options.tls_ca_file)
        conn = await open_connection(target.host, target.port, options, deadline=deadline, clock=clock)
        session = Session(target, options, conn)
        if conn.attempts:
            session.details["failed_addresses"] = list(conn.attempts)
        try:
            if target.tls == "implicit":
                await session.start_tls()
            clock.await_first_byte()
            await dialogue(session)
        finally:
            session.conn.close()  # the dialogue may have reconnected
    except ProbeError as error:
        return _result(error.status, error.failure, str(error), clock, session)
    status, failure, reason = grade(session.certificates, options)
    return _result(status, failure, reason, clock, session)


@dataclass
class Exchange:
    """What a probe that opens its own sockets (DNS) works with and learns: a `Session` without a Connection."""

    target: Target
    options: ConnectionOptions
    deadline: float
    clock: PhaseClock = field(default_factory=PhaseClock)
    address: str | None = None  # the server address that was asked
    details: dict[str, Any] = field(default_factory=dict)


async def exchange(
    target: Target, options: ConnectionOptions, steps: Callable[[Exchange], Awaitable[None]], *, deadline: float
) -> Result:
    """Return the result of running `steps`, the same boundary as `converse()` for probes without a Connection."""
    state = Exchange(target, options, deadline)
    try:
        await steps(state)
    except ProbeError as error:
        return Result(error.status, error.failure, str(error), state.clock.stop(), state.address, details=state.details)
    return Result(Status.UP, None, "ok", state.clock.stop(), state.address, details=state.details)


def grade(certificates: Sequence[TLSFacts], options: TLSOptions) -> tuple[Status, Failure | None, str]:
    """Return (status, failure kind, reason): `warning` and `tls_expiring` when a certificate expires soon.

    The certificate that expires first across every connection's chain decides (the first on a tie).
    The reason names it when it is not the leaf, and names the host when the probe made more than one
    TLS connection (the hops of an HTTP redirect), so the warning says which certificate to renew.
    """
    if not certificates:
        return Status.UP, None, "ok"
    first = min(certificates, key=lambda facts: facts.chain_days_left)
    if first.chain_days_left >= options.tls_warn_days:
        return Status.UP, None, "ok"
    return Status.WARNING, Failure.TLS_EXPIRING, expiry_reason(first, name_host=len(certificates) > 1)


def expiry_reason(facts: TLSFacts, *, name_host: bool) -> str:
    """Return e.g. "intermediate certificate CN=R3,O=Let's Encrypt expires in 3.0 days (2026-12-01)"."""
    role = facts.chain_expiry_role or "leaf"
    what = "certificate" if role == "leaf" else f"{role} certificate {facts.chain_expiry_subject}"
    if name_host and facts.server_name:
        what += f" of {facts.server_name}"
    days, when = facts.chain_days_left, facts.chain_expiry or facts.not_after
    if days < 0:
        return f"{what} expired {-days:.0f} days ago ({when:%Y-%m-%d})"
    return f"{what} expires in {days:.1f} days ({when:%Y-%m-%d})"


def _result(status: Status, failure: Failure | None, reason: str, clock: PhaseClock, session: Session | None) -> Result:
    phases = clock.stop()
    if session is None:
        return Result(status, failure, reason, phases)
    return Result(
        status,
        failure,
        reason,
        phases,
        address=session.conn.address,
        tls=session.tls,
        banner=session.banner,
        details=session.details,
    )
