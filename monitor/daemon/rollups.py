"""Hourly and daily rollups of raw probe results, and the readers built on them.

Exposes `update_rollups(now)` (the periodic task's body), `uptime(service_id, location, since,
until)` and `latency_summary(...)`, and the helpers `summarize()` and `nearest_rank()`.

Decisions:

1. **What a rollup holds.** Per (service, location, UTC hour or day): `count` of probes, `up_count`
   (up or warning), and `latency` = {phase: {min, avg, max, p95}} for resolve, connect, tls,
   processing, transfer and total over the up and warning probes only ({} when there were none).
   A probe belongs to the period its `started_at` falls in.
2. **p95 is nearest-rank**: the ceil(0.95 * n)-th smallest value, which is what PostgreSQL's
   `percentile_disc(0.95)` returns, so both databases store the same number.
3. **When.** An hour is rolled up once it is complete: `GRACE` after its end, by when every probe
   that started in it has been recorded. Each run compares, per complete hour from the last
   rolled one (minus `LOOKBACK`, for a late batch) to now, the raw count with the rolled count
   and recomputes the hours that differ; results are only ever added or pruned, so a count
   mismatch is exactly "this hour changed". At most `MAX_PERIODS_PER_RUN` hours per run, oldest
   first, so a backlog is caught up over several runs. A day is recomputed the same way once
   its hours are, by comparing its count with the sum of its hours. Both come from the raw
   rows, so p95 is exact; a day is never recomputed once part of its raw rows may be pruned.
4. **How.** On PostgreSQL an hour or day is one `INSERT ... SELECT` with `percentile_disc` and
   `GROUP BY`, under an advisory lock so two runs never race; on SQLite it is computed in
   Python from short reads of a few services at a time, then written in one short transaction,
   since a long SQLite transaction would hold the only write lock while probes wait to record.
5. **Readers** take whole days from daily rollups, whole hours from hourly rollups, and the rest
   (the partial first and last hour, and everything after the last rolled hour) from raw results.
   A window starting before the service's oldest raw result (pruned, or never there) is widened
   to its whole first hour, and before its oldest hourly rollup to its whole first day, so a
   pruned edge counts whole periods rather than nothing. So uptime is exact for windows within
   raw retention, and off by at most one edge hour (one day past 400 days) beyond.
   `latency_summary()` combines min, average and max exactly; p95 across periods cannot be
   combined exactly, so it is the up-count-weighted mean of the periods' p95.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import Trunc

from monitor.models import DailyRollup, HourlyRollup, ProbeResult
from monitor.models.history import PHASES

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
GRACE = dt.timedelta(minutes=5)  # a probe starts before its slot's hour ends and is recorded within its timeout
LOOKBACK = HOUR  # re-check the last rolled hour(s) for results recorded late
MAX_PERIODS_PER_RUN = 24  # hours per run; the periodic task runs every minute, so a backlog clears fast
PERCENTILE = 0.95
OK_STATUSES = ("up", "warning")
SERVICES_PER_READ = 50  # SQLite: services read per query, so no single read holds the database long
ADVISORY_LOCK = 0x706F7274  # "port": PostgreSQL advisory lock key held while a run recomputes

Rollup = HourlyRollup | DailyRollup


# --- Computing ---------------------------------------------------------------------------------


def nearest_rank(ordered: Sequence[float], fraction: float = PERCENTILE) -> float:
    """Return the nearest-rank percentile of sorted values (as PostgreSQL's percentile_disc computes it)."""
    return ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]


def summarize(rows: Iterable[Sequence[Any]]) -> tuple[int, int, dict[str, dict[str, float]]]:
    """Return (count, up_count, latency) of raw rows (status, resolve, connect, tls, processing, transfer, total)."""
    count, values = 0, [[] for _ in PHASES]
    for status, *phases in rows:
        count += 1
        if status in OK_STATUSES:
            for bucket, value in zip(values, phases, strict=True):
                bucket.append(value)
    if not values[0]:
        return count, 0, {}
    latency = {}
    for phase, bucket in zip(PHASES, values, strict=True):
        bucket.sort()
        latency[phase] = {"min": bucket[0], "avg": sum(bucket) / len(bucket), "max": bucket[-1]}
        latency[phase]["p95"] = nearest_rank(bucket)
    return count, len(values[0]), latency


def update_rollups(now: dt.datetime | None = None) -> int:
    """Recompute the hourly and daily rollups whose raw results changed since they were computed; return how many.

    1. Find the complete hours from the last rolled one (minus LOOKBACK) to now.
    2. Recompute those whose raw count differs from their rolled count, oldest first.
    3. Recompute the complete days among them whose count differs from the sum of their hours.
    """
    now = now or dt.datetime.now(dt.UTC)
    with _single_run() as alone:
        if not alone:
            return 0  # another run is at it (PostgreSQL); this one's work would be the same
        complete = _floor(now - GRACE, HOUR)
        start = _first_hour(now, complete)
        if start is None:
            return 0
        stale = sorted(_stale_hours(start, complete))
        hours, frontier = stale[:MAX_PERIODS_PER_RUN], complete
        if len(stale) > MAX_PERIODS_PER_RUN:
            frontier = stale[MAX_PERIODS_PER_RUN]  # the hours after it wait for the next run
        for hour in hours:
            _recompute(HourlyRollup, hour, hour + HOUR)
        days = _stale_days(max(_floor(start, DAY), _ceil(_raw_cutoff(now), DAY)), _floor(frontier, DAY))
        for day in days:
            _recompute(DailyRollup, day, day + DAY)
        return len(hours) + len(days)


