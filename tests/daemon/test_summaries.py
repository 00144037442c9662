"""Per-service summaries: always what the service's states add up to, written with them, never behind them."""

from __future__ import annotations

import datetime as dt
import random
import socket
import threading

import pytest
from django.db import connection, connections, transaction

from monitor import exposure_report
from monitor.daemon import summaries
from monitor.daemon.recording import Outcome, pause, record
from monitor.exposure_report import findings
from monitor.models import Service, ServiceState, ServiceSummary
from monitor.probes import Failure, Phases, Result, Status
from tests.daemon.test_recording import T0, at, down, make_service, tls_facts, up, warning
from tests.test_audit_command import MISSED, REFUSED, mail_service, make, probed, recorded

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

ORDER = ("paused", "up", "unknown", "warning", "down")


def summary_of(service: Service) -> ServiceSummary:
    return ServiceSummary.objects.get(service=service)


def expected(service: Service) -> dict:
    """Work the summary out by hand from the states as Python objects, JSON read in Python."""
    states = list(ServiceState.objects.filter(service=service))
    worst = sorted(states, key=lambda state: (-ORDER.index(state.status), state.since))[0]
    active = [state for state in states if state.status != "paused"]
    totals = [state.last_phases["total"] for state in active if "total" in state.last_phases]
    days = [state.tls.get("chain_days_left", state.tls.get("days_left")) for state in active if state.tls is not None]
    checks = [state.last_checked_at for state in states if state.last_checked_at]
    return {
        "status": worst.status,
        "since": worst.since,
        "reason": "" if worst.status in ("up", "paused") else worst.last_reason,
        "latency": max(totals, default=None),
        "cert_days": min((d for d in days if d is not None), default=None),
        "last_checked_at": max(checks, default=None),
    }


def actual(service: Service) -> dict:
    row = summary_of(service)
    names = ("status", "since", "reason", "latency", "cert_days", "last_checked_at")
    return {name: getattr(row, name) for name in names}


def test_a_service_without_any_state_has_no_summary():
    service = make_service()
    assert not ServiceSummary.objects.filter(service=service).exists()


def test_recording_writes_the_summary_of_a_single_location_with_the_state():
    service = make_service(failure_threshold=2)
    record([at(service, 0, up(0.020, tls=tls_facts(days_left=40.0)))])
    row = summary_of(service)
    assert (row.status, row.severity, row.latency, row.cert_days, row.reason) == ("up", 1, 0.020, 40.0, "")
    assert row.last_checked_at == row.since == T0 + dt.timedelta(milliseconds=120)
    record([at(service, 1, down("connection refused")), at(service, 2, down("connection refused"))])
    row = summary_of(service)
    assert (row.status, row.severity, row.reason) == ("down", 4, "connection refused")
    assert row.since == T0 + dt.timedelta(minutes=1, milliseconds=120)  # the incident's start: the first failure
    assert row.cert_days == 40.0  # a refused connection says nothing about the certificate: kept
    assert actual(service) == expected(service)


def test_the_worst_location_decides_status_since_and_reason_and_paused_ones_count_for_no_latency_or_certificate():
    service = make_service(locations="eu,us,ap", failure_threshold=1)
    record([at(service, 0, up(0.900, tls=tls_facts(days_left=3.0)), "eu")])
    record([at(service, 0, up(0.010, tls=tls_facts(days_left=60.0)), "us")])
    record([at(service, 1, down("timed out", Failure.TIMEOUT), "ap")])
    row = summary_of(service)
    assert (row.status, row.reason, row.latency, row.cert_days) == ("down", "timed out", 0.9, 3.0)
    pause({(service.id, "eu")}, "location removed", now=T0 + dt.timedelta(minutes=5))
    row = summary_of(service)
    assert (row.status, row.latency, row.cert_days) == ("down", 0.010, 60.0)
    assert row.last_checked_at == T0 + dt.timedelta(minutes=1, milliseconds=120)  # paused or not, the newest check
    assert actual(service) == expected(service)


def test_a_service_is_paused_in_its_summary_only_when_every_location_is():
    service = make_service(locations="eu,us")
    record([at(service, 0, up(), "eu"), at(service, 0, up(), "us")])
    pause({(service.id, "eu")}, "location removed", now=T0 + dt.timedelta(minutes=2))
    assert summary_of(service).status == "up"
    pause({(service.id, "us")}, "service disabled", now=T0 + dt.timedelta(minutes=3))
    row = summary_of(service)
    assert (row.status, row.severity, row.reason, row.latency, row.cert_days) == ("paused", 0, "", None, None)


def test_a_missed_slot_leaves_the_status_but_the_summary_stays_in_step():
    service = make_service()
    record([at(service, 0, warning())])
    record([Outcome.missed(service.id, "default", T0 + dt.timedelta(minutes=1), "no worker took the slot")])
    assert summary_of(service).status == "warning"
    assert actual(service) == expected(service)


