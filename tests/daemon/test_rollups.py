"""Rollups: hourly and daily rows equal a by-hand computation over raw results; readers equal raw truth."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from monitor.daemon import rollups
from monitor.models import DailyRollup, HourlyRollup, ProbeResult, Service
from monitor.models.history import PHASES
from monitor.probes import Phases, Result, Status
from monitor.daemon.recording import Outcome, record

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
PAIRS = [("alpha", "default"), ("alpha", "eu"), ("beta", "default")]


def make_service(name: str) -> Service:
    return Service.objects.create(name=name, host="127.0.0.1", port=25, protocol="tcp", locations="default,eu")


def make_history(start: dt.datetime, end: dt.datetime, step: dt.timedelta, seed: int = 7) -> dict[str, Service]:
    """Store raw results for every pair from `start` to `end`, one per `step`, with varied status and timings."""
    rng = random.Random(seed)
    services = {name: make_service(name) for name in {name for name, _ in PAIRS}}
    rows = []
    for name, location in PAIRS:
        moment = start + dt.timedelta(seconds=rng.randrange(60))
        while moment < end:
            status = rng.choices(["up", "warning", "down"], weights=[80, 10, 10])[0]
            phases = {phase: round(rng.uniform(0.0005, 0.2), 6) for phase in PHASES}
            rows.append(
                ProbeResult(
                    service=services[name],
                    location=location,
                    scheduled_at=moment,
                    started_at=moment,
                    status=status,
                    reason="by hand",
                    **phases,
                )
            )
            moment += step
    ProbeResult.objects.bulk_create(rows, batch_size=1000)
    return services


def roll_up_history(start: dt.datetime, end: dt.datetime) -> None:
    """Run update_rollups as the periodic task would have, every few hours from `start` to `end`."""
    moment = start
    while moment < end:
        rollups.update_rollups(moment)
        moment += dt.timedelta(hours=6)
    for _ in range(20):
        if rollups.update_rollups(end) == 0:
            return
    raise AssertionError("update_rollups never settled")


def raw_rows(service: Service, location: str, since: dt.datetime, until: dt.datetime) -> list[ProbeResult]:
    return list(
        ProbeResult.objects.filter(service=service, location=location, started_at__gte=since, started_at__lt=until)
    )


def by_hand(rows: list[ProbeResult]) -> tuple[int, int, dict]:
    """Count, up count and {phase: {min, avg, max, p95}} computed directly; p95 is the ceil(95% n)-th value."""
    good = [row for row in rows if row.status in ("up", "warning")]
    latency = {}
    for phase in PHASES if good else ():
        values = sorted(getattr(row, phase) for row in good)
        rank = (95 * len(values) + 99) // 100  # ceil(0.95 n) in integers
        latency[phase] = {
            "min": values[0],
            "avg": pytest.approx(sum(values) / len(values), rel=1e-12),
            "max": values[-1],
            "p95": values[rank - 1],
        }
    return len(rows), len(good), latency


def test_nearest_rank_takes_the_ceil_of_95_percent_of_n():
    assert rollups.nearest_rank(list(range(1, 21))) == 19
    assert rollups.nearest_rank(list(range(1, 101))) == 95
    assert rollups.nearest_rank(list(range(1, 102))) == 96
    assert rollups.nearest_rank([0.5]) == 0.5


def test_hourly_rollups_equal_a_by_hand_computation_over_the_raw_results():
    services = make_history(NOW - 5 * HOUR, NOW, dt.timedelta(seconds=97))
    rollups.update_rollups(NOW)
    # Complete hours only: the current one, and the last one until GRACE has passed, stay raw.
    complete = [NOW - n * HOUR for n in range(5, 1, -1)]
    stored = {(r.service.name, r.location, r.start): r for r in HourlyRollup.objects.select_related("service")}
    assert set(stored) == {(name, location, hour) for name, location in PAIRS for hour in complete}
    for (name, location, hour), rollup in stored.items():
        expected = by_hand(raw_rows(services[name], location, hour, hour + HOUR))
        assert (rollup.count, rollup.up_count, rollup.latency) == expected


def test_daily_rollups_equal_a_by_hand_computation_over_the_raw_results():
    start = NOW.replace(hour=0) - 2 * DAY
    services = make_history(start, NOW, dt.timedelta(minutes=7))
    roll_up_history(start, NOW)
    days = {(r.service.name, r.location, r.start): r for r in DailyRollup.objects.select_related("service")}
    assert {start for _, _, start in days} == {start, start + DAY}  # today is not complete
    for (name, location, day), rollup in days.items():
        expected = by_hand(raw_rows(services[name], location, day, day + DAY))
        assert (rollup.count, rollup.up_count, rollup.latency) == expected


def test_an_hour_without_a_good_probe_has_counts_and_no_latency():
    service = make_service("alpha")
    down = Result(Status.DOWN, None, "refused", Phases(connect=0.001, total=0.001))
    record([Outcome(service.id, "default", NOW - 2 * HOUR, NOW - 2 * HOUR, down)])
    rollups.update_rollups(NOW)
    rollup = HourlyRollup.objects.get()
    assert (rollup.count, rollup.up_count, rollup.latency, rollup.uptime) == (1, 0, {}, 0.0)


def test_a_result_recorded_late_into_a_rolled_hour_is_rolled_up_by_the_next_run():
    service = make_service("alpha")
    hour = NOW - 2 * HOUR
    up = Result(Status.UP, None, "ok", Phases(connect=0.01, total=0.02))
    record([Outcome(service.id, "default", hour, hour, up)])
    assert rollups.update_rollups(NOW) == 1
    assert rollups.update_rollups(NOW) == 0  # nothing new: nothing recomputed
    record([Outcome(service.id, "default", hour + dt.timedelta(minutes=59), hour + dt.timedelta(minutes=59), up)])
    assert rollups.update_rollups(NOW + dt.timedelta(minutes=1)) == 1
    assert HourlyRollup.objects.get(start=hour).count == 2


def test_a_backlog_is_caught_up_a_bounded_number_of_hours_per_run():
    make_history(NOW - 30 * HOUR, NOW, dt.timedelta(minutes=20))
    first = rollups.update_rollups(NOW)
    assert HourlyRollup.objects.values("start").distinct().count() == rollups.MAX_PERIODS_PER_RUN
    assert first >= rollups.MAX_PERIODS_PER_RUN
    rollups.update_rollups(NOW)
    assert HourlyRollup.objects.values("start").distinct().count() == 29  # all complete hours


@pytest.fixture
def month() -> dict[str, Service]:
    """31 days of results every 23 minutes, rolled up as the daemon would have; the last hour or so stays raw."""
    start = NOW - 31 * DAY
    services = make_history(start, NOW, dt.timedelta(minutes=23))
    roll_up_history(start, NOW)
    return services


def truth(services: dict[str, Service], name: str, location: str, since: dt.datetime, until: dt.datetime):
    rows = raw_rows(services[name], location, since, until)
    return sum(row.status in ("up", "warning") for row in rows) / len(rows), by_hand(rows)[2]


@pytest.mark.parametrize("window", [DAY, 7 * DAY, 30 * DAY], ids=["24h", "7d", "30d"])
def test_uptime_and_latency_over_a_window_equal_the_raw_truth(month, window):
    until = NOW - dt.timedelta(minutes=7)  # inside the stretch not rolled up yet
    since = until - window
    for name, location in PAIRS:
        expected_uptime, expected_latency = truth(month, name, location, since, until)
        assert rollups.uptime(month[name].id, location, since, until) == pytest.approx(expected_uptime, rel=1e-12)
        summary = rollups.latency_summary(month[name].id, location, since, until)
        for phase in PHASES:
            for stat in ("min", "avg", "max"):
                assert summary[phase][stat] == expected_latency[phase][stat]


def test_uptime_reads_rollups_and_survives_the_raw_results_being_pruned(month):
    until = NOW - dt.timedelta(minutes=7)
    since = until - 30 * DAY
    expected = {pair: truth(month, *pair, since.replace(minute=0), until)[0] for pair in PAIRS}
    ProbeResult.objects.filter(started_at__lt=NOW - 2 * DAY).delete()
    for name, location in PAIRS:
        # The first, partial hour's raw rows are gone: the window counts that whole hour from its rollup.
        assert rollups.uptime(month[name].id, location, since, until) == pytest.approx(expected[(name, location)])


def test_uptime_of_a_window_without_probes_is_none():
    service = make_service("alpha")
    assert rollups.uptime(service.id, "default", NOW - DAY, NOW) is None
    assert rollups.latency_summary(service.id, "default", NOW - DAY, NOW) == {}