class _single_run:
    """Hold PostgreSQL's session advisory lock for one run; `as` gives whether it was free (always on SQLite)."""

    def __enter__(self) -> bool:
        self.held = False
        if connection.vendor != "postgresql":
            return True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK])
            self.held = bool(cursor.fetchone()[0])
        return self.held

    def __exit__(self, *exc: object) -> None:
        if self.held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK])


def _first_hour(now: dt.datetime, complete: dt.datetime) -> dt.datetime | None:
    """Return the first hour worth checking, or None when there is nothing to roll up."""
    latest = HourlyRollup.objects.aggregate(latest=Max("start"))["latest"]
    if latest is not None:
        start = latest - LOOKBACK
    else:
        earliest = ProbeResult.objects.aggregate(earliest=Min("started_at"))["earliest"]
        if earliest is None:
            return None
        start = _floor(earliest, HOUR)
    start = max(start, _ceil(_raw_cutoff(now), HOUR))  # an hour partly pruned would be rolled up short
    return start if start < complete else None


def _stale_hours(start: dt.datetime, end: dt.datetime) -> set[dt.datetime]:
    raw = dict(
        ProbeResult.objects.filter(started_at__gte=start, started_at__lt=end)
        .annotate(hour=Trunc("started_at", "hour", tzinfo=dt.UTC))
        .values_list("hour")
        .annotate(n=Count("id"))
        .values_list("hour", "n")
    )
    rolled = dict(
        HourlyRollup.objects.filter(start__gte=start, start__lt=end)
        .values_list("start")
        .annotate(n=Sum("count"))
        .values_list("start", "n")
    )
    return {hour for hour in raw.keys() | rolled.keys() if raw.get(hour, 0) != rolled.get(hour, 0)}


