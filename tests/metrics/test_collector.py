"""/metrics through Django's test client, on states the daemon's writer made from real probes of real local servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import math
import shutil
import socket
import subprocess
import threading

import pytest
import trustme
from django.db import connection
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from monitor import tasks
from monitor.alerting.notifier import WATERMARK as NOTIFIER
from monitor.daemon import expositions
from monitor.daemon.recording import Outcome, pause, record
from monitor.metrics import exposition as rendering
from monitor.metrics.blackbox import exposition, series
from monitor.metrics.collector import REASONS, collect
from monitor.metrics.exposition import LABELS, RENDERED, SEPARATOR, PairState
from monitor.models import (
    Channel,
    MaintenanceWindow,
    Schedule,
    Service,
    ServiceState,
    StateExposition,
    Watermark,
    WorkerHeartbeat,
)
from monitor.models.history import PHASES as HISTOGRAM_PHASES
from monitor.probes import Result, Target, parse_options, run_probe
from monitor.stats import LATENCY_BUCKETS, counted, missed_reason
from monitor.tasks import DISPATCHED
from tests.conftest import need
from tests.metrics.conftest import TOKEN
from tests.peers.dns_server import DNSServer
from tests.peers.http_server import HTTPServer, Reply
from tests.test_deploy_prometheus import CONTRACT

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SERVICE_LABELS = {"service", "protocol", "host", "port", "location", "instance"}
NOW = dt.datetime.now(dt.UTC)
STEP = dt.timedelta(seconds=60)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service(name: str, protocol: str, port: int, tls_mode: str = "none", **fields) -> Service:
    return Service.objects.create(
        name=name, host="127.0.0.1", port=port, protocol=protocol, tls_mode=tls_mode, failure_threshold=1, **fields
    )


async def probe(svc: Service) -> Result:
    options = parse_options(svc.protocol, svc.options)
    return await run_probe(svc.protocol, Target(svc.host, svc.port, svc.tls_mode), options, timeout=3.0)


def recorded(svc: Service, results: list[Result], location: str = "default") -> None:
    """Record `results` as the service's consecutive slots up to now, through the daemon's writer."""
    first = NOW - len(results) * STEP
    record([Outcome(svc.id, location, first + i * STEP, first + i * STEP, r) for i, r in enumerate(results)])


def scrape(client: Client | None = None, **headers: str) -> dict[str, list]:
    """Return {sample name: [samples]} of a /metrics answer, read by prometheus_client's parser."""
    response = (client or Client()).get("/metrics", headers={"Authorization": f"Bearer {TOKEN}", **headers})
    assert response.status_code == 200, response
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text(response)):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def text(response) -> str:
    return b"".join(response.streaming_content).decode()


def samples(families: dict, name: str, **labels: str) -> list:
    return [s for s in families.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]


def value(families: dict, name: str, **labels: str) -> float:
    found = samples(families, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0].value


@pytest.fixture
def fleet(certs) -> dict[str, Service]:
    """An HTTPS site, a DNS server and a closed port, each probed twice by the engine and recorded."""
    services = {
        "web": service("web", "http", 1, "implicit", options={"tls_ca_file": certs.ca_file}),  # port: its server's
        "dns": service("dns", "dns", 1, options={"query_name": "svc.test", "record_type": "A"}),
        "gone": service("gone", "tcp", closed_port()),
    }

    async def probe_all() -> dict[str, list[Result]]:
        async with (
            HTTPServer({"/": Reply(200, b"healthy")}, tls=certs.good) as web,
            DNSServer({"svc.test.": {"A": ["127.0.0.1", "127.0.0.2"]}}) as dns,
        ):
            services["web"].port, services["dns"].port = web.port, dns.port
            return {name: [await probe(svc), await probe(svc)] for name, svc in services.items()}

    results = asyncio.run(probe_all())
    for name, svc in services.items():
        svc.save(update_fields=["port"])
        recorded(svc, results[name])
    services["results"] = results
    return services


# What a service's series say -------------------------------------------------------------------------------------


def test_every_service_answers_with_blackbox_series_that_say_what_its_last_probe_found(fleet):
    families = scrape()
    web, dns, gone = ({"service": name} for name in ("web", "dns", "gone"))
    assert [value(families, "probe_success", **labels) for labels in (web, dns, gone)] == [1, 1, 0]
    assert value(families, "probe_http_status_code", **web) == 200
    assert value(families, "probe_tls_version_info", **web) == 1
    assert value(families, "probe_dns_answer_rrs", **dns) == 2
    assert value(families, "portwatch_probe_failure_info", **gone) == 1
    assert samples(families, "portwatch_probe_failure_info", **gone)[0].labels["kind"] == "refused"


