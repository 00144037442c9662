"""The Celery tasks called as functions: dispatch accounts for unserved locations and empties their queues."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from django.conf import settings

from monitor import tasks
from monitor.daemon import scheduling, workers
from monitor.models import ProbeResult, Schedule, Service

pytestmark = pytest.mark.django_db


def queued(queue: str) -> int:
    """Return how many messages wait in `queue` of the filesystem broker (the test settings' broker)."""
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_out"])
    return sum(1 for path in folder.glob("*.msg") if f".{queue}." in path.name)


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(scheduling, "_last_sync", time.monotonic())  # no full sync: it would realign due_at
    workers.forget_cache()
    tasks._purged.clear()
    yield
    workers.forget_cache()
    tasks._purged.clear()


def test_dispatch_records_claims_of_an_unserved_location_as_missed_and_empties_its_queue():
    service = Service.objects.create(name="a", host="127.0.0.1", port=9, protocol="tcp", locations="mars")
    tasks.probe_batch.apply_async(args=[[]], queue="probe.mars")  # left over from when mars had a worker
    assert queued("probe.mars") == 1
    Schedule.objects.filter(service=service).update(due_at=dt.datetime.now(dt.UTC))
    assert tasks.dispatch() == 0
    [missed] = ProbeResult.objects.filter(service=service)
    assert (missed.status, missed.failure) == ("unknown", "missed")
    assert missed.reason == "not probed: no worker is serving location 'mars'"
    assert queued("probe.mars") == 0


def test_dispatch_sends_claims_of_a_served_location():
    service = Service.objects.create(name="a", host="127.0.0.1", port=9, protocol="tcp", locations="eu")
    now = dt.datetime.now(dt.UTC)
    workers.beat("host:1", ["eu"], started_at=now, in_flight=0, probes=0, lag_ms=0.0)
    Schedule.objects.filter(service=service).update(due_at=now)
    assert tasks.dispatch() == 1
    assert queued("probe.eu") == 1
    assert not ProbeResult.objects.exists()
