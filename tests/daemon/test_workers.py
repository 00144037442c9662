"""Worker heartbeats: which locations are served, and `manage.py locations` naming the unserved ones."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command

from monitor.daemon import workers
from monitor.models import Service, WorkerHeartbeat

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture(autouse=True)
def fresh_cache():
    workers.forget_cache()
    yield
    workers.forget_cache()


def beat(name: str, *locations: str) -> None:
    now = dt.datetime.now(dt.UTC)
    workers.beat(name, locations, started_at=now, in_flight=3, probes=10, lag_ms=1.5)


def test_a_location_is_served_while_a_worker_beats_for_it():
    beat("host:1", "default", "eu")
    assert workers.served_locations() == {"default", "eu"}


def test_a_worker_silent_for_longer_than_alive_for_no_longer_serves():
    beat("host:1", "eu")
    WorkerHeartbeat.objects.update(last_seen=dt.datetime.now(dt.UTC) - workers.ALIVE_FOR - dt.timedelta(seconds=1))
    assert workers.served_locations() == set()


def test_a_worker_that_stops_cleanly_is_forgotten_at_once():
    beat("host:1", "eu")
    beat("host:2", "default")
    workers.forget("host:1")
    assert workers.served_locations() == {"default"}


def test_beating_again_updates_the_same_row():
    beat("host:1", "eu")
    beat("host:1", "eu")
    assert WorkerHeartbeat.objects.count() == 1


def test_the_locations_command_names_an_unserved_location_and_exits_1():
    Service.objects.create(name="a", host="127.0.0.1", port=9, protocol="tcp", locations="default,mars")
    beat("host:1", "default")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_status:
        call_command("locations", stdout=out, stderr=err)
    assert exit_status.value.code == 1
    lines = {line.split()[0]: line.split()[1] for line in out.getvalue().splitlines()[1:]}
    assert lines == {"default": "served", "mars": "UNSERVED"}
    assert "No worker serves mars" in err.getvalue()


def test_the_locations_command_exits_0_when_every_location_is_served():
    Service.objects.create(name="a", host="127.0.0.1", port=9, protocol="tcp")
    beat("host:1", "default")
    out = io.StringIO()
    call_command("locations", stdout=out)
    assert "served" in out.getvalue() and "UNSERVED" not in out.getvalue()