def test_the_blackbox_series_of_a_service_are_those_probe_gives_for_the_same_result(fleet):
    result = fleet["results"]["web"][-1]
    probe_answer = text_string_to_metric_families(exposition(series(result, "http", host="127.0.0.1")).decode())
    expected = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in probe_answer for s in f.samples}
    mine = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in SERVICE_LABELS))): s.value
        for name, found in scrape().items()
        if name.startswith("probe_") or name in ("portwatch_probe_phase_seconds", "portwatch_probe_failure_info")
        for s in found
        if s.labels.get("service") == "web"
    }
    # The state keeps phases to the microsecond (Result.to_dict()); everything else is equal.
    assert mine == pytest.approx(expected, abs=1e-6)


def test_the_certificate_info_names_the_leafs_serial_number_as_blackbox_does(fleet):
    leaf = fleet["results"]["web"][-1].tls
    (info,) = samples(scrape(), "probe_ssl_last_chain_info", service="web")
    assert info.labels["serialnumber"] == leaf.serial_number != ""
    assert info.labels["fingerprint_sha256"] == leaf.fingerprint_sha256


def test_every_per_service_series_carries_the_six_service_labels_and_instance_is_host_and_port(fleet):
    families = scrape()
    per_service = [s for found in families.values() for s in found if "service" in s.labels]
    assert per_service and all(s.labels.keys() >= SERVICE_LABELS for s in per_service)
    web = fleet["web"]
    assert {s.labels["instance"] for s in per_service if s.labels["service"] == "web"} == {f"127.0.0.1:{web.port}"}


def test_tags_are_only_in_the_info_series(fleet):
    Service.objects.filter(name="web").update(tags="prod,edge")
    families = scrape()
    tagged = [s.name for found in families.values() for s in found if "tags" in s.labels]
    assert set(tagged) == {"portwatch_service_info"}
    assert samples(families, "portwatch_service_info", service="web")[0].labels["tags"] == "prod,edge"


def test_status_is_a_state_set_and_an_open_incident_shows(fleet):
    families = scrape()
    status = {s.labels["status"]: s.value for s in samples(families, "portwatch_service_status", service="gone")}
    assert status == {"up": 0, "warning": 0, "down": 1, "unknown": 0, "paused": 0}
    assert value(families, "portwatch_incident_open", service="gone") == 1
    assert value(families, "portwatch_incident_open", service="web") == 0


def test_the_last_check_is_when_the_last_probe_started(fleet):
    state = ServiceState.objects.get(service=fleet["web"])
    families = scrape()
    assert value(families, "portwatch_last_check_timestamp_seconds", service="web") == state.last_checked_at.timestamp()


def test_a_paused_pair_says_so_and_has_no_probe_success(fleet):
    from monitor.daemon.recording import pause

    pause([(fleet["gone"].id, "default")], "service disabled", NOW)
    families = scrape()
    status = {s.labels["status"]: s.value for s in samples(families, "portwatch_service_status", service="gone")}
    assert (status["paused"], status["down"]) == (1, 0)
    assert samples(families, "probe_success", service="gone") == []


def test_a_service_never_probed_is_unknown_without_probe_series(db):
    service("new", "tcp", 2525)
    families = scrape()
    assert value(families, "portwatch_service_status", service="new", status="unknown") == 1
    assert [name for name in families if name.startswith("probe_")] == []
    assert value(families, "portwatch_checks_total", service="new", outcome="up") == 0


def test_uptime_comes_from_the_recorded_slots(fleet):
    families = scrape()
    assert value(families, "portwatch_uptime_ratio", service="web", window="24h") == 1
    assert value(families, "portwatch_uptime_ratio", service="gone", window="30d") == 0


# Counters --------------------------------------------------------------------------------------------------------


