"""Recording outcomes: raw rows, current state, thresholds, status changes, incidents, idempotency, cost."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from monitor.daemon.recording import Outcome, record
from monitor.models import Incident, ProbeResult, Service, ServiceState, StatusChange
from monitor.probes import Failure, Phases, Result, Status, Target, TLSFacts, parse_options, run_probe

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
STEP = dt.timedelta(seconds=60)
LAG = dt.timedelta(milliseconds=120)  # started_at after the slot


def make_service(name: str = "mail", **fields) -> Service:
    return Service.objects.create(name=name, host="127.0.0.1", port=2525, protocol="tcp", **fields)


def up(total: float = 0.010, status: Status = Status.UP, **fields) -> Result:
    phases = Phases(resolve=0.0, connect=total / 2, processing=total / 4, transfer=total / 4, total=total)
    return Result(status, None, "connected", phases, address="127.0.0.1", **fields)


def warning() -> Result:
    return Result(Status.WARNING, None, "certificate expires in 5 days", Phases(connect=0.002, total=0.004))


def down(reason: str = "connection refused", failure: Failure = Failure.REFUSED) -> Result:
    return Result(Status.DOWN, failure, reason, Phases(connect=0.001, total=0.001))


def at(service: Service, step: int, result: Result, location: str = "default") -> Outcome:
    slot = T0 + step * STEP
    return Outcome(service.id, location, slot, slot + LAG, result)


def record_each(service: Service, results: list[Result], first_step: int = 0) -> None:
    for step, result in enumerate(results, start=first_step):
        assert record([at(service, step, result)]) == 1


def state_of(service: Service, location: str = "default") -> ServiceState:
    return ServiceState.objects.get(service=service, location=location)


def changes_of(service: Service) -> list[tuple[str, str]]:
    return list(StatusChange.objects.filter(service=service).order_by("id").values_list("old_status", "new_status"))


def tls_facts(fingerprint: str = "ab" * 32, days_left: float = 42.5) -> TLSFacts:
    return TLSFacts(
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        server_name="localhost",
        subject="CN=localhost",
        issuer="CN=Test CA",
        sans=("localhost",),
        not_before=T0 - dt.timedelta(days=30),
        not_after=T0 + dt.timedelta(days=days_left),
        days_left=days_left,
        earliest_expiry=T0 + dt.timedelta(days=days_left),
        fingerprint_sha256=fingerprint,
        verified=True,
        verify_error=None,
    )


# --- Raw results -------------------------------------------------------------------------------


def test_it_stores_a_result_with_phases_tls_summary_and_a_bounded_banner():
    service = make_service()
    result = up(total=0.02, tls=tls_facts(), banner="220 " + "x" * 2000 + "\x00")
    record([at(service, 0, result)])
    row = ProbeResult.objects.get(service=service)
    assert (row.status, row.failure, row.connect, row.total) == ("up", "", 0.01, 0.02)
    assert (row.tls_version, row.tls_days_left, row.tls_fingerprint) == ("TLSv1.3", 42.5, "ab" * 32)
    assert len(row.banner) == 512 and row.banner.startswith("220 xxx")
    assert (row.scheduled_at, row.started_at) == (T0, T0 + LAG)


def test_it_stores_a_nul_in_a_reason_and_details_without_failing_the_batch():
    service = make_service()
    result = Result(Status.DOWN, Failure.PROTOCOL_ERROR, "bad greeting \x00!", Phases(), details={"line": "a\x00b"})
    assert record([at(service, 0, result)]) == 1
    assert state_of(service).details == {"line": "a\ufffdb"}
    assert ProbeResult.objects.get(service=service).reason == "bad greeting \ufffd!"


def test_it_drops_outcomes_of_a_deleted_service_and_keeps_the_rest():
    kept, gone = make_service("kept"), make_service("gone")
    outcomes = [at(kept, 0, up()), at(gone, 0, up())]
    gone.delete()
    assert record(outcomes) == 1
    assert list(ProbeResult.objects.values_list("service__name", flat=True)) == ["kept"]


# --- Current state and thresholds --------------------------------------------------------------


def test_the_first_success_confirms_up_at_once():
    service = make_service()
    record_each(service, [up()])
    state = state_of(service)
    assert (state.status, state.since, state.consecutive_successes) == ("up", T0 + LAG, 1)
    assert changes_of(service) == [("unknown", "up")]


def test_first_failures_keep_unknown_until_the_threshold_then_open_an_incident():
    service = make_service(failure_threshold=2)
    record_each(service, [down()])
    assert (state_of(service).status, changes_of(service), Incident.objects.count()) == ("unknown", [], 0)
    record_each(service, [down("timed out after 10 s", Failure.TIMEOUT)], first_step=1)
    incident = Incident.objects.get()
    assert changes_of(service) == [("unknown", "down")]
    assert (incident.started_at, incident.failure, incident.reason) == (T0 + LAG, "timeout", "timed out after 10 s")


@pytest.mark.parametrize(("failures", "recoveries"), [(1, 1), (2, 1), (3, 2), (2, 3)])
def test_an_incident_opens_and_closes_exactly_on_the_thresholds(failures, recoveries):
    service = make_service(failure_threshold=failures, recovery_threshold=recoveries)
    record_each(service, [up(), *[down()] * (failures - 1)])
    assert state_of(service).status == "up" and not Incident.objects.exists()

    record_each(service, [down()], first_step=failures)
    first_failure = T0 + 1 * STEP + LAG
    incident = Incident.objects.get()
    state = state_of(service)
    assert (state.status, state.open_incident_id, state.since) == ("down", incident.id, first_failure)
    assert (incident.started_at, incident.ended_at) == (first_failure, None)

    record_each(service, [up()] * (recoveries - 1), first_step=failures + 1)
    assert state_of(service).status == "down" and Incident.objects.get().ended_at is None

    record_each(service, [up()], first_step=failures + recoveries)
    first_success = T0 + (failures + 1) * STEP + LAG
    incident.refresh_from_db()
    state = state_of(service)
    assert (state.status, state.open_incident_id, state.since) == ("up", None, first_success)
    assert (incident.ended_at, incident.duration) == (first_success, first_success - first_failure)
    assert changes_of(service) == [("unknown", "up"), ("up", "down"), ("down", "up")]


def test_each_status_change_is_recorded_once_with_its_incident():
    service = make_service(failure_threshold=2)
    record_each(service, [up(), down(), down(), down(), up(), up()])
    changes = list(StatusChange.objects.filter(service=service).order_by("id"))
    incident = Incident.objects.get()
    assert [(c.old_status, c.new_status, c.incident_id) for c in changes] == [
        ("unknown", "up", None),
        ("up", "down", incident.id),
        ("down", "up", incident.id),
    ]
    assert [(c.failure, c.reason) for c in changes[1:]] == [("refused", "connection refused"), ("", "connected")]
    assert all(change.processed is None for change in changes)


def test_a_success_between_failures_resets_the_streak():
    service = make_service(failure_threshold=2)
    record_each(service, [up(), down(), up(), down(), up()])
    assert (state_of(service).status, Incident.objects.count()) == ("up", 0)
    assert changes_of(service) == [("unknown", "up")]


def test_up_and_warning_follow_each_other_directly_while_not_down():
    service = make_service()
    record_each(service, [up(), warning(), warning(), up()])
    assert changes_of(service) == [("unknown", "up"), ("up", "warning"), ("warning", "up")]


def test_recovery_into_warning_confirms_warning():
    service = make_service(failure_threshold=1)
    record_each(service, [down(), warning()])
    assert changes_of(service) == [("unknown", "down"), ("down", "warning")]
    assert Incident.objects.get().ended_at == T0 + STEP + LAG


def test_it_keeps_last_probe_fields_and_counters():
    service = make_service(failure_threshold=3)
    record_each(service, [up(total=0.03), down("no route to host", Failure.UNREACHABLE), down()])
    state = state_of(service)
    assert (state.last_status, state.last_failure, state.last_reason) == ("down", "refused", "connection refused")
    assert (state.consecutive_failures, state.consecutive_successes) == (2, 0)
    assert state.failing_since == T0 + STEP + LAG
    assert state.last_checked_at == T0 + 2 * STEP + LAG
    assert state.last_result == ProbeResult.objects.get(scheduled_at=T0 + 2 * STEP)
    assert state.last_phases["total"] == 0.001


def test_tls_facts_are_kept_after_a_failure_and_cleared_by_a_success_without_tls():
    service = make_service(failure_threshold=5)
    record_each(service, [up(tls=tls_facts(days_left=30.0)), down()])
    assert state_of(service).tls["days_left"] == 30.0
    record_each(service, [up()], first_step=2)
    assert state_of(service).tls is None


def test_locations_have_their_own_state():
    service = make_service(failure_threshold=1, locations="eu,us")
    record([at(service, 0, up(), "eu"), at(service, 0, down(), "us")])
    assert (state_of(service, "eu").status, state_of(service, "us").status) == ("up", "down")
    assert Incident.objects.get().location == "us"


# --- Idempotency and order ---------------------------------------------------------------------


def snapshot() -> tuple:
    return (
        list(ProbeResult.objects.order_by("id").values()),
        list(ServiceState.objects.order_by("id").values()),
        list(StatusChange.objects.order_by("id").values()),
        list(Incident.objects.order_by("id").values()),
    )


def test_recording_the_same_batch_twice_changes_nothing_the_second_time():
    services = [make_service(f"s{i}", failure_threshold=2) for i in range(3)]
    batch = [at(service, step, result) for service in services for step, result in enumerate([up(), down(), down()])]
    assert record(batch) == 9
    before = snapshot()
    assert record(batch) == 0
    assert snapshot() == before
    assert Incident.objects.count() == 3 and StatusChange.objects.count() == 6


def test_a_different_outcome_for_a_recorded_slot_changes_nothing():
    service = make_service(failure_threshold=1)
    record_each(service, [up()])
    before = snapshot()
    assert record([at(service, 0, down())]) == 0
    assert snapshot() == before


def test_an_older_slot_arriving_late_is_stored_but_does_not_roll_the_state_back():
    service = make_service(failure_threshold=1)
    record([at(service, 5, up())])
    assert record([at(service, 4, down())]) == 1
    state = state_of(service)
    assert (state.status, state.last_scheduled_at, state.consecutive_failures) == ("up", T0 + 5 * STEP, 0)
    assert ProbeResult.objects.filter(service=service).count() == 2
    assert (changes_of(service), Incident.objects.count()) == ([("unknown", "up")], 0)


def test_outcomes_in_one_batch_apply_in_slot_order_and_can_open_and_close_an_incident():
    service = make_service(failure_threshold=2)
    batch = [at(service, 3, up()), at(service, 1, down()), at(service, 0, up()), at(service, 2, down())]
    assert record(batch) == 4
    incident = Incident.objects.get()
    assert (incident.started_at, incident.ended_at) == (T0 + STEP + LAG, T0 + 3 * STEP + LAG)
    assert changes_of(service) == [("unknown", "up"), ("up", "down"), ("down", "up")]
    assert StatusChange.objects.filter(incident=incident).count() == 2
    assert state_of(service).open_incident is None


def test_a_repeated_slot_within_one_batch_is_stored_once():
    service = make_service()
    assert record([at(service, 0, up()), at(service, 0, down())]) == 1
    assert state_of(service).status == "up"


# --- Cost --------------------------------------------------------------------------------------


def queries(context: CaptureQueriesContext) -> int:
    """Return how many statements ran, leaving out the test's own savepoints."""
    return sum(1 for query in context.captured_queries if "SAVEPOINT" not in query["sql"])


