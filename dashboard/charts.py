"""Geometry of the dashboard's server-rendered SVG charts: latency stacked by phase, rows of status bars, sparklines.

Exposes `latency_chart()` -> `LatencyChart`, `bar_row()` -> list of `Bar`, `sparkline()` -> polyline
points, and the axis helpers `time_ticks()` and `value_ticks()`. Only numbers and plain-text labels
are made here; templates draw them (`detail_latency.html`, `detail_timeline.html`), so every label
is escaped by the template engine like any other text.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import SafeString, mark_safe

from dashboard.templatetags.portwatch import percent  # the pages' rounding: a failure never shows as 100 %

# The phases a probe's time is split into, stacked bottom to top in this order.
PHASES = ("resolve", "connect", "tls", "processing", "transfer")
PHASE_LABELS = {
    "resolve": "Resolve",
    "connect": "Connect",
    "tls": "TLS",
    "processing": "Greeting / first byte",
    "transfer": "Transfer",
}

# The latency chart's box (SVG user units; the svg scales to its container through viewBox).
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 10, 10, 24
# Consecutive points further apart than this many steps are drawn as separate areas: a stretch
# with nothing measured (down, missed) must show as a hole, not as a line interpolated across it.
BREAK_AFTER_STEPS = 2.5
# A point with no neighbour is drawn as a bar this share of a step wide on each side (a new
# service's first hour on the 24 h chart was a 3-unit sliver at the edge), and at least 1.5 units.
LONE_POINT_HALF_STEP = 0.4
LONE_POINT_MIN_HALF_WIDTH = 1.5

TIME_STEPS = [dt.timedelta(minutes=m) for m in (1, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 4320, 10080)]


@dataclass(frozen=True)
class Point:
    """Latency of one probe or one period: seconds per phase, in `PHASES` order."""

    at: dt.datetime
    phases: tuple[float, ...]

    @property
    def total(self) -> float:
        return sum(self.phases)


@dataclass(frozen=True)
class Tick:
    position: float  # x or y in SVG units
    label: str


@dataclass(frozen=True)
class Area:
    """One phase's band over one unbroken stretch: a polygon from the baseline up to the phase's stacked top."""

    phase: str
    points: str


@dataclass(frozen=True)
class LatencyChart:
    areas: list[Area]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    peak: float  # the highest stacked total drawn, in seconds (0 when empty)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM
    legend: list[tuple[str, str]] = field(default_factory=lambda: list(PHASE_LABELS.items()))

    @property
    def empty(self) -> bool:
        return not self.areas

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def centre(self) -> float:
        return (self.left + self.right) / 2


@dataclass(frozen=True)
class Bar:
    """One bar of a status row: where it is, its CSS class (fill-up, fill-gap, ...) and its tooltip."""

    x: float
    width: float
    css: str
    title: str

    @property
    def gap(self) -> bool:
        return self.css == "fill-gap"


def latency_chart(points: Sequence[Point], start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> LatencyChart:
    """Return the stacked areas and axes of `points` (sorted by time) over [start, end).

    Each phase is a polygon from the baseline to the sum of the phases up to it, drawn from the
    top phase down, so each visible band is that phase's share (half the points of a band drawn
    between two lines). Points more than `BREAK_AFTER_STEPS` steps apart start a new area.
    """
    peak = max((point.total for point in points), default=0.0)
    y_ticks, top_value = value_ticks(peak)
    plot = _Plot(start, end, top_value)
    areas = []
    for stretch in _stretches(points, step * BREAK_AFTER_STEPS):
        xs = [plot.x(point.at) for point in stretch]
        if len(xs) == 1:  # a lone point gets a width, else its polygon has no area
            half = max(LONE_POINT_MIN_HALF_WIDTH, (plot.x(start + step) - plot.x(start)) * LONE_POINT_HALF_STEP)
            xs = [max(plot.x(start), xs[0] - half), min(plot.x(end), xs[0] + half)]
            stretch = [stretch[0], stretch[0]]
        for index in reversed(range(len(PHASES))):
            tops = [plot.y(sum(point.phases[: index + 1])) for point in stretch]
            corners = [(xs[0], plot.baseline), *zip(xs, tops, strict=True), (xs[-1], plot.baseline)]
            areas.append(Area(PHASES[index], " ".join(f"{x:.1f},{y:.1f}" for x, y in corners)))
    ticks = [Tick(plot.y(value), label) for value, label in y_ticks]
    return LatencyChart(areas, time_ticks(start, end, plot.x), ticks, peak)


class _Plot:
    """Maps times and seconds into the chart's box."""

    def __init__(self, start: dt.datetime, end: dt.datetime, top_value: float) -> None:
        self.start, self.span = start, max((end - start).total_seconds(), 1.0)
        self.top_value = top_value
        self.baseline = HEIGHT - BOTTOM

    def x(self, moment: dt.datetime) -> float:
        share = min(max((moment - self.start).total_seconds() / self.span, 0.0), 1.0)
        return LEFT + share * (WIDTH - RIGHT - LEFT)

    def y(self, seconds: float) -> float:
        return self.baseline - min(seconds / self.top_value, 1.0) * (self.baseline - TOP)