def test_checks_and_the_latency_histogram_count_every_recorded_slot(fleet):
    web = fleet["web"]
    recorded_total = sum(r.phases.total for r in fleet["results"]["web"])
    families = scrape()
    assert value(families, "portwatch_checks_total", service="web", outcome="up") == 2
    assert value(families, "portwatch_checks_total", service="gone", outcome="down") == 2
    total = {"service": "web", "phase": "total"}
    assert value(families, "portwatch_probe_duration_seconds_count", **total) == 2
    assert value(families, "portwatch_probe_duration_seconds_sum", **total) == pytest.approx(recorded_total)
    inf = samples(families, "portwatch_probe_duration_seconds_bucket", **total, le="+Inf")
    assert inf[0].value == 2
    buckets = samples(families, "portwatch_probe_duration_seconds_bucket", **total)
    assert [s.labels["le"] for s in buckets] == [f"{b:g}" for b in LATENCY_BUCKETS] + ["+Inf"]
    assert web.port  # the service was probed on its server's port


def test_the_histogram_has_the_configured_phases_only(fleet, settings):
    settings.PORTWATCH_METRICS_HISTOGRAM_PHASES = ["total"]
    families = scrape()
    phases = {s.labels["phase"] for s in families["portwatch_probe_duration_seconds_bucket"]}
    assert phases == {"total"}


def test_missed_slots_count_by_reason_and_per_location(fleet):
    web = fleet["web"]
    record([Outcome.missed(web.id, "default", NOW, "not probed: no worker is serving location 'default'")])
    families = scrape()
    assert value(families, "portwatch_checks_total", service="web", outcome="missed") == 1
    missed = {
        s.labels["reason"]: s.value for s in samples(families, "portwatch_missed_slots_total", location="default")
    }
    assert (set(missed), missed["unserved"], sum(missed.values())) == (set(REASONS), 1, 1)
    assert value(families, "portwatch_probes_total", location="default", outcome="up") == 4  # web and dns, twice


def test_missed_slots_counted_before_reasons_were_kept_are_unrecorded(fleet):
    state = ServiceState.objects.get(service=fleet["web"])
    state.counters = counted(state.counters, "unknown", "missed", {}, "not probed: no result came back")
    state.counters["checks"]["missed"] += 2  # two slots from before the writer counted reasons
    state.save(update_fields=["counters"])
    families = scrape()
    assert value(families, "portwatch_missed_slots_total", location="default", reason="lost") == 1
    assert value(families, "portwatch_missed_slots_total", location="default", reason="unrecorded") == 2


def test_the_sweepers_reasons_map_onto_the_bounded_reasons():
    from monitor.daemon import sweeper

    never = sweeper._missed((1, "eu", NOW, NOW), set())  # the row's next slot is this one: never dispatched
    unserved = sweeper._missed((1, "eu", NOW, NOW + STEP), set())
    lost = sweeper._missed((1, "eu", NOW, NOW + STEP), {"eu"})
    reasons = [missed_reason(outcome.result.reason) for outcome in (never, unserved, lost)]
    assert (reasons, missed_reason("something new")) == (["never_dispatched", "unserved", "lost"], "other")


# The daemon's health ---------------------------------------------------------------------------------------------


def test_the_daemon_reports_dispatch_workers_and_unserved_locations(fleet):
    late = {"due_at": NOW - dt.timedelta(seconds=7), "active_since": NOW - dt.timedelta(days=1)}
    Schedule.objects.update_or_create(service=fleet["web"], location="default", defaults=late)
    Schedule.objects.update_or_create(
        service=fleet["dns"], location="eu", defaults={"due_at": NOW + STEP, "active_since": NOW}
    )
    WorkerHeartbeat.objects.create(
        name="w1:100", location="default", started_at=NOW, last_seen=dt.datetime.now(dt.UTC), in_flight=3
    )
    Watermark.objects.create(name=DISPATCHED, moment=NOW)
    tasks._purge("probe.eu")  # the broker's folder outlives each test, and earlier ones send to eu
    families = scrape()
    assert value(families, "portwatch_dispatch_lag_seconds") >= 7
    assert value(families, "portwatch_dispatcher_last_run_timestamp_seconds") == NOW.timestamp()
    assert value(families, "portwatch_worker_in_flight", worker="w1:100", location="default") == 3
    assert value(families, "portwatch_workers_recent", location="default") == 1
    unserved = {s.labels["location"]: s.value for s in families["portwatch_location_unserved"]}
    assert unserved == {"default": 0, "eu": 1}
    assert value(families, "portwatch_queue_depth", location="eu") == 0


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_daemons_families_come_from_a_thread_of_their_own():
    # A scrape outside a transaction (as under a web server) reads the daemon's families on a second
    # connection while it writes the services'; the test's usual transaction would hide its rows from it.
    svc = service("committed", "tcp", closed_port())
    recorded(svc, [asyncio.run(probe(svc)), asyncio.run(probe(svc))])  # a real refused connection, twice
    WorkerHeartbeat.objects.create(
        name="w9:1", location="default", started_at=NOW, last_seen=dt.datetime.now(dt.UTC), in_flight=2
    )
    threads = threading.active_count()
    assert not connection.in_atomic_block  # the premise: the scrape takes the threaded path
    families = scrape()
    assert value(families, "portwatch_worker_in_flight", worker="w9:1", location="default") == 2
    assert value(families, "portwatch_probes_total", location="default", outcome="down") == 2
    assert value(families, "probe_success", service="committed") == 0
    assert threading.active_count() <= threads  # the thread is gone once the answer is written


