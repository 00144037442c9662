"""Uptime snapshots: every (service, location)'s uptime over a day, a week and a month, recomputed every ten minutes.

Exposes `refresh(now)`, run by the periodic `refresh_uptimes` task; `monitor.readers.recent_uptimes()`
reads what it writes.

Decisions:

1. **Why.** Summing rollups for the 50 services of an overview page took about half of the page's
   170 ms at 10,000 services, and /metrics needs uptime for the whole fleet at every scrape (3 s
   read live). Uptime over a day moves slowly: a figure at most ten minutes old, which the
   page labels with its time, serves both in one short query.
2. **The same numbers as a live read.** A snapshot is `readers.uptimes()` itself at `computed_at`,
   for the whole fleet in one pass (which reads by time alone: readers' decision 9), so no rule
   about missing rollups, pruned edges or unknown slots exists twice.
3. **Which pairs.** Every service's current locations, paused services included (their month still
   counts). Rows of a pair that no longer exists (service deleted: cascade; location removed: the
   rows this run did not refresh) are deleted at the end.
4. **Writes.** Each `ROWS_PER_WRITE` pairs are upserted in their own short transaction, so SQLite's single write lock
   is never held for the whole run while probes wait to record. On PostgreSQL an advisory lock
   keeps two runs apart: one run's cleanup would delete the other's fresher rows.
5. **Background manners.** The read runs without PostgreSQL's parallel workers (SET LOCAL in its
   own transaction): at 10,000 services it is ~20 s of work every ten minutes, and with them it took
   both cores of a small machine from the pages being served meanwhile.
6. **Stale is never used.** Readers ignore a snapshot older than `readers.SNAPSHOT_MAX_AGE` and read
   live instead: a stopped beat makes pages slower, never wrong.
"""

from __future__ import annotations

import contextlib
import datetime as dt

from django.db import connection, transaction

from monitor.daemon.rollups import single_run
from monitor.models import UptimeSnapshot
from monitor.readers import WINDOWS, uptimes

ROWS_PER_WRITE = 1000  # pairs upserted per transaction
ADVISORY_LOCK = 0x7570746D  # "uptm"


def refresh(now: dt.datetime | None = None) -> int:
    """Recompute every pair's uptime over `readers.WINDOWS` ending at `now`; return how many pairs were written."""
    now = now or dt.datetime.now(dt.UTC)
    with single_run(ADVISORY_LOCK) as alone:
        if not alone:
            return 0  # another run is writing the same figures
        with _one_core():
            counted = list(uptimes(None, WINDOWS, now).items())
        for index in range(0, len(counted), ROWS_PER_WRITE):
            _write(counted[index : index + ROWS_PER_WRITE], now)
        UptimeSnapshot.objects.filter(computed_at__lt=now).delete()  # pairs that are gone
        return len(counted)


@contextlib.contextmanager
def _one_core():
    """Keep PostgreSQL's parallel workers out of the read: a background job must not take every core from pages.

    SET LOCAL needs a transaction; on SQLite there is nothing to set, and a transaction there would
    take the write lock (BEGIN IMMEDIATE) from the probes' recorder for the whole read.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        yield


def _write(counted: list, now: dt.datetime) -> None:
    rows = []
    for (service_id, location), by_window in counted:
        counts = [
            n for window in WINDOWS for n in (by_window[window].up, by_window[window].down, by_window[window].unknown)
        ]
        fields = dict(zip(UptimeSnapshot.COUNTS, counts, strict=True))
        rows.append(UptimeSnapshot(service_id=service_id, location=location, computed_at=now, **fields))
    with transaction.atomic():
        UptimeSnapshot.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["service", "location"],
            update_fields=["computed_at", *UptimeSnapshot.COUNTS],
        )
