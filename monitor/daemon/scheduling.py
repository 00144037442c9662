"""When each service is probed, and handing due probes out exactly once: slot math, schedule sync, claims.

Exposes `slot_offset()`, `next_slot()`, `late_limit()`, `sync_schedules()`, `sync_service()`,
`maybe_sync()`, `claim_due()`, `plan_batches()`, and the plain values `Claim` and `Batch` that
travel to workers.

Design:

1. **Slots.** Each (service, location) has a fixed offset within its interval, from a stable hash
   (crc32 of "service_id:location", in milliseconds, modulo the interval). Slots sit on an
   epoch-aligned grid, slot_k = k * interval + offset, so start times spread across every interval
   (no herd at the top of the minute) and stay put however long the daemon runs. A new interval
   gives a new grid; `sync_service()` moves the row onto it when the service is saved, never
   sooner than half the new interval after the slot last handed out (`claimed_slot`), so a probe
   in flight is not followed by another a moment later.
2. **Claims.** `claim_due()` takes rows due within a small lookahead, sets `claimed_slot` (the
   slot handed out) and moves `due_at` to the first slot after now, so an outage's backlog never
   becomes a burst. A row more than `late_limit()` overdue is moved on without a claim: that
   probe could no longer start on time, and each slot it skipped is recorded as `missed`
   ("the dispatcher was N s late"). On PostgreSQL the rows are locked with
   `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent dispatchers take disjoint rows; on SQLite,
   which has no row locks, each row is claimed with a conditional
   `UPDATE ... WHERE id = ? AND due_at = <as read>` and only the winner keeps it.
3. **Nothing is re-sent.** When a worker dies mid-probe, the row already points at the next slot,
   at most one interval later; the sweeper (`monitor.daemon.sweeper`) records the lost slot as
   missed. Re-sending could race a slow worker for the same slot.
4. **Expiry.** A batch is sent with `expires` at the latest moment any of its probes may still
   start (slot + `late_limit()`); the worker records claims past their own limit as missed.
5. **Paused.** A (service, location) that loses its row (service disabled, location removed) has
   its state paused and its open incident closed (`recording.pause()`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection, transaction

from monitor.daemon import recording
from monitor.models import Schedule, Service

logger = logging.getLogger(__name__)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)
# Dispatch runs every second; claiming a little further ahead than that lets a worker hold the
# batch and start each probe ON its slot instead of up to a second after it.
LOOKAHEAD = 1.5  # seconds
# A probe may start at most this late: half its interval, never more than 10 s. Later than that it
# is dropped and the next slot probes the service (after a 20 s database outage, 10,000 services
# at 60 s would otherwise start ~3,300 overdue probes at once).
MAX_LATENESS = 10.0  # seconds
MAX_LATE_RECORDED = 60  # skipped slots recorded as missed per row and claim; older ones are the sweeper's
SYNC_EVERY = 60.0  # seconds between full syncs from dispatch; saves sync at once through signals
CLAIM_LIMIT = 10_000  # claims per dispatch tick at most; the rest waits for the next tick


@dataclass(frozen=True)
class Claim:
    """One probe handed to a worker: service `service_id` at `location`, for the slot `slot` (aware UTC).

    `start_by` is the latest moment the probe may still start (slot + `late_limit()`); None means
    the worker works it out from the service's interval.
    """

    schedule_id: int
    service_id: int
    location: str
    slot: dt.datetime
    start_by: dt.datetime | None = None

    def to_data(self) -> dict[str, Any]:
        """Return plain JSON-ready data for a task message."""
        start_by = None if self.start_by is None else self.start_by.isoformat()
        return {**asdict(self), "slot": self.slot.isoformat(), "start_by": start_by}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Claim:
        start_by = data.get("start_by")
        return cls(
            schedule_id=int(data["schedule_id"]),
            service_id=int(data["service_id"]),
            location=str(data["location"]),
            slot=_utc(data["slot"]),
            start_by=None if start_by is None else _utc(start_by),
        )


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


@dataclass(frozen=True)
class Batch:
    """Claims for one location's queue, with the moment after which the message is not worth running."""

    location: str
    claims: tuple[Claim, ...]
    expires: dt.datetime

    @property
    def queue(self) -> str:
        return f"probe.{self.location}"