def test_a_batch_of_fifty_takes_a_fixed_handful_of_queries():
    services = [make_service(f"s{i:02}", failure_threshold=1) for i in range(50)]
    with CaptureQueriesContext(connection) as first:
        record([at(service, 0, up()) for service in services])
    with CaptureQueriesContext(connection) as steady:
        record([at(service, 1, up()) for service in services])
    with CaptureQueriesContext(connection) as flipping:
        record([at(service, 2, down()) for service in services])
    with CaptureQueriesContext(connection) as recovering:
        record([at(service, 3, up()) for service in services])
    # Steady: services, state rows, recorded slots, insert results, update states, read them back and upsert
    # the services' summaries, upsert the states' rendered /metrics series. The first time, insert and
    # re-select the states (and unknown -> up changes); on an outage, insert (or close) the incidents and
    # insert the status changes. SQLite takes at most 999 variables a statement: 50 new states of 21 columns
    # (with the exposure flags) are inserted in two.
    creating = 12 if connection.vendor == "sqlite" else 11
    assert [queries(first), queries(steady), queries(flipping), queries(recovering)] == [creating, 8, 10, 10]
    assert Incident.objects.filter(ended_at__isnull=False).count() == 50


# --- Concurrency -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_workers_recording_the_same_batch_at_once_store_each_slot_once():
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite has one writer at a time anyway")
    services = [make_service(f"s{i:02}", failure_threshold=1) for i in range(20)]
    batch = [at(service, step, down()) for service in services for step in range(3)]
    start, counts = threading.Barrier(2), []

    def worker() -> None:
        try:
            start.wait()
            counts.append(record(batch))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(counts) == [0, 60]
    assert ProbeResult.objects.count() == 60
    assert (StatusChange.objects.count(), Incident.objects.count()) == (20, 20)


