"""The daemon for real: Celery worker and beat subprocesses, a private Redis or the filesystem broker, real servers.

Each test starts its own redis-server (and, for the PostgreSQL ones, a private PostgreSQL
cluster) on free ports, so it can kill or restart them without touching the machine's shared
services; the worker, beat and test share a database through committed data (a SQLite file in a
temporary data directory, or a database on the private cluster). Intervals are 5 s and waits are
bounded; every subprocess is stopped in `finally`, even when the test fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest

from monitor.celery import worker_queues
from monitor.daemon.scheduling import LOOKAHEAD, late_limit, on_grid, slot_offset
from tests.conftest import need
from tests.peers.services import (
    REDIS_SERVER,
    CeleryProcess,
    PostgresServer,
    RedisServer,
    Row,
    Stack,
    TcpServers,
    celery_processes,
    postgres_available,
    wait_until,
)

pytestmark = [pytest.mark.celery, pytest.mark.timeout(180)]

INTERVAL = 5
QUEUES = worker_queues("default")
SECOND = dt.timedelta(seconds=1)
ON_TIME = 1.0  # seconds after its slot a probe should start on an idle machine; late_limit() is the hard bound


@pytest.fixture
def redis(tmp_path) -> Iterator[RedisServer]:
    need(REDIS_SERVER is not None, "redis-server is not installed")
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    need(postgres_available(), "PostgreSQL 15 binaries (initdb, pg_ctl) or runuser are missing")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_stack(postgres, redis, tmp_path) -> Stack:
    url = postgres.create_database(f"portwatch_daemon_test_{os.getpid()}_{time.monotonic_ns()}")
    return Stack(tmp_path, url, redis.url)


def services_on(ports: list[int], *, timeout: float = 2.0) -> list[dict]:
    return [
        {
            "name": f"svc{port}",
            "host": "127.0.0.1",
            "port": port,
            "protocol": "tcp",
            "interval": INTERVAL,
            "timeout": timeout,
            "options": {"read_banner": True},
        }
        for port in ports
    ]


def by_service(rows: list[Row]) -> dict[int, list[Row]]:
    grouped: dict[int, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[row.service_id].append(row)
    return grouped


def results_after(stack: Stack, ids: list[int], moment: dt.datetime, count: int = 1) -> dict[int, list[Row]]:
    """Return each service's results started after `moment` once every service has `count`; else {}."""
    grouped = by_service([row for row in stack.results(measured_only=True) if row.started_at > moment])
    return grouped if all(len(grouped[i]) >= count for i in ids) else {}


def assert_one_result_per_slot_on_the_grid(rows: list[Row], service_id: int) -> None:
    slots = [row.scheduled_at for row in rows]
    assert len(slots) == len(set(slots)), f"service {service_id} has a slot recorded twice"
    offset = slot_offset(service_id, "default", INTERVAL)
    assert all(on_grid(slot, INTERVAL, offset) for slot in slots)
    assert all(row.started_at >= row.scheduled_at for row in rows)
    assert all(row.started_at - row.scheduled_at <= late_limit(INTERVAL) for row in rows)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# (a) and (b): probing on the interval, with Redis and with the embedded filesystem broker ------


@pytest.mark.parametrize("broker", [pytest.param("redis", marks=pytest.mark.redis), "filesystem"])
def test_a_worker_probes_every_service_on_its_interval_and_records_it(broker, tmp_path):
    with contextlib.ExitStack() as cleanup:
        redis_url = None
        if broker == "redis":
            need(REDIS_SERVER is not None, "redis-server is not installed")
            redis_url = cleanup.enter_context(RedisServer(tmp_path)).url
        stack = Stack(tmp_path, None, redis_url)
        stack.migrate()
        servers = cleanup.enter_context(TcpServers(4))
        specs = services_on(servers.ports)
        specs[-1]["locations"] = "mars"  # probed from a location no worker here serves
        *ids, elsewhere = stack.create_services(specs)
        workers = cleanup.enter_context(celery_processes())
        workers.append(CeleryProcess.worker(stack, "w1", queues=QUEUES, beat=True))
        started = now()
        # Probes before the worker was up may start late; judge the ones after a settling second.
        rows = wait_until(
            lambda: results_after(stack, ids, started + 3 * SECOND, count=2),
            timeout=30,
            what="two rounds of results",
        )
        for service_id in ids:
            mine = rows[service_id]
            assert_one_result_per_slot_on_the_grid(mine, service_id)
            assert mine[1].scheduled_at - mine[0].scheduled_at == INTERVAL * SECOND  # none skipped
            assert all(row.started_at - row.scheduled_at < ON_TIME * SECOND for row in mine)
        # No worker serves mars: nothing probed it, and each of its slots is recorded as missed, saying why.
        assert servers.connections[servers.ports[-1]] == []
        unserved = by_service(stack.results())[elsewhere]
        assert unserved and {(row.location, row.status, row.failure) for row in unserved} == {
            ("mars", "unknown", "missed")
        }
        # A slot that came before the beat's first dispatch may have been skipped as late; every later one says
        # that no worker serves its location.
        reasons = [(row.scheduled_at, row.reason) for row in unserved]
        settled = [reason for slot, reason in reasons if slot > started + 3 * SECOND]
        assert settled and all("no worker is serving location 'mars'" in reason for reason in settled), reasons
        assert all("no worker is serving" in why or "dispatcher reached this slot" in why for _, why in reasons)


