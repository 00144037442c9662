"""What pages and /metrics read: current states, and uptime and latency over windows, for many services at once.

Exposes `current_states()`, `uptimes()` and `latency_summaries()` (bulk), `uptime()` and
`latency_summary()` (one service and location), `Uptime` and `WINDOWS`. Nothing here imports the
daemon's writers (`monitor.daemon`), and each reader takes a fixed number of queries whatever the
number of services.

Decisions:

1. **Where a window is read from.** [now - window, now) is split the same way for every service:
   its whole days from daily rollups, the whole hours of its partial first and last days from
   hourly rollups, and its partial first hour and everything after the newest hourly rollup from
   raw results (the writer rolls up every service of an hour at once, so the newest
   `HourlyRollup` marks where rollups end).
2. **Fallbacks, per service and location.** A day without its `DailyRollup` is read from its
   hours, and an hour without its `HourlyRollup` from its raw results, where there are any.
3. **Pruned edges.** A partial first hour whose raw results were pruned (fewer are left than its
   rollup counted) counts whole from its rollup, and a partial first day whose hourly rollups are
   all gone counts whole from its daily rollup. So uptime is exact within the raw retention, and
   off by at most one edge hour (one edge day past the hourly retention) beyond.
4. **Unknown counts apart.** Results with status unknown (a missed slot, a crashed prober, a
   configuration error) measured nothing: `Uptime.unknown` counts them, `uptime` is
   up / (up + down), and `coverage` says what share of the slots was measured at all.
5. **Latency**: min, avg and max over a window are exact; p95 is the up-count-weighted mean of the
   periods' p95 (`stats.combine()`), the window's raw results counting as one period.
6. **Cost**: at most five queries: the services' locations (when given service ids), the newest
   hourly rollup, daily rollups, hourly rollups (partial days, days without a daily rollup), and
   raw results, counted by hour in SQL for uptime, read as rows for latency (p95 needs the values).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.db.models import Case, Count, IntegerField, Max, Q, Value, When
from django.db.models.functions import Trunc

from monitor.models import DailyRollup, HourlyRollup, ProbeResult, Service, ServiceState
from monitor.models.history import PHASES
from monitor.stats import (
    DAY,
    HOUR,
    OK_STATUSES,
    UNKNOWN,
    Latency,
    ceil,
    combine,
    floor,
    stretches,
    summarize,
    within,
)

WINDOWS = (DAY, 7 * DAY, 30 * DAY)

Pair = tuple[int, str]  # (service id, location)


@dataclass(frozen=True)
class Uptime:
    """Results of one service at one location over a window: up (or warning), down, and unknown (not measured)."""

    up: int = 0
    down: int = 0
    unknown: int = 0

    @property
    def total(self) -> int:
        return self.up + self.down + self.unknown

    @property
    def uptime(self) -> float | None:
        """Return the share of measured results that were up or warning; None when nothing was measured."""
        measured = self.up + self.down
        return self.up / measured if measured else None

    @property
    def coverage(self) -> float | None:
        """Return the share of results that measured something; None when there were none."""
        return (self.up + self.down) / self.total if self.total else None

    def __add__(self, other: Uptime) -> Uptime:
        return Uptime(self.up + other.up, self.down + other.down, self.unknown + other.unknown)


def current_states(service_ids: Iterable[int] | None = None) -> dict[Pair, ServiceState]:
    """Return {(service id, location): ServiceState} of the given services (all when None), in one query."""
    states = ServiceState.objects.all()
    if service_ids is not None:
        states = states.filter(service_id__in=list(service_ids))
    return {(state.service_id, state.location): state for state in states}


def uptimes(
    services: Iterable[int | Pair], windows: Iterable[dt.timedelta] = WINDOWS, now: dt.datetime | None = None
) -> dict[Pair, dict[dt.timedelta, Uptime]]:
    """Return {(service id, location): {window: Uptime}} over [now - window, now) for each window.

    `services` holds (service id, location) pairs, or service ids, which stand for every location
    the service is probed from.
    """
    history = _History(_pairs(services), tuple(windows), now, _RawCounts)
    return {
        pair: {window: sum(_as_uptimes(history.parts(pair, plan)), Uptime()) for window, plan in history.plans.items()}
        for pair in history.pairs
    }


def latency_summaries(
    services: Iterable[int | Pair], windows: Iterable[dt.timedelta] = WINDOWS, now: dt.datetime | None = None
) -> dict[Pair, dict[dt.timedelta, Latency]]:
    """Return {(service id, location): {window: {phase: {min, avg, max, p95}}}}: up and warning results only."""
    history = _History(_pairs(services), tuple(windows), now, _RawRows, latency=True)
    summaries: dict[Pair, dict[dt.timedelta, Latency]] = {}
    for pair in history.pairs:
        summaries[pair] = {}
        for window, plan in history.plans.items():
            parts, raw = [], []
            for part in history.parts(pair, plan):
                if isinstance(part, _Row):
                    parts.append((part.up, part.latency))
                else:
                    raw += part
            summary = summarize(raw)
            summaries[pair][window] = combine([*parts, (summary.up, summary.latency)])
    return summaries


def uptime(service_id: int, location: str, window: dt.timedelta = DAY, now: dt.datetime | None = None) -> Uptime:
    """Return the Uptime of one service at one location over [now - window, now)."""
    return uptimes([(service_id, location)], (window,), now)[(service_id, location)][window]


def latency_summary(
    service_id: int, location: str, window: dt.timedelta = DAY, now: dt.datetime | None = None
) -> Latency:
    """Return the latency summary of one service at one location over [now - window, now)."""
    return latency_summaries([(service_id, location)], (window,), now)[(service_id, location)][window]


# --- Planning: the same split of a window for every service --------------------------------------


class _Row(NamedTuple):
    """A rollup's counts and latency."""

    count: int
    up: int
    unknown: int
    latency: Latency


