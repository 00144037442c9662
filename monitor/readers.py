"""What pages and /metrics read: current states, and uptime and latency over windows, for many services at once.

Exposes `current_states()`, `uptimes()`, `recent_uptimes()` and `snapshot_uptimes()` (from the
snapshots the daemon writes every ten minutes) and `latency_summaries()` (bulk), `uptime()` and
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
6. **Uptime is summed in SQL** (`monitor.readers_sums`): a row per pair and rollup table holds
   the counts of each part of each window (its days, edge day, hours, first hour) and how many
   rollups each part found. Reading ~110 rollup rows a pair instead took 100-200 ms for a page of
   50 services at 10,000, most of it turning rows into Python. The pruned edges (3) are told from
   those sums too; only a pair lacking a rollup its windows need (2) is read period by period.
   Both ways give the same counts.
7. **Cost**: uptime takes four queries: the services' locations (when given service ids), the
   newest hourly rollup, the sums, and raw results counted by hour; two more when a pair lacks a
   rollup: such pairs' daily, then hourly rollups (partial days, days without a daily rollup), the
   raw read then also taking their hours without one. Latency takes five: the locations, the
   newest hourly rollup, daily and hourly rollups, and raw results as rows (p95 needs the values).
8. **Snapshots for whoever reads many services often.** `recent_uptimes()` reads what
   `monitor.daemon.snapshots` wrote from `uptimes()` at most `SNAPSHOT_MAX_AGE` ago: one query,
   a row per pair, and says as of when. Pairs without a fresh snapshot are read live, so the
   figures are never older than that, only sometimes slower to get.
9. **The whole fleet at once** (`uptimes(None)`, what the snapshots are made of) reads by time
   alone, no service filter: rollups and raw results are written hour by hour, so the periods a
   window needs lie together on disk, where asking for 500 services at a time read each of their
   rows from a different page (42 s for 10,000 services against about 3 s).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.db.models import Case, Count, IntegerField, Max, Q, Value, When
from django.db.models.functions import Trunc

from monitor.models import DailyRollup, HourlyRollup, ProbeResult, Service, ServiceState, UptimeSnapshot
from monitor.models.history import PHASES
from monitor.readers_sums import Stretch, Sums, WindowSums
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
# Snapshots are refreshed every ten minutes (monitor.daemon.snapshots); one older than this means
# the refresh stopped, and its figures are read live instead.
SNAPSHOT_MAX_AGE = dt.timedelta(minutes=25)

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
        return _share(self.up, self.down)

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
    services: Iterable[int | Pair] | None, windows: Iterable[dt.timedelta] = WINDOWS, now: dt.datetime | None = None
) -> dict[Pair, dict[dt.timedelta, Uptime]]:
    """Return {(service id, location): {window: Uptime}} over [now - window, now) for each window.

    `services` holds (service id, location) pairs, or service ids, which stand for every location
    the service is probed from; None stands for every service (see decision 9).
    """
    plans = _plans(windows, now)
    if services is None:
        pairs = _pairs(Service.objects.values_list("id", flat=True))
        summed = _Summed(pairs, plans, Q())
    else:
        pairs = _pairs(services)
        summed = _Summed(pairs, plans, _mine(pairs))
    lacking = [pair for pair in pairs if summed.lacks(pair)]
    history = _History(lacking, plans) if lacking else None  # read period by period, these pairs only
    raw = _RawCounts(summed.raw_condition() | (history.raw_condition() if history else Q()), _bounds(plans))
    read_by = dict.fromkeys(pairs, summed) | dict.fromkeys(lacking, history)
    return {pair: way.uptimes(pair, raw) for pair, way in read_by.items()}


def _share(up: int, down: int) -> float | None:
    return up / (up + down) if up + down else None


def _fresh(now: dt.datetime) -> Q:
    """Return a filter on the snapshots taken at most SNAPSHOT_MAX_AGE before `now` (and not after it)."""
    return Q(computed_at__gte=now - SNAPSHOT_MAX_AGE, computed_at__lte=now)


def snapshot_uptimes(now: dt.datetime) -> dict[Pair, list[float | None]]:
    """Return {(service id, location): [`Uptime.uptime` per WINDOWS]} of every fresh snapshot: the whole fleet.

    For /metrics, which writes every pair's ratios at each scrape: `recent_uptimes()`'s `Uptime`
    objects and timestamps cost ~0.6 s of a scrape at 10,000 services. Pairs without a fresh
    snapshot are absent: `recent_uptimes()` reads them live.
    """
    counts = [name for name in UptimeSnapshot.COUNTS if not name.endswith("_unknown")]
    rows = UptimeSnapshot.objects.filter(_fresh(now)).values_list("service_id", "location", *counts)
    return {
        (service_id, location): [_share(up, down) for up, down in zip(up_down[::2], up_down[1::2], strict=True)]
        for service_id, location, *up_down in rows
    }


def recent_uptimes(
    pairs: Iterable[Pair], now: dt.datetime | None = None
) -> tuple[dict[Pair, dict[dt.timedelta, Uptime]], dt.datetime]:
    """Return {(service id, location): {window: Uptime}} over WINDOWS from the uptime snapshots, and as of when.

    Pairs without a snapshot younger than SNAPSHOT_MAX_AGE (a service added since the last refresh,
    a refresh that stopped) are read live at `now`. The moment returned is when the oldest of the
    figures was taken: `now` when they were all read live.
    """
    now = now or dt.datetime.now(dt.UTC)
    wanted = list(dict.fromkeys(pairs))
    found: dict[Pair, dict[dt.timedelta, Uptime]] = {}
    as_of = now
    fresh = UptimeSnapshot.objects.filter(_mine(wanted), _fresh(now))
    for service_id, location, computed_at, *counts in fresh.values_list(
        "service_id", "location", "computed_at", *UptimeSnapshot.COUNTS
    ):
        found[service_id, location] = {window: Uptime(*counts[3 * n : 3 * n + 3]) for n, window in enumerate(WINDOWS)}
        as_of = min(as_of, computed_at)
    missing = [pair for pair in wanted if pair not in found]
    if missing:
        found |= uptimes(missing, WINDOWS, now)
    return {pair: found[pair] for pair in wanted}, as_of


def latency_summaries(
    services: Iterable[int | Pair], windows: Iterable[dt.timedelta] = WINDOWS, now: dt.datetime | None = None
) -> dict[Pair, dict[dt.timedelta, Latency]]:
    """Return {(service id, location): {window: {phase: {min, avg, max, p95}}}}: up and warning results only."""
    pairs, plans = _pairs(services), _plans(windows, now)
    history = _History(pairs, plans, latency=True)
    raw = _RawRows(history.raw_condition(), _bounds(plans))
    summaries: dict[Pair, dict[dt.timedelta, Latency]] = {}
    for pair in pairs:
        summaries[pair] = {}
        for window, plan in plans.items():
            parts, rows = [], []
            for part in history.parts(pair, plan, raw):
                if isinstance(part, _Row):
                    parts.append((part.up, part.latency))
                else:
                    rows += part
            summary = summarize(rows)
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


def _plans(windows: Iterable[dt.timedelta], now: dt.datetime | None) -> dict[dt.timedelta, _Plan]:
    """Return each window's plan, up to the newest hourly rollup (one query)."""
    now = now or dt.datetime.now(dt.UTC)
    latest = HourlyRollup.objects.aggregate(latest=Max("start"))["latest"]
    return {window: _plan(now - window, now, latest and latest + HOUR) for window in windows}


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
    """The rollups a set of windows needs of some pairs, read row by row, and how each window adds up from them."""

    def __init__(self, pairs: list[Pair], plans: dict[dt.timedelta, _Plan], latency: bool = False) -> None:
        """Read daily rollups, then hourly rollups: the first read says what the second needs."""
        self.pairs, self.plans = pairs, plans
        mine = _mine(pairs)
        self.days = {day for plan in plans.values() for day in plan.days}
        edges = {plan.edge for plan in plans.values() if plan.edge}  # whole, to tell whether their hours were pruned
        self.daily = _rollups(DailyRollup, mine & within("start", stretches(self.days | edges, DAY)), latency)
        self.hours = {hour for plan in plans.values() for a, b in plan.hours for hour in _hours(a, b)}
        heads = {plan.head for plan in plans.values() if plan.head}  # in case their raw rows were pruned
        condition = within("start", stretches(self.hours | heads, HOUR) + stretches(edges, DAY))
        condition |= _gaps(_lacking(pairs, self._days_without), DAY, "start")
        self.hourly = _rollups(HourlyRollup, mine & condition, latency)

    def raw_condition(self) -> Q:
        """Return a filter on the raw results the windows read: heads, tails and hours without a rollup."""
        gaps = _gaps(_lacking(self.pairs, self._hours_without), HOUR, "started_at")
        return _mine(self.pairs) & (within("started_at", _heads_and_tails(self.plans)) | gaps)

    def uptimes(self, pair: Pair, raw: _RawCounts) -> dict[dt.timedelta, Uptime]:
        """Return the pair's Uptime per window."""
        return {window: sum(_as_uptimes(self.parts(pair, plan, raw)), Uptime()) for window, plan in self.plans.items()}

    def parts(self, pair: Pair, plan: _Plan, raw: Any) -> Iterator[Any]:
        """Yield what the window adds up from for one pair: rollup `_Row`s and raw slices (`raw.slice()`)."""
        daily, hourly = self.daily.get(pair, {}), self.hourly.get(pair, {})
        hours, head = plan.hours, plan.head
        if plan.edge in daily and not any(hour in hourly for hour in _hours(plan.edge, plan.edge + DAY)):
            yield daily[plan.edge]  # its hourly rollups were pruned: count the whole day
            hours = tuple((max(a, plan.edge + DAY), b) for a, b in hours if b > plan.edge + DAY)
            head = None  # it lies in that day
        if head is not None:
            rolled = hourly.get(head)
            if rolled is not None and raw.count(pair, head, head + HOUR) < rolled.count:
                yield rolled  # its raw results were pruned: count the whole hour
            else:
                yield raw.slice(pair, plan.since, head + HOUR)
        for a, b in hours:
            for hour in _hours(a, b):
                yield hourly[hour] if hour in hourly else raw.slice(pair, hour, hour + HOUR)
        for day in plan.days:
            if day in daily:
                yield daily[day]
            else:
                for hour in _hours(day, day + DAY):
                    yield hourly[hour] if hour in hourly else raw.slice(pair, hour, hour + HOUR)
        yield raw.slice(pair, plan.tail, plan.until)

    def _days_without(self, pair: Pair) -> set[dt.datetime]:
        return self.days - self.daily.get(pair, {}).keys()

    def _hours_without(self, pair: Pair) -> set[dt.datetime]:
        needed = self.hours.union(*(_hours(day, day + DAY) for day in self._days_without(pair)))
        return needed - self.hourly.get(pair, {}).keys()


