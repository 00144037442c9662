"""The DNS prober against a real DNS server on 127.0.0.1 (UDP and TCP), including a silent and a broken one."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest
from dns import message as dns_message
from dns import rrset as dns_rrset

from monitor.probes import OptionsError, Status, Target, run_probe
from monitor.probes.protocols import dns
from tests.peers.dns_server import DNSServer

TIMEOUT = 2.0
SHORT_TIMEOUT = 1.0
GRACE = 0.5  # the engine promises a result within the timeout plus this

RECORDS = {
    "svc.test.": {
        "A": ["127.0.0.1", "127.0.0.2"],
        "MX": ["10 mail.svc.test."],
        "TXT": ['"v=spf1 -all"', '"Token=AbC"'],
    },
    "ten.test.": {"A": ["127.0.0.10"]},
}


async def probe(port: int, *, host: str = "127.0.0.1", timeout: float = TIMEOUT, **raw):
    return await run_probe("dns", Target(host, port), dns.Options.from_mapping(raw), timeout=timeout)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_it_answers_an_a_query_over_udp():
    async with DNSServer(RECORDS) as server:
        result = await probe(server.port, query_name="svc.test")

    assert result.status is Status.UP, result.reason
    assert result.address == "127.0.0.1"
    assert sorted(result.details["answers"]) == ["svc.test. 300 IN A 127.0.0.1", "svc.test. 300 IN A 127.0.0.2"]
    assert (result.details["rcode"], result.details["transport"]) == ("NOERROR", "udp")
    assert result.details["answer_rrs"] == 2
    assert (result.details["authority_rrs"], result.details["additional_rrs"]) == (0, 0)  # the server sends neither
    assert "AA" in result.details["flags"].split()
    assert server.queries == [("udp", "svc.test.", "A")]
    assert result.phases.processing > 0


async def test_it_asks_over_tcp_when_told_and_times_the_connection():
    async with DNSServer(RECORDS) as server:
        result = await probe(server.port, query_name="svc.test", record_type="MX", transport="tcp")

    assert result.status is Status.UP, result.reason
    assert result.details["answers"] == ["svc.test. 300 IN MX 10 mail.svc.test."]
    assert server.queries == [("tcp", "svc.test.", "MX")]
    assert result.phases.connect > 0


async def test_it_reaches_a_server_on_ipv6_loopback():
    async with DNSServer(RECORDS, host="::1") as server:
        result = await probe(server.port, host="::1", query_name="svc.test", record_type="MX")

    assert result.status is Status.UP, result.reason
    assert result.address == "::1"


async def test_it_resolves_a_server_given_by_name():
    async with DNSServer(RECORDS) as server:
        result = await probe(server.port, host="localhost", ip_family="ipv4", query_name="svc.test")

    assert result.status is Status.UP, result.reason
    assert result.address == "127.0.0.1"


async def test_it_accepts_an_mx_answer_written_without_the_final_dot():
    async with DNSServer(RECORDS) as server:
        result = await probe(server.port, query_name="svc.test", record_type="MX", expected_answer="10 Mail.svc.test")

    assert result.status is Status.UP, result.reason


async def test_it_matches_txt_text_without_quotes_and_with_its_case():
    async with DNSServer(RECORDS) as server:
        found = await probe(server.port, query_name="svc.test", record_type="TXT", expected_answer="Token=AbC")
        wrong_case = await probe(server.port, query_name="svc.test", record_type="TXT", expected_answer="token=abc")

    assert found.status is Status.UP, found.reason
    assert str(wrong_case.failure) == "dns_answer_mismatch"


async def test_it_reports_an_answer_without_the_expected_record():
    async with DNSServer(RECORDS) as server:
        result = await probe(server.port, query_name="svc.test", record_type="MX", expected_answer="20 backup.svc.test")

    assert (result.status, str(result.failure)) == (Status.DOWN, "dns_answer_mismatch")
    assert result.reason == "no MX record '20 backup.svc.test' in the answer for svc.test; got 10 mail.svc.test."
    assert result.details["answers"] == ["svc.test. 300 IN MX 10 mail.svc.test."]


async def test_it_compares_whole_addresses_not_substrings():
    async with DNSServer(RECORDS) as server:
        result = await probe(server.port, query_name="ten.test", expected_answer="127.0.0.1")

    assert str(result.failure) == "dns_answer_mismatch", result.reason


async def test_it_reports_nxdomain_as_an_unexpected_rcode():
    async with DNSServer(RECORDS) as server:
        result = await probe(server.port, query_name="missing.test")

    assert (result.status, str(result.failure)) == (Status.DOWN, "dns_rcode")
    assert result.reason == "rcode NXDOMAIN, expected NOERROR"
    assert result.details["rcode"] == "NXDOMAIN"


async def test_it_is_up_when_nxdomain_is_the_expected_rcode():
    async with DNSServer(RECORDS) as server:
        result = await probe(server.port, query_name="missing.test", expected_rcode="nxdomain")

    assert result.status is Status.UP, result.reason


async def test_it_reports_servfail():
    async with DNSServer(RECORDS, rcodes={"broken.test": "SERVFAIL"}) as server:
        result = await probe(server.port, query_name="broken.test")

    assert result.reason == "rcode SERVFAIL, expected NOERROR"


async def test_it_retries_a_truncated_udp_answer_over_tcp():
    async with DNSServer(RECORDS, truncate_udp=True) as server:
        result = await probe(server.port, query_name="svc.test", expected_answer="127.0.0.2")

    assert result.status is Status.UP, result.reason
    assert result.details["truncated_retry"] is True
    assert result.details["transport"] == "tcp"
    assert server.queries == [("udp", "svc.test.", "A"), ("tcp", "svc.test.", "A")]


async def test_it_asks_about_the_root_by_default():
    async with DNSServer({".": {"A": []}}) as server:
        result = await probe(server.port)

    assert result.status is Status.UP, result.reason
    assert server.queries == [("udp", ".", "A")]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_it_times_out_on_a_silent_server(transport):
    async with DNSServer(RECORDS, silent=True) as server:
        started = time.monotonic()
        result = await probe(server.port, timeout=SHORT_TIMEOUT, query_name="svc.test", transport=transport)
        elapsed = time.monotonic() - started

    assert (result.status, str(result.failure)) == (Status.DOWN, "timeout")
    assert "the DNS answer" in result.reason or "a DNS answer" in result.reason
    assert f"127.0.0.1 port {server.port}" in result.reason
    assert server.queries == [(transport, "svc.test.", "A")]
    assert SHORT_TIMEOUT - 0.1 < elapsed < SHORT_TIMEOUT + GRACE


async def test_it_reports_a_refused_tcp_connection():
    port = free_port(socket.SOCK_STREAM)
    result = await probe(port, query_name="svc.test", transport="tcp")

    assert (result.status, str(result.failure)) == (Status.DOWN, "refused")
    assert result.reason == f"connection refused by 127.0.0.1 port {port}"


async def test_it_reports_icmp_port_unreachable_on_udp_as_refused():
    port = free_port(socket.SOCK_DGRAM)
    started = time.monotonic()
    result = await probe(port, query_name="svc.test")

    assert (result.status, str(result.failure)) == (Status.DOWN, "refused")
    assert result.reason == (
        f"nothing listens on 127.0.0.1 port {port} (ICMP port unreachable, while waiting for a DNS answer to our query)"
    )
    assert time.monotonic() - started < TIMEOUT / 2  # told at once, not left to time out


async def test_it_reports_a_reply_that_is_not_dns_as_a_protocol_error():
    async with DNSServer(RECORDS, garbage=True) as server:
        result = await probe(server.port, query_name="svc.test")

    assert (result.status, str(result.failure)) == (Status.DOWN, "protocol_error")
    assert result.reason.startswith(f"127.0.0.1 port {server.port} sent 1 datagram(s) that are not a DNS answer")


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"record_type": "AAAAA"}, "record_type", "must be a DNS record type such as A, AAAA, MX or TXT, not 'AAAAA'"),
        ({"record_type": "AXFR"}, "record_type", "AXFR is not a record type a single query can ask for"),
        ({"transport": "quic"}, "transport", "must be udp or tcp, not 'quic'"),
        (
            {"expected_rcode": "FINE"},
            "expected_rcode",
            "must be a DNS response code such as NOERROR or NXDOMAIN, not 'FINE'",
        ),
        ({"query_name": " "}, "query_name", "is required; write . to ask about the root"),
        ({"query_name": "a..b"}, "query_name", "is not a valid DNS name: A DNS label is empty."),
    ],
)
def test_it_rejects_bad_options_naming_the_field(raw, field, message):
    with pytest.raises(OptionsError) as caught:
        dns.Options.from_mapping(raw)

    assert (caught.value.field, caught.value.message) == (field, message)


def test_each_sections_records_are_counted_as_blackbox_counts_them():
    query = dns_message.make_query("svc.test.", "A", use_edns=0)
    reply = dns_message.make_response(query)
    reply.answer.append(dns_rrset.from_text("svc.test.", 300, "IN", "A", "127.0.0.1", "127.0.0.2"))
    reply.authority.append(dns_rrset.from_text("test.", 300, "IN", "NS", "ns1.test.", "ns2.test.", "ns3.test."))
    reply.additional.append(dns_rrset.from_text("ns1.test.", 300, "IN", "A", "127.0.0.53"))
    exchange = SimpleNamespace(details={})  # record() writes only the exchange's details
    dns.record(exchange, reply)
    # The EDNS OPT record counts among the additional ones, as Go's miekg/dns (blackbox) counts it.
    assert (exchange.details["answer_rrs"], exchange.details["authority_rrs"], exchange.details["additional_rrs"]) == (
        2,
        3,
        2,
    )
