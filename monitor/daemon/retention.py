"""Delete history past its retention once it is rolled up, in short chunks, so none is lost and no probe waits long.

Exposes `prune(now) -> {"results": n, "hourly": m}`, the body of the hourly `prune` task and of
`manage.py prune`, and `hourly_retention_days()`.

Decisions:

1. **Only what is rolled up goes.** Raw results older than `PORTWATCH_RESULT_RETENTION_DAYS` (7)
   go once their hour and their day are rolled up: the hour's `HourlyRollup` rows count at least
   as many results as the hour holds, and the day's `DailyRollup` rows at least as many as its
   hourly ones. At least, not exactly: raw results are only ever added, and removed only here, so
   fewer raw rows than rolled up means prune already took part of the hour, more means some are
   not rolled up yet. An hour or day that is not rolled up keeps its raw results however old (the
   rollup task stopped, say): they are the only copy of that history. Checked per hour and per
   day over all services, as the writer rolls them up (`monitor.daemon.rollups`).
2. Hourly rollups older than `hourly_retention_days()` go once their day is rolled up (its daily
   rollups count at least what its hourly ones do). That is `PORTWATCH_HOURLY_RETENTION_DAYS`
   (400), but never less than the raw results' retention: prune needs an hour's rollup to tell
   whether its raw results were rolled up. Daily rollups, incidents and status changes stay (one
   small row per service and day, or per outage).
3. At most `CHUNK` rows per DELETE, each in its own transaction: a single DELETE of a day's
   results (14 million rows at 10,000 services) would hold its locks, and on SQLite the only
   write lock, for minutes while every worker waits to record.
4. The result a `ServiceState.last_result` points to is kept however old, so a service that has
   not been probed for a while (disabled, or its location's workers gone) still shows its last
   probe; that is at most one row per service and location. It also lets the DELETE skip
   Django's SET_NULL cascade, which would load every deleted row first.
5. The DELETEs are plain SQL: no model signals fire (none are connected to these models).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Trunc

from monitor.models import DailyRollup, HourlyRollup, ProbeResult, ServiceState
from monitor.stats import DAY, HOUR, ceil, floor, stretches, within

CHUNK = 5_000  # rows per DELETE: tens of milliseconds on PostgreSQL, so a recording batch barely waits
MAX_CHUNKS = 10_000  # per run and table: bounds one run (50 million rows); the next run goes on
STRETCHES_PER_QUERY = 200  # time stretches OR-ed in one query: SQLite refuses expressions over 1,000 deep

Stretches = list[tuple[dt.datetime, dt.datetime]]


def prune(now: dt.datetime | None = None) -> dict[str, int]:
    """Delete raw results and hourly rollups past their retention and rolled up; return how many rows of each went."""
    now = now or dt.datetime.now(dt.UTC)
    results_before = now - dt.timedelta(days=settings.PORTWATCH_RESULT_RETENTION_DAYS)
    hourly_before = now - dt.timedelta(days=hourly_retention_days())
    return {"results": _prune_results(results_before), "hourly": _prune_hourly(hourly_before)}


def hourly_retention_days() -> int:
    """Return how many days hourly rollups are kept: their setting, but never less than raw results are."""
    return max(settings.PORTWATCH_HOURLY_RETENTION_DAYS, settings.PORTWATCH_RESULT_RETENTION_DAYS)


def _prune_results(before: dt.datetime) -> int:
    """Delete the raw results older than `before` whose hour and day are rolled up, but those a state points to."""
    kept = ServiceState.objects.filter(last_result__isnull=False).values("last_result_id")
    counts = (
        ProbeResult.objects.filter(started_at__lt=before)
        .annotate(hour=Trunc("started_at", "hour", tzinfo=dt.UTC))
        .values_list("hour")
        .annotate(n=Count("id"), deletable=Count("id", filter=~Q(id__in=kept)))
        .values_list("hour", "n", "deletable")
    )
    raw = {hour: n for hour, n, deletable in counts if deletable}
    if not raw:
        return 0
    days = stretches((floor(hour, DAY) for hour in raw), DAY)
    rolled = _sums(HourlyRollup.objects.all(), "start", stretches(raw, HOUR))
    hourly = _sums(HourlyRollup.objects.annotate(day=Trunc("start", "day", tzinfo=dt.UTC)), "day", days)
    daily = _sums(DailyRollup.objects.all(), "start", days)
    gone = [
        hour
        for hour, n in raw.items()
        if rolled.get(hour, 0) >= n and daily.get(floor(hour, DAY), 0) >= hourly.get(floor(hour, DAY), 0)
    ]
    kept_sql = f"SELECT last_result_id FROM {ServiceState._meta.db_table} WHERE last_result_id IS NOT NULL"
    where = f"started_at >= %s AND started_at < %s AND id NOT IN ({kept_sql})"
    return _delete_in_chunks(ProbeResult._meta.db_table, where, stretches(gone, HOUR), before)


def _prune_hourly(before: dt.datetime) -> int:
    """Delete the hourly rollups older than `before` whose day is rolled up."""
    hourly = dict(
        HourlyRollup.objects.filter(start__lt=ceil(before, DAY))  # whole days: their sums compare with the daily ones
        .annotate(day=Trunc("start", "day", tzinfo=dt.UTC))
        .values_list("day")
        .annotate(n=Sum("count"))
        .values_list("day", "n")
    )
    daily = _sums(DailyRollup.objects.all(), "start", stretches(hourly, DAY))
    gone = [day for day, n in hourly.items() if daily.get(day, 0) >= n]
    return _delete_in_chunks(HourlyRollup._meta.db_table, "start >= %s AND start < %s", stretches(gone, DAY), before)


def _sums(rollups: QuerySet, key: str, periods: Stretches) -> dict[dt.datetime, int]:
    """Return {key: sum of count} of the rollups whose start falls in the stretches, a batch of stretches per query."""
    sums: dict[dt.datetime, int] = {}
    for index in range(0, len(periods), STRETCHES_PER_QUERY):
        batch = periods[index : index + STRETCHES_PER_QUERY]
        rows = rollups.filter(within("start", batch)).values_list(key).annotate(n=Sum("count")).values_list(key, "n")
        sums.update(rows)
    return sums


def _delete_in_chunks(table: str, where: str, periods: Stretches, before: dt.datetime) -> int:
    """Delete the rows of `table` matching `where` (its parameters: each stretch, cut at `before`), CHUNK at a time."""
    sql = f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {where} LIMIT {CHUNK})"
    deleted = chunks = 0
    for start, end in periods:
        # As Django stores them: SQLite compares datetimes as text, with no "+00:00" suffix.
        params = [connection.ops.adapt_datetimefield_value(moment) for moment in (start, min(end, before))]
        while chunks < MAX_CHUNKS:
            chunks += 1
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, params)
                count = cursor.rowcount
            deleted += count
            if count < CHUNK:
                break
    return deleted
