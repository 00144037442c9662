"""Retention: prune deletes what is past retention and rolled up, in chunks, and keeps what it must."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command

from monitor import readers
from monitor.daemon import retention, rollups
from monitor.daemon.recording import Outcome, record
from monitor.models import DailyRollup, HourlyRollup, ProbeResult, Service, ServiceState
from monitor.probes import Failure, Phases, Result, Status

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
SECOND, HOUR, DAY = dt.timedelta(seconds=1), dt.timedelta(hours=1), dt.timedelta(days=1)
UP = Result(Status.UP, None, "connected", Phases(connect=0.01, total=0.02))
DOWN = Result(Status.DOWN, Failure.REFUSED, "refused", Phases())
MISSED = Result(Status.UNKNOWN, Failure.MISSED, "no worker took the slot", Phases())


@pytest.fixture
def service() -> Service:
    return Service.objects.create(name="mail", host="127.0.0.1", port=25, protocol="tcp")


def probe_at(service: Service, *moments: dt.datetime, result: Result = UP) -> None:
    record([Outcome(service.id, "default", moment, moment, result) for moment in moments])


def roll_up(now: dt.datetime) -> None:
    """Run update_rollups at `now` until it has nothing left to do."""
    for _ in range(50):
        if rollups.update_rollups(now) == 0:
            return
    raise AssertionError("update_rollups never settled")


def rollup(model, service: Service, start: dt.datetime, count: int = 1):
    return model.objects.create(service=service, location="default", start=start, count=count, up_count=count)


def started(**filters) -> list[dt.datetime]:
    return list(ProbeResult.objects.filter(**filters).order_by("started_at").values_list("started_at", flat=True))


def test_it_deletes_rolled_up_results_older_than_the_retention_and_keeps_the_rest(service, settings):
    settings.PORTWATCH_RESULT_RETENTION_DAYS = 7
    cutoff = NOW - 7 * DAY
    probe_at(service, cutoff - 2 * SECOND, cutoff - SECOND, cutoff, cutoff + SECOND, NOW)
    roll_up(NOW)
    assert retention.prune(NOW)["results"] == 2
    assert started() == [cutoff, cutoff + SECOND, NOW]


def test_it_keeps_the_results_of_an_hour_not_rolled_up_until_it_is(service):
    old = [NOW - 10 * DAY + n * 10 * dt.timedelta(minutes=1) for n in range(6)]
    probe_at(service, *old, NOW)  # the rollup task has not run
    assert retention.prune(NOW)["results"] == 0
    assert started(started_at__lt=NOW) == old
    roll_up(NOW)
    assert retention.prune(NOW)["results"] == 6
    assert started() == [NOW]


def test_it_keeps_the_results_of_a_day_not_rolled_up_until_it_is(service, settings):
    settings.PORTWATCH_RESULT_RETENTION_DAYS = 1
    yesterday = NOW.replace(hour=0) - DAY
    moments = [yesterday + n * 30 * dt.timedelta(minutes=1) for n in range(48)]
    probe_at(service, *moments)
    roll_up(yesterday + 23 * HOUR)  # yesterday's hours up to 22:00 are rolled up, yesterday itself is not
    assert HourlyRollup.objects.filter(start__lt=NOW - DAY).exists()
    assert not DailyRollup.objects.exists()
    assert retention.prune(NOW)["results"] == 0
    assert started() == moments
    roll_up(NOW)
    assert retention.prune(NOW)["results"] == 24  # yesterday before 12:00; the last one is the state's
    assert started() == moments[24:]


def test_it_keeps_the_result_a_current_state_points_to_however_old(service):
    probe_at(service, NOW - 30 * DAY, NOW - 20 * DAY)  # then the service was, say, disabled
    roll_up(NOW)
    assert retention.prune(NOW)["results"] == 1
    state = ServiceState.objects.get(service=service)
    assert state.last_result.started_at == NOW - 20 * DAY


def test_it_deletes_in_chunks_until_nothing_old_is_left(service, monkeypatch):
    monkeypatch.setattr(retention, "CHUNK", 4)
    probe_at(service, *(NOW - 10 * DAY + n * HOUR for n in range(11)), NOW)
    roll_up(NOW)
    assert retention.prune(NOW) == {"results": 11, "hourly": 0}
    assert started() == [NOW]


def test_it_deletes_hourly_rollups_past_their_retention_once_their_day_is_rolled_up(service, settings):
    settings.PORTWATCH_HOURLY_RETENTION_DAYS = 400
    cutoff = NOW - 400 * DAY
    day = cutoff.replace(hour=0)
    for start in (cutoff - HOUR, cutoff, cutoff + HOUR):
        rollup(HourlyRollup, service, start)
    assert retention.prune(NOW)["hourly"] == 0  # no daily rollup for that day yet
    rollup(DailyRollup, service, day, count=3)
    assert retention.prune(NOW)["hourly"] == 1
    assert sorted(HourlyRollup.objects.values_list("start", flat=True)) == [cutoff, cutoff + HOUR]
    assert DailyRollup.objects.count() == 1


def test_hourly_rollups_are_kept_at_least_as_long_as_raw_results(service, settings):
    settings.PORTWATCH_RESULT_RETENTION_DAYS = 7
    settings.PORTWATCH_HOURLY_RETENTION_DAYS = 1
    probe_at(service, NOW - 3 * DAY, NOW - 8 * DAY, NOW)
    roll_up(NOW)
    assert retention.hourly_retention_days() == 7
    assert retention.prune(NOW) == {"results": 1, "hourly": 1}
    assert list(HourlyRollup.objects.values_list("start", flat=True)) == [NOW - 3 * DAY]


def test_rollups_of_pruned_hours_survive_and_still_give_the_uptime(service):
    start = NOW - 9 * DAY
    probe_at(service, *(start + n * dt.timedelta(minutes=30) for n in range(9 * 48)))
    late = start + DAY + dt.timedelta(minutes=1)
    probe_at(service, late, result=DOWN)
    probe_at(service, late + dt.timedelta(minutes=1), late + dt.timedelta(minutes=2), result=MISSED)
    moment = start
    while moment <= NOW:  # the periodic task, every few hours
        rollups.update_rollups(moment)
        moment += 6 * HOUR
    window, until = 2 * DAY, start + 2 * DAY
    before = readers.uptime(service.id, "default", window, now=until)
    hourly = HourlyRollup.objects.filter(start__lt=NOW - 7 * DAY).count()

    assert retention.prune(NOW)["results"] > 0
    assert not ProbeResult.objects.filter(started_at__lt=until).exists()
    assert HourlyRollup.objects.filter(start__lt=NOW - 7 * DAY).count() == hourly > 0
    assert readers.uptime(service.id, "default", window, now=until) == before == readers.Uptime(96, 1, 2)


def test_the_prune_command_says_how_many_rows_went(service):
    now = dt.datetime.now(dt.UTC)
    probe_at(service, now - 30 * DAY, now - 20 * DAY, now)
    roll_up(now)
    out = io.StringIO()
    call_command("prune", stdout=out)
    assert out.getvalue() == ("Deleted 2 probe results older than 7 days and 0 hourly rollups older than 400 days.\n")
