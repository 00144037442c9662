"""Counts and latency statistics of probe results, shared by the rollup writer and the readers.

Exposes the periods `HOUR` and `DAY` with `floor()` / `ceil()`, `nearest_rank()`, `summarize()` (raw
rows to a `Summary`), `combine()` (latency of several periods into one), `within()` (a filter on
time stretches), and `counted()` with `LATENCY_BUCKETS` and `OUTCOMES` (the cumulative counters
/metrics exposes). No queries run here.
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

# The latency histogram's upper bounds, in seconds (Prometheus adds +Inf: the count). /metrics
# exposes it per service, location and phase from `ServiceState.counters`.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("up", "warning", "down", "missed", "error")  # what each recorded slot counts as
# Why a slot got no probe: a bounded label for /metrics' portwatch_missed_slots_total{reason}, found by
# the words of the reasons the dispatcher, the sweeper, the runner and the prober write ("not probed: ...").
MISSED_REASONS = (
    ("never_dispatched", "the slot was never dispatched"),
    ("unserved", "no worker is serving location"),
    ("lost", "no result came back"),
    ("dispatcher_late", "the dispatcher reached this slot"),
    ("worker_late", "the probe reached the worker"),
    ("worker_busy", "the worker stayed at its limit"),
    ("worker_stopped", "the worker stopped before the slot"),
)


def missed_reason(reason: str) -> str:
    """Return the MISSED_REASONS key of a missed slot's reason, or "other"."""
    return next((key for key, words in MISSED_REASONS if words in reason), "other")


def outcome(status: str, failure: str) -> str:
    """Return what a result counts as: its status, or for one that measured nothing, missed or error."""
    if status == UNKNOWN:
        return "missed" if failure == "missed" else "error"
    return status


def counted(counters: dict, status: str, failure: str, phases: dict[str, float], reason: str | None = None) -> dict:
    """Return cumulative `counters` with one more result in them.

    {"checks": {outcome: n}, "latency": {phase: {"buckets": [n per LATENCY_BUCKETS bound, cumulative],
    "count": n, "sum": seconds}}}. Latency counts the results that reached the service (up and
    warning), as the rollups' latency does: a refused connection's time says nothing of its speed.
    Given a missed slot's `reason`, it is also counted in {"missed": {MISSED_REASONS key: n}}.
    """
    checks = dict(counters.get("checks") or {})
    kind = outcome(status, failure)
    checks[kind] = checks.get(kind, 0) + 1
    latency = dict(counters.get("latency") or {})
    if status in OK_STATUSES:
        for phase in PHASES:
            value = phases.get(phase) or 0.0
            old = latency.get(phase) or {"buckets": [0] * len(LATENCY_BUCKETS), "count": 0, "sum": 0.0}
            latency[phase] = {
                "buckets": [n + (value <= bound) for n, bound in zip(old["buckets"], LATENCY_BUCKETS, strict=True)],
                "count": old["count"] + 1,
                "sum": old["sum"] + value,
            }
    updated = {"checks": checks, "latency": latency}
    missed = counters.get("missed")
    if kind == "missed" and reason is not None:  # given by the writer: {"missed": {MISSED_REASONS key: n}}
        missed = dict(missed or {})
        key = missed_reason(reason)
        missed[key] = missed.get(key, 0) + 1
    if missed:
        updated["missed"] = missed
    return updated


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
