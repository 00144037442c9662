"""Store probe outcomes: raw results, then the current state per service and location, changes and incidents.

Exposes `Outcome` (one probe of one slot, or a slot nothing measured), `record(outcomes) -> int`,
which workers, the dispatcher and the sweeper call, and `pause(pairs, reason)`, which the schedule
sync calls when nobody will probe a (service, location) any more. How outcomes move a state is
`monitor.daemon.states`; rollups and retention live in `monitor.daemon.rollups` and `.retention`.

Decisions:

1. **Idempotent per slot.** (service, location, scheduled_at) is unique; an outcome for a slot
   already stored changes nothing: no row, no counter, no change, no incident. Outcomes of
   services deleted meanwhile are dropped.
2. **Every slot is a row.** A missed slot or a prober bug is stored like a probe, with status
   unknown and its failure kind (`missed`, `internal_error`, `config_error`) and reason, so
   uptime counts it apart instead of leaving it out; it does not move the state machine.
3. **TLS facts** on the state: the probe's when it has some; cleared when a probe succeeded
   without TLS (the service no longer speaks it, so old facts would mislead); kept when a failed
   probe had none (a refused connection says nothing about the certificate).
4. **Out of order.** An outcome for a slot older than the newest one applied to its state
   (`ServiceState.last_scheduled_at`) is stored as a raw result but does not touch the state,
   changes or incidents: replaying old news would flap the status. Within a batch, each
   service's outcomes are applied in slot order.
5. **Cost.** One transaction per batch and a fixed number of queries whatever its size (eight
   when nothing changes status: services, state rows, recorded slots, insert results, update
   states, then read them back and upsert their services' summaries (`summaries`), and upsert
   the states' rendered /metrics series (`expositions`); plus up to
   three when incidents open or close or the status changes; plus two the
   first time a service is seen; plus one when a state's last measured probe is not in the batch,
   a batch of missed slots, for the banner its exposure series assess).
6. **Concurrency.** On PostgreSQL the state rows of the batch's services, at every location,
   are locked (`SELECT ... FOR UPDATE`, ordered by id so two workers never deadlock on them)
   before the slots are checked, so the same slot recorded twice at once stores one row, and two
   locations of one service recorded at once take turns: each rewrites the service's summary
   from the other's committed state, never from the one before it. On SQLite the batch's transaction opens
   with BEGIN IMMEDIATE (`config.sqlite_database()` sets that for every transaction), waiting
   for SQLite's single write lock up front.
   A deadlock, a database locked past SQLite's busy timeout (writers in a tight loop can starve
   one another) or a conflicting concurrent insert retries the whole batch (`MAX_ATTEMPTS`).
7. **Exposure flags.** A state that takes a measured probe stores that probe's version-exposure verdicts
   (`ServiceState.reveals_version`, `offers_plaintext_login`: `exposure_report.verdicts()` on its banner and
   details, with the service's protocol and TLS mode), written by the same UPDATE as the rest of the state,
   so the overview counts and filters on them (through the summaries) instead of assessing every state per
   request. A missed slot, a prober bug or a config error measured nothing and leaves them; so does pausing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Sequence

from django.db import IntegrityError, OperationalError, connection, transaction

from monitor import exposure_report
from monitor.daemon import expositions, summaries
from monitor.daemon import states as machine
from monitor.models import ProbeResult, Service, ServiceState
from monitor.models.history import PHASES
from monitor.probes import Failure, Phases, Result, Status
from monitor.stats import counted

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
RETRY_PAUSE = 0.05  # seconds, times the attempt number
STATE_FIELDS = [
    "status",
    "since",
    "last_result",
    "last_checked_at",
    "last_scheduled_at",
    "last_status",
    "last_failure",
    "last_reason",
    "last_phases",
    "consecutive_failures",
    "consecutive_successes",
    "streak_since",
    "tls",
    "details",
    "open_incident",
    "counters",
    "last_address",
    "reveals_version",
    "offers_plaintext_login",
]

Pair = tuple[int, str]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One probe of one slot: what `run_probe` returned for service `service_id` at `location`."""

    service_id: int
    location: str
    scheduled_at: dt.datetime  # aware UTC: the slot this probe was for
    started_at: dt.datetime  # aware UTC: when the probe actually started
    result: Result

    @property
    def pair(self) -> Pair:
        return (self.service_id, self.location)

    @property
    def slot(self) -> tuple[int, str, dt.datetime]:
        return (self.service_id, self.location, self.scheduled_at)

    @classmethod
    def missed(cls, service_id: int, location: str, slot: dt.datetime, reason: str) -> Outcome:
        """Return the outcome of a slot that got no probe: status unknown, failure `missed`, and why."""
        result = Result(Status.UNKNOWN, Failure.MISSED, reason, Phases())
        return cls(service_id, location, slot, slot, result)