def _heads_and_tails(plans: dict[dt.timedelta, _Plan]) -> list[Stretch]:
    """Return what the windows read from raw results whatever the rollups: their first, partial hours and tails."""
    ranges = {(plan.head, plan.head + HOUR) for plan in plans.values() if plan.head}
    return sorted(ranges | {(plan.tail, plan.until) for plan in plans.values() if plan.tail < plan.until})


def _bounds(plans: dict[dt.timedelta, _Plan]) -> set[dt.datetime]:
    return {moment for plan in plans.values() for moment in (plan.since, plan.until)}


def _pairs(services: Iterable[int | Pair]) -> list[Pair]:
    """Return the pairs asked for, service ids standing for each of their locations (one query if any)."""
    pairs, ids = [], []
    for item in services:
        (pairs if isinstance(item, tuple) else ids).append(item)
    if ids:
        for service in Service.objects.filter(id__in=ids).only("id", "locations"):
            pairs += [(service.id, location) for location in service.location_list]
    return list(dict.fromkeys(pairs))


def _mine(pairs: list[Pair]) -> Q:
    """Return a filter on the pairs' services and locations (and the pairs their product adds, ignored)."""
    return Q(service_id__in={pair[0] for pair in pairs}, location__in={pair[1] for pair in pairs})


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


