"""The runner: claims probed on their slot against real local servers, concurrently, each ending in one outcome."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest

from monitor import probes
from monitor.daemon.runner import run_checks
from monitor.daemon.scheduling import Claim
from monitor.models import ProbeResult, Service
from tests.peers.services import TcpServers

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SECOND = dt.timedelta(seconds=1)


def make_service(name: str, port: int, **fields) -> Service:
    defaults = {"host": "127.0.0.1", "port": port, "protocol": "tcp", "timeout": 3.0, "options": {"read_banner": True}}
    return Service.objects.create(name=name, **(defaults | fields))


def claims_for(services: list[Service], slot: dt.datetime) -> list[dict]:
    """Return claims as the task receives them: plain data."""
    return [Claim(i, service.id, "default", slot).to_data() for i, service in enumerate(services, 1)]


@pytest.fixture
def servers():
    with TcpServers(3) as servers:
        yield servers


def test_claims_are_probed_on_their_slot_and_recorded(servers):
    services = [make_service(f"s{i}", port) for i, port in enumerate(servers.ports)]
    slot = dt.datetime.now(dt.UTC) + 0.5 * SECOND
    assert run_checks(claims_for(services, slot)) == 3
    results = list(ProbeResult.objects.order_by("service_id"))
    assert [(r.service_id, r.location, r.scheduled_at, r.status) for r in results] == [
        (service.id, "default", slot, "up") for service in services
    ]
    assert all(slot <= r.started_at < slot + 0.5 * SECOND for r in results)


def test_running_the_same_claims_again_records_nothing_new(servers):
    services = [make_service(f"s{i}", port) for i, port in enumerate(servers.ports)]
    claims = claims_for(services, dt.datetime.now(dt.UTC) + 0.2 * SECOND)
    run_checks(claims)
    assert run_checks(claims) == 0
    assert ProbeResult.objects.count() == 3


def test_a_batch_probes_its_services_at_the_same_time():
    with TcpServers(4, delay=1.0) as slow:
        services = [make_service(f"s{i}", port) for i, port in enumerate(slow.ports)]
        started = time.monotonic()
        assert run_checks(claims_for(services, dt.datetime.now(dt.UTC))) == 4
        assert time.monotonic() - started < 2.5  # one after another would take 4 s


def test_a_service_whose_options_no_longer_parse_is_recorded_unknown_and_the_rest_still_run(servers):
    broken, fine = make_service("broken", servers.ports[0]), make_service("fine", servers.ports[1])
    Service.objects.filter(id=broken.id).update(options={"read_banner": True, "colour": "blue"})
    assert run_checks(claims_for([broken, fine], dt.datetime.now(dt.UTC))) == 2
    unknown = ProbeResult.objects.get(service=broken)
    assert (unknown.status, ProbeResult.objects.get(service=fine).status) == ("unknown", "up")
    assert "not valid any more: colour: unknown option" in unknown.reason
    assert unknown.failure == "config_error"


def test_a_claim_that_can_no_longer_start_on_time_is_recorded_missed_without_probing(servers):
    service = make_service("late", servers.ports[0])
    slot = dt.datetime.now(dt.UTC) - 20 * SECOND
    assert run_checks([Claim(1, service.id, "default", slot, start_by=slot + 10 * SECOND)]) == 1
    assert servers.connections[servers.ports[0]] == []
    missed = ProbeResult.objects.get(service=service)
    assert (missed.status, missed.failure, missed.scheduled_at) == ("unknown", "missed", slot)
    assert "reached the worker 20." in missed.reason and "backed up" in missed.reason


def test_a_prober_that_raises_is_recorded_as_internal_error_and_the_batch_survives(servers, monkeypatch):
    # No real prober has a bug we can trigger on purpose, so one is swapped in for this test.
    async def broken(target, options, *, deadline):
        raise RuntimeError("boom")

    monkeypatch.setitem(probes.PROTOCOLS, "pop3", dataclasses.replace(probes.PROTOCOLS["pop3"], probe=broken))
    buggy = make_service("buggy", servers.ports[0], protocol="pop3", options={})
    fine = make_service("fine", servers.ports[1])
    assert run_checks(claims_for([buggy, fine], dt.datetime.now(dt.UTC))) == 2
    crashed = ProbeResult.objects.get(service=buggy)
    assert (crashed.status, crashed.failure) == ("unknown", "internal_error")
    assert crashed.reason == "the pop3 prober failed: RuntimeError: boom"
    assert ProbeResult.objects.get(service=fine).status == "up"


def test_claims_of_disabled_or_deleted_services_are_skipped(servers):
    disabled = make_service("off", servers.ports[0], enabled=False)
    deleted = make_service("gone", servers.ports[1])
    claims = claims_for([disabled, deleted], dt.datetime.now(dt.UTC))
    deleted.delete()
    assert run_checks(claims) == 0
    assert all(conns == [] for conns in servers.connections.values())
