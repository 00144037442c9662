"""Counts and latency statistics of probe results, shared by the rollup writer and the readers.

Exposes the periods `HOUR` and `DAY` with `floor()` / `ceil()`, `nearest_rank()`, `summarize()` (raw
rows to a `Summary`), `combine()` (latency of several periods into one) and `within()` (a filter on
time stretches). No queries run here.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from django.db.models import BooleanField, Expression, F, Q

from monitor.models.history import PHASES

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
PERCENTILE = 0.95
OK_STATUSES = ("up", "warning")  # the service answered as it should
UNKNOWN = "unknown"  # nothing was measured: a missed slot, an internal error, a configuration error

Latency = dict[str, dict[str, float]]


class Summary(NamedTuple):
    """Counts of a period's results (`down` is what is left) and {phase: {min, avg, max, p95}} of the good ones."""

    count: int
    up: int
    unknown: int
    latency: Latency


def nearest_rank(ordered: Sequence[float], fraction: float = PERCENTILE) -> float:
    """Return the nearest-rank percentile of sorted values (as PostgreSQL's percentile_disc computes it)."""
    return ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]


def summarize(rows: Iterable[Sequence[Any]]) -> Summary:
    """Return the Summary of raw rows (status, resolve, connect, tls, processing, transfer, total).

    Latency is over up and warning results only: a down result's timings say how fast it failed.
    """
    count = unknown = 0
    values: list[list[float]] = [[] for _ in PHASES]
    for status, *phases in rows:
        count += 1
        if status in OK_STATUSES:
            for bucket, value in zip(values, phases, strict=True):
                bucket.append(value)
        elif status == UNKNOWN:
            unknown += 1
    if not values[0]:
        return Summary(count, 0, unknown, {})
    latency = {}
    for phase, bucket in zip(PHASES, values, strict=True):
        bucket.sort()
        latency[phase] = {"min": bucket[0], "avg": sum(bucket) / len(bucket), "max": bucket[-1]}
        latency[phase]["p95"] = nearest_rank(bucket)
    return Summary(count, len(values[0]), unknown, latency)


def combine(parts: Iterable[tuple[int, Latency]]) -> Latency:
    """Return the latency of periods given as (up count, latency): min, avg and max exact, p95 a weighted mean.

    Nearest-rank p95 of a union cannot be had from the parts' p95, so this is an estimate; it equals
    the true p95 when the parts' distributions agree.
    """
    parts = [(weight, latency) for weight, latency in parts if weight and latency]
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


def within(field: str, stretches: Iterable[tuple[dt.datetime, dt.datetime]]) -> Q:
    """Return a filter for `field` in any of the [start, end) stretches (matches nothing when there are none)."""
    return Q(Inside(field, stretches))


class Inside(Expression):
    """A filter for `field` in any of the [start, end) stretches (none: nothing); `within()` wraps it in a Q.

    A `Q` of `__gte`/`__lt` lookups a stretch took Django ~0.15 ms each to resolve and compile (a
    page's uptime asks for dozens); this renders the same SQL in about a third of that.
    """

    conditional = True

    def __init__(self, field: str, stretches: Iterable[tuple[dt.datetime, dt.datetime]]) -> None:
        super().__init__(output_field=BooleanField())
        self.column, self.stretches = F(field), tuple(stretches)

    def get_source_expressions(self) -> list[Any]:
        return [self.column]

    def set_source_expressions(self, expressions: list[Any]) -> None:
        (self.column,) = expressions

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        if not self.stretches:
            return "1 = 0", []
        column, _ = compiler.compile(self.column)
        sql = " OR ".join(f"({column} >= %s AND {column} < %s)" for _ in self.stretches)
        moments = [connection.ops.adapt_datetimefield_value(moment) for stretch in self.stretches for moment in stretch]
        return f"({sql})", moments


def stretches(starts: Iterable[dt.datetime], period: dt.timedelta) -> list[tuple[dt.datetime, dt.datetime]]:
    """Return the periods beginning at `starts` joined into [start, end) stretches, in order."""
    joined: list[tuple[dt.datetime, dt.datetime]] = []
    for start in sorted(set(starts)):
        if joined and joined[-1][1] == start:
            joined[-1] = (joined[-1][0], start + period)
        else:
            joined.append((start, start + period))
    return joined


def floor(moment: dt.datetime, period: dt.timedelta) -> dt.datetime:
    """Return the start of the UTC hour or day (`period`) that `moment` falls in."""
    moment = moment.astimezone(dt.UTC)
    if period == DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil(moment: dt.datetime, period: dt.timedelta) -> dt.datetime:
    """Return `moment` if it starts an hour or day (`period`), else the start of the next one."""
    start = floor(moment, period)
    return start if start == moment else start + period
