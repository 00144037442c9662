"""The sweeper: every settled slot without a result becomes a `missed` result saying why; nothing twice."""

from __future__ import annotations

import datetime as dt

import pytest

from monitor.daemon import scheduling, sweeper, workers
from monitor.daemon.recording import Outcome, record
from monitor.models import ProbeResult, Schedule, Service, Watermark, WorkerHeartbeat
from monitor.probes import Phases, Result, Status

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SECOND = dt.timedelta(seconds=1)
INTERVAL = 60
TIMEOUT = 5.0
SETTLE = scheduling.late_limit(INTERVAL) + dt.timedelta(seconds=TIMEOUT) + sweeper.SETTLE_GRACE


@pytest.fixture(autouse=True)
def fresh_cache():
    workers.forget_cache()
    yield
    workers.forget_cache()


def make_service(name: str = "web", **fields) -> Service:
    defaults = {"host": "127.0.0.1", "port": 9, "protocol": "tcp", "interval": INTERVAL, "timeout": TIMEOUT}
    return Service.objects.create(name=name, **(defaults | fields))


def first_slot(service: Service, location: str = "default") -> dt.datetime:
    return Schedule.objects.get(service=service, location=location).due_at


def start_sweeping_at(moment: dt.datetime) -> None:
    Watermark.objects.update_or_create(name=sweeper.WATERMARK, defaults={"moment": moment})


def serve(location: str, now: dt.datetime) -> None:
    """Have a live worker at `location` as of `now` (a moment of the test's own clock)."""
    workers.beat("test-worker:1", [location], started_at=now, in_flight=0, probes=0, lag_ms=0.0)
    WorkerHeartbeat.objects.update(last_seen=now)


def missed_rows(service: Service) -> list[ProbeResult]:
    return list(ProbeResult.objects.filter(service=service, failure="missed").order_by("scheduled_at"))


def test_a_dispatched_slot_with_no_result_is_recorded_missed_once_settled():
    service = make_service()
    slot = first_slot(service)
    start_sweeping_at(slot - SECOND)
    [claim] = scheduling.claim_due(slot)  # handed to a worker that then vanished
    serve("default", slot + SETTLE)
    assert sweeper.sweep(slot + SETTLE - SECOND) == 0  # its probe could still be running
    assert sweeper.sweep(slot + SETTLE + SECOND) == 1
    [row] = missed_rows(service)
    assert (row.scheduled_at, row.status) == (claim.slot, "unknown")
    assert row.reason == (
        "not probed: no result came back (the worker was lost mid-probe, or the batch expired in the queue)"
    )


def test_a_slot_with_a_result_is_left_alone():
    service = make_service()
    slot = first_slot(service)
    start_sweeping_at(slot - SECOND)
    scheduling.claim_due(slot)
    record([Outcome(service.id, "default", slot, slot, Result(Status.UP, None, "ok", Phases(total=0.01)))])
    assert sweeper.sweep(slot + SETTLE + SECOND) == 0
    assert missed_rows(service) == []


def test_slots_the_dispatcher_never_reached_are_missed_as_not_dispatched():
    service = make_service()
    slot = first_slot(service)
    start_sweeping_at(slot - SECOND)
    later = slot + 3 * INTERVAL * SECOND + SETTLE  # no dispatch at all for three intervals
    assert sweeper.sweep(later) == 4
    assert [row.scheduled_at for row in missed_rows(service)] == [slot + k * INTERVAL * SECOND for k in range(4)]
    assert {row.reason for row in missed_rows(service)} == {
        "not probed: the slot was never dispatched (is the beat scheduler running?)"
    }


def test_a_dispatched_slot_of_an_unserved_location_says_no_worker_serves_it():
    service = make_service(locations="mars")
    slot = first_slot(service, "mars")
    start_sweeping_at(slot - SECOND)
    scheduling.claim_due(slot)
    sweeper.sweep(slot + SETTLE + SECOND)
    [row] = missed_rows(service)
    assert row.reason == "not probed: no worker is serving location 'mars'"


def test_a_second_sweep_over_the_same_time_records_nothing_new():
    service = make_service()
    slot = first_slot(service)
    start_sweeping_at(slot - SECOND)
    assert sweeper.sweep(slot + SETTLE + SECOND) == 1
    start_sweeping_at(slot - SECOND)  # as if another sweeper ran over the same window
    assert sweeper.sweep(slot + SETTLE + SECOND) == 0
    assert len(missed_rows(service)) == 1


def test_slots_before_a_service_existed_are_never_missed():
    service = make_service()
    slot = first_slot(service)
    start_sweeping_at(slot - 10 * INTERVAL * SECOND)  # the sweeper last ran long before the service was made
    sweeper.sweep(slot + SETTLE + SECOND)
    assert [row.scheduled_at for row in missed_rows(service)] == [slot]


def test_missed_slots_do_not_move_the_confirmed_status():
    service = make_service(failure_threshold=1)
    slot = first_slot(service)
    record([Outcome(service.id, "default", slot, slot, Result(Status.UP, None, "ok", Phases(total=0.01)))])
    start_sweeping_at(slot)
    sweeper.sweep(slot + 3 * INTERVAL * SECOND + SETTLE)
    state = service.states.get()
    assert (state.status, state.last_status, state.last_failure) == ("up", "unknown", "missed")
    assert service.status_changes.count() == 1  # unknown -> up, and nothing since
