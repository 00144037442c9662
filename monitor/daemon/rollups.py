"""Hourly and daily rollups of raw probe results: the writer behind the periodic `update_rollups` task.

Exposes `update_rollups(now)`, and `single_run(key)`, the lock that keeps two runs of a periodic
writer apart. Pages and /metrics read rollups through `monitor.readers`; the
arithmetic both sides share (`summarize()`, `nearest_rank()`, `combine()`) is in `monitor.stats`.

Decisions:

1. **What a rollup holds.** Per (service, location, UTC hour or day): `count` of results (every
   slot), `up_count` (up or warning), `unknown_count` (status unknown: a missed slot, a crashed
   prober, a configuration error; nothing was measured, so it is neither up nor down) and
   `latency` = {phase: {min, avg, max, p95}} for resolve, connect, tls, processing, transfer and
   total over the up and warning results only ({} when there were none). A result belongs to the
   period its `started_at` falls in.
2. **p95 is nearest-rank**: the ceil(0.95 * n)-th smallest value, which is what PostgreSQL's
   `percentile_disc(0.95)` returns, so both databases store the same number.
3. **When.** An hour is rolled up once it is complete: `GRACE` after its end, by when every probe
   that started in it has been recorded. Each run compares, per complete hour from the last rolled
   one (minus `LOOKBACK`, for a late batch) to now, the raw count with the rolled count and
   recomputes the hours with more raw results than rolled ones. Raw results are only ever added,
   and removed only by `retention.prune()`, which takes nothing from an hour before it is rolled
   up; so more raw than rolled means "results arrived", fewer means "pruned", and a pruned hour is
   never recomputed from what is left of it. At most `MAX_PERIODS_PER_RUN` hours per run, oldest
   first, so a backlog is caught up over several runs.
4. **Days.** A day is recomputed once its hours are, when its hours count more than it does. Prune
   waits for the day's rollup too, so the first time a day is rolled up its raw rows are all
   there, whatever the retention (1 day included), and it comes from them, with an exact p95. A
   day recomputed later (a result recorded late into its last hours) whose raw rows prune has
   started on, which shows as fewer raw rows than its hours counted, is merged from its hourly
   rollups instead: counts exact, p95 the weighted mean of the hours' (`stats.combine()`).
5. **How.** On PostgreSQL an hour or day is one `INSERT ... SELECT` with `percentile_disc` and
   `GROUP BY`, under an advisory lock so two runs never race; on SQLite it is computed in Python
   from short reads of a few services at a time, then written in one short transaction, since a
   long SQLite transaction would hold the only write lock while probes wait to record.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import Count, Max, Min, Sum
from django.db.models.functions import Trunc

from monitor.models import DailyRollup, HourlyRollup, ProbeResult
from monitor.models.history import PHASES
from monitor.stats import DAY, HOUR, OK_STATUSES, PERCENTILE, UNKNOWN, combine, floor, summarize

GRACE = dt.timedelta(minutes=5)  # a probe starts before its slot's hour ends and is recorded within its timeout
LOOKBACK = HOUR  # re-check the last rolled hour(s) for results recorded late
MAX_PERIODS_PER_RUN = 24  # hours per run; the periodic task runs every minute, so a backlog clears fast
SERVICES_PER_READ = 50  # SQLite: services read per query, so no single read holds the database long
ADVISORY_LOCK = 0x706F7274  # "port": PostgreSQL advisory lock key held while a run recomputes

Rollup = HourlyRollup | DailyRollup


def update_rollups(now: dt.datetime | None = None) -> int:
    """Recompute the hourly and daily rollups that results were added to since they were computed; return how many.

    1. Find the complete hours from the last rolled one (minus LOOKBACK) to now.
    2. Recompute those with more raw results than they rolled up, oldest first.
    3. Recompute the complete days among them whose hours now count more than they do.
    """
    now = now or dt.datetime.now(dt.UTC)
    with single_run(ADVISORY_LOCK) as alone:
        if not alone:
            return 0  # another run is at it (PostgreSQL); this one's work would be the same
        complete = floor(now - GRACE, HOUR)
        start = _first_hour(complete)
        if start is None:
            return 0
        stale = sorted(_stale_hours(start, complete))
        hours, frontier = stale[:MAX_PERIODS_PER_RUN], complete
        if len(stale) > MAX_PERIODS_PER_RUN:
            frontier = stale[MAX_PERIODS_PER_RUN]  # the hours after it wait for the next run
        for hour in hours:
            _recompute(HourlyRollup, hour, hour + HOUR)
        days = _stale_days(floor(start, DAY), floor(frontier, DAY))
        for day, hourly_count in days.items():
            _recompute_day(day, hourly_count)
        return len(hours) + len(days)


class single_run:
    """Hold PostgreSQL's session advisory lock `key` for one run; `as` gives whether it was free (always on SQLite)."""

    def __init__(self, key: int) -> None:
        self.key = key

    def __enter__(self) -> bool:
        self.held = False
        if connection.vendor != "postgresql":
            return True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [self.key])
            self.held = bool(cursor.fetchone()[0])
        return self.held

    def __exit__(self, *exc: object) -> None:
        if self.held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [self.key])


def _first_hour(complete: dt.datetime) -> dt.datetime | None:
    """Return the first hour worth checking, or None when there is nothing to roll up."""
    latest = HourlyRollup.objects.aggregate(latest=Max("start"))["latest"]
    if latest is not None:
        start = latest - LOOKBACK
    else:
        earliest = ProbeResult.objects.aggregate(earliest=Min("started_at"))["earliest"]
        if earliest is None:
            return None
        start = floor(earliest, HOUR)
    return start if start < complete else None


