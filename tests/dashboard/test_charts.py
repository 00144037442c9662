"""The SVG charts' geometry: stacked latency areas, axes, status bars and sparklines (no database)."""

from __future__ import annotations

import datetime as dt

import pytest

from dashboard import charts
from dashboard.charts import Point
from dashboard.detail import Bucket

START = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def polygon(area: charts.Area) -> list[tuple[float, float]]:
    return [tuple(map(float, pair.split(","))) for pair in area.points.split()]


def chart_of(points, minutes: int = 60) -> charts.LatencyChart:
    return charts.latency_chart(points, START, START + minutes * MINUTE, MINUTE)


def test_the_top_band_reaches_the_total_and_the_bottom_band_the_first_phase():
    chart = chart_of(
        [Point(START + 10 * MINUTE, (0.002, 0.003, 0.0, 0.005, 0.0)), Point(START + 11 * MINUTE, (0.002,) * 5)]
    )
    top, bottom = polygon(chart.areas[0]), polygon(chart.areas[-1])
    # The y axis ends at 10 ms, 10 ms is the box's top and 0 ms its baseline (186 units below).
    assert (chart.areas[0].phase, chart.areas[-1].phase) == ("transfer", "resolve")
    assert [y for _, y in top[1:-1]] == [10.0, 10.0]
    assert [y for _, y in bottom[1:-1]] == [chart.bottom - 0.2 * 186] * 2


def test_each_phase_gets_one_area_per_unbroken_stretch():
    points = [Point(START + n * MINUTE, (0.001,) * 5) for n in (1, 2, 3, 10, 11)]
    assert [area.phase for area in chart_of(points).areas] == list(reversed(charts.PHASES)) * 2


def test_a_single_missed_slot_does_not_break_the_area():
    points = [Point(START + n * MINUTE, (0.001,) * 5) for n in (1, 3)]
    assert len(chart_of(points).areas) == len(charts.PHASES)


def test_a_lone_point_is_drawn_as_a_bar_most_of_a_step_wide():
    xs = [x for x, _ in polygon(chart_of([Point(START + 30 * MINUTE, (0.001,) * 5)]).areas[0])]
    step_width = (charts.WIDTH - charts.LEFT - charts.RIGHT) / 60  # the chart spans an hour of minute steps
    assert max(xs) - min(xs) == pytest.approx(2 * charts.LONE_POINT_HALF_STEP * step_width, abs=0.2)


def test_points_are_placed_by_time_across_the_box():
    points = [Point(START, (0.001,) * 5), Point(START + 60 * MINUTE, (0.001,) * 5)]
    chart = charts.latency_chart(points, START, START + 60 * MINUTE, dt.timedelta(hours=1))
    xs = [x for x, _ in polygon(chart.areas[0])]
    assert (min(xs), max(xs)) == (charts.LEFT, charts.WIDTH - charts.RIGHT)


def test_without_points_the_chart_is_empty_but_keeps_its_axes():
    chart = chart_of([])
    assert chart.empty and chart.y_ticks and chart.x_ticks


def test_latency_ticks_are_round_milliseconds_covering_the_peak():
    ticks, top = charts.value_ticks(0.012)
    assert [label for _, label in ticks] == ["0 ms", "5 ms", "10 ms", "15 ms"] and top == 0.015


def test_latency_ticks_turn_to_seconds_past_one_second():
    ticks, _ = charts.value_ticks(2.3)
    assert [label for _, label in ticks] == ["0 ms", "500 ms", "1 s", "1.5 s", "2 s", "2.5 s"]


def test_time_ticks_fall_on_round_times():
    ticks = charts.time_ticks(START + 7 * MINUTE, START + 24 * 60 * MINUTE, lambda moment: 0.0)
    assert [tick.label for tick in ticks] == ["15:00", "18:00", "21:00", "00:00", "03:00", "06:00", "09:00", "12:00"]


def test_week_ticks_are_labelled_by_day():
    ticks = charts.time_ticks(START, START + dt.timedelta(days=7), lambda moment: 0.0)
    assert ticks[0].label == "03 Mar" and len(ticks) == 7


def quarter(**counts) -> Bucket:
    return Bucket(START, START + 15 * MINUTE, **counts)


def test_a_quarter_hour_bar_takes_its_worst_measured_status_and_says_its_counts():
    bars = charts.timeline_bars([quarter(up=14, warning=2, down=1, missed=1), quarter(up=3, warning=1)])
    assert [bar.css for bar in bars] == ["fill-down", "fill-warning"]
    assert bars[0].title == "12:00\u201312:15: 14 up (2 warning), 1 down, 1 missed"


def test_a_quarter_hour_without_measurements_is_a_gap_saying_so():
    bars = charts.timeline_bars([quarter(missed=3), quarter(), quarter(missed=1, unmeasured=2)])
    assert all(bar.gap for bar in bars)
    assert [bar.title.split(": ", 1)[1] for bar in bars] == [
        "not measured: 3 missed",
        "not measured: no results",
        "not measured: 1 missed, 2 not measured (probe error)",
    ]


def test_a_day_is_amber_down_to_99_percent_and_red_below():
    days = [Bucket(START, START + dt.timedelta(days=1), up=up, down=down) for up, down in ((100, 0), (99, 1), (98, 2))]
    bars = charts.daily_bars(days)
    assert [bar.css for bar in bars] == ["fill-up", "fill-warning", "fill-down"]
    assert bars[1].title == "02 Mar: 99.00 % up (99 up, 1 down, 0 missed)"


def test_bars_share_the_width_side_by_side():
    bars = charts.bar_row([("fill-up", "a")] * 4, width=100, gap=1)
    assert [(bar.x, bar.width) for bar in bars] == [(0, 24), (25, 24), (50, 24), (75, 24)]


def test_the_row_summary_names_the_failed_periods_for_readers_who_cannot_see_colour():
    buckets = [quarter(up=5), quarter(up=4, down=1), quarter()]
    assert charts.row_summary(buckets, "quarter-hours") == (
        "1 of 3 quarter-hours had failed probes; the latest: 12:00\u201312:15; 1 not measured."
    )


def test_a_sparkline_spans_its_box_and_skips_missing_values():
    points = charts.sparkline([1.0, None, 3.0], width=100, height=20, pad=0)
    assert points == "0.0,20.0 100.0,0.0"


def test_a_sparkline_needs_two_values():
    assert charts.sparkline([None, 2.0]) == ""
