"""Retention: prune deletes what is past retention, in chunks, and keeps what it must."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command

from monitor.daemon import retention, rollups
from monitor.models import DailyRollup, HourlyRollup, ProbeResult, Service, ServiceState
from monitor.probes import Phases, Result, Status
from monitor.daemon.recording import Outcome, record

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
UP = Result(Status.UP, None, "connected", Phases(connect=0.01, total=0.02))


@pytest.fixture
def service() -> Service:
    return Service.objects.create(name="mail", host="127.0.0.1", port=25, protocol="tcp")


def probe_at(service: Service, *moments: dt.datetime, location: str = "default") -> None:
    record([Outcome(service.id, location, moment, moment, UP) for moment in moments])


def rollup(model, service: Service, start: dt.datetime):
    return model.objects.create(service=service, location="default", start=start, count=1, up_count=1)


def test_it_deletes_results_older_than_the_retention_and_keeps_the_rest(service, settings):
    settings.PORTWATCH_RESULT_RETENTION_DAYS = 7
    cutoff = NOW - 7 * DAY
    second = dt.timedelta(seconds=1)
    probe_at(service, cutoff - 2 * second, cutoff - second, cutoff, cutoff + second)
    assert retention.prune(NOW)["results"] == 2
    assert list(ProbeResult.objects.order_by("started_at").values_list("started_at", flat=True)) == [
        cutoff,
        cutoff + second,
    ]


def test_it_keeps_the_result_a_current_state_points_to_however_old(service):
    probe_at(service, NOW - 30 * DAY, NOW - 20 * DAY)  # then the service was, say, disabled
    assert retention.prune(NOW)["results"] == 1
    state = ServiceState.objects.get(service=service)
    assert state.last_result.started_at == NOW - 20 * DAY


def test_it_deletes_in_chunks_until_nothing_old_is_left(service, monkeypatch):
    monkeypatch.setattr(retention, "CHUNK", 4)
    probe_at(service, *(NOW - 10 * DAY + n * HOUR for n in range(11)), NOW)
    assert retention.prune(NOW) == {"results": 11, "hourly": 0}
    assert list(ProbeResult.objects.values_list("started_at", flat=True)) == [NOW]


def test_it_deletes_hourly_rollups_past_their_retention_and_keeps_daily_ones(service, settings):
    settings.PORTWATCH_HOURLY_RETENTION_DAYS = 400
    cutoff = NOW - 400 * DAY
    for start in (cutoff - HOUR, cutoff, cutoff + HOUR):
        rollup(HourlyRollup, service, start)
    rollup(DailyRollup, service, cutoff - 5 * DAY)
    assert retention.prune(NOW) == {"results": 0, "hourly": 1}
    assert sorted(HourlyRollup.objects.values_list("start", flat=True)) == [cutoff, cutoff + HOUR]
    assert DailyRollup.objects.count() == 1


def test_rollups_of_pruned_hours_survive_and_still_give_the_uptime(service):
    start = NOW - 9 * DAY
    probe_at(service, *(start + n * dt.timedelta(minutes=30) for n in range(9 * 48)))
    late = start + DAY + dt.timedelta(minutes=1)
    record([Outcome(service.id, "default", late, late, Result(Status.DOWN, None, "refused", Phases()))])
    moment = start
    while moment <= NOW:  # the periodic task, every few hours
        rollups.update_rollups(moment)
        moment += 6 * HOUR
    window = (start, start + 2 * DAY)
    before = rollups.uptime(service.id, "default", *window)
    hourly = HourlyRollup.objects.filter(start__lt=NOW - 7 * DAY).count()

    assert retention.prune(NOW)["results"] > 0
    assert not ProbeResult.objects.filter(started_at__lt=window[1]).exists()
    assert HourlyRollup.objects.filter(start__lt=NOW - 7 * DAY).count() == hourly > 0
    assert rollups.uptime(service.id, "default", *window) == before == 96 / 97


def test_the_prune_command_says_how_many_rows_went(service):
    probe_at(service, dt.datetime.now(dt.UTC) - 30 * DAY, dt.datetime.now(dt.UTC) - 20 * DAY, dt.datetime.now(dt.UTC))
    out = io.StringIO()
    call_command("prune", stdout=out)
    assert out.getvalue() == ("Deleted 2 probe results older than 7 days and 0 hourly rollups older than 400 days.\n")
