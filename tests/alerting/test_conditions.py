"""The detectors end to end: facts recorded by the daemon's real path (certificates from real TLS probes of
trustme servers), alerts delivered to a real webhook receiver."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re

import pytest
import trustme
from django.db import connection

from monitor import tasks
from monitor.alerting import certificates, conditions, notifier
from monitor.daemon.recording import Outcome, record
from monitor.models import CertificateWarning, Channel, Problem, Service, Watermark, WorkerHeartbeat
from monitor.probes import Failure, Phases, Result, Status, Target, run_probe
from monitor.probes.protocols import http
from tests.alerting.conftest import at_once
from tests.peers.http_server import HTTPServer, Reply

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

DAY = dt.timedelta(days=1)
STEP = dt.timedelta(seconds=60)
GRACE = dt.timedelta(seconds=121)  # just past PORTWATCH_ALERT_WORKER_GRACE's default


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def monitor_health_on(settings) -> None:
    settings.PORTWATCH_ALERT_MONITOR_HEALTH = True  # conftest turns it off for the other alerting tests


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def hook(receiver):
    """A webhook receiver and a channel to it that sends every alert at once."""
    server = receiver()
    Channel.objects.create(name="hook", url=server.url(), timeout=2.0, group_window=0)
    return server


def delivered(server, moment: dt.datetime) -> list[dict]:
    """Deliver what is due at `moment`; return every alert the receiver got so far."""
    notifier.deliver_due(moment)
    return [alert for got in server.received for alert in json.loads(got.body)["alerts"]]


def https_service(name: str = "web", **fields) -> Service:
    return Service.objects.create(name=name, host="127.0.0.1", port=443, protocol="http", tls_mode="implicit", **fields)


def probe_tls(server: HTTPServer, ca_file: str) -> Result:
    """Probe `server` over HTTPS as the daemon does, trusting the test CA."""
    options = http.Options.from_mapping({"tls_ca_file": ca_file, "ip_family": "ipv4"})
    result = asyncio.run(run_probe("http", Target("127.0.0.1", server.port, "implicit"), options, timeout=3.0))
    assert result.tls is not None, result.reason
    return result


def record_result(service: Service, moment: dt.datetime, result: Result, location: str = "default") -> None:
    assert record([Outcome(service.id, location, moment, moment, result)]) == 1


def serve(ca: trustme.CA, days: float) -> HTTPServer:
    leaf = ca.issue_cert(
        "localhost", "127.0.0.1", common_name="localhost", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    )
    return HTTPServer({"/": Reply(200, b"ok")}, tls=leaf)


def thresholds(server) -> list[int]:
    return [alert["detail"]["threshold"] for alert in server]


# --- Certificates -----------------------------------------------------------------------------------


def test_a_certificate_is_warned_once_per_threshold(hook, ca, ca_file):
    service = https_service()
    start = now()
    with serve(ca, days=20) as server:
        record_result(service, start, probe_tls(server, ca_file))

    assert conditions.certificates(start) == 1
    assert conditions.certificates(start + STEP) == 0  # the same threshold is never told twice
    assert conditions.certificates(start + 7 * DAY) == 1  # 13 days left: the 14-day threshold
    assert conditions.certificates(start + 7 * DAY + STEP) == 0

    alerts = delivered(hook, start + 7 * DAY + STEP)
    assert [alert["kind"] for alert in alerts] == ["certificate", "certificate"]
    assert thresholds(alerts) == [30, 14]
    first = alerts[0]
    assert re.fullmatch(
        r"certificate .*CN=localhost.* expires in (19\.9|20\.0) days \(\d{4}-\d\d-\d\d\)", first["failure"]["reason"]
    )
    assert first["detail"]["which"] == "leaf" and first["service"]["id"] == service.id
    assert first["detail"]["fingerprint"] == probe_tls_fingerprint(service)


def probe_tls_fingerprint(service: Service) -> str:
    return service.states.get().tls["fingerprint_sha256"]


def test_thresholds_crossed_at_once_give_one_warning_for_the_smallest(hook, ca, ca_file):
    service = https_service()
    start = now()
    with serve(ca, days=5) as server:
        record_result(service, start, probe_tls(server, ca_file))

    assert conditions.certificates(start) == 1
    assert sorted(CertificateWarning.objects.values_list("days", flat=True)) == [7, 14, 30]
    assert conditions.certificates(start + 2 * DAY) == 0  # 3 days left: 30 and 14 were recorded, not owed
    assert conditions.certificates(start + 4.5 * DAY) == 1  # half a day left: the last threshold
    assert thresholds(delivered(hook, start + 5 * DAY)) == [7, 1]


def test_a_services_own_days_win_over_the_defaults(hook, ca, ca_file):
    service = https_service(certificate_warn_days="45,10")
    start = now()
    with serve(ca, days=20) as server:
        record_result(service, start, probe_tls(server, ca_file))

    conditions.certificates(start)
    assert thresholds(delivered(hook, start)) == [45]


def test_a_renewed_certificate_starts_over(hook, ca, ca_file):
    service = https_service()
    start = now()
    with serve(ca, days=20) as server:
        record_result(service, start, probe_tls(server, ca_file))
    conditions.certificates(start)
    with serve(ca, days=20) as renewed:
        record_result(service, start + STEP, probe_tls(renewed, ca_file))

    assert conditions.certificates(start + 2 * STEP) == 1
    alerts = delivered(hook, start + 2 * STEP)
    assert thresholds(alerts) == [30, 30]
    assert alerts[0]["detail"]["fingerprint"] != alerts[1]["detail"]["fingerprint"]


def test_a_chain_certificate_expiring_before_the_leaf_is_warned_apart(hook, ca, ca_file):
    service = https_service()
    start = now()
    with serve(ca, days=200) as server:
        result = probe_tls(server, ca_file)
    # trustme cannot date an intermediate: the probe's facts, with the chain OpenSSL would have reported.
    tls = dataclasses.replace(
        result.tls,
        chain_expiry=start + 3 * DAY,
        chain_expiry_subject="CN=Old Intermediate,O=Example",
        chain_expiry_role="intermediate",
    )
    record_result(service, start, dataclasses.replace(result, tls=tls))

    assert conditions.certificates(start) == 1
    (alert,) = delivered(hook, start)
    assert (alert["detail"]["which"], alert["detail"]["subject"], alert["detail"]["threshold"]) == (
        "chain",
        "CN=Old Intermediate,O=Example",
        7,
    )
    assert alert["failure"]["reason"].startswith(
        "certificate CN=Old Intermediate,O=Example (intermediate in the chain)"
    )


def test_a_redirect_hops_certificate_is_warned_naming_the_hop(hook, ca, ca_file):
    service = https_service()
    start = now()
    with serve(ca, days=10) as final:
        far = ca.issue_cert("localhost", "127.0.0.1", not_after=dt.datetime.now(dt.UTC) + 400 * DAY)
        target = f"https://localhost:{final.port}/"
        with HTTPServer({"/": Reply.redirect(target)}, tls=far) as first:
            record_result(service, start, probe_tls(first, ca_file))

    assert conditions.certificates(start) == 1
    (alert,) = delivered(hook, start)
    assert (alert["detail"]["which"], alert["detail"]["threshold"]) == (f"hop {target}", 14)
    assert f"at redirect {target}" in alert["failure"]["reason"]


def test_what_a_certificate_says_is_bounded_and_cleaned(hook, ca, ca_file):
    service = https_service()
    start = now()
    with serve(ca, days=5) as server:
        result = probe_tls(server, ca_file)
    hostile = "CN=evil\r\nX-Injected: yes\x00" + "A" * 5000
    record_result(service, start, dataclasses.replace(result, tls=dataclasses.replace(result.tls, subject=hostile)))

    conditions.certificates(start)
    (alert,) = delivered(hook, start)
    reason, subject = alert["failure"]["reason"], alert["detail"]["subject"]
    assert "\n" not in reason and "\r" not in reason and "\x00" not in subject
    assert len(subject) <= certificates.MAX_SUBJECT and len(reason) < 300


def test_check_runs_the_certificate_detector_once_a_minute_whatever_the_runs(hook, ca, ca_file):
    service = https_service()
    start = now()
    healthy(start + dt.timedelta(seconds=61))  # the monitor's own detector has nothing to say
    assert conditions.check(start) == 0  # nothing yet; the minute starts here
    with serve(ca, days=20) as server:
        record_result(service, start, probe_tls(server, ca_file))

    assert conditions.check(start + dt.timedelta(seconds=30)) == 0
    assert conditions.check(start + dt.timedelta(seconds=61)) == 1


# --- Degraded ---------------------------------------------------------------------------------------


def slow_service(**fields) -> Service:
    return Service.objects.create(
        name="api", host="127.0.0.1", port=80, protocol="tcp", degraded_latency=0.5, degraded_checks=3, **fields
    )


def checks(service: Service, start: dt.datetime, *totals: float | None) -> dt.datetime:
    """Record a result per total (None: down) a minute apart from `start`; return the next slot."""
    for index, total in enumerate(totals):
        if total is None:
            result = Result(Status.DOWN, Failure.REFUSED, "connection refused", Phases(total=0.001))
        else:
            result = Result(Status.UP, None, "ok", Phases(connect=total, total=total))
        record_result(service, start + index * STEP, result)
    return start + len(totals) * STEP


def test_slow_checks_open_degraded_once_and_fast_ones_resolve_it_once(hook):
    service = slow_service()
    start = now() - 30 * STEP
    after = checks(service, start, 0.85, 0.9, 0.85)

    assert conditions.degraded(after) == 1
    assert conditions.degraded(after + STEP) == 0
    after = checks(service, after, 0.1, 0.1)
    assert conditions.degraded(after) == 0  # two fast checks of three decide nothing
    after = checks(service, after, 0.1)
    assert conditions.degraded(after) == 1
    assert conditions.degraded(after + STEP) == 0

    degraded, normal = delivered(hook, after + STEP)
    assert (degraded["kind"], normal["kind"]) == ("degraded", "normal")
    assert degraded["failure"]["reason"] == "latency 850 ms above 500 ms for 3 checks"
    assert degraded["detail"]["latency"] == 0.85 and degraded["detail"]["limit"] == 0.5
    assert degraded["since"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")  # the first slow check
    assert normal["duration_seconds"] == 3 * 60  # until the first of the fast checks


def test_down_checks_are_skipped_and_never_resolve_degraded(hook):
    service = slow_service()
    start = now() - 30 * STEP
    after = checks(service, start, 0.9, None, 0.9, 0.9)
    assert conditions.degraded(after) == 1  # three slow measured checks, the down one skipped
    after = checks(service, after, 0.1, 0.1, None)
    assert conditions.degraded(after) == 0
    after = checks(service, after, 0.1)
    assert conditions.degraded(after) == 1
    assert [alert["kind"] for alert in delivered(hook, after)] == ["degraded", "normal"]


def test_a_service_without_a_latency_limit_is_never_degraded(hook):
    service = slow_service()
    Service.objects.filter(pk=service.pk).update(degraded_latency=None)
    after = checks(service, now() - 10 * STEP, 5.0, 5.0, 5.0)
    assert conditions.degraded(after) == 0
    assert delivered(hook, after) == []


# --- The monitor's own health -----------------------------------------------------------------------


def worker_at(location: str, seen: dt.datetime) -> None:
    WorkerHeartbeat.objects.update_or_create(
        name="worker-1:42", location=location, defaults={"started_at": seen - STEP, "last_seen": seen}
    )


def dispatched_at(moment: dt.datetime) -> None:
    Watermark.objects.update_or_create(name=conditions.DISPATCHED, defaults={"moment": moment})


def healthy(moment: dt.datetime) -> None:
    """Make the daemon look alive at `moment`: a worker at the default location, dispatch just ran."""
    worker_at("default", moment)
    dispatched_at(moment)


def monitor_alerts(server, moment: dt.datetime) -> list[tuple[str, str]]:
    return [(alert["kind"], alert["detail"]["key"]) for alert in delivered(server, moment)]


def test_the_dispatcher_watermark_is_the_one_dispatch_writes():
    assert conditions.DISPATCHED == tasks.DISPATCHED


def test_a_location_without_a_live_worker_alerts_once_and_once_more_when_one_is_back(hook):
    Service.objects.create(name="mail", host="127.0.0.1", port=25, protocol="tcp", locations="eu")
    moment = now() + GRACE  # the location has needed a worker for longer than the grace
    dispatched_at(moment)
    assert conditions.monitor_health(moment) == 1
    assert conditions.monitor_health(moment + STEP) == 0
    worker_at("eu", moment + 2 * STEP)
    dispatched_at(moment + 2 * STEP)
    assert conditions.monitor_health(moment + 2 * STEP) == 1

    assert monitor_alerts(hook, moment + 2 * STEP) == [("monitor", "no_worker:eu"), ("monitor_ok", "no_worker:eu")]
    said = delivered(hook, moment + 2 * STEP)[0]
    assert said["service"] is None and "no worker is probing from location 'eu'" in said["failure"]["reason"]


def test_a_new_location_gets_the_grace_before_its_worker_is_missed(hook):
    Service.objects.create(name="mail", host="127.0.0.1", port=25, protocol="tcp", locations="eu")
    moment = now() + STEP
    dispatched_at(moment)
    assert conditions.monitor_health(moment) == 0
    assert not Problem.objects.exists()


def test_a_worker_gone_quiet_is_missed_after_the_grace(hook):
    Service.objects.create(name="mail", host="127.0.0.1", port=25, protocol="tcp", locations="eu")
    moment = now() + GRACE
    dispatched_at(moment)
    worker_at("eu", moment - dt.timedelta(seconds=100))
    assert conditions.monitor_health(moment) == 0  # seen 100 s ago: within the grace
    assert conditions.monitor_health(moment + STEP) == 1
    assert "heartbeat was 2 min ago" in delivered(hook, moment + STEP)[0]["failure"]["reason"]


def test_a_stalled_dispatcher_alerts_once_and_resolves_when_it_runs_again(hook):
    Service.objects.create(name="mail", host="127.0.0.1", port=25, protocol="tcp")
    moment = now() + GRACE
    worker_at("default", moment)
    dispatched_at(moment - dt.timedelta(seconds=30))
    assert conditions.monitor_health(moment) == 0
    assert conditions.monitor_health(moment + STEP) == 1  # 90 s since dispatch last ran
    healthy(moment + 2 * STEP)
    assert conditions.monitor_health(moment + 2 * STEP) == 1
    assert monitor_alerts(hook, moment + 2 * STEP) == [("monitor", "dispatcher"), ("monitor_ok", "dispatcher")]


def missed(service: Service, moment: dt.datetime, reason: str) -> Outcome:
    return Outcome.missed(service.id, "default", moment, f"not probed: {reason}")


def slots(service: Service, start: dt.datetime, good: int, lost: int, reason: str) -> None:
    up = Result(Status.UP, None, "ok", Phases(total=0.01))
    outcomes = [Outcome(service.id, "default", start + i * STEP / 6, start + i * STEP / 6, up) for i in range(good)]
    outcomes += [missed(service, start + (good + i) * STEP / 6, reason) for i in range(lost)]
    assert record(outcomes) == good + lost


def test_a_share_of_missed_slots_over_the_limit_alerts_and_resolves(hook):
    service = Service.objects.create(name="mail", host="127.0.0.1", port=25, protocol="tcp", interval=10, timeout=5)
    moment = now()
    healthy(moment)
    slots(service, moment - 9 * STEP, good=17, lost=3, reason="no result came back (the worker was lost)")
    assert conditions.monitor_health(moment) == 1  # 3 of 20: 15 %, over the default 10 %
    later = moment + 10 * STEP
    healthy(later)
    slots(service, later - 5 * STEP, good=20, lost=0, reason="")
    assert conditions.monitor_health(later) == 1
    assert monitor_alerts(hook, later) == [("monitor", "missed:default"), ("monitor_ok", "missed:default")]
    assert delivered(hook, later)[0]["detail"]["share"] == 15.0


def test_slots_missed_for_want_of_a_worker_are_left_to_the_worker_alert(hook):
    service = Service.objects.create(name="mail", host="127.0.0.1", port=25, protocol="tcp", interval=10, timeout=5)
    moment = now()
    healthy(moment)
    slots(service, moment - 9 * STEP, good=10, lost=10, reason="no worker is serving location 'default'")
    assert conditions.monitor_health(moment) == 0
    assert delivered(hook, moment) == []


# --- Several notifiers at once (PostgreSQL) --------------------------------------------------------


@pytest.mark.parametrize("entry", ["check", "certificates"])
@pytest.mark.django_db(transaction=True)
def test_two_notifiers_at_once_send_one_certificate_warning(hook, ca, ca_file, entry):
    if connection.vendor != "postgresql":
        pytest.skip("racing inserts is PostgreSQL's; SQLite has one writer at a time anyway")
    service = https_service()
    start = now()
    healthy(start)
    with serve(ca, days=5) as server:
        record_result(service, start, probe_tls(server, ca_file))
    detector = getattr(conditions, entry)

    assert sorted(at_once(lambda: detector(start))) == [0, 1]
    assert thresholds(delivered(hook, start)) == [7]
    assert CertificateWarning.objects.filter(alert__isnull=False).count() == 1