# (c): a worker killed in the middle of a batch ------------------------------------------------


@pytest.mark.redis
def test_a_worker_killed_mid_probe_leaves_missed_results_and_the_next_dispatch_probes_again(redis, tmp_path):
    stack = Stack(tmp_path, None, redis.url)
    stack.migrate()
    timeout = 4.5
    # The servers answer 4 s after accepting, so probes stay in flight long enough to start a
    # second worker before the first one is killed in the middle of them.
    with TcpServers(3, delay=4.0) as slow, celery_processes() as started:
        ids = stack.create_services(services_on(slow.ports, timeout=timeout))
        port_of = dict(zip(ids, slow.ports, strict=True))
        started.append(CeleryProcess.beat(stack, "beat"))
        doomed = CeleryProcess.worker(stack, "doomed", queues=QUEUES, concurrency=4)
        started.append(doomed)
        wait_until(lambda: any(slow.in_flight().values()), timeout=30, interval=0.05, what="a probe in flight")
        survivor = CeleryProcess.worker(stack, "survivor", queues=QUEUES, concurrency=4)
        started.append(survivor)
        survivor.wait_ready()
        killed_at = now()
        in_flight = {port: conns for port, conns in slow.in_flight().items() if conns}
        doomed.kill()
        assert in_flight, "no probe was in flight when the worker was killed"
        rows = wait_until(
            lambda: results_after(stack, ids, killed_at),
            timeout=2 * INTERVAL + timeout + 5,
            what="every service probed again after the kill",
        )
        lost = [
            (service_id, connection.accepted_at)
            for service_id in ids
            for connection in in_flight.get(port_of[service_id], [])
        ]

        def lost_slots_swept() -> list[Row]:
            missed = [row for row in stack.results() if row.failure == "missed"]
            found = [
                row
                for service_id, accepted in lost
                for row in missed
                if row.service_id == service_id
                and row.scheduled_at <= accepted < row.scheduled_at + late_limit(INTERVAL)
            ]
            return found if len(found) == len(lost) else []

        # Slots settle late_limit + timeout + 5 s after they were due; the sweeper runs every 15 s.
        swept = wait_until(lost_slots_swept, timeout=45, what="the lost probes' slots recorded as missed")
    recorded_starts = [row.started_at for row in stack.results(measured_only=True)]
    for service_id, accepted in lost:
        # The probe died with its worker: no result of it was ever recorded ...
        assert all(abs(start - accepted) > 0.5 * SECOND for start in recorded_starts)
        # ... and the first slot dispatched after the kill (claimed 1.5 s ahead) went to the survivor.
        again = min(row.started_at for row in rows[service_id])
        assert again - killed_at <= (INTERVAL + LOOKAHEAD + ON_TIME) * SECOND
    assert {row.reason for row in swept} == {
        "not probed: no result came back (the worker was lost mid-probe, or the batch expired in the queue)"
    }


# (d) and (e): Redis and PostgreSQL restarted during a run -----------------------------------


@pytest.mark.redis
def test_dispatch_and_probing_carry_on_by_themselves_after_redis_restarts(redis, tmp_path):
    stack = Stack(tmp_path, None, redis.url)
    stack.migrate()
    with TcpServers(3) as servers, celery_processes() as started:
        ids = stack.create_services(services_on(servers.ports))
        started.append(CeleryProcess.worker(stack, "w1", queues=QUEUES, beat=True))
        wait_until(lambda: results_after(stack, ids, now() - 60 * SECOND), timeout=30, what="a first round")
        redis.stop()
        time.sleep(2)
        redis.start()
        back = now()
        rows = wait_until(
            lambda: results_after(stack, ids, back, count=2), timeout=40, what="two rounds after the restart"
        )
    for service_id in ids:
        assert_one_result_per_slot_on_the_grid(rows[service_id], service_id)


