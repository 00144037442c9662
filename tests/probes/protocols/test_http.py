"""The HTTP prober against a real HTTP(S) server on 127.0.0.1, and against servers that do not speak HTTP."""

from __future__ import annotations

import re
import socket
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from monitor.probes import OptionsError, Status, Target, run_probe
from monitor.probes.protocols import http
from tests.peers import hostile
from tests.peers.hostile import HostileServer
from tests.peers.http_server import HTTPServer, Reply
from tests.peers.smtp_server import LineServer

TIMEOUT = 3.0
THINK_TIME = 0.2  # seconds the slow route waits before answering
STATUS_FORMS = "must be status codes, classes like 2xx or ranges like 200-299, separated by commas"

HEALTHY = Reply(200, b"<p>status: healthy</p>", {"Content-Type": "text/html; charset=utf-8"})


def slowly(request) -> Reply:
    time.sleep(THINK_TIME)  # runs in the server's thread for this connection
    return HEALTHY


ROUTES = {
    "/": HEALTHY,
    "/down": Reply(503, b"maintenance"),
    "/moved": Reply.redirect("/"),
    "/loop": Reply.redirect("/loop"),
    "/see-other": Reply.redirect("/", status=303),
    "/ftp": Reply.redirect("ftp://127.0.0.1/file"),
    "/big": Reply(200, b"x" * (http.MAX_BODY_BYTES + 100_000)),
    "/host": lambda request: Reply(200, request.headers["host"].encode()),
    "/slow": slowly,
    "/to-slow": Reply.redirect("/slow"),
}


def fingerprint(leaf) -> str:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).fingerprint(hashes.SHA256()).hex()


async def probe(port: int, tls: str = "none", *, host: str = "127.0.0.1", **raw):
    return await run_probe("http", Target(host, port, tls), http.Options.from_mapping(raw), timeout=TIMEOUT)


async def test_it_is_up_on_a_200_and_records_the_response():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port)

    assert result.status is Status.UP, result.reason
    assert result.banner == "HTTP/1.1 200 OK"
    assert result.details["status"] == 200
    assert result.details["http_version"] == "1.1"
    assert result.details["content_type"] == "text/html; charset=utf-8"
    assert result.details["body_bytes"] == len(HEALTHY.body)
    assert result.details["content_length"] == len(HEALTHY.body)  # as the server declared it
    assert result.phases.connect > 0 and result.phases.processing > 0


async def test_it_sends_a_plain_get_with_its_own_headers():
    async with HTTPServer(ROUTES) as server:
        await probe(server.port, path="/?check=1")

    request = server.requests[0]
    assert (request.method, request.path) == ("GET", "/?check=1")
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["user-agent"] == "Portwatch/0.1"
    assert request.headers["accept"] == "*/*"
    assert request.headers["connection"] == "close"


async def test_it_reports_a_status_outside_the_expected_ones():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/down")

    assert (result.status, str(result.failure)) == (Status.DOWN, "http_status")
    assert result.reason == "HTTP 503 Service Unavailable, expected 2xx"
    assert result.details["status"] == 503


@pytest.mark.parametrize("expect_status", ["503", "500-599", "2xx, 5XX", "200,503"])
async def test_it_accepts_any_status_expect_status_names(expect_status):
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/down", expect_status=expect_status)

    assert result.status is Status.UP, result.reason


async def test_it_finds_the_keyword_in_the_body():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, keyword="healthy")

    assert result.status is Status.UP, result.reason


async def test_it_reports_a_missing_keyword():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, keyword="all good")

    assert (result.status, str(result.failure)) == (Status.DOWN, "keyword_missing")
    assert result.reason == f"keyword 'all good' not found in the body ({len(HEALTHY.body)} bytes)"


async def test_it_matches_the_regex_against_the_body():
    async with HTTPServer(ROUTES) as server:
        matching = await probe(server.port, regex=r"status:\s+(healthy|degraded)")
        failing = await probe(server.port, regex=r"status:\s+down")

    assert matching.status is Status.UP, matching.reason
    assert str(failing.failure) == "keyword_missing"
    assert failing.reason == f"no match for /status:\\s+down/ in the body ({len(HEALTHY.body)} bytes)"


