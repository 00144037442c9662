"""The one boundary where typed errors become results: `converse()` runs a connection dialogue.

A protocol module writes its dialogue as `async def dialogue(session) -> None`, reading and
writing `session.conn` and filling `session.banner` and `session.details` as it learns them;
`converse()` connects, runs it, and returns the `Result`, with whatever was learnt before a failure.
`exchange()` is the same boundary for a probe that opens its own sockets (DNS over UDP).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from monitor.probes.errors import ProbeError
from monitor.probes.net import Connection, open_connection
from monitor.probes.options import ConnectionOptions
from monitor.probes.result import Failure, Result, Status, TLSFacts
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

    @property
    def server_name(self) -> str:
        return self.options.tls_server_name or self.target.host

    def set_banner(self, line: bytes | str) -> None:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        self.banner = text[:MAX_BANNER_CHARS]

    async def start_tls(self) -> None:
        await self.conn.start_tls(self.options, server_name=self.server_name)

    async def reconnect(self, target: Target) -> None:
        """Close the connection and open one to `target` on the same clock and deadline (an HTTP redirect).

        Resolve, connect and TLS time add up across connections, as blackbox_exporter sums them over redirects.
        """
        self.conn.close()
        self.conn = await open_connection(
            target.host, target.port, self.options, deadline=self.conn.deadline, clock=self.conn.clock
        )
        self.target = target
        if self.conn.attempts:
            self.details.setdefault("failed_addresses", []).extend(self.conn.attempts)
        if target.tls == "implicit":
            await self.start_tls()


Dialogue = Callable[[Session], Awaitable[None]]


async def converse(target: Target, options: ConnectionOptions, dialogue: Dialogue, *, deadline: float) -> Result:
    """Return the result of connecting to `target` and running `dialogue` before `deadline`.

    1. Resolve and connect, trying each address in turn.
    2. For implicit TLS, handshake before the dialogue.
    3. Run the dialogue; a `ProbeError` anywhere becomes a `down` result of its kind.
    4. Grade a healthy result `warning` when the certificate is close to expiry.
    """
    clock = PhaseClock()
    session: Session | None = None
    try:
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
        return _result(Status.DOWN, error.failure, str(error), clock, session)
    status, reason = grade(session.conn.tls, options)
    return _result(status, None, reason, clock, session)


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
        return Result(Status.DOWN, error.failure, str(error), state.clock.stop(), state.address, details=state.details)
    return Result(Status.UP, None, "ok", state.clock.stop(), state.address, details=state.details)


def grade(tls: TLSFacts | None, options: ConnectionOptions) -> tuple[Status, str]:
    """Return `warning` with its reason when the certificate expires within the warning days."""
    if tls is None or tls.days_left >= options.tls_warn_days:
        return Status.UP, "ok"
    if tls.days_left < 0:
        return Status.WARNING, f"certificate expired {-tls.days_left:.0f} days ago ({tls.not_after:%Y-%m-%d})"
    return Status.WARNING, f"certificate expires in {tls.days_left:.1f} days ({tls.not_after:%Y-%m-%d})"


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
        tls=session.conn.tls,
        banner=session.banner,
        details=session.details,
    )