# Slot math -------------------------------------------------------------------------------------


def slot_offset(service_id: int, location: str, interval: int) -> dt.timedelta:
    """Return the offset of this (service, location) within its interval: stable across processes and restarts."""
    millis = zlib.crc32(f"{service_id}:{location}".encode()) % (interval * 1000)
    return dt.timedelta(milliseconds=millis)


def next_slot(after: dt.datetime, interval: int, offset: dt.timedelta) -> dt.datetime:
    """Return the first slot strictly after `after` on the grid k * interval + offset since the epoch."""
    step = interval * 1_000_000
    since = (after - EPOCH) // MICROSECOND - offset // MICROSECOND
    return EPOCH + offset + MICROSECOND * ((since // step + 1) * step)


def on_grid(moment: dt.datetime, interval: int, offset: dt.timedelta) -> bool:
    """Return whether `moment` is a slot of this grid."""
    return ((moment - EPOCH - offset) // MICROSECOND) % (interval * 1_000_000) == 0


def late_limit(interval: float) -> dt.timedelta:
    """Return how late a probe may start before it is dropped for the next slot."""
    return dt.timedelta(seconds=min(interval / 2, MAX_LATENESS))


def _next_due(service_id: int, location: str, interval: int, now: dt.datetime) -> dt.datetime:
    return next_slot(now, interval, slot_offset(service_id, location, interval))


# Sync ------------------------------------------------------------------------------------------


def sync_schedules(now: dt.datetime | None = None) -> tuple[int, int]:
    """Make Schedule rows match each enabled service at each of its locations; return (created, deleted).

    1. Read enabled services (id, locations, interval) and every row (id, service, location, due_at).
    2. Delete rows of disabled or deleted services and of dropped locations.
    3. Create missing rows, due at their next slot (ignoring conflicts with a concurrent sync).
    4. Move rows left on an old interval's grid (an update that skipped `save()`) to the new one.
    """
    wanted = {
        (service_id, location): interval
        for service_id, locations, interval in Service.objects.filter(enabled=True).values_list(
            "id", "locations", "interval"
        )
        for location in _locations(locations)
    }
    rows = Schedule.objects.values_list("id", "service_id", "location", "due_at", "claimed_slot")
    return _reconcile(wanted, list(rows), now or dt.datetime.now(dt.UTC))


def sync_service(service: Service, now: dt.datetime | None = None) -> None:
    """Make this one service's rows match its `enabled` flag, locations and interval (called on save)."""
    locations = service.location_list if service.enabled else []
    wanted = {(service.id, location): service.interval for location in locations}
    rows = Schedule.objects.filter(service_id=service.id).values_list(
        "id", "service_id", "location", "due_at", "claimed_slot"
    )
    _reconcile(wanted, list(rows), now or dt.datetime.now(dt.UTC))


def _reconcile(wanted: dict[tuple[int, str], int], rows: list[tuple], now: dt.datetime) -> tuple[int, int]:
    """Delete rows not wanted (pausing their states), create the missing ones, realign the rest; return counts."""
    stale = {(service_id, location): row_id for row_id, service_id, location, *_ in rows}.keys() - wanted.keys()
    deleted = 0
    if stale:
        ids = [row_id for row_id, service_id, location, *_ in rows if (service_id, location) in stale]
        deleted = Schedule.objects.filter(id__in=ids).delete()[0]
        _pause(stale, {service_id for service_id, _ in wanted}, now)
    have = {(service_id, location) for _, service_id, location, *_ in rows}
    created = _create_rows([(key, interval) for key, interval in wanted.items() if key not in have], now)
    for row_id, service_id, location, due_at, claimed_slot in rows:
        interval = wanted.get((service_id, location))
        if interval is not None:
            _realign(row_id, service_id, location, interval, due_at, claimed_slot, now)
    return created, deleted


def _pause(stale: set[tuple[int, str]], still_probed: set[int], now: dt.datetime) -> None:
    """Pause the states nobody will probe: the service lost the location, or was disabled."""
    removed = {pair for pair in stale if pair[0] in still_probed}
    for pairs, reason in ((removed, "location removed from the service"), (stale - removed, "service disabled")):
        recording.pause(pairs, reason, now)


def maybe_sync(now: dt.datetime, *, every: float = SYNC_EVERY) -> bool:
    """Run `sync_schedules()` if this process has not in the last `every` seconds; return whether it ran.

    Dispatch calls this every tick: a full sync reads every service, too much for each second at
    10,000 services, while saves through the ORM already sync at once through signals.
    """
    global _last_sync
    if _last_sync is not None and time.monotonic() - _last_sync < every:
        return False
    sync_schedules(now)
    _last_sync = time.monotonic()
    return True


_last_sync: float | None = None


def _locations(locations: str) -> list[str]:
    return Service(locations=locations).location_list


def _create_rows(missing: Iterable[tuple[tuple[int, str], int]], now: dt.datetime) -> int:
    new = [
        Schedule(
            service_id=service_id,
            location=location,
            due_at=_next_due(service_id, location, interval, now),
            active_since=now,
        )
        for (service_id, location), interval in missing
    ]
    # ignore_conflicts: a sync from a signal and one from dispatch may insert the same row at once.
    Schedule.objects.bulk_create(new, ignore_conflicts=True, batch_size=500)
    return len(new)


def _realign(
    row_id: int,
    service_id: int,
    location: str,
    interval: int,
    due_at: dt.datetime,
    claimed_slot: dt.datetime | None,
    now: dt.datetime,
) -> None:
    offset = slot_offset(service_id, location, interval)
    if on_grid(due_at, interval, offset):
        return
    # Not sooner than half the new interval after the slot last handed out: it may still be in flight.
    after = now if claimed_slot is None else max(now, claimed_slot + dt.timedelta(seconds=interval / 2))
    # Conditional on due_at as read, so a dispatcher claiming the row meanwhile keeps its claim. Slots of
    # the new grid before now were never due: active_since keeps the sweeper from counting them.
    Schedule.objects.filter(id=row_id, due_at=due_at).update(
        due_at=next_slot(after, interval, offset), active_since=now
    )


# Claims ----------------------------------------------------------------------------------------


def claim_due(now: dt.datetime, *, limit: int = CLAIM_LIMIT, lookahead: float = LOOKAHEAD) -> list[Claim]:
    """Claim rows of enabled services due by `now + lookahead`; return the claims, earliest slot first.

    Each claimed row moves on to its first slot after now; so does a row overdue by more than
    `late_limit()`, without a claim. Safe with any number of concurrent callers: PostgreSQL locks
    rows with SKIP LOCKED, SQLite claims each row with a conditional update.
    """
    horizon = now + dt.timedelta(seconds=lookahead)
    due = (
        Schedule.objects.filter(due_at__lte=horizon, service__enabled=True)
        .order_by("due_at")
        .values_list("id", "service_id", "location", "due_at", "service__interval", "service__timeout")
    )
    if connection.features.has_select_for_update_skip_locked:
        rows = _claim_locked(due, now, limit)
    else:
        rows = _claim_optimistic(due, now, limit)
    late = [row for row in rows if not _timely(row[3], row[4], now)]
    if late:
        recording.record(_skipped(late, now))
    return _claims(rows, now)


def _claim_locked(due, now: dt.datetime, limit: int) -> list[tuple]:
    with transaction.atomic():
        rows = list(due.select_for_update(skip_locked=True, of=("self",))[:limit])
        _write_claims(rows, now)
    return rows


def _write_claims(rows: Sequence[tuple], now: dt.datetime) -> None:
    """Move each claimed row on, with one statement run per row (`executemany`, pipelined by psycopg).

    Not `bulk_update()`: its CASE WHEN per field and row took a fifth of a worker's CPU at 10,000
    services (profiled), on a path that runs every second.
    """
    if not rows:
        return
    table, quote = Schedule._meta.db_table, connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    timely, late = [], []
    for row in rows:
        fields = _claimed_fields(row, now)
        if "claimed_slot" in fields:
            timely.append([adapt(fields["due_at"]), adapt(fields["claimed_slot"]), row[0]])
        else:
            late.append([adapt(fields["due_at"]), row[0]])
    with connection.cursor() as cursor:
        if timely:
            sql = f"UPDATE {quote(table)} SET {quote('due_at')} = %s, {quote('claimed_slot')} = %s WHERE id = %s"
            cursor.executemany(sql, timely)
        if late:
            cursor.executemany(f"UPDATE {quote(table)} SET {quote('due_at')} = %s WHERE id = %s", late)


def _claim_optimistic(due, now: dt.datetime, limit: int) -> list[tuple]:
    # Read outside the transaction, then write: an SQLite transaction that reads first and writes
    # later fails at once with "database is locked" when another writer got in between, instead
    # of waiting for the lock; one that starts with a write waits its busy timeout.
    rows = list(due[:limit])
    won = []
    with transaction.atomic():
        for row in rows:
            fields = _claimed_fields(row, now)
            if Schedule.objects.filter(id=row[0], due_at=row[3]).update(**fields):
                won.append(row)
    return won


def _claimed_fields(row: tuple, now: dt.datetime) -> dict[str, Any]:
    _, service_id, location, slot, interval, _ = row
    timely = _timely(slot, interval, now)
    return {
        # At least half an interval on: a slot off the grid (an interval just changed) must not be
        # followed by a grid slot a moment later, probing the service twice in a row.
        "due_at": _next_due(service_id, location, interval, max(now, slot + dt.timedelta(seconds=interval / 2))),
        # A row skipped for lateness keeps the slot it last handed out.
        **({"claimed_slot": slot} if timely else {}),
    }


def _timely(slot: dt.datetime, interval: int, now: dt.datetime) -> bool:
    return now - slot <= late_limit(interval)


def _skipped(rows: Sequence[tuple], now: dt.datetime) -> list[recording.Outcome]:
    """Return a `missed` outcome for each slot the late rows skipped (the newest MAX_LATE_RECORDED of each)."""
    missed = []
    for _, service_id, location, slot, interval, _ in rows:
        step = dt.timedelta(seconds=interval)
        count = min(MAX_LATE_RECORDED, int((now - slot - late_limit(interval)) / step) + 1)
        first = slot + step * (int((now - slot - late_limit(interval)) / step) + 1 - count)
        for k in range(count):
            moment = first + k * step
            late = (now - moment).total_seconds()
            reason = (
                f"not probed: the dispatcher reached this slot {late:.1f} s late "
                f"(the limit is {late_limit(interval).total_seconds():g} s); the next slot was probed instead"
            )
            missed.append(recording.Outcome.missed(service_id, location, moment, reason))
    return missed


def _claims(rows: Sequence[tuple], now: dt.datetime) -> list[Claim]:
    return [
        Claim(row_id, service_id, location, slot, start_by=slot + late_limit(interval))
        for row_id, service_id, location, slot, interval, _ in rows
        if _timely(slot, interval, now)
    ]


# Batches ---------------------------------------------------------------------------------------


def plan_batches(claims: Sequence[Claim], *, size: int) -> list[Batch]:
    """Group claims by location into batches of at most `size`, earliest slots first, each with its expiry.

    A batch expires when its latest claim could no longer start on time (its `start_by`); the
    worker still skips any single claim past its own `start_by`.
    """
    by_location: dict[str, list[Claim]] = defaultdict(list)
    for claim in sorted(claims, key=lambda c: c.slot):
        by_location[claim.location].append(claim)
    batches = []
    for location, located in by_location.items():
        for start in range(0, len(located), size):
            chunk = tuple(located[start : start + size])
            expires = max(c.start_by or c.slot + dt.timedelta(seconds=MAX_LATENESS) for c in chunk)
            batches.append(Batch(location=location, claims=chunk, expires=expires))
    return batches
