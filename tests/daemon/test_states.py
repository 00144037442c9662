"""The state machine's edges: pausing when nobody probes, and incidents that never span unmeasured time."""

from __future__ import annotations

import datetime as dt

import pytest

from monitor.daemon.recording import Outcome, record
from monitor.models import Incident, Service, ServiceState, StatusChange
from monitor.probes import Failure, Phases, Result, Status

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

STEP = dt.timedelta(seconds=60)


def make_service(**fields) -> Service:
    defaults = {"name": "mail", "host": "127.0.0.1", "port": 25, "protocol": "tcp", "failure_threshold": 1}
    return Service.objects.create(**(defaults | fields))


def probe(service: Service, moment: dt.datetime, status: Status, location: str = "default") -> None:
    failure = None if status is Status.UP else Failure.REFUSED
    result = Result(status, failure, "ok" if failure is None else "connection refused", Phases(total=0.01))
    assert record([Outcome(service.id, location, moment, moment, result)]) == 1


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def test_disabling_a_down_service_closes_its_incident_and_pauses_its_state():
    service = make_service()
    start = now() - 3 * STEP
    probe(service, start, Status.DOWN)
    probe(service, start + STEP, Status.DOWN)
    service.enabled = False
    service.save()
    incident = Incident.objects.get(service=service)
    assert incident.ended_at is not None
    assert incident.end_reason == "monitoring stopped: service disabled"
    # The last probe vouched for one interval; after that nobody probed, so the incident stops there.
    assert incident.ended_at == start + 2 * STEP
    state = ServiceState.objects.get(service=service)
    assert (state.status, state.open_incident_id) == ("paused", None)
    assert StatusChange.objects.filter(service=service).last().new_status == "paused"


def test_removing_a_location_pauses_that_location_only():
    service = make_service(locations="eu,us")
    moment = now() - STEP
    probe(service, moment, Status.DOWN, "eu")
    probe(service, moment, Status.UP, "us")
    service.locations = "us"
    service.save()
    states = dict(ServiceState.objects.filter(service=service).values_list("location", "status"))
    assert states == {"eu": "paused", "us": "up"}
    assert Incident.objects.get(service=service, location="eu").end_reason == (
        "monitoring stopped: location removed from the service"
    )


def test_a_paused_service_probed_again_confirms_its_status_afresh():
    service = make_service()
    moment = now() - 2 * STEP
    probe(service, moment, Status.UP)
    service.enabled = False
    service.save()
    service.enabled = True
    service.save()
    probe(service, moment + STEP, Status.UP)
    assert ServiceState.objects.get(service=service).status == "up"
    assert list(StatusChange.objects.filter(service=service).values_list("old_status", "new_status")) == [
        ("unknown", "up"),
        ("up", "paused"),
        ("unknown", "up"),
    ]


def test_an_incident_that_recovers_after_a_monitoring_gap_ends_where_measurements_stopped():
    service = make_service()
    start = now() - 30 * STEP
    probe(service, start, Status.DOWN)
    probe(service, start + 20 * STEP, Status.UP)  # nothing measured for 19 intervals in between
    incident = Incident.objects.get(service=service)
    assert incident.ended_at == start + STEP
    assert incident.end_reason.startswith("ended during a monitoring gap")


def test_an_incident_without_a_gap_ends_at_the_first_good_probe():
    service = make_service()
    start = now() - 5 * STEP
    probe(service, start, Status.DOWN)
    probe(service, start + STEP, Status.UP)
    incident = Incident.objects.get(service=service)
    assert (incident.ended_at, incident.end_reason) == (start + STEP, "")
