"""The prober runtime of a worker process: jobs taken at any time, probed on their slots, none starving another."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from monitor.daemon.prober import Prober
from monitor.daemon.runner import Job
from monitor.daemon.scheduling import Claim
from monitor.probes import Target, parse_options
from tests.peers.services import TcpServers

SECOND = dt.timedelta(seconds=1)


class Outcomes:
    """What a prober recorded: a thread-safe list, standing in for the database (the recorder is injected)."""

    def __init__(self) -> None:
        self.items = []
        self.lock = threading.Lock()

    def record(self, outcomes) -> None:
        with self.lock:
            self.items.extend(outcomes)

    def wait_for(self, count: int, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.items) >= count:
                    return list(self.items)
            time.sleep(0.02)
        raise TimeoutError(f"only {len(self.items)} of {count} outcomes after {timeout} s")


def job(service_id: int, port: int, slot: dt.datetime, *, timeout: float = 3.0, location: str = "default") -> Job:
    options = parse_options("tcp", {"read_banner": True})
    claim = Claim(service_id, service_id, location, slot)
    return Job(claim, "tcp", timeout, 60, target=Target("127.0.0.1", port), options=options)


@pytest.fixture
def outcomes():
    return Outcomes()


def started(prober: Prober, request) -> Prober:
    prober.start()
    request.addfinalizer(lambda: prober.stop(drain=1))
    return prober


def test_a_healthy_service_beside_fifty_tarpits_is_probed_on_its_slot(outcomes, request):
    with TcpServers(1, delay=30) as tarpit, TcpServers(1) as healthy:  # the tarpit accepts, then says nothing
        prober = started(Prober(record=outcomes.record, max_in_flight=1000), request)
        now = dt.datetime.now(dt.UTC)
        prober.submit([job(i, tarpit.ports[0], now, timeout=5.0) for i in range(50)])  # each holds a socket for 5 s
        slots = [now + k * 0.3 * SECOND for k in range(1, 6)]
        for k, slot in enumerate(slots):
            prober.submit([job(100 + k, healthy.ports[0], slot)])
        done = outcomes.wait_for(5, timeout=4)  # long before any tarpit gives up
    healthy_ones = sorted((o for o in done if o.service_id >= 100), key=lambda o: o.scheduled_at)
    assert [o.result.status for o in healthy_ones] == ["up"] * 5
    assert all(dt.timedelta(0) <= o.started_at - o.scheduled_at < 0.1 * SECOND for o in healthy_ones)


def test_jobs_submitted_while_others_run_start_on_their_own_slots(outcomes, request):
    with TcpServers(1, delay=1.0) as slow, TcpServers(1) as fast:
        prober = started(Prober(record=outcomes.record, max_in_flight=100), request)
        now = dt.datetime.now(dt.UTC)
        prober.submit([job(1, slow.ports[0], now)])
        time.sleep(0.2)  # the slow probe is in flight; a new job arrives
        slot = dt.datetime.now(dt.UTC) + 0.1 * SECOND
        prober.submit([job(2, fast.ports[0], slot)])
        [first] = outcomes.wait_for(1, timeout=0.8)
    assert first.service_id == 2
    assert first.started_at - slot < 0.05 * SECOND


def test_a_job_that_finds_no_place_in_flight_before_its_start_by_is_recorded_missed(outcomes, request):
    with TcpServers(1, delay=30) as tarpit:
        prober = started(Prober(record=outcomes.record, max_in_flight=1), request)
        now = dt.datetime.now(dt.UTC)
        blocker = job(1, tarpit.ports[0], now, timeout=3.0)
        waiting = job(2, tarpit.ports[0], now)
        waiting = Job(**{**waiting.__dict__, "claim": Claim(2, 2, "default", now, start_by=now + 0.5 * SECOND)})
        prober.submit([blocker, waiting])
        [missed] = outcomes.wait_for(1, timeout=2)
    assert (missed.service_id, missed.result.status, missed.result.failure) == (2, "unknown", "missed")
    assert "limit of probes in flight" in missed.result.reason


def test_a_job_delivered_twice_is_probed_once(outcomes, request):
    with TcpServers(1) as server:
        prober = started(Prober(record=outcomes.record, max_in_flight=10), request)
        twice = job(1, server.ports[0], dt.datetime.now(dt.UTC) + 0.1 * SECOND)
        prober.submit([twice])
        prober.submit([twice])
        outcomes.wait_for(1, timeout=2)
        time.sleep(0.3)
    assert len(outcomes.items) == 1
    assert len(server.connections[server.ports[0]]) == 1


def test_stopping_records_waiting_jobs_as_missed_and_lets_running_probes_finish(outcomes):
    with TcpServers(1, delay=0.5) as slow:
        prober = Prober(record=outcomes.record, max_in_flight=10).start()
        now = dt.datetime.now(dt.UTC)
        prober.submit([job(1, slow.ports[0], now), job(2, slow.ports[0], now + 30 * SECOND)])
        time.sleep(0.2)
        prober.stop(drain=3)
    by_service = {o.service_id: o for o in outcomes.items}
    assert by_service[1].result.status == "up"  # finished during the drain
    assert (by_service[2].result.failure, by_service[2].result.reason) == (
        "missed",
        "not probed: the worker stopped before the slot",
    )


def test_outcomes_are_kept_and_written_once_the_recorder_works_again(outcomes, request, monkeypatch):
    monkeypatch.setattr("monitor.daemon.prober.RETRY_PAUSE", 0.1)
    failures = {"left": 3}

    def flaky(batch) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("database away")
        outcomes.record(batch)

    with TcpServers(1) as server:
        prober = started(Prober(record=flaky, max_in_flight=10), request)
        prober.submit([job(i, server.ports[0], dt.datetime.now(dt.UTC)) for i in range(3)])
        done = outcomes.wait_for(3, timeout=5)
    assert sorted(o.service_id for o in done) == [0, 1, 2]