@pytest.mark.redis
def test_dispatch_and_probing_carry_on_by_themselves_after_postgres_restarts(postgres, pg_stack):
    stack = pg_stack
    stack.migrate()
    with TcpServers(3) as servers, celery_processes() as started:
        ids = stack.create_services(services_on(servers.ports))
        started.append(CeleryProcess.worker(stack, "w1", queues=QUEUES, beat=True))
        wait_until(lambda: results_after(stack, ids, now() - 60 * SECOND), timeout=30, what="a first round")
        postgres.restart(down_for=2)
        back = now()
        rows = wait_until(
            lambda: results_after(stack, ids, back, count=2), timeout=40, what="two rounds after the restart"
        )
    for service_id in ids:
        assert_one_result_per_slot_on_the_grid(rows[service_id], service_id)


# (f): two dispatchers and two workers --------------------------------------------------------


@pytest.mark.redis
def test_two_dispatchers_and_two_workers_probe_each_service_exactly_once_per_slot(pg_stack):
    stack = pg_stack
    stack.migrate()
    rounds = 3
    with TcpServers(6) as servers:
        ids = stack.create_services(services_on(servers.ports))
        port_of = dict(zip(ids, servers.ports, strict=True))
        with celery_processes() as started:
            # Two workers, each with its own beat: two dispatchers claiming from the same rows every second.
            started.append(CeleryProcess.worker(stack, "w1", queues=QUEUES, beat=True))
            started.append(CeleryProcess.worker(stack, "w2", queues=QUEUES, beat=True))
            begin = now()
            wait_until(
                lambda: results_after(stack, ids, begin, count=rounds),
                timeout=rounds * INTERVAL + 20,
                what=f"{rounds} rounds",
            )
        # Stopped warmly: batches in progress finished and recorded; now count probes against results.
        rows = by_service(stack.results())
    for service_id in ids:
        mine = sorted(rows[service_id], key=lambda row: row.scheduled_at)
        assert_one_result_per_slot_on_the_grid(mine, service_id)
        gaps = {b.scheduled_at - a.scheduled_at for a, b in itertools.pairwise(mine)}
        assert gaps == {INTERVAL * SECOND}, f"service {service_id} missed a slot: {gaps}"
        # Each probe the server saw became exactly one result: no slot was probed twice. (A slot still
        # waiting when the workers stopped is recorded as missed, not probed.)
        measured = [row for row in mine if row.status != "unknown"]
        assert len(servers.connections[port_of[service_id]]) == len(measured)
        # Slots due before the workers were up were late; then only a slot waiting at the stop is unprobed.
        assert {row.reason for row in mine if row.status == "unknown" and row.scheduled_at > begin + 3 * SECOND} <= {
            "not probed: the worker stopped before the slot"
        }


# A real fleet: a healthy service beside tarpits keeps every slot ----------------------------------


@pytest.mark.redis
def test_a_healthy_service_beside_fifty_tarpits_keeps_every_slot_on_time(redis, tmp_path):
    stack = Stack(tmp_path, None, redis.url)
    stack.migrate()
    rounds = 3
    # The tarpits accept and never answer: each probe holds a socket until its 4 s timeout.
    with TcpServers(50, delay=60) as tarpits, TcpServers(2) as healthy, celery_processes() as started:
        tarpit_ids = stack.create_services(services_on(tarpits.ports, timeout=4.0))
        healthy_ids = stack.create_services(services_on(healthy.ports))
        started.append(CeleryProcess.worker(stack, "w1", queues=QUEUES, beat=True))  # defaults: 2 processes
        begin = now() + 3 * SECOND  # probes of slots before the worker was up may be late
        rows = wait_until(
            lambda: results_after(stack, healthy_ids + tarpit_ids, begin, count=rounds),
            timeout=rounds * INTERVAL + 30,
            what=f"{rounds} rounds of every service",
        )
    for service_id in healthy_ids:
        mine = sorted(rows[service_id], key=lambda row: row.scheduled_at)
        assert {row.status for row in mine} == {"up"}
        assert {b.scheduled_at - a.scheduled_at for a, b in itertools.pairwise(mine)} == {INTERVAL * SECOND}
        assert all(row.started_at - row.scheduled_at < ON_TIME * SECOND for row in mine)
    for service_id in tarpit_ids:
        assert {(row.status, row.failure) for row in rows[service_id]} == {("down", "timeout")}