def _stale_days(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    if start >= end:
        return []
    hourly = dict(
        HourlyRollup.objects.filter(start__gte=start, start__lt=end)
        .annotate(day=Trunc("start", "day", tzinfo=dt.UTC))
        .values_list("day")
        .annotate(n=Sum("count"))
        .values_list("day", "n")
    )
    daily = dict(
        DailyRollup.objects.filter(start__gte=start, start__lt=end)
        .values_list("start")
        .annotate(n=Sum("count"))
        .values_list("start", "n")
    )
    return sorted(day for day in hourly.keys() | daily.keys() if hourly.get(day, 0) != daily.get(day, 0))


def _recompute(model: type[Rollup], start: dt.datetime, end: dt.datetime) -> None:
    """Replace the rollups of the period [start, end) with ones computed from the raw results."""
    if connection.vendor == "postgresql":
        with transaction.atomic():
            model.objects.filter(start=start).delete()
            _insert_in_sql(model, start, end)
        return
    rows = list(_compute_in_python(model, start, end))  # read before the write transaction: see docstring
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
            count, up_count, latency = summarize(row[2:] for row in group)
            yield model(
                service_id=service_id, location=location, start=start, count=count, up_count=up_count, latency=latency
            )


def _insert_in_sql(model: type[Rollup], start: dt.datetime, end: dt.datetime) -> None:
    ok = "status IN ('up', 'warning')"
    stats = ", ".join(
        f"'{phase}', jsonb_build_object("
        f"'min', min({phase}) FILTER (WHERE {ok}), "
        f"'avg', avg({phase}) FILTER (WHERE {ok}), "
        f"'max', max({phase}) FILTER (WHERE {ok}), "
        f"'p95', percentile_disc({PERCENTILE}) WITHIN GROUP (ORDER BY {phase}) FILTER (WHERE {ok}))"
        for phase in PHASES
    )
    sql = (
        f"INSERT INTO {model._meta.db_table} (service_id, location, start, count, up_count, latency) "
        f"SELECT service_id, location, %s, count(*), count(*) FILTER (WHERE {ok}), "
        f"CASE WHEN count(*) FILTER (WHERE {ok}) = 0 THEN '{{}}'::jsonb ELSE jsonb_build_object({stats}) END "
        f"FROM {ProbeResult._meta.db_table} WHERE started_at >= %s AND started_at < %s "
        "GROUP BY service_id, location"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [start, start, end])


# --- Reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Where each part of a window is read from: whole days, whole hours, raw results."""

    days: tuple[dt.datetime, dt.datetime] | None
    hours: list[tuple[dt.datetime, dt.datetime]]
    raw: list[tuple[dt.datetime, dt.datetime]]


def uptime(service_id: int, location: str, since: dt.datetime, until: dt.datetime | None = None) -> float | None:
    """Return the share of probes up or warning in [since, until) (until defaults to now); None if none ran."""
    plan = _plan(service_id, location, since, until or dt.datetime.now(dt.UTC))
    count = up = 0
    for model, ranges in ((DailyRollup, [plan.days] if plan.days else []), (HourlyRollup, plan.hours)):
        if ranges:
            totals = _rollups(model, service_id, location, ranges).aggregate(n=Sum("count"), up=Sum("up_count"))
            count, up = count + (totals["n"] or 0), up + (totals["up"] or 0)
    if plan.raw:
        totals = _raw(service_id, location, plan.raw).aggregate(
            n=Count("id"), up=Count("id", filter=Q(status__in=OK_STATUSES))
        )
        count, up = count + totals["n"], up + totals["up"]
    return up / count if count else None


def latency_summary(
    service_id: int, location: str, since: dt.datetime, until: dt.datetime | None = None
) -> dict[str, dict[str, float]]:
    """Return {phase: {min, avg, max, p95}} over the up and warning probes in [since, until); {} if none.

    min, avg and max are exact; p95 is the up-count-weighted mean of each period's p95 (see module docstring).
    """
    plan = _plan(service_id, location, since, until or dt.datetime.now(dt.UTC))
    parts: list[tuple[int, dict[str, dict[str, float]]]] = []
    for model, ranges in ((DailyRollup, [plan.days] if plan.days else []), (HourlyRollup, plan.hours)):
        if ranges:
            parts += list(_rollups(model, service_id, location, ranges).values_list("up_count", "latency"))
    if plan.raw:
        _, up_count, latency = summarize(_raw(service_id, location, plan.raw).values_list("status", *PHASES))
        parts.append((up_count, latency))
    return _combine([(weight, latency) for weight, latency in parts if weight and latency])


def _combine(parts: list[tuple[int, dict[str, dict[str, float]]]]) -> dict[str, dict[str, float]]:
    total = sum(weight for weight, _ in parts)
    if not total:
        return {}
    return {
        phase: {
            "min": min(latency[phase]["min"] for _, latency in parts),
            "avg": sum(weight * latency[phase]["avg"] for weight, latency in parts) / total,
            "max": max(latency[phase]["max"] for _, latency in parts),
            "p95": sum(weight * latency[phase]["p95"] for weight, latency in parts) / total,
        }
        for phase in PHASES
    }


def _plan(service_id: int, location: str, since: dt.datetime, until: dt.datetime) -> _Plan:
    """Split [since, until) into whole days and hours that are rolled up, and raw stretches."""
    pair = {"service_id": service_id, "location": location}
    oldest_raw = ProbeResult.objects.filter(**pair).aggregate(oldest=Min("started_at"))["oldest"]
    if oldest_raw is None or since < oldest_raw:
        since = _floor(since, HOUR)  # its raw rows may be pruned: count the whole hour from its rollup
        oldest_hour = HourlyRollup.objects.filter(**pair).aggregate(oldest=Min("start"))["oldest"]
        if oldest_hour is None or since < oldest_hour:
            since = _floor(since, DAY)  # and its hourly rollups too: count the whole day
    latest = HourlyRollup.objects.aggregate(latest=Max("start"))["latest"]
    rolled_until = min(until, latest + HOUR) if latest is not None else since
    first, last = _ceil(since, HOUR), _floor(rolled_until, HOUR)
    if first >= last:
        return _Plan(None, [], [(since, until)] if since < until else [])
    raw = [(since, first)] if since < first else []
    raw.append((last, until))
    day_first, day_last = _ceil(first, DAY), _floor(last, DAY)
    if day_first >= day_last:
        return _Plan(None, [(first, last)], raw)
    hours = [(a, b) for a, b in ((first, day_first), (day_last, last)) if a < b]
    return _Plan((day_first, day_last), hours, raw)


def _rollups(model: type[Rollup], service_id: int, location: str, ranges: list[tuple[dt.datetime, dt.datetime]]):
    within = Q()
    for a, b in ranges:
        within |= Q(start__gte=a, start__lt=b)
    return model.objects.filter(within, service_id=service_id, location=location)


def _raw(service_id: int, location: str, ranges: list[tuple[dt.datetime, dt.datetime]]):
    within = Q()
    for a, b in ranges:
        within |= Q(started_at__gte=a, started_at__lt=b)
    return ProbeResult.objects.filter(within, service_id=service_id, location=location)


# --- Time --------------------------------------------------------------------------------------


def _raw_cutoff(now: dt.datetime) -> dt.datetime:
    return now - dt.timedelta(days=settings.PORTWATCH_RESULT_RETENTION_DAYS)


def _floor(moment: dt.datetime, period: dt.timedelta) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    if period == DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def _ceil(moment: dt.datetime, period: dt.timedelta) -> dt.datetime:
    floor = _floor(moment, period)
    return floor if floor == moment else floor + period