async def test_it_follows_a_redirect_and_records_the_chain():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/moved")

    assert result.status is Status.UP, result.reason
    assert result.details["redirects"] == [server.url("/")]
    assert [request.path for request in server.requests] == ["/moved", "/"]


async def test_it_follows_a_redirect_to_another_server():
    async with (
        HTTPServer(ROUTES) as final,
        HTTPServer({"/": Reply.redirect(final.url("/host"), status=301)}) as first,
    ):
        result = await probe(first.port, keyword=f"127.0.0.1:{final.port}")

    assert result.status is Status.UP, result.reason
    assert result.details["redirects"] == [final.url("/host")]
    assert len(first.requests) == len(final.requests) == 1


async def test_processing_adds_up_the_waits_of_every_hop():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/to-slow")

    assert result.status is Status.UP, result.reason
    assert result.phases.processing >= THINK_TIME


async def test_it_reports_a_redirect_to_a_closed_port_as_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    async with HTTPServer({"/": Reply.redirect(f"http://127.0.0.1:{closed}/")}) as server:
        result = await probe(server.port)

    assert (result.status, str(result.failure)) == (Status.DOWN, "refused")
    assert result.reason == f"connection refused by 127.0.0.1 port {closed}"
    assert result.details["redirects"] == [f"http://127.0.0.1:{closed}/"]


async def test_it_keeps_the_host_name_across_a_redirect_on_the_same_server():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/moved", tls_server_name="svc.test")

    assert result.status is Status.UP, result.reason
    assert [request.headers["host"] for request in server.requests] == [f"svc.test:{server.port}"] * 2
    assert result.details["redirects"] == [f"http://svc.test:{server.port}/"]


async def test_it_reports_a_redirect_it_was_told_not_to_follow_by_its_status():
    async with HTTPServer(ROUTES) as server:
        unexpected = await probe(server.port, path="/moved", follow_redirects="false")
        expected = await probe(server.port, path="/moved", follow_redirects="false", expect_status="3xx")

    assert (unexpected.status, str(unexpected.failure)) == (Status.DOWN, "http_status")
    assert unexpected.reason == "HTTP 302 Found, expected 2xx"
    assert expected.status is Status.UP, expected.reason
    assert expected.details["location"] == "/"
    assert [request.path for request in server.requests] == ["/moved", "/moved"]


async def test_it_gives_up_on_a_redirect_loop():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/loop")

    assert (result.status, str(result.failure)) == (Status.DOWN, "http_status")
    assert result.reason == f"gave up after {http.MAX_REDIRECTS} redirects; the last pointed to /loop"
    assert len(result.details["redirects"]) == http.MAX_REDIRECTS
    assert len(server.requests) == http.MAX_REDIRECTS + 1


async def test_it_turns_a_post_into_a_get_after_303():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/see-other", method="POST")

    assert result.status is Status.UP, result.reason
    assert [request.method for request in server.requests] == ["POST", "GET"]


async def test_it_refuses_to_follow_a_redirect_to_another_protocol():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/ftp")

    assert str(result.failure) == "protocol_error"
    assert result.reason == "redirected to ftp://127.0.0.1/file, which is not an http or https URL we can follow"


async def test_it_sends_head_and_reads_no_body():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, method="HEAD")

    assert result.status is Status.UP, result.reason
    assert server.requests[0].method == "HEAD"
    assert result.details["body_bytes"] == 0


async def test_it_reports_a_body_too_large_to_search():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/big", keyword="healthy")

    assert (result.status, str(result.failure)) == (Status.DOWN, "response_too_large")
    assert result.reason == (
        "response body exceeds 1 MiB and keyword 'healthy' not found in the first 1 MiB of the body"
    )


async def test_it_stops_reading_a_large_body_when_nothing_needs_it():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/big")

    assert result.status is Status.UP, result.reason
    assert result.details["body_bytes"] == http.MAX_BODY_BYTES
    assert result.details["body_truncated"] is True


async def test_it_sends_tls_server_name_as_the_host_header():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/host", tls_server_name="www.svc.test", keyword="www.svc.test")

    assert result.status is Status.UP, result.reason
    assert server.requests[0].headers["host"] == f"www.svc.test:{server.port}"