def record(outcomes: Sequence[Outcome]) -> int:
    """Store results, update current state, record status changes and incidents; return how many were new.

    Idempotent per (service, location, scheduled_at): an outcome for a slot already recorded changes nothing.
    """
    if not outcomes:
        return 0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return _record(outcomes)
        except (OperationalError, IntegrityError) as error:
            # A deadlock, SQLite busy past its timeout, or a row inserted or deleted by someone
            # else meanwhile: the next attempt sees the settled database and skips what is stored.
            if attempt == MAX_ATTEMPTS:
                raise
            logger.warning("recording %d outcomes failed (%s); retrying", len(outcomes), error)
            time.sleep(RETRY_PAUSE * attempt)
    raise AssertionError("unreachable")


def _record(outcomes: Sequence[Outcome]) -> int:
    """Record one batch inside the caller's transaction.

    1. Drop outcomes of deleted services and repeated slots; read the services' rules.
    2. Lock the batch's states, creating missing ones.
    3. Insert the results of slots not stored yet.
    4. Apply them to the states in slot order; write incidents, states and status changes.
    """
    rules, targets, tls_modes = _rules({outcome.service_id for outcome in outcomes})
    unique: dict[tuple[int, str, dt.datetime], Outcome] = {}
    for outcome in outcomes:
        if outcome.service_id in rules:
            unique.setdefault(outcome.slot, outcome)
    if not unique:
        return 0
    states = _lock_states(list(unique.values()))
    stored = _stored_slots(list(unique.values()))
    new = [outcome for slot, outcome in unique.items() if slot not in stored]
    if not new:
        return 0
    rows = ProbeResult.objects.bulk_create([_result_row(outcome) for outcome in new])
    ledger = machine.Ledger()
    touched = _apply_all(new, rows, states, rules, ledger, targets, tls_modes)
    _save(touched, ledger, targets, tls_modes, _banners(touched, new, rows))
    return len(new)


def _rules(
    service_ids: set[int],
) -> tuple[dict[int, machine.Rules], dict[int, tuple[str, str]], dict[int, str]]:
    """Return the state machine's rules, and the (protocol, host) and TLS mode of each service that still exists."""
    rows = Service.objects.filter(id__in=service_ids).values_list(
        "id", "failure_threshold", "recovery_threshold", "interval", "protocol", "host", "tls_mode"
    )
    rules, targets, tls_modes = {}, {}, {}
    for service_id, failures, recoveries, interval, protocol, host, tls_mode in rows:
        rules[service_id] = machine.Rules(failures, recoveries, interval)
        targets[service_id] = (protocol, host)
        tls_modes[service_id] = tls_mode
    return rules, targets, tls_modes


def _lock_states(outcomes: Sequence[Outcome]) -> dict[Pair, ServiceState]:
    """Return the state of every (service, location) in `outcomes`, created if missing, locked on PostgreSQL."""
    first_seen: dict[Pair, dt.datetime] = {}
    for outcome in outcomes:
        first_seen[outcome.pair] = min(outcome.started_at, first_seen.get(outcome.pair, outcome.started_at))
    states = _select_states(set(first_seen))
    missing = {pair: since for pair, since in first_seen.items() if pair not in states}
    if missing:
        _create_states(missing)
        states |= _select_states(set(missing))
    return states


def _create_states(first_seen: dict[Pair, dt.datetime]) -> None:
    ServiceState.objects.bulk_create(
        [ServiceState(service_id=sid, location=loc, since=since) for (sid, loc), since in first_seen.items()],
        ignore_conflicts=True,  # created meanwhile by another worker: theirs stands
    )


def _select_states(pairs: set[Pair]) -> dict[Pair, ServiceState]:
    """Return the states of `pairs`, locking every state of their services (see decision 6)."""
    query = (
        ServiceState.objects.filter(service_id__in={sid for sid, _ in pairs})
        .order_by("id")  # one lock order for every worker: no deadlocks between batches
        .select_for_update()  # a no-op on SQLite
    )
    return {(state.service_id, state.location): state for state in query if (state.service_id, state.location) in pairs}


def _stored_slots(outcomes: Sequence[Outcome]) -> set[tuple[int, str, dt.datetime]]:
    rows = ProbeResult.objects.filter(
        service_id__in={outcome.service_id for outcome in outcomes},
        scheduled_at__in={outcome.scheduled_at for outcome in outcomes},
    ).values_list("service_id", "location", "scheduled_at")
    return set(rows)


def _result_row(outcome: Outcome) -> ProbeResult:
    result, tls = outcome.result, outcome.result.tls
    return ProbeResult(
        service_id=outcome.service_id,
        location=outcome.location,
        scheduled_at=outcome.scheduled_at,
        started_at=outcome.started_at,
        status=str(result.status),
        failure=str(result.failure or ""),
        reason=_text(result.reason, ProbeResult._meta.get_field("reason").max_length),
        **{name: getattr(result.phases, name) for name in (*result.phases.NAMES, "total")},
        address=_text(result.address or "", ProbeResult._meta.get_field("address").max_length),
        tls_version=_text(tls.version or "", 16) if tls else "",
        tls_days_left=tls.days_left if tls else None,
        tls_fingerprint=_text(tls.fingerprint_sha256, 64) if tls else "",
        banner=_text(result.banner, ProbeResult._meta.get_field("banner").max_length),
    )