# --- Summing: uptime from rollups added up in SQL, a row per pair and table ----------------------


class _Summed:
    """Each window's rollups summed in SQL per pair (`readers_sums.WindowSums`), and how its uptime adds up."""

    def __init__(self, pairs: list[Pair], plans: dict[dt.timedelta, _Plan], condition: Q) -> None:
        """Sum the rollups of `pairs` that meet `condition` (theirs, or Q() for the whole fleet: see decision 9)."""
        self.pairs, self.plans, self.condition = pairs, plans, condition
        sums = WindowSums(condition, plans)
        self.rolled = {pair: {window: sums.rolled(pair, window) for window in plans} for pair in pairs}

    def lacks(self, pair: Pair) -> bool:
        """Return whether a rollup the pair's windows add up from is missing."""
        return None in self.rolled[pair].values()

    def raw_condition(self) -> Q:
        """Return a filter on the raw results the windows read: their first, partial hours and their tails."""
        return self.condition & within("started_at", _heads_and_tails(self.plans))

    def uptimes(self, pair: Pair, raw: _RawCounts) -> dict[dt.timedelta, Uptime]:
        """Return the pair's Uptime per window, added up as `_History.parts()` does, for a pair lacking no rollup."""
        counts = {}
        for window, plan in self.plans.items():
            rolled, head = self.rolled[pair][window]
            tail = raw.slice(pair, plan.tail, plan.until)
            counts[window] = _as_uptime(rolled) + self._head(pair, plan, head, raw) + tail
        return counts

    def _head(self, pair: Pair, plan: _Plan, rolled: Sums | None, raw: _RawCounts) -> Uptime:
        """Return the partial first hour from raw results, or whole from its rollup when they were pruned."""
        if plan.head is None or rolled is None:
            return Uptime()  # no such hour, or it lies in an edge day counted whole
        if rolled.present and raw.count(pair, plan.head, plan.head + HOUR) < rolled.count:
            return _as_uptime(rolled)
        return raw.slice(pair, plan.since, plan.head + HOUR)


def _counted(status: str, n: int) -> Uptime:
    if status in OK_STATUSES:
        return Uptime(up=n)
    return Uptime(unknown=n) if status == UNKNOWN else Uptime(down=n)


def _as_uptime(rolled: _Row | Sums) -> Uptime:
    return Uptime(rolled.up, rolled.count - rolled.up - rolled.unknown, rolled.unknown)


def _as_uptimes(parts: Iterable[Any]) -> Iterator[Uptime]:
    for part in parts:
        yield _as_uptime(part) if isinstance(part, _Row) else part


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
            .annotate(n=Count("*"))  # not "id": the (service, location, started_at) index covers the rest
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
