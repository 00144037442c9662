"""The state machine: how probe outcomes move a service's confirmed status, open and close incidents, and pause.

Exposes `Rules` (a service's thresholds and interval), `Ledger` (what applying outcomes produced,
written in bulk by `recording`), `apply(state, outcome, row, rules, ledger)` and `pause()`.

Rules:

1. **Thresholds.** A probe fails when its status is down; up and warning are successes; unknown
   (missed slot, internal error, config error) is neither: nothing was measured, so it moves no
   counter and no status. The confirmed `status` becomes down after `failure_threshold`
   failures in a row and leaves down after `recovery_threshold` successes in a row. From unknown
   (or paused), the first success confirms up or warning at once; failures keep it until the
   threshold. While not down, the status follows up and warning directly. Every change of the
   confirmed status is one `StatusChange` (created = start of the probe that confirmed it).
2. **Incidents** open when the status becomes down, at the start of the first failed probe of
   the streak, and close when it leaves down, at the start of the first good probe of the
   recovering streak.
3. **Unmeasured time is never part of an incident.** If nobody measured the service for more
   than one and a half intervals before the recovering streak began (missed slots, a stopped
   dispatcher), the outage is known to last only until one interval after the last failed probe:
   the incident ends there and says so. Pausing (service disabled, location removed) closes
   the open incident at the pause, or one interval after the last probe if that came first
   ("monitoring stopped").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from monitor.models import Incident, ProbeResult, ServiceState, StatusChange
from monitor.probes import Result, Status

DOWN = str(Status.DOWN)
UNKNOWN = str(Status.UNKNOWN)
PAUSED = "paused"
GAP_FACTOR = 1.5  # intervals without a measurement that count as a monitoring gap

Pair = tuple[int, str]


@dataclasses.dataclass(frozen=True)
class Rules:
    """What the state machine needs to know of a service."""

    failure_threshold: int
    recovery_threshold: int
    interval: int  # seconds


@dataclasses.dataclass
class Ledger:
    """What applying outcomes produced, written in bulk afterwards."""

    opened: dict[Pair, Incident] = dataclasses.field(default_factory=dict)  # not saved yet
    new_incidents: list[Incident] = dataclasses.field(default_factory=list)
    closed: dict[int, tuple[dt.datetime, str]] = dataclasses.field(default_factory=dict)  # saved id -> end, reason
    changes: list[StatusChange] = dataclasses.field(default_factory=list)


def apply(state: ServiceState, outcome, row: ProbeResult, rules: Rules, ledger: Ledger) -> None:
    """Update `state` with one probe outcome (newer than any applied); note status changes and incidents."""
    result: Result = outcome.result
    data = result.to_dict()
    state.last_result_id = row.pk
    state.last_scheduled_at = outcome.scheduled_at
    state.last_status = data["status"]
    state.last_failure = data["failure"] or ""
    state.last_reason = row.reason
    if not result.measured:
        return  # a missed slot or a prober bug says nothing about the service
    if state.status == PAUSED:
        _resume(state)
    gap = _gap_before(state, outcome, rules)
    state.last_checked_at = outcome.started_at
    state.last_address = row.address
    state.last_phases = data["phases"]
    state.details = json_safe(data["details"])
    if result.tls is not None:
        state.tls = json_safe(data["tls"])
    elif result.ok:
        state.tls = None
    if result.ok:
        if not state.consecutive_successes:
            # After a gap, what is known is that the service was down until the slot after its last failure.
            state.streak_since = gap if gap is not None and state.status == DOWN else outcome.started_at
        state.consecutive_successes += 1
        state.consecutive_failures = 0
    else:
        if not state.consecutive_failures:
            state.streak_since = outcome.started_at
        state.consecutive_failures += 1
        state.consecutive_successes = 0
    confirmed = _confirmed(state, result, rules)
    if confirmed != state.status:
        _change(state, confirmed, outcome, row, ledger, gap=gap is not None)


def pause(states: Sequence[ServiceState], now: dt.datetime, reason: str, intervals: dict[int, int], ledger: Ledger):
    """Mark `states` paused (nobody probes them any more) and close their open incidents; return them.

    An incident closes at `now`, or one interval after the last probe when that came first: the
    time after it was not measured.
    """
    for state in states:
        if state.status == PAUSED:
            continue
        old, ended_at = state.status, now
        if state.last_checked_at is not None:
            ended_at = min(now, state.last_checked_at + dt.timedelta(seconds=intervals.get(state.service_id, 0)))
        incident = None
        if state.open_incident_id is not None:
            ledger.closed[state.open_incident_id] = (
                max(ended_at, _floor_start(state)),
                f"monitoring stopped: {reason}",
            )
            incident = Incident(id=state.open_incident_id)
        state.open_incident = None
        state.status, state.since = PAUSED, now
        state.consecutive_failures = state.consecutive_successes = 0
        state.streak_since = None
        ledger.changes.append(
            StatusChange(
                service_id=state.service_id,
                location=state.location,
                created=now,
                old_status=old,
                new_status=PAUSED,
                reason=f"monitoring stopped: {reason}",
                incident=incident,
            )
        )
    return states


def _floor_start(state: ServiceState) -> dt.datetime:
    # An incident never ends before it began, even with clocks that disagree a little.
    return state.streak_since or state.since


def _resume(state: ServiceState) -> None:
    """Leave paused quietly: the next confirmed status is written as a change from unknown."""
    state.status = UNKNOWN
    state.consecutive_failures = state.consecutive_successes = 0


def _gap_before(state: ServiceState, outcome, rules: Rules) -> dt.datetime | None:
    """Return the end of what the last measurement vouches for, if nothing was measured for too long since."""
    if state.last_checked_at is None:
        return None
    vouched = state.last_checked_at + dt.timedelta(seconds=rules.interval)
    if outcome.started_at - state.last_checked_at > dt.timedelta(seconds=GAP_FACTOR * rules.interval):
        return vouched
    return None


def _confirmed(state: ServiceState, result: Result, rules: Rules) -> str:
    """Return the confirmed status after this probe, given the counters already updated with it."""
    if state.status == DOWN:
        return str(result.status) if result.ok and state.consecutive_successes >= rules.recovery_threshold else DOWN
    if not result.ok:
        return DOWN if state.consecutive_failures >= rules.failure_threshold else state.status
    return str(result.status)


def _change(state: ServiceState, new: str, outcome, row: ProbeResult, ledger: Ledger, *, gap: bool) -> None:
    """Move `state` to `new`: open or close the incident, set `since`, and note one StatusChange."""
    pair, old = outcome.pair, state.status
    incident: Incident | None = None
    since = outcome.started_at
    if new == DOWN:
        since = state.streak_since
        incident = Incident(
            service_id=pair[0], location=pair[1], started_at=since, failure=row.failure, reason=row.reason
        )
        ledger.opened[pair] = incident
        ledger.new_incidents.append(incident)
        state.open_incident = incident
    elif old == DOWN:
        since = state.streak_since
        end_reason = "ended during a monitoring gap: nothing was measured between the last failure and recovery"
        incident = _close(state, pair, since, end_reason if gap else "", ledger)
    state.status, state.since = new, since
    ledger.changes.append(
        StatusChange(
            service_id=pair[0],
            location=pair[1],
            created=outcome.started_at,
            old_status=old,
            new_status=new,
            failure=row.failure,
            reason=row.reason,
            incident=incident,
        )
    )


def _close(state: ServiceState, pair: Pair, ended_at: dt.datetime, reason: str, ledger: Ledger) -> Incident | None:
    """Close the state's open incident at `ended_at`; return it (None if it was deleted meanwhile)."""
    incident = ledger.opened.pop(pair, None)  # opened earlier in this same batch, not saved yet
    if incident is not None:
        incident.ended_at, incident.end_reason = ended_at, reason
    elif state.open_incident_id is not None:
        ledger.closed[state.open_incident_id] = (ended_at, reason)
        incident = Incident(id=state.open_incident_id)  # a stand-in for the foreign key only
    state.open_incident = None
    return incident


def save_incidents(states: Sequence[ServiceState], ledger: Ledger) -> None:
    """Write new and closed incidents; point the states at the ones still open (before states are saved)."""
    if ledger.new_incidents:
        Incident.objects.bulk_create(ledger.new_incidents)
        by_pair = {(state.service_id, state.location): state for state in states}
        for pair, incident in ledger.opened.items():  # still open: the state points at it
            by_pair[pair].open_incident_id = incident.pk
    if ledger.closed:
        closing = [Incident(id=pk, ended_at=end, end_reason=why) for pk, (end, why) in ledger.closed.items()]
        Incident.objects.bulk_update(closing, ["ended_at", "end_reason"])


def save_changes(ledger: Ledger) -> None:
    if ledger.changes:
        StatusChange.objects.bulk_create(ledger.changes)


def json_safe(value):
    """Return `value` with NUL replaced in every string (PostgreSQL's jsonb refuses \\u0000)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {json_safe(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value
