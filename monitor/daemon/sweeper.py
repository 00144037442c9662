"""Find slots that were due and got no result, and record each as `missed` with the likeliest reason.

Exposes `sweep(now) -> int`, the body of the periodic `sweep` task (every `SWEEP_EVERY` seconds).

Why a sweeper: the dispatcher records the slots it skips for lateness, and workers record claims
they receive too late, but a worker killed mid-probe, a batch that expired in the queue, or a
dispatcher that did not run at all leave no trace. Slots are on a fixed grid per schedule row
(`scheduling.next_slot`), so the sweeper knows every slot that was due; whatever has no result
once it has settled is recorded as missed.

1. A slot has settled `late_limit + timeout + SETTLE_GRACE` after it: by then its probe has
   started, ended and been recorded, or never will be. Each run looks at the slots that settled
   since the previous run (the `swept_until` watermark), at most `MAX_BACK` ago, and never
   before the row's `active_since` (slots before a row existed or moved grid were never due).
2. The stored slots among them are read in chunks of consecutive slots (an index range per
   chunk), and the missing ones are recorded through `recording.record()`, which ignores any
   slot stored meanwhile, so two sweepers at once, or a sweep racing a late result, store one row.
3. The reason: a slot the dispatcher has not passed yet was never dispatched (beat or dispatch not
   running); a dispatched slot of a location no live worker serves had nobody to probe it;
   otherwise its batch was lost (the worker died mid-probe, or the batch expired in the queue).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from django.db import transaction

from monitor.daemon import recording, workers
from monitor.daemon.scheduling import late_limit, next_slot, slot_offset
from monitor.models import ProbeResult, Schedule, Watermark

SWEEP_EVERY = 15.0  # seconds between runs (the beat schedule); a missed slot is recorded within about a minute
SETTLE_GRACE = dt.timedelta(seconds=5)  # recording a result lags its probe's end by a flush (0.5 s) and a write
MAX_BACK = dt.timedelta(hours=6)  # a sweeper down longer than this leaves older slots unaccounted
CHUNK = 500  # expected slots per lookup query
WATERMARK = "swept_until"


def sweep(now: dt.datetime | None = None) -> int:
    """Record a `missed` result for every settled slot since the last run that has none; return how many."""
    now = now or dt.datetime.now(dt.UTC)
    since = _watermark(now)
    served = workers.served_locations(now)
    expected = list(_expected_slots(since, now))
    expected.sort(key=lambda item: item[2])
    missed = []
    for start in range(0, len(expected), CHUNK):
        chunk = expected[start : start + CHUNK]
        stored = _stored(chunk)
        missed += [_missed(item, served) for item in chunk if item[:3] not in stored]
    recorded = 0
    for start in range(0, len(missed), CHUNK):
        recorded += recording.record(missed[start : start + CHUNK])
    Watermark.objects.filter(name=WATERMARK, moment__lt=now).update(moment=now)
    return recorded


def _watermark(now: dt.datetime) -> dt.datetime:
    """Return the previous run's moment; the first run looks MAX_BACK back (rows' active_since bounds it)."""
    with transaction.atomic():
        mark, _ = Watermark.objects.get_or_create(name=WATERMARK, defaults={"moment": now - MAX_BACK})
    return max(mark.moment, now - MAX_BACK)


def _expected_slots(since: dt.datetime, now: dt.datetime) -> Iterator[tuple[int, str, dt.datetime, dt.datetime]]:
    """Yield (service id, location, slot, row's due_at) for each slot that settled in (since, now]."""
    rows = Schedule.objects.filter(service__enabled=True).values_list(
        "service_id", "location", "due_at", "active_since", "service__interval", "service__timeout"
    )
    for service_id, location, due_at, active_since, interval, timeout in rows.iterator(chunk_size=2000):
        settle = late_limit(interval) + dt.timedelta(seconds=timeout) + SETTLE_GRACE
        first, last = max(since - settle, active_since), now - settle
        if first >= last:
            continue
        offset = slot_offset(service_id, location, interval)
        slot = next_slot(first, interval, offset)
        while slot <= last:
            yield service_id, location, slot, due_at
            slot += dt.timedelta(seconds=interval)


def _stored(chunk: list[tuple[int, str, dt.datetime, dt.datetime]]) -> set[tuple[int, str, dt.datetime]]:
    rows = ProbeResult.objects.filter(
        service_id__in={item[0] for item in chunk},
        scheduled_at__gte=chunk[0][2],
        scheduled_at__lte=chunk[-1][2],
    ).values_list("service_id", "location", "scheduled_at")
    return set(rows)


def _missed(item: tuple[int, str, dt.datetime, dt.datetime], served: set[str]) -> recording.Outcome:
    service_id, location, slot, due_at = item
    if slot >= due_at:
        reason = "not probed: the slot was never dispatched (is the beat scheduler running?)"
    elif location not in served:
        reason = f"not probed: no worker is serving location {location!r}"
    else:
        reason = "not probed: no result came back (the worker was lost mid-probe, or the batch expired in the queue)"
    return recording.Outcome.missed(service_id, location, slot, reason)