def _apply_all(
    outcomes: Sequence[Outcome],
    rows: Sequence[ProbeResult],
    states: dict[Pair, ServiceState],
    rules: dict[int, machine.Rules],
    ledger: machine.Ledger,
    targets: dict[int, tuple[str, str]],
    tls_modes: dict[int, str],
) -> list[ServiceState]:
    """Count each new outcome on its state and apply it in slot order; return the states (all changed).

    A measured outcome also sets the state's exposure flags (decision 7), with its service's protocol
    (`targets`) and TLS mode.
    """
    by_pair: dict[Pair, list[tuple[Outcome, ProbeResult]]] = defaultdict(list)
    for outcome, row in zip(outcomes, rows, strict=True):
        by_pair[outcome.pair].append((outcome, row))
    touched = []
    for pair, items in by_pair.items():
        state = states[pair]
        for outcome, row in sorted(items, key=lambda item: item[0].scheduled_at):
            phases = {phase: getattr(row, phase) for phase in PHASES}
            state.counters = counted(state.counters, row.status, row.failure, phases, row.reason)  # late ones too
            if state.last_scheduled_at is not None and outcome.scheduled_at <= state.last_scheduled_at:
                continue  # an older slot arriving late: stored above, but it must not roll the state back
            machine.apply(state, outcome, row, rules[outcome.service_id], ledger)
            if outcome.result.measured:
                protocol, tls_mode = targets[outcome.service_id][0], tls_modes[outcome.service_id]
                state.reveals_version, state.offers_plaintext_login = exposure_report.verdicts(
                    protocol, tls_mode, str(outcome.result.status), row.banner, state.details
                )
        touched.append(state)
    return touched


def _banners(
    states: Sequence[ServiceState], outcomes: Sequence[Outcome], rows: Sequence[ProbeResult]
) -> dict[int, str]:
    """Return {state id: banner} of the states whose last measured probe is one of this batch's results.

    Their /metrics series assess it (`expositions`), which reads the banner of any other state.
    """
    heard = {
        (outcome.pair, outcome.started_at): row.banner
        for outcome, row in zip(outcomes, rows, strict=True)
        if outcome.result.measured
    }
    banners = {}
    for state in states:
        banner = heard.get(((state.service_id, state.location), state.last_checked_at))
        if banner is not None:
            banners[state.pk] = banner
    return banners


def _save(
    states: list[ServiceState],
    ledger: machine.Ledger,
    targets: dict[int, tuple[str, str]],
    tls_modes: dict[int, str],
    banners: dict[int, str] | None = None,
) -> None:
    """Write the ledger and states in bulk; incidents first, since states and changes point at them.

    `targets` holds each state's service's (protocol, host) and `tls_modes` its TLS mode, which its /metrics
    series are rendered with, and `banners` what the batch's probes heard (`_banners()`).
    """
    machine.save_incidents(states, ledger)
    _update_states(states)
    summaries.refresh({state.service_id for state in states})
    expositions.write(states, targets, tls_modes=tls_modes, banners=banners)
    machine.save_changes(ledger)


def _update_states(states: list[ServiceState]) -> None:
    """Write the states' fields with one statement run for each row (`executemany`).

    Not `bulk_update()`: its CASE WHEN per field and row cost ~60 ms of Python per batch of 50,
    five times the database's own time, on the path every probe takes.
    """
    if not states:
        return
    fields = [ServiceState._meta.get_field(name) for name in STATE_FIELDS]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = f"UPDATE {quote(ServiceState._meta.db_table)} SET {assignments} WHERE id = %s"
    rows = [[field.get_db_prep_save(getattr(state, field.attname), connection) for field in fields] for state in states]
    with connection.cursor() as cursor:
        cursor.executemany(sql, [[*row, state.pk] for row, state in zip(rows, states, strict=True)])


def _text(value: str, limit: int) -> str:
    # PostgreSQL text cannot hold NUL, and a hostile banner may send one: it would fail the batch.
    return value.replace("\x00", "\ufffd")[:limit]


def pause(pairs: set[tuple[int, str]], reason: str, now: dt.datetime | None = None) -> int:
    """Mark the states of `pairs` paused and close their open incidents ("monitoring stopped"); return how many.

    Called when nobody will probe them any more: the service was disabled, or lost the location.
    """
    if not pairs:
        return 0
    now = now or dt.datetime.now(dt.UTC)
    with transaction.atomic():
        states = [state for state in _select_states(pairs).values() if state.status != machine.PAUSED]
        if not states:
            return 0
        rules, targets, tls_modes = _rules({state.service_id for state in states})
        intervals = {service_id: rule.interval for service_id, rule in rules.items()}
        ledger = machine.Ledger()
        machine.pause(states, now, reason, intervals, ledger)
        _save(states, ledger, targets, tls_modes)
    return len(states)