def test_the_queue_depth_is_what_waits_in_the_locations_broker_queue(fleet):

    location = "metrics-test"  # a queue no other test uses: the broker's folder outlives each test
    Schedule.objects.update_or_create(
        service=fleet["web"], location=location, defaults={"due_at": NOW, "active_since": NOW}
    )
    tasks.probe_batch.apply_async(args=[[]], queue=f"probe.{location}")
    try:
        assert value(scrape(), "portwatch_queue_depth", location=location) == 1
    finally:
        tasks._purge(f"probe.{location}")


def test_dispatch_notes_when_it_ran_at_most_every_ten_seconds(db, monkeypatch):
    monkeypatch.setattr(tasks, "_noted_at", None)  # what an earlier test's dispatch left in this process
    tasks.dispatch()
    first = Watermark.objects.get(name=DISPATCHED).moment
    tasks.dispatch()
    assert Watermark.objects.get(name=DISPATCHED).moment == first  # within ten seconds: not written again
    tasks._ran(first + tasks.DISPATCHED_EVERY)
    assert Watermark.objects.get(name=DISPATCHED).moment == first + tasks.DISPATCHED_EVERY


# The format ------------------------------------------------------------------------------------------------------


def test_label_values_are_escaped_as_the_format_says(db):
    service('we"ird\\name', "tcp", 2525)
    families = scrape()
    assert [s.labels["service"] for s in families["portwatch_service_info"]] == ['we"ird\\name']


def test_each_family_is_written_once_and_whole(fleet):
    body = b"".join(collect()).decode()
    names = [line.split()[2] for line in body.splitlines() if line.startswith("# TYPE")]
    order = [line.split("{")[0].split()[0] for line in body.splitlines() if not line.startswith("#")]
    family_of = [next(n for n in names if name == n or name.startswith(n + "_")) for name in order]
    runs = [name for i, name in enumerate(family_of) if i == 0 or family_of[i - 1] != name]
    assert len(names) == len(set(names)) and len(runs) == len(set(runs))


def test_dns_section_counts_are_exported_as_the_engine_recorded_them(fleet):
    details = ServiceState.objects.get(service__name="dns").details
    for name in ("answer_rrs", "authority_rrs", "additional_rrs"):
        assert value(scrape(), f"probe_dns_{name}", service="dns") == details[name]


def test_nan_is_written_as_prometheus_writes_it(fleet):
    state = ServiceState.objects.get(service__name="dns")  # as stored before the engine counted DNS sections
    state.details = {key: item for key, item in state.details.items() if not key.endswith("_rrs")}
    state.save(update_fields=["details"])
    body = b"".join(collect()).decode()
    line = next(line for line in body.splitlines() if line.startswith("probe_dns_authority_rrs{"))
    assert line.endswith(" NaN")
    assert math.isnan(value(scrape(), "probe_dns_authority_rrs", service="dns"))


def test_the_answer_is_gzipped_for_a_scraper_that_accepts_it(fleet):
    Schedule.objects.all().delete()  # no dispatch lag, the one value that moves between two scrapes
    client = Client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    plain = client.get("/metrics", headers=headers)
    packed = client.get("/metrics", headers={**headers, "Accept-Encoding": "gzip"})
    assert (packed["Content-Encoding"], plain.has_header("Content-Encoding")) == ("gzip", False)
    unpacked = gzip.decompress(b"".join(packed.streaming_content)).decode()
    assert unpacked == text(plain)