async def test_it_is_up_over_https_with_the_certificate_facts(certs):
    async with HTTPServer(ROUTES, tls=certs.good) as server:
        result = await probe(
            server.port, "implicit", path="/host", tls_ca_file=certs.ca_file, tls_server_name="localhost"
        )

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert result.tls.server_name == "localhost"
    assert "localhost" in result.tls.sans
    assert result.phases.tls > 0
    assert server.requests[0].headers["host"] == f"localhost:{server.port}"


async def test_processing_over_https_is_the_wait_for_the_answer(certs):
    async with HTTPServer(ROUTES, tls=certs.good) as server:
        result = await probe(server.port, "implicit", path="/slow", tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    # A TLS 1.3 session ticket arrives before the answer; it must not end the processing phase.
    assert result.phases.processing >= THINK_TIME


async def test_it_follows_a_redirect_from_http_to_https(certs):
    async with (
        HTTPServer(ROUTES, tls=certs.good) as secure,
        HTTPServer({"/": Reply.redirect(f"https://localhost:{secure.port}/", 301)}) as plain,
    ):
        result = await probe(plain.port, tls_ca_file=certs.ca_file, ip_family="ipv4")

    assert result.status is Status.UP, result.reason
    assert result.details["redirects"] == [f"https://localhost:{secure.port}/"]
    assert result.tls.verified and result.tls.server_name == "localhost"


@pytest.mark.parametrize(("leaf", "failure"), [("expired", "tls_expired"), ("wrong_host", "tls_hostname")])
async def test_it_reports_a_bad_certificate_with_its_facts(certs, leaf, failure):
    async with HTTPServer(ROUTES, tls=getattr(certs, leaf)) as server:
        result = await probe(server.port, "implicit", host="localhost", ip_family="ipv4", tls_ca_file=certs.ca_file)

    assert (result.status, str(result.failure)) == (Status.DOWN, failure), result.reason
    assert result.tls is not None and not result.tls.verified
    assert server.requests == []


async def test_it_warns_about_a_certificate_close_to_expiry(certs):
    async with HTTPServer(ROUTES, tls=certs.expiring) as server:
        result = await probe(server.port, "implicit", tls_ca_file=certs.ca_file)

    assert (result.status, str(result.failure)) == (Status.WARNING, "tls_expiring")
    assert result.reason.startswith("certificate expires in ")


async def test_it_reports_binary_noise_as_a_protocol_error():
    async with HostileServer(hostile.garbage, "http") as server:
        result = await probe(server.port)

    assert (result.status, str(result.failure)) == (Status.DOWN, "protocol_error")
    assert result.reason.startswith("server did not answer with HTTP: \\x16\\x03\\x01")


@pytest.mark.parametrize("banner", [b"220 mail.test ESMTP\r\n", b"220 mail.test ESMTP " + b"x" * 200 + b"\r\n"])
async def test_it_reports_another_protocol_on_the_port_at_once(banner):
    started = time.monotonic()
    async with LineServer(banner) as server:
        result = await probe(server.port)

    assert (result.status, str(result.failure)) == (Status.DOWN, "protocol_error")
    assert result.reason.startswith("server did not answer with HTTP: 220 mail.test ESMTP")
    assert time.monotonic() - started < TIMEOUT / 2


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (
            {"expect_status": "2xx,ok"},
            "expect_status",
            f"{STATUS_FORMS}; 'ok' is not one of these",
        ),
        (
            {"expect_status": "299-200"},
            "expect_status",
            f"{STATUS_FORMS}; '299-200' is not one of these",
        ),
        ({"method": "get"}, "method", "is case-sensitive: write GET, not 'get'"),
        ({"path": "health"}, "path", "must start with / and be ASCII without spaces (percent-encode), not 'health'"),
        ({"regex": "[a"}, "regex", "is not a valid regular expression: unterminated character set at position 0"),
    ],
)
def test_it_rejects_bad_options_naming_the_field(raw, field, message):
    with pytest.raises(OptionsError) as caught:
        http.Options.from_mapping(raw)

    assert (caught.value.field, caught.value.message) == (field, message)