def test_the_summary_follows_any_sequence_of_outcomes_at_several_locations():
    rng = random.Random(11)
    services = [make_service(f"s{i}", locations="eu,us", failure_threshold=rng.randint(1, 2)) for i in range(4)]
    missed = Result(Status.UNKNOWN, Failure.MISSED, "no worker took the slot", Phases())
    choices = [
        lambda: up(rng.uniform(0.001, 0.5)),
        lambda: up(rng.uniform(0.001, 0.5), tls=tls_facts(days_left=rng.uniform(-5, 90))),
        warning,
        lambda: down(),
        lambda: missed,
    ]
    for step in range(25):
        batch = [
            at(service, step, rng.choice(choices)(), location)
            for service in services
            for location in ("eu", "us")
            if rng.random() < 0.8
        ]
        record(batch)
        if step == 12:
            pause({(services[0].id, "us")}, "location removed", now=T0 + dt.timedelta(minutes=step, seconds=30))
        for service in services:
            if ServiceState.objects.filter(service=service).exists():
                assert actual(service) == expected(service), (step, service.name)


def test_refresh_rewrites_every_summary_from_the_states():
    services = [make_service(f"s{i}") for i in range(3)]
    record([at(service, 0, up(0.01 * (i + 1))) for i, service in enumerate(services)])
    ServiceSummary.objects.all().delete()
    assert summaries.refresh() == 3
    assert [summary_of(service).latency for service in services] == [0.01, 0.02, 0.03]


def test_odd_json_in_a_state_reads_as_no_value():
    service = make_service()
    record([at(service, 0, up())])
    ServiceState.objects.filter(service=service).update(last_phases={}, tls={"version": "TLSv1.3"})
    summaries.refresh([service.id])
    assert (summary_of(service).latency, summary_of(service).cert_days) == (None, None)


@pytest.mark.django_db(transaction=True)
def test_two_locations_recorded_at_once_take_turns_so_the_summary_sees_both():
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite has one writer at a time anyway")
    service = make_service(locations="eu,us", failure_threshold=1)
    record([at(service, 0, up(), "eu"), at(service, 0, up(), "us")])
    recorded, release, finished = threading.Event(), threading.Event(), []

    def eu_down() -> None:
        try:
            with transaction.atomic():
                record([at(service, 1, down(), "eu")])
                recorded.set()
                release.wait(10)  # hold the transaction open: us records meanwhile
        finally:
            connections.close_all()

    def us_up() -> None:
        try:
            record([at(service, 1, up(), "us")])
            finished.append(True)
        finally:
            connections.close_all()

    first = threading.Thread(target=eu_down)
    first.start()
    assert recorded.wait(10)
    second = threading.Thread(target=us_up)
    second.start()
    second.join(0.5)
    assert not finished  # it waits for eu's transaction: the service's states are locked
    release.set()
    first.join(10)
    second.join(10)
    assert finished
    assert summary_of(service).status == "down"  # us's summary was written knowing eu is down


# --- Exposure flags: stored with the state from its last measured probe, summed over active locations --------------


def flags_of(service: Service) -> dict[str, tuple[bool, bool]]:
    """Return {location: (reveals_version, offers_plaintext_login)} of the service's states."""
    states = ServiceState.objects.filter(service=service)
    return {state.location: (state.reveals_version, state.offers_plaintext_login) for state in states}


def summary_flags(service: Service) -> tuple[bool, bool]:
    row = summary_of(service)
    return row.reveals_version, row.plaintext_login


def closed_port() -> int:
    """Return a port on 127.0.0.1 nothing listens on (bound, then released): a probe of it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_recorded_real_probe_sets_the_state_flags_and_the_summary_as_the_service_page_assesses_them():
    mail = mail_service(locations="eu,us")  # aiosmtpd probed by the engine: "Python SMTP 1.4.x", AUTH before TLS
    assert flags_of(mail) == {"eu": (True, True), "us": (True, True)}
    assert summary_flags(mail) == (True, True)
    page = findings([mail.id])  # what the service page and `manage.py audit` assess from the evidence
    assert {where: (found.reveals_version, found.plaintext_login) for (_, where), found in page.items()} == {
        "eu": (True, True),
        "us": (True, True),
    }
    assert exposure_report.counts() == {"version": 1, "plaintext": 1}


def test_a_real_probe_that_reached_nothing_sets_no_flag():
    shell = make("shell", "telnet", closed_port())
    result = probed(shell)
    assert result.failure == Failure.REFUSED, result.reason
    assert flags_of(shell) == {"default": (False, False)}  # Telnet offers plaintext login, but nothing answered
    assert summary_flags(shell) == (False, False)


def test_a_later_missed_slot_keeps_the_flags_and_a_later_measured_probe_replaces_them():
    mail = mail_service()
    recorded(mail, MISSED)
    state = ServiceState.objects.get(service=mail)
    assert (state.last_failure, state.reveals_version, state.offers_plaintext_login) == ("missed", True, True)
    assert summary_flags(mail) == (True, True)
    recorded(mail, REFUSED)
    assert flags_of(mail) == {"default": (False, False)}
    assert summary_flags(mail) == (False, False)


def test_pausing_a_location_keeps_its_flags_but_drops_it_from_the_summary():
    mail = mail_service(locations="eu,us")
    recorded(mail, REFUSED, location="us")  # us reveals nothing now; eu still does
    assert summary_flags(mail) == (True, True)
    pause({(mail.id, "eu")}, "location removed from the service")
    assert flags_of(mail) == {"eu": (True, True), "us": (False, False)}  # what eu's last probe heard, kept
    assert summary_flags(mail) == (False, False)  # but nobody probes eu now: its exposure is history
    assert exposure_report.counts() == {"version": 0, "plaintext": 0}