def test_promtool_accepts_the_metrics(fleet):
    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool is not installed (Debian's prometheus package has it)")
    service('odd "name"\\', "tcp", 2525)
    body = b"".join(collect()).decode()
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_metrics_are_the_contract_grafana_and_the_alerts_use(fleet):
    Schedule.objects.update_or_create(
        service=fleet["web"], location="default", defaults={"due_at": NOW, "active_since": NOW}
    )
    WorkerHeartbeat.objects.create(name="w1:100", location="default", started_at=NOW, last_seen=NOW)
    Watermark.objects.create(name=DISPATCHED, moment=NOW)
    Watermark.objects.create(name=NOTIFIER, moment=NOW)  # alerting's families: a notifier ran, a channel, a window
    Channel.objects.create(name="ops", url="http://127.0.0.1:9/hook")
    window = MaintenanceWindow.objects.create(
        name="upgrade", starts_at=NOW - dt.timedelta(hours=1), ends_at=NOW + dt.timedelta(hours=1)
    )
    window.services.add(fleet["web"])
    names = set(scrape())
    assert CONTRACT - names == set()
    assert names - CONTRACT == {"probe_http_uncompressed_body_length"}  # blackbox's too; nobody uses it


# Credentials -----------------------------------------------------------------------------------------------------


def test_it_answers_403_when_no_credentials_are_configured(db, settings):
    settings.PORTWATCH_METRICS_TOKEN = None
    response = Client().get("/metrics")
    assert (response.status_code, "PORTWATCH_METRICS_PUBLIC=true" in response.content.decode()) == (403, True)


def test_a_wrong_token_gets_401(db):
    response = Client().get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert (response.status_code, response["WWW-Authenticate"]) == (401, 'Bearer realm="Portwatch"')


def test_basic_auth_lets_a_scrape_in(db, settings):
    import base64

    settings.PORTWATCH_METRICS_TOKEN = None
    settings.PORTWATCH_METRICS_BASIC_AUTH = "prometheus:s3cret"
    good = base64.b64encode(b"prometheus:s3cret").decode()
    assert Client().get("/metrics", headers={"Authorization": f"Basic {good}"}).status_code == 200


# The series the state writer stored with each state (StateExposition), and live when they do not fit ------------


def parsed(body: str) -> dict[tuple, float]:
    """Return {(sample name, sorted labels): value}, NaN as a string so that equal answers compare equal."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): "NaN" if s.value != s.value else s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_the_writer_stores_every_states_series_with_the_key_a_scrape_expects(fleet, settings):
    phases = tuple(settings.PORTWATCH_METRICS_HISTOGRAM_PHASES)
    for state in ServiceState.objects.select_related("service"):
        stored = StateExposition.objects.get(state=state)
        assert stored.key == rendering.key(state.service.protocol, state.service.host, phases)
        text = bytes(stored.text).decode()
        assert len(text.split(SEPARATOR)) == len(RENDERED)
        assert f"probe_success{{{LABELS}}} " in text


def test_a_scrape_from_the_stored_series_says_the_same_as_one_rendered_live(fleet, settings):
    settings.PORTWATCH_METRICS_HISTOGRAM_PHASES = list(HISTOGRAM_PHASES)  # every phase: the most to compare
    services = {service.pk: (service.protocol, service.host) for service in Service.objects.all()}
    assert expositions.write(ServiceState.objects.all(), services) == ServiceState.objects.count()
    stored = b"".join(collect(NOW)).decode()
    assert StateExposition.objects.count() == ServiceState.objects.count()  # the scrape above read them all
    StateExposition.objects.all().delete()
    live = b"".join(collect(NOW)).decode()
    assert parsed(stored) == parsed(live)
    assert len(parsed(live)) > 300


def test_a_scrape_uses_the_stored_series(fleet):
    text = bytes(StateExposition.objects.get(state__service__name="web").text).decode()
    assert f"probe_http_status_code{{{LABELS}}} 200\n" in text
    changed = text.replace(f"probe_http_status_code{{{LABELS}}} 200\n", f"probe_http_status_code{{{LABELS}}} 299\n")
    StateExposition.objects.filter(state__service__name="web").update(text=changed.encode())
    assert value(scrape(), "probe_http_status_code", service="web") == 299


def test_labels_come_from_the_service_as_it_is_now(fleet):
    Service.objects.filter(name="web").update(name="web-renamed", tags="prod")
    families = scrape()
    assert value(families, "probe_http_status_code", service="web-renamed") == 200
    assert value(families, "portwatch_service_info", service="web-renamed", tags="prod") == 1


def test_a_series_rendered_for_another_host_or_histogram_is_rendered_live(fleet, settings):
    Service.objects.filter(name="web").update(host="localhost")
    StateExposition.objects.filter(state__service__name="web").update(text=b"")  # would show as missing series
    settings.PORTWATCH_METRICS_HISTOGRAM_PHASES = ["connect"]  # none of the stored texts has this one
    families = scrape()
    assert value(families, "probe_http_status_code", service="web", host="localhost") == 200
    phases = {s.labels["phase"] for s in families["portwatch_probe_duration_seconds_bucket"]}
    assert phases == {"connect"}
    assert len(families["portwatch_probe_duration_seconds_count"]) == 3  # web, dns and gone


def test_a_state_saved_outside_the_writer_is_rendered_live(fleet):
    state = ServiceState.objects.get(service__name="gone")
    state.status = "warning"
    state.save(update_fields=["status"])
    assert not StateExposition.objects.filter(state=state).exists()
    assert value(scrape(), "portwatch_service_status", service="gone", status="warning") == 1


def test_pausing_renders_the_paused_series(fleet):
    web = Service.objects.get(name="web")
    pause({(web.id, "default")}, "monitoring stopped")
    families = scrape()
    assert value(families, "portwatch_service_status", service="web", status="paused") == 1
    assert not [s for s in families["probe_success"] if s.labels["service"] == "web"]
    assert b'status="paused"} 1' in bytes(StateExposition.objects.get(state__service=web).text)


def test_a_real_certificate_naming_the_joining_characters_cannot_split_or_relabel_the_stored_series(tmp_path):
    # A server chose this certificate: its subject holds the record and unit separators, a quote and a line feed.
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("127.0.0.1", common_name=f"evil{SEPARATOR}{LABELS}x", organization_name='o"\nrg')
    svc = service("hostile", "http", 1, "implicit", options={"tls_ca_file": str(ca_file)})

    async def probe_twice() -> list[Result]:
        async with HTTPServer({"/": Reply(200, b"ok")}, tls=leaf) as web:
            svc.port = web.port
            return [await probe(svc), await probe(svc)]

    results = asyncio.run(probe_twice())
    svc.save(update_fields=["port"])
    recorded(svc, results)
    assert SEPARATOR in results[-1].tls.subject  # the premise: the engine kept the subject as the server sent it
    stored = bytes(StateExposition.objects.get(state__service=svc).text).decode()
    assert len(stored.split(SEPARATOR)) == len(RENDERED) and stored.count(LABELS) == stored.count("\n")
    families = scrape()
    info = samples(families, "probe_ssl_last_chain_info", service="hostile")
    assert len(info) == 1 and "evil\ufffd\ufffdx" in info[0].labels["subject"]
    assert value(families, "probe_success", service="hostile") == 1


@pytest.mark.parametrize("hostile", [SEPARATOR, LABELS, "\x00", f'{SEPARATOR}x"{LABELS}\n'])
def test_a_certificate_name_with_the_joining_characters_cannot_split_or_relabel_a_rendering(hostile):
    facts = {
        "version": "TLSv1.3",
        "cipher": "TLS_AES_128_GCM_SHA256",
        "subject": f"CN=evil{hostile}",
        "issuer": f"CN=ca{hostile}",
        "fingerprint_sha256": "ab" * 32,
        "earliest_expiry": "2030-01-01T00:00:00+00:00",
        "not_after": "2030-01-01T00:00:00+00:00",
        "sans": [f"evil{hostile}.test"],
        "serial_number": "1",
    }
    state = PairState("up", "", NOW, "127.0.0.1", False, 1, "up", {"total": 0.1}, facts, {}, {})
    text = rendering.render("smtp", "mail.test", ("total",), state)
    assert len(text.split(SEPARATOR)) == len(RENDERED)
    body = text.replace(LABELS, 'service="s"').replace(SEPARATOR, "")
    info = next(line for line in body.splitlines() if line.startswith("probe_ssl_last_chain_info"))
    assert "CN=evil\ufffd" in info and LABELS not in body and "\x00" not in body
    assert parsed(body)  # still the text format