# --- Real probes -------------------------------------------------------------------------------


async def probe_local(port: int) -> Result:
    options = parse_options("tcp", {"read_banner": True})
    return await run_probe("tcp", Target("127.0.0.1", port, "none"), options, timeout=2.0)


def test_it_records_outcomes_of_real_probes_of_a_local_server():
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 portwatch test ready\r\n")
        await writer.drain()
        writer.close()

    async def probe_twice() -> tuple[Result, Result]:
        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            first = await probe_local(port)
        finally:
            server.close()
            await server.wait_closed()
        return first, await probe_local(port)  # nobody listens there any more

    first, second = asyncio.run(probe_twice())
    service = make_service(failure_threshold=1)
    record([at(service, 0, first), at(service, 1, second)])
    rows = list(ProbeResult.objects.filter(service=service).order_by("scheduled_at"))
    assert [(row.status, row.failure, row.banner) for row in rows] == [
        ("up", "", "220 portwatch test ready"),
        ("down", "refused", ""),
    ]
    assert rows[0].total > 0 and rows[0].address == "127.0.0.1"
    assert changes_of(service) == [("unknown", "up"), ("up", "down")]
    assert Incident.objects.get().started_at == T0 + STEP + LAG


def test_two_processes_recording_at_once_on_sqlite_lose_nothing(tmp_path):
    """Embedded mode can run several worker processes on one SQLite file: each slot recorded, none lost."""
    if connection.vendor != "sqlite":
        pytest.skip("about SQLite's single writer; PostgreSQL is covered by the row-lock test above")
    from tests.peers.services import ROOT, Stack

    stack = Stack(tmp_path)
    stack.migrate()
    [service_id] = stack.create_services([{"name": "s", "host": "127.0.0.1", "port": 9, "protocol": "tcp"}])
    writer = f"""
        import datetime as dt, sys
        from monitor.daemon.recording import Outcome, record
        from monitor.probes import Phases, Result, Status
        base = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
        part = int(sys.argv[1])
        stored = 0
        for batch in range(40):
            outcomes = [
                Outcome({service_id}, "default", base + dt.timedelta(seconds=slot), base + dt.timedelta(seconds=slot),
                        Result(Status.UP, None, "ok", Phases(total=0.001)))
                for slot in range(part * 10_000 + batch * 25, part * 10_000 + batch * 25 + 25)
            ]
            stored += record(outcomes)
        print(stored)
    """
    import subprocess
    import sys
    import textwrap

    script = "import django\ndjango.setup()\n" + textwrap.dedent(writer)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(part)],
            env=stack.env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in (0, 1)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert [int(out) for out, _ in outputs] == [1000, 1000]
    assert len(stack.results()) == 2000


def test_the_state_keeps_the_address_the_last_measuring_probe_reached():
    service = make_service()
    record([at(service, 0, up())])
    missed = Outcome.missed(service.id, "default", T0 + STEP, "no worker took the slot")
    record([missed])  # measured nothing: the address stays
    assert state_of(service).last_address == "127.0.0.1"
    record([at(service, 2, Result(Status.DOWN, Failure.REFUSED, "refused", Phases(), address="::1"))])
    assert state_of(service).last_address == "::1"
