"""/probe through Django's test client against real servers on 127.0.0.1: answers, credentials, the guard, errors."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.conftest import need
from tests.metrics.conftest import parse, value
from tests.peers.dns_server import DNSServer
from tests.peers.hostile import HostileServer, silent
from tests.peers.http_server import HTTPServer, Reply
from tests.peers.smtp_server import smtp_server

LOCALHOST_HASH = 3668918509  # probe_ip_addr_hash of 127.0.0.1, as blackbox_exporter 0.23 reported it here
ROUTES = {
    "/": Reply(200, b"<p>status: healthy</p>", {"Content-Type": "text/html"}),
    "/sick": Reply(200, b"<p>status: poorly</p>"),
    "/moved": Reply.redirect("/"),
}
RECORDS = {"svc.test.": {"A": ["127.0.0.1", "127.0.0.2"]}}


def certificate(leaf) -> x509.Certificate:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Credentials ---------------------------------------------------------------------------------------


async def test_it_answers_403_when_no_credentials_are_configured(scrape, settings):
    settings.PORTWATCH_METRICS_TOKEN = None
    response = await scrape("tcp_connect", "127.0.0.1:1", token=None)
    assert response.status_code == 403
    assert "PORTWATCH_METRICS_PUBLIC=true" in response.content.decode()


async def test_it_is_open_when_the_operator_says_so(scrape, settings):
    settings.PORTWATCH_METRICS_TOKEN = None
    settings.PORTWATCH_METRICS_PUBLIC = True
    assert value(parse(await scrape("tcp_connect", f"127.0.0.1:{closed_port()}", token=None)), "probe_success") == 0


async def test_a_wrong_token_gets_401_with_a_challenge(scrape):
    response = await scrape("tcp_connect", "127.0.0.1:1", token="not-the-token")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="Portwatch"'
    assert "not-the-token" not in response.content.decode()


async def test_basic_auth_lets_a_scrape_in_and_a_wrong_password_out(scrape, settings):
    settings.PORTWATCH_METRICS_TOKEN = None
    settings.PORTWATCH_METRICS_BASIC_AUTH = "prometheus:s3cret"
    good = base64.b64encode(b"prometheus:s3cret").decode()
    bad = base64.b64encode(b"prometheus:guess").decode()
    target = f"127.0.0.1:{closed_port()}"

    assert (await scrape("tcp_connect", target, token=None, Authorization=f"Basic {good}")).status_code == 200
    refused = await scrape("tcp_connect", target, token=None, Authorization=f"Basic {bad}")
    assert (refused.status_code, refused["WWW-Authenticate"]) == (401, 'Basic realm="Portwatch"')


# tcp -----------------------------------------------------------------------------------------------


async def test_tcp_connect_to_a_listening_port_succeeds(scrape):
    async with HTTPServer(ROUTES) as server:
        families = parse(await scrape("tcp_connect", f"127.0.0.1:{server.port}"))

    assert value(families, "probe_success") == 1
    assert value(families, "probe_ip_protocol") == 4
    assert value(families, "probe_ip_addr_hash") == LOCALHOST_HASH
    assert value(families, "probe_failed_due_to_regex") == 0
    assert families["portwatch_probe_failure_info"].samples == []
    phases = {sample.labels["phase"]: sample.value for sample in families["portwatch_probe_phase_seconds"].samples}
    assert list(phases) == ["resolve", "connect", "tls", "processing", "transfer"]
    assert phases["connect"] > 0 and phases["tls"] == 0
    assert "probe_ssl_earliest_cert_expiry" not in families


async def test_a_refused_port_is_an_answer_with_success_0_and_its_failure_kind(scrape):
    families = parse(await scrape("tcp_connect", f"127.0.0.1:{closed_port()}"))

    assert value(families, "probe_success") == 0
    assert value(families, "portwatch_probe_failure_info", kind="refused") == 1
    assert value(families, "probe_ip_protocol") == 4  # the target is an address, so its family is known


async def test_tls_connect_reports_the_certificate_as_blackbox_does(scrape, certs):
    cert = certificate(certs.good)
    async with HTTPServer(ROUTES, tls=certs.good) as server:
        families = parse(await scrape("tls_connect", f"127.0.0.1:{server.port}"))

    assert value(families, "probe_success") == 1
    assert value(families, "probe_ssl_earliest_cert_expiry") == int(cert.not_valid_after_utc.timestamp())
    info = families["probe_ssl_last_chain_info"].samples[0].labels
    assert info["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()
    assert info["subjectalternative"] == "localhost"  # DNS names only, as Go's cert.DNSNames
    assert info["subject"] == cert.subject.rfc4514_string()
    assert value(families, "probe_tls_version_info", version="TLS 1.3") == 1
    assert families["probe_tls_cipher_info"].samples[0].labels["cipher"].startswith("TLS_")


async def test_an_expired_certificate_fails_and_still_shows_its_facts(scrape, certs):
    async with HTTPServer(ROUTES, tls=certs.expired) as server:
        families = parse(await scrape("tls_connect", f"127.0.0.1:{server.port}"))

    assert value(families, "probe_success") == 0
    assert value(families, "portwatch_probe_failure_info", kind="tls_expired") == 1
    assert value(families, "probe_ssl_earliest_cert_expiry") < time.time()


async def test_smtp_starttls_runs_the_smtp_dialogue_and_checks_each_expect(scrape, certs):
    async with smtp_server(starttls=certs.good) as port:
        families = parse(await scrape("smtp_starttls", f"127.0.0.1:{port}"))

    assert value(families, "probe_success") == 1
    assert value(families, "probe_failed_due_to_regex") == 0
    assert value(families, "probe_tls_version_info", version="TLS 1.3") == 1
    assert value(families, "portwatch_probe_phase_seconds", phase="tls") > 0


async def test_smtp_starttls_without_starttls_on_offer_fails_with_that_kind(scrape):
    async with smtp_server() as port:
        families = parse(await scrape("smtp_starttls", f"127.0.0.1:{port}"))

    assert value(families, "probe_success") == 0
    assert value(families, "portwatch_probe_failure_info", kind="starttls_unavailable") == 1


async def test_an_expect_the_recorded_replies_miss_fails_the_probe_due_to_regex(scrape, certs):
    async with smtp_server(starttls=certs.good) as port:
        families = parse(await scrape("smtp_needs_dsn", f"127.0.0.1:{port}"))  # aiosmtpd offers no DSN

    assert value(families, "probe_success") == 0
    assert value(families, "probe_failed_due_to_regex") == 1
    assert value(families, "portwatch_probe_failure_info", kind="keyword_missing") == 1


async def test_the_scrape_timeout_header_bounds_the_probe(scrape):
    async with HostileServer(silent, "tcp") as server:
        started = time.perf_counter()
        response = await scrape(
            "banner_expect", f"127.0.0.1:{server.port}", **{"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}
        )
        elapsed = time.perf_counter() - started

    families = parse(response)
    assert value(families, "portwatch_probe_failure_info", kind="timeout") == 1
    assert 0.9 <= value(families, "probe_duration_seconds") <= 1.5  # 1.5 s less blackbox's 0.5 s offset
    assert elapsed < 3


async def test_a_scrape_timeout_header_that_is_not_a_number_is_400(scrape):
    response = await scrape("tcp_connect", "127.0.0.1:1", **{"X-Prometheus-Scrape-Timeout-Seconds": "soon"})
    assert response.status_code == 400
    assert response.content.decode() == "X-Prometheus-Scrape-Timeout-Seconds must be a number of seconds, not 'soon'\n"


# http ----------------------------------------------------------------------------------------------


async def test_http_2xx_reports_status_length_version_and_phases(scrape):
    async with HTTPServer(ROUTES) as server:
        families = parse(await scrape("http_2xx", f"http://127.0.0.1:{server.port}/"))

    assert value(families, "probe_success") == 1
    assert value(families, "probe_http_status_code") == 200
    assert value(families, "probe_http_content_length") == len(ROUTES["/"].body)
    assert value(families, "probe_http_version") == 1.1
    assert (value(families, "probe_http_ssl"), value(families, "probe_http_redirects")) == (0, 0)
    phases = {sample.labels["phase"] for sample in families["probe_http_duration_seconds"].samples}
    assert phases == {"resolve", "connect", "tls", "processing", "transfer"}
    assert value(families, "probe_http_duration_seconds", phase="processing") > 0


async def test_a_target_without_a_scheme_is_http_and_redirects_are_counted(scrape):
    async with HTTPServer(ROUTES) as server:
        families = parse(await scrape("http_2xx", f"127.0.0.1:{server.port}/moved"))

    assert (value(families, "probe_success"), value(families, "probe_http_redirects")) == (1, 1)
    assert [request.path for request in server.requests] == ["/moved", "/"]


async def test_https_reports_ssl_and_the_final_hops_certificate(scrape, certs):
    async with HTTPServer(ROUTES, tls=certs.good) as server:
        families = parse(await scrape("http_2xx", f"https://localhost:{server.port}/"))

    assert (value(families, "probe_success"), value(families, "probe_http_ssl")) == (1, 1)
    fingerprint = certificate(certs.good).fingerprint(hashes.SHA256()).hex()
    assert families["probe_ssl_last_chain_info"].samples[0].labels["fingerprint_sha256"] == fingerprint


async def test_a_body_regexp_that_does_not_match_fails_due_to_regex(scrape):
    async with HTTPServer(ROUTES) as server:
        good = parse(await scrape("http_healthy_body", f"http://127.0.0.1:{server.port}/"))
        bad = parse(await scrape("http_healthy_body", f"http://127.0.0.1:{server.port}/sick"))

    assert (value(good, "probe_success"), value(good, "probe_failed_due_to_regex")) == (1, 0)
    assert (value(bad, "probe_success"), value(bad, "probe_failed_due_to_regex")) == (0, 1)


async def test_no_follow_counts_the_redirect_not_followed_as_blackbox_does(scrape):
    async with HTTPServer(ROUTES) as server:
        families = parse(await scrape("http_no_follow", f"http://127.0.0.1:{server.port}/moved"))

    assert value(families, "probe_success") == 0
    assert (value(families, "probe_http_status_code"), value(families, "probe_http_redirects")) == (302, 1)
    assert value(families, "portwatch_probe_failure_info", kind="http_status") == 1


# dns -----------------------------------------------------------------------------------------------


async def test_dns_counts_the_answer_records(scrape):
    async with DNSServer(RECORDS) as server:
        families = parse(await scrape("dns_udp", f"127.0.0.1:{server.port}"))

    assert value(families, "probe_success") == 1
    assert value(families, "probe_dns_answer_rrs") == 2
    assert value(families, "probe_dns_query_succeeded") == 1
    assert {sample.labels["phase"] for sample in families["probe_dns_duration_seconds"].samples} == {
        "resolve",
        "connect",
        "request",
    }
    assert value(families, "probe_dns_duration_seconds", phase="request") > 0


async def test_dns_with_an_unexpected_rcode_answered_but_failed(scrape):
    async with DNSServer({}) as server:  # every name is NXDOMAIN
        families = parse(await scrape("dns_udp", f"127.0.0.1:{server.port}"))

    assert (value(families, "probe_success"), value(families, "probe_dns_query_succeeded")) == (0, 1)
    assert value(families, "portwatch_probe_failure_info", kind="dns_rcode") == 1


# Requests Portwatch cannot serve -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "target", "message"),
    [
        ("nope", "127.0.0.1:1", "unknown module 'nope'; {path} has: banner_expect, dns_udp, http_2xx"),
        ("tcp_connect", "127.0.0.1", "target '127.0.0.1': module 'tcp_connect' uses the tcp prober, so the target"),
        ("http_2xx", "gopher://example.com/", "target 'gopher://example.com/': unknown URL scheme gopher:"),
        ("icmp", "127.0.0.1:80", "target '127.0.0.1:80': module 'icmp' uses the icmp prober, so the target is a host"),
        ("icmp_df", "127.0.0.1", "module 'icmp_df': icmp.dont_fragment: Portwatch cannot set the don't-fragment flag"),
        (
            "http_api_key",
            "http://127.0.0.1/",
            "module 'http_api_key': http.headers.X-Api-Key: Portwatch sends no custom request headers",
        ),
    ],
)
async def test_what_portwatch_cannot_probe_is_a_400_that_names_it(scrape, modules_file, module, target, message):
    response = await scrape(module, target)
    assert response.status_code == 400
    assert response.content.decode().startswith(message.format(path=modules_file))


async def test_a_missing_target_is_400(scrape):
    response = await scrape("tcp_connect", "")
    assert (response.status_code, response.content) == (400, b"Target parameter is missing\n")


async def test_an_unreadable_modules_file_is_503_naming_it(scrape, settings, tmp_path):
    settings.PORTWATCH_PROBE_MODULES = str(tmp_path / "missing.yml")
    response = await scrape("tcp_connect", "127.0.0.1:1")
    assert response.status_code == 503
    assert (
        response.content.decode()
        == f"cannot read the probe modules file {tmp_path / 'missing.yml'}: No such file or directory\n"
    )


# The guard -----------------------------------------------------------------------------------------


async def test_the_brokers_own_address_is_refused_by_name_and_by_address(scrape, settings):
    async with HTTPServer(ROUTES) as server:
        settings.REDIS_URL = f"redis://localhost:{server.port}/0"
        by_address = await scrape("tcp_connect", f"127.0.0.1:{server.port}")
        by_name = await scrape("tcp_connect", f"localhost:{server.port}")
        settings.PORTWATCH_PROBE_ALLOW_OWN_SERVICES = True
        allowed = await scrape("tcp_connect", f"127.0.0.1:{server.port}")

    assert (by_address.status_code, by_name.status_code) == (403, 403)
    assert "is Portwatch's own broker (REDIS_URL)" in by_address.content.decode()
    assert value(parse(allowed), "probe_success") == 1
    assert server.requests == []  # tcp_connect never speaks; the refusals never even connected


async def test_another_port_on_the_brokers_host_is_probed(scrape, settings):
    async with HTTPServer(ROUTES) as server:
        settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
        assert value(parse(await scrape("tcp_connect", f"127.0.0.1:{server.port}")), "probe_success") == 1


async def test_the_allow_list_refuses_what_it_does_not_hold(scrape, settings):
    async with HTTPServer(ROUTES) as server:
        settings.PORTWATCH_PROBE_ALLOW = ["10.0.0.0/8", "*.example.com"]
        refused = await scrape("tcp_connect", f"127.0.0.1:{server.port}")
        settings.PORTWATCH_PROBE_ALLOW = ["127.0.0.0/8"]
        allowed = await scrape("tcp_connect", f"127.0.0.1:{server.port}")

    assert refused.status_code == 403
    assert refused.content.decode() == "127.0.0.1 (127.0.0.1) is not in PORTWATCH_PROBE_ALLOW\n"
    assert value(parse(allowed), "probe_success") == 1


# promtool ------------------------------------------------------------------------------------------


async def test_promtool_accepts_real_answers(scrape, certs):
    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool is not installed (Debian's prometheus package has it)")
    async with HTTPServer(ROUTES, tls=certs.good) as web, DNSServer(RECORDS) as dns:
        answers = [
            await scrape("http_2xx", f"https://localhost:{web.port}/"),
            await scrape("tls_connect", f"127.0.0.1:{web.port}"),
            await scrape("dns_udp", f"127.0.0.1:{dns.port}"),
            await scrape("tcp_connect", f"127.0.0.1:{closed_port()}"),
        ]
    for answer in answers:
        assert answer.status_code == 200
        check = subprocess.run([promtool, "check", "metrics"], input=answer.content, capture_output=True, timeout=30)
        assert (check.returncode, check.stdout + check.stderr) == (0, b""), answer.content.decode()