def _stretches(points: Sequence[Point], longest: dt.timedelta) -> list[list[Point]]:
    stretches: list[list[Point]] = []
    for point in points:
        if stretches and point.at - stretches[-1][-1].at <= longest:
            stretches[-1].append(point)
        else:
            stretches.append([point])
    return stretches


def value_ticks(peak: float, most: int = 5) -> tuple[list[tuple[float, str]], float]:
    """Return ([(seconds, label)], axis top) for latency up to `peak` seconds: 0 and round steps of 1, 2 or 5."""
    peak_ms = max(peak * 1000, 1.0)
    magnitude = 10 ** math.floor(math.log10(peak_ms / most))
    step = next(m * magnitude for m in (1, 2, 5, 10) if peak_ms / (m * magnitude) <= most)
    count = math.ceil(peak_ms / step - 1e-9)
    ticks = [(n * step / 1000, _ms_label(n * step)) for n in range(count + 1)]
    return ticks, count * step / 1000


def _ms_label(value_ms: float) -> str:
    if value_ms >= 1000:
        return f"{value_ms / 1000:g} s"
    return f"{value_ms:g} ms"


def time_ticks(start: dt.datetime, end: dt.datetime, x, most: int = 8) -> list[Tick]:
    """Return ticks at round local times (every 10 min, 3 h, 1 d, ...) between start and end, at most `most`."""
    span = end - start
    step = next((step for step in TIME_STEPS if span / step <= most), TIME_STEPS[-1])
    local = timezone.localtime(start)
    offset = local.utcoffset() or dt.timedelta()
    seconds = step.total_seconds()
    # Round in local time, so a day tick falls on local midnight and an hour tick on the hour.
    first = math.ceil((start + offset).timestamp() / seconds) * seconds
    moment = dt.datetime.fromtimestamp(first, dt.UTC) - offset
    label = "%d %b" if step >= dt.timedelta(days=1) else "%H:%M"
    ticks = []
    while moment <= end:
        ticks.append(Tick(x(moment), timezone.localtime(moment).strftime(label)))
        moment += step
    return ticks


_RECT = '<rect x="{}" y="1" width="{}" height="26" class="{}"{}><title>{}</title></rect>'
_GAP_ATTRIBUTES = mark_safe(' pointer-events="all" vector-effect="non-scaling-stroke"')  # a constant


def bars_svg(bars: Sequence[Bar]) -> SafeString:
    """Return a status row's `<rect>`s with their tooltips, escaped: built here, not in a template loop.

    The template's loop over the 126 bars of the service page (24 h and 30 days) rendered some 750
    variables and filters a request.
    """
    return format_html_join(
        "",
        _RECT,
        ((f"{bar.x:.2f}", f"{bar.width:.2f}", bar.css, _GAP_ATTRIBUTES if bar.gap else "", bar.title) for bar in bars),
    )


