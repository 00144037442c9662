"""Scheduling: slots spread and steady, claims move on without bursts, sync follows services, claims never overlap."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import itertools
import os
import random
import time
from collections import Counter

import pytest

from monitor.daemon import scheduling
from monitor.daemon.scheduling import Claim, claim_due, next_slot, on_grid, slot_offset
from monitor.models import ProbeResult, Schedule, Service
from tests.peers.services import scratch_stack

SECOND = dt.timedelta(seconds=1)


def make_service(name: str, **fields) -> Service:
    defaults = {"host": "127.0.0.1", "port": 9, "protocol": "tcp", "interval": 60, "timeout": 5.0}
    return Service.objects.create(name=name, **(defaults | fields))


def due_at(service: Service, location: str = "default") -> dt.datetime:
    return Schedule.objects.get(service=service, location=location).due_at


def run_ticks(start: dt.datetime, seconds: int, step: float = 1.0) -> list[tuple[dt.datetime, Claim]]:
    """Call claim_due once per simulated dispatch tick; return (tick time, claim) pairs."""
    claimed = []
    for tick in range(int(seconds / step)):
        now = start + dt.timedelta(seconds=tick * step)
        claimed += [(now, claim) for claim in claim_due(now)]
    return claimed


# Slot math: plain functions ------------------------------------------------------------------


def test_offsets_spread_start_times_evenly_across_the_interval():
    offsets = [slot_offset(service_id, "default", 60).total_seconds() for service_id in range(1, 1201)]
    per_ten_seconds = Counter(int(offset // 10) for offset in offsets)
    assert sorted(per_ten_seconds) == [0, 1, 2, 3, 4, 5]
    assert all(140 <= count <= 260 for count in per_ten_seconds.values()), per_ten_seconds


def test_the_same_service_gets_different_offsets_at_different_locations():
    offsets = {slot_offset(7, location, 3600) for location in ("default", "eu", "us", "asia")}
    assert len(offsets) == 4


def test_next_slot_is_the_first_grid_point_strictly_after_the_moment():
    rng = random.Random(4)
    offset = slot_offset(42, "default", 30)
    for _ in range(500):
        moment = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.uniform(0, 10**6))
        slot = next_slot(moment, 30, offset)
        assert on_grid(slot, 30, offset)
        assert moment < slot <= moment + dt.timedelta(seconds=30)
    grid_point = next_slot(moment, 30, offset)
    assert next_slot(grid_point, 30, offset) == grid_point + dt.timedelta(seconds=30)


def test_batches_group_claims_by_location_and_expire_with_their_latest_start():
    slot = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
    claims = [
        Claim(i, i, "eu" if i % 2 else "us", slot + i * SECOND, start_by=slot + (i + 5) * SECOND) for i in range(1, 8)
    ]
    batches = scheduling.plan_batches(claims, size=2)
    assert [(b.queue, [c.service_id for c in b.claims]) for b in batches] == [
        ("probe.eu", [1, 3]),
        ("probe.eu", [5, 7]),
        ("probe.us", [2, 4]),
        ("probe.us", [6]),
    ]
    assert batches[1].expires == slot + 12 * SECOND


def test_claims_survive_a_round_trip_through_plain_data():
    claim = Claim(3, 4, "eu", dt.datetime(2025, 1, 1, 12, 0, 1, 500, tzinfo=dt.UTC), start_by=None)
    assert Claim.from_data(claim.to_data()) == claim


# Claims and sync against the database ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_new_service_is_due_at_its_next_slot():
    before = dt.datetime.now(dt.UTC)
    service = make_service("web", interval=60)
    due = due_at(service)
    assert before < due <= before + dt.timedelta(seconds=61)
    assert on_grid(due, 60, slot_offset(service.id, "default", 60))


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_claim_hands_out_the_slot_and_moves_due_at_one_interval_on():
    service = make_service("web", interval=60, timeout=5)
    slot = due_at(service)
    [claim] = claim_due(slot)
    row = Schedule.objects.get(service=service)
    assert (claim.service_id, claim.location, claim.slot) == (service.id, "default", slot)
    assert row.due_at == slot + dt.timedelta(seconds=60)
    assert row.claimed_slot == slot
    assert claim_due(slot) == []


@pytest.mark.django_db
@pytest.mark.postgres
def test_it_claims_a_slot_shortly_before_it_is_due_but_not_earlier():
    service = make_service("web")
    slot = due_at(service)
    assert claim_due(slot - 3 * SECOND) == []
    [claim] = claim_due(slot - SECOND)
    assert claim.slot == slot


@pytest.mark.django_db
@pytest.mark.postgres
def test_slots_stay_on_one_grid_over_many_ticks():
    service = make_service("web", interval=10)
    start = due_at(service) - 5 * SECOND
    claimed = run_ticks(start, 200)
    slots = [claim.slot for _, claim in claimed]
    assert len(slots) == 20
    assert {b - a for a, b in itertools.pairwise(slots)} == {dt.timedelta(seconds=10)}
    # Each slot was handed out before it was due, so the worker can start on time.
    assert all(now <= claim.slot for now, claim in claimed)


@pytest.mark.django_db
@pytest.mark.postgres
def test_an_interval_change_moves_the_service_onto_the_new_grid():
    service = make_service("web", interval=60)
    service.interval = 30
    service.save()
    new_offset = slot_offset(service.id, "default", 30)
    due = due_at(service)
    assert on_grid(due, 30, new_offset)
    slots = [claim.slot for _, claim in run_ticks(due - 2 * SECOND, 95)]
    assert {b - a for a, b in itertools.pairwise(slots)} == {dt.timedelta(seconds=30)}


@pytest.mark.django_db
@pytest.mark.postgres
def test_after_an_outage_missed_slots_are_skipped_instead_of_run_in_a_burst():
    services = [make_service(f"s{i}", interval=60) for i in range(30)]
    outage_end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)  # nothing dispatched for 10 minutes
    assert claim_due(outage_end) == []
    for service in services:
        assert outage_end < due_at(service) <= outage_end + dt.timedelta(seconds=60)
    first_interval = outage_end + dt.timedelta(seconds=60)
    claimed = [(now, claim) for now, claim in run_ticks(outage_end, 60) if claim.slot <= first_interval]
    assert sorted(claim.service_id for _, claim in claimed) == sorted(s.id for s in services)
    per_tick = Counter(now for now, _ in claimed)
    assert max(per_tick.values()) <= 5  # spread over the minute, as before the outage


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_slot_a_little_late_is_still_claimed_but_a_stale_one_is_not():
    service = make_service("web", interval=60)
    slot = due_at(service)
    [claim] = claim_due(slot + 3 * SECOND)  # a dispatch tick 3 s late: within half the interval's 10 s cap
    assert claim.slot == slot
    assert claim.start_by == slot + scheduling.late_limit(60)
    next_one = due_at(service)
    assert claim_due(next_one + 11 * SECOND) == []
    assert due_at(service) == next_one + dt.timedelta(seconds=60)


@pytest.mark.django_db
@pytest.mark.postgres
def test_disabled_services_are_never_claimed():
    kept, disabled, updated = make_service("kept"), make_service("disabled"), make_service("updated")
    disabled.enabled = False
    disabled.save()
    Service.objects.filter(id=updated.id).update(enabled=False)  # no signal: its row stays until the next sync
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)
    Schedule.objects.update(due_at=later)
    assert [claim.service_id for claim in claim_due(later)] == [kept.id]
    assert not Schedule.objects.filter(service=disabled).exists()


@pytest.mark.django_db
@pytest.mark.postgres
def test_saving_a_service_adds_and_removes_rows_for_its_locations():
    service = make_service("web", locations="eu,us")
    assert set(Schedule.objects.filter(service=service).values_list("location", flat=True)) == {"eu", "us"}
    us_due = due_at(service, "us")
    service.locations = "us,asia"
    service.save()
    assert set(Schedule.objects.filter(service=service).values_list("location", flat=True)) == {"us", "asia"}
    assert due_at(service, "us") == us_due  # a kept location keeps its slot


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_full_sync_catches_writes_that_skipped_save():
    Service.objects.bulk_create(
        [Service(name=f"bulk{i}", host="127.0.0.1", port=9, protocol="tcp", locations="eu,us") for i in range(3)]
    )
    gone = make_service("gone")
    Service.objects.filter(id=gone.id).update(enabled=False)
    created, deleted = scheduling.sync_schedules()
    assert (created, deleted) == (6, 1)
    assert Schedule.objects.count() == 6
    assert scheduling.sync_schedules() == (0, 0)


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_full_sync_realigns_a_row_left_on_an_old_interval():
    service = make_service("web", interval=60)
    Service.objects.filter(id=service.id).update(interval=20)
    scheduling.sync_schedules()
    assert on_grid(due_at(service), 20, slot_offset(service.id, "default", 20))


@pytest.mark.django_db
@pytest.mark.postgres
def test_dispatch_syncs_at_most_once_a_minute_per_process():
    scheduling._last_sync = None
    now = dt.datetime.now(dt.UTC)
    assert scheduling.maybe_sync(now) is True
    make_service("web")
    assert scheduling.maybe_sync(now) is False


# Concurrent dispatchers ------------------------------------------------------------------------

CLAIM_LOOP = """
import datetime as dt, time
from monitor.models import Schedule
from monitor.daemon.scheduling import claim_due
now = dt.datetime.fromisoformat({now!r})
while time.time() < {start:.3f}:
    time.sleep(0.002)