def _stale_hours(start: dt.datetime, end: dt.datetime) -> set[dt.datetime]:
    """Return the hours in [start, end) holding more raw results than their rollups count."""
    raw = _per_period(ProbeResult.objects, "started_at", "hour", Count("id"), start, end)
    rolled = _per_period(HourlyRollup.objects, "start", None, Sum("count"), start, end)
    return {hour for hour, n in raw.items() if n > rolled.get(hour, 0)}


def _stale_days(start: dt.datetime, end: dt.datetime) -> dict[dt.datetime, int]:
    """Return {day: what its hourly rollups count} for the days in [start, end) whose hours count more than they do."""
    if start >= end:
        return {}
    hourly = _per_period(HourlyRollup.objects, "start", "day", Sum("count"), start, end)
    daily = _per_period(DailyRollup.objects, "start", None, Sum("count"), start, end)
    return {day: n for day, n in sorted(hourly.items()) if n > daily.get(day, 0)}


def _per_period(rows, moment: str, period: str | None, total, start: dt.datetime, end: dt.datetime) -> dict:
    """Return {period start: total} over `rows` whose `moment` is in [start, end), grouped by `period` (or as is)."""
    within = rows.filter(**{f"{moment}__gte": start, f"{moment}__lt": end})
    if period is not None:
        within = within.annotate(**{period: Trunc(moment, period, tzinfo=dt.UTC)})
    key = period or moment
    return dict(within.values_list(key).annotate(n=total).values_list(key, "n"))


def _recompute_day(day: dt.datetime, hourly_count: int) -> None:
    """Recompute a day from its raw rows when they are all there, else by merging its hourly rollups."""
    raw_count = ProbeResult.objects.filter(started_at__gte=day, started_at__lt=day + DAY).count()
    if raw_count >= hourly_count:
        _recompute(DailyRollup, day, day + DAY)
    else:
        _merge_hours(day)


def _recompute(model: type[Rollup], start: dt.datetime, end: dt.datetime) -> None:
    """Replace the rollups of the period [start, end) with ones computed from the raw results."""
    if connection.vendor == "postgresql":
        with transaction.atomic():
            model.objects.filter(start=start).delete()
            _insert_in_sql(model, start, end)
        return
    rows = list(_compute_in_python(model, start, end))  # read before the write transaction: see docstring
    _replace(model, start, rows)


def _replace(model: type[Rollup], start: dt.datetime, rows: list[Rollup]) -> None:
    with transaction.atomic():
        model.objects.filter(start=start).delete()
        model.objects.bulk_create(rows, batch_size=500)


def _compute_in_python(model: type[Rollup], start: dt.datetime, end: dt.datetime) -> Iterable[Rollup]:
    period = ProbeResult.objects.filter(started_at__gte=start, started_at__lt=end)
    service_ids = sorted(set(period.values_list("service_id", flat=True).distinct()))
    for index in range(0, len(service_ids), SERVICES_PER_READ):
        chunk = service_ids[index : index + SERVICES_PER_READ]
        rows = (
            period.filter(service_id__in=chunk)
            .order_by("service_id", "location")
            .values_list("service_id", "location", "status", *PHASES)
        )
        for (service_id, location), group in itertools.groupby(rows, key=lambda row: (row[0], row[1])):
            summary = summarize(row[2:] for row in group)
            yield model(
                service_id=service_id,
                location=location,
                start=start,
                count=summary.count,
                up_count=summary.up,
                unknown_count=summary.unknown,
                latency=summary.latency,
            )


def _merge_hours(day: dt.datetime) -> None:
    """Replace the daily rollups of `day` with the sums of its hourly rollups (the rare path: see docstring)."""
    hours = (
        HourlyRollup.objects.filter(start__gte=day, start__lt=day + DAY)
        .order_by("service_id", "location")
        .values_list("service_id", "location", "count", "up_count", "unknown_count", "latency")
    )
    rows = []
    for (service_id, location), group in itertools.groupby(hours, key=lambda row: (row[0], row[1])):
        group = list(group)
        rows.append(
            DailyRollup(
                service_id=service_id,
                location=location,
                start=day,
                count=sum(row[2] for row in group),
                up_count=sum(row[3] for row in group),
                unknown_count=sum(row[4] for row in group),
                latency=combine((row[3], row[5]) for row in group),
            )
        )
    _replace(DailyRollup, day, rows)


def _insert_in_sql(model: type[Rollup], start: dt.datetime, end: dt.datetime) -> None:
    ok = "status IN ({})".format(", ".join(f"'{status}'" for status in OK_STATUSES))
    stats = ", ".join(
        f"'{phase}', jsonb_build_object("
        f"'min', min({phase}) FILTER (WHERE {ok}), "
        f"'avg', avg({phase}) FILTER (WHERE {ok}), "
        f"'max', max({phase}) FILTER (WHERE {ok}), "
        f"'p95', percentile_disc({PERCENTILE}) WITHIN GROUP (ORDER BY {phase}) FILTER (WHERE {ok}))"
        for phase in PHASES
    )
    sql = (
        f"INSERT INTO {model._meta.db_table} (service_id, location, start, count, up_count, unknown_count, latency) "
        f"SELECT service_id, location, %s, count(*), count(*) FILTER (WHERE {ok}), "
        f"count(*) FILTER (WHERE status = '{UNKNOWN}'), "
        f"CASE WHEN count(*) FILTER (WHERE {ok}) = 0 THEN '{{}}'::jsonb ELSE jsonb_build_object({stats}) END "
        f"FROM {ProbeResult._meta.db_table} WHERE started_at >= %s AND started_at < %s "
        "GROUP BY service_id, location"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [start, start, end])
