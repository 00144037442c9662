"""Delete history past its retention in short chunks, so probes recording meanwhile never wait long.

Exposes `prune(now) -> {"results": n, "hourly": m}`, the body of the hourly `prune` task and of
`manage.py prune`.

Decisions:

1. Raw results older than `PORTWATCH_RESULT_RETENTION_DAYS` (7) and hourly rollups older than
   `PORTWATCH_HOURLY_RETENTION_DAYS` (400) go; daily rollups, incidents and status changes stay
   (one small row per service and day, or per outage).
2. At most `CHUNK` rows per DELETE, each in its own transaction: a single DELETE of a day's
   results (14 million rows at 10,000 services) would hold its locks, and on SQLite the only
   write lock, for minutes while every worker waits to record.
3. The result a `ServiceState.last_result` points to is kept however old, so a service that has
   not been probed for a while (disabled, or its location's workers gone) still shows its last
   probe; that is at most one row per service and location. It also lets the DELETE skip
   Django's SET_NULL cascade, which would load every deleted row first.
4. The DELETEs are plain SQL: no model signals fire (none are connected to these models).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import connection, transaction

from monitor.models import HourlyRollup, ProbeResult, ServiceState

CHUNK = 5_000  # rows per DELETE: tens of milliseconds on PostgreSQL, so a recording batch barely waits
MAX_CHUNKS = 10_000  # per run and table: bounds one run (50 million rows); the next run goes on


def prune(now: dt.datetime | None = None) -> dict[str, int]:
    """Delete raw results and hourly rollups past their retention; return how many rows of each went."""
    now = now or dt.datetime.now(dt.UTC)
    results_before = now - dt.timedelta(days=settings.PORTWATCH_RESULT_RETENTION_DAYS)
    hourly_before = now - dt.timedelta(days=settings.PORTWATCH_HOURLY_RETENTION_DAYS)
    results, hourly = ProbeResult._meta.db_table, HourlyRollup._meta.db_table
    kept = f"SELECT last_result_id FROM {ServiceState._meta.db_table} WHERE last_result_id IS NOT NULL"
    return {
        "results": _delete_in_chunks(results, f"started_at < %s AND id NOT IN ({kept})", results_before),
        "hourly": _delete_in_chunks(hourly, "start < %s", hourly_before),
    }


def _delete_in_chunks(table: str, where: str, before: dt.datetime) -> int:
    """Delete the rows of `table` matching `where` (one parameter: `before`), CHUNK at a time; return how many."""
    sql = f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {where} LIMIT {CHUNK})"
    deleted = 0
    for _ in range(MAX_CHUNKS):
        with transaction.atomic(), connection.cursor() as cursor:
            # As Django stores it: SQLite compares datetimes as text, with no "+00:00" suffix.
            cursor.execute(sql, [connection.ops.adapt_datetimefield_value(before)])
            count = cursor.rowcount
        deleted += count
        if count < CHUNK:
            break
    return deleted