claimed = []
# A dispatcher that lost every row it read gets [] while rows are still due: keep going until none is.
for _ in range(1000):
    claimed += [[claim.schedule_id, claim.slot.isoformat()] for claim in claim_due(now, limit=7)]
    if not Schedule.objects.filter(due_at__lte=now).exists():
        break
    time.sleep(0.005)  # as between real ticks: SQLite's busy waiters back off, and would never get in otherwise
print(json.dumps(claimed))
"""


@pytest.mark.postgres
def test_concurrent_dispatchers_never_claim_the_same_slot_and_together_claim_all(tmp_path):
    # Separate processes on a database they all see (a file for SQLite, a scratch database for
    # PostgreSQL), each with its own connection, as dispatchers on several machines would be.
    with scratch_stack(tmp_path, f"portwatch_sched_test_{os.getpid()}") as stack:
        stack.migrate()
        spec = {"host": "127.0.0.1", "port": 9, "protocol": "tcp", "locations": "eu,us"}
        stack.create_services([spec | {"name": f"s{i}"} for i in range(60)])
        now = stack.django(  # every row due at once, so the dispatchers fight over the same rows
            "from monitor.models import Schedule\n"
            "now = max(Schedule.objects.values_list('due_at', flat=True))\n"
            "Schedule.objects.update(due_at=now)\n"
            "print(json.dumps(now.isoformat()))"
        )
        # All start together once Django is up in each: four processes starting on two busy cores took
        # over the 1.5 s this waited before, and the first one up claimed everything alone.
        code = CLAIM_LOOP.format(now=now, start=time.time() + 5.0)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            claimed = list(pool.map(lambda _: stack.django(code), range(4)))
    everything = [tuple(claim) for per_dispatcher in claimed for claim in per_dispatcher]
    assert len(everything) == len(set(everything)) == 120
    assert sum(1 for per_dispatcher in claimed if per_dispatcher) >= 2  # they really did compete


@pytest.mark.django_db
@pytest.mark.postgres
def test_slots_a_late_dispatcher_skipped_are_recorded_as_missed_saying_how_late():
    service = make_service("web", interval=60)
    slot = due_at(service)
    assert claim_due(slot + 12 * SECOND) == []  # 12 s late: past the 10 s limit
    [missed] = ProbeResult.objects.filter(service=service)
    assert (missed.scheduled_at, missed.status, missed.failure) == (slot, "unknown", "missed")
    assert missed.reason == (
        "not probed: the dispatcher reached this slot 12.0 s late (the limit is 10 s); the next slot was probed instead"
    )


@pytest.mark.django_db
@pytest.mark.postgres
def test_an_interval_change_while_a_probe_is_in_flight_never_probes_again_right_after_it():
    service = make_service("web", interval=60)
    slot = due_at(service)
    [claim] = claim_due(slot)  # in flight now
    for interval in (30, 10, 7):
        service.interval = interval
        service.save()
        assert due_at(service) - claim.slot >= dt.timedelta(seconds=interval / 2)
        assert on_grid(due_at(service), interval, slot_offset(service.id, "default", interval))


@pytest.mark.django_db
@pytest.mark.postgres
def test_disabling_a_service_pauses_it_and_re_enabling_starts_a_fresh_grid_row():
    service = make_service("web", interval=60)
    service.enabled = False
    service.save()
    assert not Schedule.objects.filter(service=service).exists()
    service.enabled = True
    service.save()
    row = Schedule.objects.get(service=service)
    assert row.active_since <= row.due_at