async def test_it_warns_when_the_first_hops_certificate_expires_naming_its_host(certs):
    async with (
        HTTPServer(ROUTES, tls=certs.good) as final,
        HTTPServer({"/": Reply.redirect(f"https://localhost:{final.port}/")}, tls=certs.expiring) as first,
    ):
        result = await probe(first.port, "implicit", tls_ca_file=certs.ca_file, ip_family="ipv4")

    assert (result.status, str(result.failure)) == (Status.WARNING, "tls_expiring"), result.reason
    assert re.fullmatch(r"certificate of 127\.0\.0\.1 expires in [45]\.\d days \(\d{4}-\d\d-\d\d\)", result.reason)


async def test_it_warns_when_a_later_hops_certificate_expires_naming_its_host(certs):
    async with (
        HTTPServer(ROUTES, tls=certs.expiring) as final,
        HTTPServer({"/": Reply.redirect(f"https://localhost:{final.port}/")}, tls=certs.good) as first,
    ):
        result = await probe(first.port, "implicit", tls_ca_file=certs.ca_file, ip_family="ipv4")

    assert (result.status, str(result.failure)) == (Status.WARNING, "tls_expiring"), result.reason
    assert result.reason.startswith("certificate of localhost expires in ")


async def test_its_certificate_is_the_first_hops(certs):
    async with (
        HTTPServer(ROUTES, tls=certs.good) as final,
        HTTPServer({"/": Reply.redirect(f"https://localhost:{final.port}/")}, tls=certs.expiring) as first,
    ):
        result = await probe(first.port, "implicit", tls_ca_file=certs.ca_file, ip_family="ipv4")

    assert result.tls.fingerprint_sha256 == fingerprint(certs.expiring)


async def test_it_records_every_hop_with_its_certificate(certs):
    async with (
        HTTPServer(ROUTES, tls=certs.good) as final,
        HTTPServer({"/": Reply.redirect(f"https://localhost:{final.port}/")}, tls=certs.expiring) as first,
    ):
        result = await probe(first.port, "implicit", tls_ca_file=certs.ca_file, ip_family="ipv4")

    hops = [
        (hop["url"], hop["status"], hop["address"], hop["tls"]["fingerprint_sha256"]) for hop in result.details["hops"]
    ]
    assert hops == [
        (first.url("/"), 302, "127.0.0.1", fingerprint(certs.expiring)),
        (f"https://localhost:{final.port}/", 200, "127.0.0.1", fingerprint(certs.good)),
    ]


async def test_it_records_a_plain_hop_without_tls_facts():
    async with HTTPServer(ROUTES) as server:
        result = await probe(server.port, path="/moved")

    assert result.details["hops"] == [
        {"url": server.url("/moved"), "status": 302, "address": "127.0.0.1"},
        {"url": server.url("/"), "status": 200, "address": "127.0.0.1"},
    ]


async def test_a_later_hop_that_fails_verification_is_down_and_keeps_the_hops_learnt(certs):
    async with (
        HTTPServer(ROUTES, tls=certs.expired) as final,
        HTTPServer({"/": Reply.redirect(f"https://localhost:{final.port}/")}, tls=certs.good) as first,
    ):
        result = await probe(first.port, "implicit", tls_ca_file=certs.ca_file, ip_family="ipv4")

    assert (result.status, str(result.failure)) == (Status.DOWN, "tls_expired"), result.reason
    assert [(hop.get("status"), hop["tls"]["verified"]) for hop in result.details["hops"]] == [
        (302, True),
        (None, False),
    ]


async def test_a_later_hop_that_fails_verification_says_where_it_was_redirected(certs):
    async with (
        HTTPServer(ROUTES, tls=certs.expired) as final,
        HTTPServer({"/": Reply.redirect(f"https://localhost:{final.port}/")}, tls=certs.good) as first,
    ):
        result = await probe(first.port, "implicit", tls_ca_file=certs.ca_file, ip_family="ipv4")

    assert result.reason == (
        f"certificate verification failed: certificate has expired (redirected to https://localhost:{final.port}/)"
    )