@dataclass(frozen=True)
class _Plan:
    since: dt.datetime
    until: dt.datetime
    head: dt.datetime | None  # the partial first hour: raw results from `since` to its end
    edge: dt.datetime | None  # the day of the first whole hours when they do not start it
    hours: tuple[tuple[dt.datetime, dt.datetime], ...]  # stretches of whole hours, from hourly rollups
    days: tuple[dt.datetime, ...]  # whole days, from daily rollups
    tail: dt.datetime  # raw results from here to `until`


def _plan(since: dt.datetime, until: dt.datetime, rolled_until: dt.datetime | None) -> _Plan:
    """Split [since, until) into a raw head, whole hours and days rolled up before `rolled_until`, and a raw tail."""
    first = ceil(since, HOUR)
    last = min(floor(until, HOUR), rolled_until) if rolled_until else first
    if first >= last:
        return _Plan(since, until, None, None, (), (), since)  # nothing whole is rolled up yet: all raw
    day_a, day_b = ceil(first, DAY), floor(last, DAY)
    if day_a < day_b:
        hours = tuple((a, b) for a, b in ((first, day_a), (day_b, last)) if a < b)
        days = tuple(day_a + n * DAY for n in range((day_b - day_a) // DAY))
    else:
        hours, days = ((first, last),), ()
    head = floor(since, HOUR) if since < first else None
    edge = floor(first, DAY) if first < day_a else None
    return _Plan(since, until, head, edge, hours, days, last)


def _hours(start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    while start < end:
        yield start
        start += HOUR


# --- Loading: a fixed number of queries for any number of services ------------------------------


class _History:
    """What a set of windows needs of the rollups and raw results of some pairs, and how each window adds up."""

    def __init__(
        self, pairs: list[Pair], windows: tuple[dt.timedelta, ...], now: dt.datetime | None, raw: type, latency=False
    ) -> None:
        """Plan windows; read daily rollups, hourly rollups and raw results: each read says what the next needs."""
        now = now or dt.datetime.now(dt.UTC)
        latest = HourlyRollup.objects.aggregate(latest=Max("start"))["latest"]
        self.pairs = pairs
        self.plans = {window: _plan(now - window, now, latest and latest + HOUR) for window in windows}
        plans = self.plans.values()
        mine = Q(service_id__in={pair[0] for pair in pairs}, location__in={pair[1] for pair in pairs})

        days = {day for plan in plans for day in plan.days}
        edges = {plan.edge for plan in plans if plan.edge}  # whole, to tell whether their hours were pruned
        self.daily = _rollups(DailyRollup, mine & within("start", stretches(days | edges, DAY)), latency)

        def days_without(pair: Pair) -> set[dt.datetime]:
            return days - self.daily.get(pair, {}).keys()

        hours = {hour for plan in plans for a, b in plan.hours for hour in _hours(a, b)}
        heads = {plan.head for plan in plans if plan.head}  # their rollups, in case their raw rows were pruned
        condition = within("start", stretches(hours | heads, HOUR) + stretches(edges, DAY))
        condition |= _gaps(_lacking(pairs, days_without), DAY, "start")
        self.hourly = _rollups(HourlyRollup, mine & condition, latency)

        def hours_without(pair: Pair) -> set[dt.datetime]:
            needed = hours.union(*(_hours(day, day + DAY) for day in days_without(pair)))
            return needed - self.hourly.get(pair, {}).keys()

        ranges = [(head, head + HOUR) for head in heads]
        ranges += [(plan.tail, plan.until) for plan in plans if plan.tail < plan.until]
        condition = within("started_at", ranges) | _gaps(_lacking(pairs, hours_without), HOUR, "started_at")
        self.raw = raw(mine & condition, {moment for plan in plans for moment in (plan.since, plan.until)})

    def parts(self, pair: Pair, plan: _Plan) -> Iterator[Any]:
        """Yield what the window adds up from for one pair: rollup `_Row`s and raw slices (`self.raw.slice()`)."""
        daily, hourly = self.daily.get(pair, {}), self.hourly.get(pair, {})
        hours, head = plan.hours, plan.head
        if plan.edge in daily and not any(hour in hourly for hour in _hours(plan.edge, plan.edge + DAY)):
            yield daily[plan.edge]  # its hourly rollups were pruned: count the whole day
            hours = tuple((max(a, plan.edge + DAY), b) for a, b in hours if b > plan.edge + DAY)
            head = None  # it lies in that day
        if head is not None:
            rolled = hourly.get(head)
            if rolled is not None and self.raw.count(pair, head, head + HOUR) < rolled.count:
                yield rolled  # its raw results were pruned: count the whole hour
            else:
                yield self.raw.slice(pair, plan.since, head + HOUR)
        for a, b in hours:
            for hour in _hours(a, b):
                yield hourly[hour] if hour in hourly else self.raw.slice(pair, hour, hour + HOUR)
        for day in plan.days:
            if day in daily:
                yield daily[day]
            else:
                for hour in _hours(day, day + DAY):
                    yield hourly[hour] if hour in hourly else self.raw.slice(pair, hour, hour + HOUR)
        yield self.raw.slice(pair, plan.tail, plan.until)


def _pairs(services: Iterable[int | Pair]) -> list[Pair]:
    """Return the pairs asked for, service ids standing for each of their locations (one query if any)."""
    pairs, ids = [], []
    for item in services:
        (pairs if isinstance(item, tuple) else ids).append(item)
    if ids:
        for service in Service.objects.filter(id__in=ids).only("id", "locations"):
            pairs += [(service.id, location) for location in service.location_list]
    return list(dict.fromkeys(pairs))


def _rollups(model: type, condition: Q, latency: bool) -> dict[Pair, dict[dt.datetime, _Row]]:
    fields = ["service_id", "location", "start", "count", "up_count", "unknown_count"]
    rows: dict[Pair, dict[dt.datetime, _Row]] = defaultdict(dict)
    for service_id, location, start, *counts in model.objects.filter(condition).values_list(
        *fields, *(["latency"] if latency else [])
    ):
        rows[(service_id, location)][start] = _Row(*counts[:3], counts[3] if latency else {})
    return rows


def _lacking(pairs: list[Pair], without: Callable[[Pair], set[dt.datetime]]) -> dict[dt.datetime, set[int]]:
    """Return {period: ids of the services with a pair lacking it}, from each pair's periods `without` a rollup."""
    lacking: dict[dt.datetime, set[int]] = defaultdict(set)
    for pair in pairs:
        for start in without(pair):
            lacking[start].add(pair[0])
    return lacking


def _gaps(needed: dict[dt.datetime, set[int]], period: dt.timedelta, field: str) -> Q:
    """Return a filter for each period in `needed` and its services, joining runs of periods with the same services."""
    joined: list[tuple[frozenset[int], dt.datetime, dt.datetime]] = []
    for start in sorted(needed):
        services = frozenset(needed[start])
        if joined and joined[-1][0] == services and joined[-1][2] == start:
            joined[-1] = (services, joined[-1][1], start + period)
        else:
            joined.append((services, start, start + period))
    condition = Q(pk__in=[])
    for services, start, end in joined:
        condition |= Q(service_id__in=sorted(services)) & within(field, [(start, end)])
    return condition


def _counted(status: str, n: int) -> Uptime:
    if status in OK_STATUSES:
        return Uptime(up=n)
    return Uptime(unknown=n) if status == UNKNOWN else Uptime(down=n)


def _as_uptimes(parts: Iterable[Any]) -> Iterator[Uptime]:
    for part in parts:
        yield Uptime(part.up, part.count - part.up - part.unknown, part.unknown) if isinstance(part, _Row) else part


class _RawCounts:
    """Raw results counted in SQL by pair, hour, status and segment (the part of an hour between window bounds)."""

    def __init__(self, condition: Q, bounds: set[dt.datetime]) -> None:
        ordered = sorted(bounds, reverse=True)
        segment = Case(
            *(When(started_at__gte=bound, then=Value(index)) for index, bound in enumerate(ordered)),
            default=Value(-1),
            output_field=IntegerField(),
        )
        rows = (
            ProbeResult.objects.filter(condition)
            .annotate(hour=Trunc("started_at", "hour", tzinfo=dt.UTC), segment=segment)
            .values_list("service_id", "location", "hour", "segment", "status")
            .annotate(n=Count("id"))
            .values_list("service_id", "location", "hour", "segment", "status", "n")
        )
        self.counts: dict[Pair, list[tuple[dt.datetime, Uptime]]] = defaultdict(list)
        for service_id, location, hour, index, status, n in rows:
            start = max(hour, ordered[index]) if index >= 0 else hour  # where this segment begins
            self.counts[(service_id, location)].append((start, _counted(status, n)))

    def slice(self, pair: Pair, start: dt.datetime, end: dt.datetime) -> Uptime:
        """Return the counts in [start, end); both ends are window bounds or whole hours."""
        return sum((counted for moment, counted in self.counts.get(pair, ()) if start <= moment < end), Uptime())

    def count(self, pair: Pair, start: dt.datetime, end: dt.datetime) -> int:
        return self.slice(pair, start, end).total


class _RawRows:
    """Raw results as rows (status and phases) by pair, for latency."""

    def __init__(self, condition: Q, bounds: set[dt.datetime]) -> None:
        fields = ("service_id", "location", "started_at", "status", *PHASES)
        rows = ProbeResult.objects.filter(condition).values_list(*fields)
        self.rows: dict[Pair, list[tuple[dt.datetime, tuple]]] = defaultdict(list)
        for service_id, location, started_at, *row in rows:
            self.rows[(service_id, location)].append((started_at, tuple(row)))

    def slice(self, pair: Pair, start: dt.datetime, end: dt.datetime) -> list[tuple]:
        return [row for moment, row in self.rows.get(pair, ()) if start <= moment < end]

    def count(self, pair: Pair, start: dt.datetime, end: dt.datetime) -> int:
        return len(self.slice(pair, start, end))
