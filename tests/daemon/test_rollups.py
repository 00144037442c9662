"""Rollups: hourly and daily rows equal a by-hand computation over raw results, unknown results counted apart."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from monitor.daemon import retention, rollups
from monitor.daemon.recording import Outcome, record
from monitor.models import DailyRollup, HourlyRollup, ProbeResult, Service
from monitor.models.history import PHASES
from monitor.probes import Failure, Phases, Result, Status
from monitor.stats import nearest_rank

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
MINUTE, HOUR, DAY = dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=1)
PAIRS = [("alpha", "default"), ("alpha", "eu"), ("beta", "default")]
UP = Result(Status.UP, None, "ok", Phases(connect=0.01, total=0.02))
DOWN = Result(Status.DOWN, Failure.REFUSED, "refused", Phases(connect=0.001, total=0.001))
MISSED = Result(Status.UNKNOWN, Failure.MISSED, "no worker took the slot", Phases())


def make_service(name: str) -> Service:
    return Service.objects.create(name=name, host="127.0.0.1", port=25, protocol="tcp", locations="default,eu")


def probe_at(service: Service, *moments: dt.datetime, results: list[Result] | None = None) -> None:
    """Record one result per moment, each in its own slot (UP unless `results` says otherwise)."""
    results = results or [UP] * len(moments)
    record([Outcome(service.id, "default", at, at, result) for at, result in zip(moments, results, strict=True)])


def make_history(start: dt.datetime, end: dt.datetime, step: dt.timedelta, seed: int = 7) -> dict[str, Service]:
    """Store raw results for every pair from `start` to `end`, one per `step`, with varied status and timings."""
    rng = random.Random(seed)
    services = {name: make_service(name) for name in {name for name, _ in PAIRS}}
    rows = []
    for name, location in PAIRS:
        moment = start + dt.timedelta(seconds=rng.randrange(60))
        while moment < end:
            status = rng.choices(["up", "warning", "down", "unknown"], weights=[74, 9, 9, 8])[0]
            phases = {phase: round(rng.uniform(0.0005, 0.2), 6) for phase in PHASES}
            rows.append(
                ProbeResult(
                    service=services[name],
                    location=location,
                    scheduled_at=moment,
                    started_at=moment,
                    status=status,
                    failure="missed" if status == "unknown" else "",
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


def by_hand(rows: list[ProbeResult]) -> tuple[int, int, int, dict]:
    """Count, up, unknown and {phase: {min, avg, max, p95}} computed directly; p95 is the ceil(95% n)-th value."""
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
    return len(rows), len(good), sum(row.status == "unknown" for row in rows), latency


def stored(rollup) -> tuple[int, int, int, dict]:
    return rollup.count, rollup.up_count, rollup.unknown_count, rollup.latency


def test_nearest_rank_takes_the_ceil_of_95_percent_of_n():
    assert nearest_rank(list(range(1, 21))) == 19
    assert nearest_rank(list(range(1, 101))) == 95
    assert nearest_rank(list(range(1, 102))) == 96
    assert nearest_rank([0.5]) == 0.5


def test_hourly_rollups_equal_a_by_hand_computation_over_the_raw_results():
    services = make_history(NOW - 5 * HOUR, NOW, dt.timedelta(seconds=97))
    rollups.update_rollups(NOW)
    # Complete hours only: the current one, and the last one until GRACE has passed, stay raw.
    complete = [NOW - n * HOUR for n in range(5, 1, -1)]
    rows = {(r.service.name, r.location, r.start): r for r in HourlyRollup.objects.select_related("service")}
    assert set(rows) == {(name, location, hour) for name, location in PAIRS for hour in complete}
    for (name, location, hour), rollup in rows.items():
        assert stored(rollup) == by_hand(raw_rows(services[name], location, hour, hour + HOUR))


def test_daily_rollups_equal_a_by_hand_computation_over_the_raw_results():
    start = NOW.replace(hour=0) - 2 * DAY
    services = make_history(start, NOW, dt.timedelta(minutes=7))
    roll_up_history(start, NOW)
    days = {(r.service.name, r.location, r.start): r for r in DailyRollup.objects.select_related("service")}
    assert {start for _, _, start in days} == {start, start + DAY}  # today is not complete
    for (name, location, day), rollup in days.items():
        assert stored(rollup) == by_hand(raw_rows(services[name], location, day, day + DAY))


def test_unknown_results_are_counted_apart_from_up_and_down_in_hourly_and_daily_rollups():
    service = make_service("alpha")
    hour = NOW.replace(hour=0) - DAY + 3 * HOUR
    results = [UP] * 6 + [DOWN] * 2 + [MISSED] * 2
    probe_at(service, *(hour + n * 5 * MINUTE for n in range(10)), results=results)
    roll_up_history(NOW - DAY, NOW)
    for rollup in (HourlyRollup.objects.get(), DailyRollup.objects.get()):
        assert (rollup.count, rollup.up_count, rollup.unknown_count, rollup.down_count) == (10, 6, 2, 2)
        assert rollup.uptime == 0.75
        assert rollup.latency["connect"]["max"] == 0.01  # the good probes' timings only


def test_an_hour_without_a_good_probe_has_counts_and_no_latency():
    service = make_service("alpha")
    probe_at(service, NOW - 2 * HOUR, results=[DOWN])
    rollups.update_rollups(NOW)
    rollup = HourlyRollup.objects.get()
    assert (rollup.count, rollup.up_count, rollup.unknown_count, rollup.latency, rollup.uptime) == (1, 0, 0, {}, 0.0)


def test_an_hour_of_missed_slots_only_has_no_uptime():
    service = make_service("alpha")
    probe_at(service, NOW - 2 * HOUR, results=[MISSED])
    rollups.update_rollups(NOW)
    rollup = HourlyRollup.objects.get()
    assert (rollup.count, rollup.unknown_count, rollup.down_count, rollup.uptime) == (1, 1, 0, None)


def test_a_result_recorded_late_into_a_rolled_hour_is_rolled_up_by_the_next_run():
    service = make_service("alpha")
    hour = NOW - 2 * HOUR
    probe_at(service, hour)
    assert rollups.update_rollups(NOW) == 1
    assert rollups.update_rollups(NOW) == 0  # nothing new: nothing recomputed
    probe_at(service, hour + 59 * MINUTE, results=[MISSED])
    assert rollups.update_rollups(NOW + MINUTE) == 1
    assert stored(HourlyRollup.objects.get(start=hour))[:3] == (2, 1, 1)


def test_a_backlog_is_caught_up_a_bounded_number_of_hours_per_run():
    make_history(NOW - 30 * HOUR, NOW, dt.timedelta(minutes=20))
    first = rollups.update_rollups(NOW)
    assert HourlyRollup.objects.values("start").distinct().count() == rollups.MAX_PERIODS_PER_RUN
    assert first >= rollups.MAX_PERIODS_PER_RUN
    rollups.update_rollups(NOW)
    assert HourlyRollup.objects.values("start").distinct().count() == 29  # all complete hours


def test_with_one_day_of_retention_a_daily_rollup_is_built_for_yesterday(settings):
    settings.PORTWATCH_RESULT_RETENTION_DAYS = 1
    yesterday = NOW.replace(hour=0) - DAY
    services = make_history(yesterday, NOW, dt.timedelta(minutes=10))
    roll_up_history(yesterday, NOW)
    days = {(r.service.name, r.location): r for r in DailyRollup.objects.select_related("service")}
    assert set(DailyRollup.objects.values_list("start", flat=True)) == {yesterday}
    for (name, location), rollup in days.items():
        assert stored(rollup) == by_hand(raw_rows(services[name], location, yesterday, yesterday + DAY))


def test_a_rollup_is_never_recomputed_from_fewer_raw_results_than_it_counted():
    service = make_service("alpha")
    hour = NOW - 2 * HOUR
    probe_at(service, *(hour + n * 10 * MINUTE for n in range(6)))
    rollups.update_rollups(NOW)
    ProbeResult.objects.filter(started_at__lt=hour + 30 * MINUTE).delete()  # as a prune would
    assert rollups.update_rollups(NOW + MINUTE) == 0
    assert HourlyRollup.objects.get(start=hour).count == 6


def test_a_day_recomputed_after_prune_took_part_of_it_is_merged_from_its_hours(settings):
    settings.PORTWATCH_RESULT_RETENTION_DAYS = 1
    yesterday = NOW.replace(hour=0) - DAY
    service = make_service("alpha")
    probe_at(service, *(yesterday + n * 30 * MINUTE for n in range(48)))
    roll_up_history(yesterday, yesterday + DAY + rollups.GRACE + MINUTE)
    an_hour_later = yesterday + DAY + HOUR
    assert retention.prune(an_hour_later)["results"] == 2  # yesterday's first hour: past a day, and rolled up
    probe_at(service, yesterday + DAY - 5 * MINUTE, results=[MISSED])  # recorded late, into the last hour
    rollups.update_rollups(an_hour_later)
    daily = DailyRollup.objects.get(start=yesterday)
    assert stored(daily)[:3] == (49, 48, 1)  # not 47 from the raw rows left
    assert daily.latency["total"]["max"] == 0.02
