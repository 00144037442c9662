"""Uptime from rollups summed in SQL, a row per (service, location) and table: the fast path of `readers.uptimes()`.

Exposes `WindowSums` (each window's parts summed per pair, and what a window adds up from them),
`sum_rollups()` and the `Sums` it returns.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import Hashable, Iterable
from typing import Any, NamedTuple

from django.db.models import Expression, IntegerField, Q, QuerySet, Value

from monitor.models import DailyRollup, HourlyRollup
from monitor.stats import DAY, HOUR, stretches, within

Stretch = tuple[dt.datetime, dt.datetime]
Pair = tuple[int, str]  # (service id, location)


class Sums(NamedTuple):
    """Rollups added up over some periods, and how many rollups there were (fewer than periods: one is missing)."""

    count: int = 0
    up: int = 0
    unknown: int = 0
    present: int = 0


class _Total(Expression):
    """SUM(`field`), or COUNT(*) without one, of the rows whose `start` lies in [start, end): one rollup table's.

    What `Sum(field, filter=Q(start__gte=start, start__lt=end))` renders, but Django takes ~0.3 ms to
    build and compile each of those: 17 ms for the 60 sums of a page's three windows, as long as
    their query. These take a third of that.
    """

    contains_aggregate = True

    def __init__(self, field: str | None, stretch: Stretch) -> None:
        super().__init__(output_field=IntegerField())
        self.name, self.stretch = field, stretch

    def resolve_expression(self, *args: Any, **kwargs: Any) -> _Total:
        return self  # nothing to resolve: a column of the one table queried, and two moments

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        quote = connection.ops.quote_name
        total = f"SUM({quote(self.name)})" if self.name else "COUNT(*)"
        moments = [connection.ops.adapt_datetimefield_value(moment) for moment in self.stretch]
        return f"{total} FILTER (WHERE {quote('start')} >= %s AND {quote('start')} < %s)", moments


class WindowSums:
    """Each window's rollups summed per pair and part, in one query; and what the window adds up from them.

    A window's parts: in daily rollups, its whole `days` and its `edge` day (the partial first one),
    whole; in hourly rollups, its whole hours in that day (`edge hours`), its other whole `hours`,
    all of its `edge day` (to tell whether those hours were pruned) and its `head` hour (the
    partial first one), whole. `plans` are `readers._Plan`s.
    """

    PARTS = ("days", "edge", "edge hours", "hours", "edge day", "head")

    def __init__(self, condition: Q, plans: dict[dt.timedelta, Any]) -> None:
        daily: dict[Hashable, list[Stretch]] = {}
        hourly: dict[Hashable, list[Stretch]] = {}
        for window, plan in plans.items():
            split = plan.edge + DAY if plan.edge else plan.since  # where the edge day's hours end
            daily[window, "days"] = stretches(plan.days, DAY)
            daily[window, "edge"] = hourly[window, "edge day"] = [(plan.edge, split)] if plan.edge else []
            hourly[window, "edge hours"] = [(a, min(b, split)) for a, b in plan.hours if a < split]
            hourly[window, "hours"] = [(max(a, split), b) for a, b in plan.hours if b > split]
            hourly[window, "head"] = [(plan.head, plan.head + HOUR)] if plan.head else []
        self.periods = {key: sum((b - a) // DAY for a, b in spans) for key, spans in daily.items()}
        self.periods |= {key: sum((b - a) // HOUR for a, b in spans) for key, spans in hourly.items()}
        self.sums = sum_rollups(condition, {DailyRollup: daily, HourlyRollup: hourly})

    def rolled(self, pair: Pair, window: dt.timedelta) -> tuple[Sums, Sums | None] | None:
        """Return the window's rolled-up parts added up, and its head hour's rollup (None: its edge day counts whole).

        None when a rollup is missing: a part found fewer than it has periods.
        """
        sums = self.sums.get(pair, {})
        parts = {name: sums.get((window, name), Sums()) for name in self.PARTS}
        if parts["edge"].present and not parts["edge day"].present:  # its hours were pruned: count it whole
            names, head = ("days", "edge", "hours"), None
        else:
            names, head = ("days", "edge hours", "hours"), parts["head"]
        if any(parts[name].present < self.periods[window, name] for name in names):
            return None
        return _added(parts[name] for name in names), head


def sum_rollups(condition: Q, parts: dict[type, dict[Hashable, list[Stretch]]]) -> dict[Pair, dict[Hashable, Sums]]:
    """Return {pair: {key: Sums}}: rollups meeting `condition` added up over each part's stretches, in one query.

    `parts` gives each rollup model's parts as {key: stretches}, keys distinct across models.

    1. Cut time at the parts' ends into pieces: parts overlap (every window holds today's hours),
       pieces do not, so each rollup is summed once.
    2. Sum each piece in SQL, grouped by pair, one UNION ALL branch a model: a row per pair and model.
    3. Add each part up from its pieces.
    """
    parts = {model: {key: spans for key, spans in by_key.items() if spans} for model, by_key in parts.items()}
    pieces = {model: found for model, by_key in parts.items() if (found := _pieces(list(by_key.values())))}
    if not pieces:
        return {}
    width = max(len(found) for found in pieces.values())
    branches = [_summing(model, condition, found, width, index) for index, (model, found) in enumerate(pieces.items())]
    made_of = [
        {key: [n for n, (start, _) in enumerate(found) if _covers(spans, start)] for key, spans in parts[model].items()}
        for model, found in pieces.items()
    ]
    summed: dict[Pair, dict[Hashable, Sums]] = defaultdict(dict)
    for index, service_id, location, *values in branches[0].union(*branches[1:], all=True):
        values = [value or 0 for value in values]  # SUM() of no rows is NULL
        sums = [Sums._make(values[n : n + 4]) for n in range(0, len(values), 4)]
        summed[(service_id, location)] |= {
            key: _added(sums[n] for n in indices) for key, indices in made_of[index].items()
        }
    return summed


def _added(sums: Iterable[Sums]) -> Sums:
    return Sums._make(map(sum, zip(*sums, strict=True)))


def _pieces(stretches: list[list[Stretch]]) -> list[Stretch]:
    """Return the disjoint pieces the stretches cut time into, in order, where any of them lies."""
    bounds = sorted({moment for spans in stretches for span in spans for moment in span})
    return [(a, b) for a, b in itertools.pairwise(bounds) if any(_covers(spans, a) for spans in stretches)]


def _summing(model: type, condition: Q, pieces: list[Stretch], width: int, index: int) -> QuerySet:
    """Return (index, service id, location, then count, up, unknown and present of each piece) per pair.

    Padded with zeros to `width` pieces: the branches of a UNION have as many columns.
    """
    columns: dict[str, Any] = {"branch": Value(index)}
    for n in range(width):
        fields = ("count", "up_count", "unknown_count", None)
        sums = [_Total(field, pieces[n]) for field in fields] if n < len(pieces) else [Value(0)] * 4
        columns |= dict(zip((f"count{n}", f"up{n}", f"unknown{n}", f"present{n}"), sums, strict=True))
    return (
        model.objects.filter(condition, within("start", _joined(pieces)))
        .order_by()
        .values("service_id", "location")
        .annotate(**columns)
        .values_list("branch", "service_id", "location", *list(columns)[1:])
    )


def _covers(stretches: list[Stretch], moment: dt.datetime) -> bool:
    return any(start <= moment < end for start, end in stretches)


def _joined(pieces: list[Stretch]) -> list[Stretch]:
    """Return ordered, disjoint pieces with the adjacent ones joined."""
    joined: list[Stretch] = []
    for start, end in pieces:
        if joined and joined[-1][1] == start:
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((start, end))
    return joined