def bar_row(cells: Sequence[tuple[str, str]], width: float = WIDTH, gap: float = 1.0) -> list[Bar]:
    """Return one bar per (css class, tooltip) cell, side by side across `width`, oldest first."""
    if not cells:
        return []
    pitch = width / len(cells)
    return [Bar(index * pitch, max(pitch - gap, 0.5), css, title) for index, (css, title) in enumerate(cells)]


def sparkline(values: Sequence[float | None], width: float = 120, height: float = 24, pad: float = 2) -> str:
    """Return polyline points for `values` (None ones skipped), scaled to the box; empty when fewer than two."""
    known = [(index, value) for index, value in enumerate(values) if value is not None]
    if len(known) < 2:
        return ""
    low, high = min(v for _, v in known), max(v for _, v in known)
    spread = (high - low) or 1.0
    last = max(len(values) - 1, 1)
    return " ".join(
        f"{pad + index / last * (width - 2 * pad):.1f},{height - pad - (value - low) / spread * (height - 2 * pad):.1f}"
        for index, value in known
    )


# --- Status rows: the 24 h timeline and the 30 daily bars ----------------------------------------

EN_DASH = "\u2013"  # joins the two ends of a period in tooltips, as typeset text does
DAY_WARNING_UPTIME = 0.99  # a day with failures is amber down to this share of good probes, red below


def timeline_bars(buckets: Sequence, width: float = WIDTH) -> list[Bar]:
    """Return a bar per 15 min bucket (`dashboard.detail.Bucket`): its worst measured status, or a gap."""
    cells = []
    for bucket in buckets:
        cells.append((_fill(bucket.status), f"{_span(bucket)}: {_counts(bucket)}"))
    return bar_row(cells, width)


def daily_bars(buckets: Sequence, width: float = WIDTH) -> list[Bar]:
    """Return a bar per day: green without failures, amber at `DAY_WARNING_UPTIME` or more, red below; else a gap."""
    cells = []
    for bucket in buckets:
        when = timezone.localtime(bucket.start).strftime("%d %b")
        if not bucket.measured:
            cells.append(("fill-gap", f"{when}: {_counts(bucket)}"))
            continue
        uptime = bucket.up / (bucket.up + bucket.down)
        status = "up" if not bucket.down else "warning" if uptime >= DAY_WARNING_UPTIME else "down"
        cells.append((_fill(status), f"{when}: {percent(uptime)} up ({_counts(bucket)})"))
    return bar_row(cells, width)


def _fill(status: str | None) -> str:
    return f"fill-{status}" if status else "fill-gap"


def _clock(moment: dt.datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M")


def _counts(bucket) -> str:
    """Return "15 up, 0 down, 1 missed" (warnings and errors named when there are some), or "not measured: ..."."""
    unmeasured = f", {bucket.unmeasured} not measured (probe error)" if bucket.unmeasured else ""
    if not bucket.measured:
        if not bucket.missed and not bucket.unmeasured:
            return "not measured: no results"
        return f"not measured: {bucket.missed} missed{unmeasured}"
    warning = f" ({bucket.warning} warning)" if bucket.warning else ""
    return f"{bucket.up} up{warning}, {bucket.down} down, {bucket.missed} missed{unmeasured}"


def row_summary(buckets: Sequence, what: str) -> str:
    """Return the row in words, for readers who cannot tell the colours: "2 of 96 quarter-hours had failures ..."."""
    down = [bucket for bucket in buckets if bucket.down]
    gaps = sum(1 for bucket in buckets if not bucket.measured)
    parts = [f"{len(down)} of {len(buckets)} {what} had failed probes"]
    if down:
        shown = ", ".join(_span(bucket) for bucket in down[-5:])
        parts.append(f"the latest: {shown}")
    parts.append(f"{gaps} not measured")
    return "; ".join(parts) + "."


def _span(bucket) -> str:
    if bucket.end - bucket.start >= dt.timedelta(days=1):
        return timezone.localtime(bucket.start).strftime("%d %b")
    return f"{_clock(bucket.start)}{EN_DASH}{_clock(bucket.end)}"
