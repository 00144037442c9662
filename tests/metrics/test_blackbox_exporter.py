"""Portwatch's /probe side by side with Debian's real blackbox_exporter, against the same servers on 127.0.0.1.

Both read one modules file and probe the same targets (tcp, tls, smtp-starttls, http, https, dns, and
a refused port). Their answers must share every blackbox metric: name, type, help, label names, and
the values that do not depend on timing. Only Portwatch's own series, and what blackbox added after
Debian's version (0.23), may be extra.
"""

from __future__ import annotations

import asyncio
import math
import socket
import urllib.parse
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.metrics.conftest import parse
from tests.peers.dns_server import DNSServer
from tests.peers.http_server import HTTPServer, Reply
from tests.peers.smtp_server import smtp_server

# Values that do not depend on timing: they must be equal in both answers.
SAME_VALUES = {
    "probe_success",
    "probe_dns_authority_rrs",
    "probe_dns_additional_rrs",
    "probe_ip_protocol",
    "probe_ip_addr_hash",
    "probe_failed_due_to_regex",
    "probe_ssl_earliest_cert_expiry",
    "probe_ssl_last_chain_expiry_timestamp_seconds",
    "probe_ssl_last_chain_info",
    "probe_tls_version_info",
    "probe_http_status_code",
    "probe_http_content_length",
    "probe_http_uncompressed_body_length",
    "probe_http_redirects",
    "probe_http_ssl",
    "probe_http_version",
    "probe_dns_answer_rrs",
    "probe_dns_query_succeeded",
}
TIMINGS = {
    "probe_duration_seconds",
    "probe_dns_lookup_time_seconds",
    "probe_http_duration_seconds",
    "probe_dns_duration_seconds",
}
NOT_RECORDED: set[str] = set()  # series the engine keeps nothing for (NaN); none since it counts DNS sections
NEWER_THAN_DEBIAN = {"probe_tls_cipher_info"}  # blackbox 0.28 has it; Debian 12's 0.23 does not
NEWER_LABELS = {"probe_ssl_last_chain_info": {"serialnumber"}}  # blackbox 0.28's; empty here (not recorded)


async def test_both_answer_alike_for_every_prober(exporter, scrape, certs):
    async with (
        HTTPServer({"/": Reply(200, b"healthy")}) as web,
        HTTPServer({"/": Reply(200, b"healthy"), "/moved": Reply.redirect("/")}, tls=certs.good) as tls_web,
        smtp_server(starttls=certs.good) as smtp,
        DNSServer({"svc.test.": {"A": ["127.0.0.1", "127.0.0.2"]}}) as dns,
    ):
        cases = [
            ("tcp_connect", f"127.0.0.1:{web.port}"),
            ("tcp_connect", f"127.0.0.1:{closed_port()}"),
            ("tls_connect", f"127.0.0.1:{tls_web.port}"),
            ("smtp_starttls", f"127.0.0.1:{smtp}"),
            ("http_2xx", f"http://127.0.0.1:{web.port}/"),
            ("http_2xx", f"https://127.0.0.1:{tls_web.port}/moved"),
            ("dns_udp", f"127.0.0.1:{dns.port}"),
        ]
        for module, target in cases:
            theirs = await asyncio.to_thread(blackbox, exporter, module, target)
            ours = parse(await scrape(module, target))
            compare(f"{module} {target}", theirs, ours)


def compare(case: str, theirs: dict, ours: dict) -> None:
    """Assert that `ours` has each of blackbox's series: type, help, labels, and its value unless it is a timing."""
    extra = {name for name in ours if not name.startswith("portwatch_")} - set(theirs) - NEWER_THAN_DEBIAN
    assert extra == set(), f"{case}: series blackbox does not have"
    for name, family in theirs.items():
        assert name in ours, f"{case}: {name} is missing"
        mine = ours[name]
        assert (mine.type, mine.documentation) == (family.type, family.documentation), f"{case}: {name}"
        assert labels(mine) - NEWER_LABELS.get(name, set()) == labels(family), f"{case}: {name} labels"
        if name in SAME_VALUES:
            assert samples(mine, name) == samples(family, name), f"{case}: {name}"
        elif name in TIMINGS:
            assert phases(mine) == phases(family), f"{case}: {name} phases"
            assert all(0 <= sample.value < 5 for sample in mine.samples), f"{case}: {name}"
        else:
            assert name in NOT_RECORDED, f"{case}: {name} is compared nowhere"
            assert all(math.isnan(sample.value) for sample in mine.samples), f"{case}: {name} is recorded now"


def labels(family) -> set[str]:
    return {label for sample in family.samples for label in sample.labels}


def phases(family) -> set[str]:
    return {sample.labels.get("phase", "") for sample in family.samples}


def samples(family, name: str) -> set[tuple]:
    drop = NEWER_LABELS.get(name, set())
    return {
        (tuple(sorted((k, v) for k, v in sample.labels.items() if k not in drop)), sample.value)
        for sample in family.samples
    }


def blackbox(address: str, module: str, target: str) -> dict:
    query = urllib.parse.urlencode({"module": module, "target": target})
    with urllib.request.urlopen(f"http://{address}/probe?{query}", timeout=10) as response:
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
