"""One engine `Result` as blackbox_exporter 0.28 answers /probe, plus Portwatch's own series.

Exposes `series(result, prober, host=...) -> list[Metric]` and `exposition(metrics) -> bytes`, the
Prometheus text format written by prometheus_client, for /probe; and `samples(prober, ...)` over plain data
with `FAMILIES` (name -> help, labels), which both `series()` and the /metrics collector call, so the two
share every value's meaning. Plain Python: no Django.

Decisions:
- Which series an answer has follows blackbox's prober (tcp, http, dns, icmp), not Portwatch's protocol: an
  smtp_starttls module is a tcp prober in Prometheus's eyes. Names, types and help texts are blackbox's.
- Values keep blackbox's meaning: timestamps in whole Unix seconds; probe_ip_addr_hash is FNV-1a over
  the address's 4 or 16 bytes; TLS versions read "TLS 1.3" and ciphers carry their IANA names, as Go
  prints them; subjectalternative lists the DNS names only.
- icmp: probe_icmp_duration_seconds has blackbox's phases resolve, setup (making the socket: the engine's
  connect phase) and rtt. blackbox sends one echo request; a stored service may send `count`, so rtt is
  their average round trip (details' rtt_avg), 0 when no reply came, as blackbox leaves it.
  probe_icmp_reply_hop_limit is left out: the engine does not record the reply's TTL or hop limit, and
  blackbox itself leaves the family out when its socket cannot tell.
- Certificate series come with every TLS handshake that showed a certificate, also when verification
  failed (blackbox shows nothing then: its #1119). For HTTP they are the final hop's, as blackbox's.
- What the engine did not record is NaN or empty, never a made-up 0: a state stored before the engine kept
  each DNS section's record count has NaN for the authority and additional counts (and for the answer
  count past the MAX_ANSWERS lines kept), and an empty serialnumber. probe_http_content_length is the
  Content-Length the server declared, -1 (Go's "unknown") without one.
- Portwatch's own series: portwatch_probe_phase_seconds{phase} with every phase, and
  portwatch_probe_failure_info{kind} (value 1, one of the `Failure` kinds) when the probe did not come back up.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import math
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from monitor.probes import Failure, Phases, Result
from monitor.probes.protocols.dns import MAX_ANSWERS

HTTP_PHASES = ("resolve", "connect", "tls", "processing", "transfer")
NAN = math.nan
_FNV_OFFSET, _FNV_PRIME = 0x811C9DC5, 0x01000193
TLS_VERSIONS = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}
# OpenSSL's names of the TLS 1.2 suites Go offers -> their IANA names, which Go prints; TLS 1.3's are the same.
IANA_CIPHERS = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "ECDHE-RSA-AES128-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "ECDHE-ECDSA-AES128-SHA": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "ECDHE-RSA-AES128-SHA": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "ECDHE-ECDSA-AES256-SHA": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "ECDHE-RSA-AES256-SHA": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "AES128-SHA256": "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "AES128-SHA": "TLS_RSA_WITH_AES_128_CBC_SHA",
    "AES256-SHA": "TLS_RSA_WITH_AES_256_CBC_SHA",
    "ECDHE-RSA-DES-CBC3-SHA": "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "DES-CBC3-SHA": "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
}


Sample = tuple[str, tuple[str, ...], float]  # a family's name, the values of its labels (in FAMILIES' order), value

# Every family this module writes: name -> (help, label names). All are gauges, as in blackbox.
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "probe_success": ("Displays whether or not the probe was a success", ()),
    "probe_duration_seconds": ("Returns how long the probe took to complete in seconds", ()),
    "probe_dns_lookup_time_seconds": ("Returns the time taken for probe dns lookup in seconds", ()),
    "probe_ip_protocol": ("Specifies whether probe ip protocol is IP4 or IP6", ()),
    "probe_ip_addr_hash": (
        "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
        (),
    ),
    "probe_http_duration_seconds": ("Duration of http request by phase, summed over all redirects", ("phase",)),
    "probe_http_status_code": ("Response HTTP status code", ()),
    "probe_http_content_length": ("Length of http content response", ()),
    "probe_http_uncompressed_body_length": ("Length of uncompressed response body", ()),
    "probe_http_redirects": ("The number of redirects", ()),
    "probe_http_ssl": ("Indicates if SSL was used for the final redirect", ()),
    "probe_http_version": ("Returns the version of HTTP of the probe response", ()),
    "probe_failed_due_to_regex": ("Indicates if probe failed due to regex", ()),
    "probe_dns_duration_seconds": ("Duration of DNS request by phase", ("phase",)),
    "probe_dns_answer_rrs": ("Returns number of entries in the answer resource record list", ()),
    "probe_dns_authority_rrs": ("Returns number of entries in the authority resource record list", ()),
    "probe_dns_additional_rrs": ("Returns number of entries in the additional resource record list", ()),
    "probe_dns_query_succeeded": ("Displays whether or not the query was executed successfully", ()),
    "probe_icmp_duration_seconds": ("Duration of icmp request by phase", ("phase",)),
    "probe_ssl_earliest_cert_expiry": ("Returns last SSL chain expiry in unixtime", ()),
    "probe_ssl_last_chain_expiry_timestamp_seconds": ("Returns last SSL chain expiry in timestamp", ()),
    "probe_ssl_last_chain_info": (
        "Contains SSL leaf certificate information",
        ("fingerprint_sha256", "subject", "issuer", "subjectalternative", "serialnumber"),
    ),
    "probe_tls_version_info": ("Returns the TLS version used or NaN when unknown", ("version",)),
    "probe_tls_cipher_info": ("Returns the TLS cipher negotiated during handshake", ("cipher",)),
    "portwatch_probe_phase_seconds": (
        "Seconds the probe spent in each phase; every phase is present, 0 when it did not run",
        ("phase",),
    ),
    "portwatch_probe_failure_info": (
        "Why the probe did not come back up, as one of Portwatch's failure kinds; absent when it did",
        ("kind",),
    ),
}


def series(result: Result, prober: str, *, host: str) -> list[Metric]:
    """Return blackbox's series for `prober` and Portwatch's own, sorted by name as blackbox sorts them."""
    found = samples(
        prober,
        ok=result.ok,
        failure=None if result.failure is None else str(result.failure),
        phases={name: getattr(result.phases, name) for name in (*Phases.NAMES, "total")},
        address=result.address,
        host=host,
        details=result.details,
        tls=result.tls.to_dict() if result.tls else None,
    )
    families: dict[str, GaugeMetricFamily] = {}
    for name, values, value in found:
        if name not in families:
            documentation, labels = FAMILIES[name]
            families[name] = GaugeMetricFamily(name, documentation, labels=labels)
        families[name].add_metric(list(values), value)
    if "portwatch_probe_failure_info" not in families:  # an empty family still says the series exists
        documentation, labels = FAMILIES["portwatch_probe_failure_info"]
        families["portwatch_probe_failure_info"] = GaugeMetricFamily(
            "portwatch_probe_failure_info", documentation, labels=labels
        )
    return sorted(families.values(), key=lambda metric: metric.name)


def exposition(metrics: Iterable[Metric]) -> bytes:
    """Return the metrics in Prometheus's text format, written by prometheus_client."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(metrics)))
    return generate_latest(registry)


def samples(
    prober: str | None,
    *,
    ok: bool,
    failure: str | None,
    phases: Mapping[str, float],
    address: str | None,
    host: str,
    details: Mapping[str, Any],
    tls: Mapping[str, Any] | None,
) -> list[Sample]:
    """Return one probe's samples for `prober` and Portwatch's own, from plain data.

    Plain data, so that /probe (an engine `Result`) and /metrics (a stored `ServiceState`) share every
    value's meaning: `phases` maps each phase and "total" to seconds, `tls` is `TLSFacts.to_dict()`.
    """
    found = common(ok, phases, address or host)
    if prober == "http":
        found += http(details, phases, failure, tls)
    elif prober == "tcp":
        found += tcp(failure, tls)
    elif prober == "dns":
        found += dns(details, phases)
    elif prober == "icmp":
        found += icmp(details, phases)
    found += portwatch(phases, failure)
    return found


DETAILED_PROBERS = ("http", "dns", "icmp")  # the probers whose families read the probe's details


def common(ok: bool, phases: Mapping[str, float], address: str) -> list[Sample]:
    version, hashed = ip_facts(address)
    return [
        ("probe_success", (), 1 if ok else 0),
        ("probe_duration_seconds", (), phases.get("total", 0.0)),
        ("probe_dns_lookup_time_seconds", (), phases.get("resolve", 0.0)),
        ("probe_ip_protocol", (), version),
        ("probe_ip_addr_hash", (), hashed),
    ]


def http(
    details: Mapping[str, Any], phases: Mapping[str, float], failure: str | None, facts: Mapping[str, Any] | None
) -> list[Sample]:
    """Return the http prober's samples: the final response's, and the durations summed over every hop."""
    hops = details.get("hops") or []
    final = hops[-1] if hops else {}
    answered = "status" in details
    body = details.get("body_bytes")
    length = details.get("content_length", -1) if answered else 0  # as declared; -1 is Go's "unknown"
    redirects = len(details.get("redirects") or ()) + (1 if details.get("location") else 0)
    ssl = answered and str(final.get("url", "")).startswith("https:")
    found: list[Sample] = [("probe_http_duration_seconds", (phase,), phases.get(phase, 0.0)) for phase in HTTP_PHASES]
    found += [
        ("probe_http_status_code", (), details.get("status", 0)),
        ("probe_http_content_length", (), length),
        ("probe_http_uncompressed_body_length", (), body or 0),
        ("probe_http_redirects", (), redirects),
        ("probe_http_ssl", (), 1 if ssl else 0),
        ("probe_http_version", (), float(details.get("http_version", 0)) if answered else 0),
        failed_due_to_regex(failure),
    ]
    return found + tls(final.get("tls") if hops else facts, cipher=True)


def tcp(failure: str | None, facts: Mapping[str, Any] | None) -> list[Sample]:
    return [failed_due_to_regex(failure), *tls(facts, cipher=True)]


def dns(details: Mapping[str, Any], phases: Mapping[str, float]) -> list[Sample]:
    """Return the dns prober's samples; request is the query until its answer, as blackbox times it."""
    answers = details.get("answers")
    answered = "rcode" in details
    # Each section's record count, as the engine records it; a state stored before it did has only the
    # first MAX_ANSWERS answer lines: their number while it is below that, else unknown (NaN).
    listed = len(answers) if answers is not None and len(answers) < MAX_ANSWERS else NAN
    count = details.get("answer_rrs", listed)
    request = phases.get("processing", 0.0) + phases.get("transfer", 0.0)
    return [
        ("probe_dns_duration_seconds", ("resolve",), phases.get("resolve", 0.0)),
        ("probe_dns_duration_seconds", ("connect",), phases.get("connect", 0.0)),
        ("probe_dns_duration_seconds", ("request",), request),
        ("probe_dns_answer_rrs", (), count if answered else 0),
        ("probe_dns_authority_rrs", (), details.get("authority_rrs", NAN) if answered else 0),
        ("probe_dns_additional_rrs", (), details.get("additional_rrs", NAN) if answered else 0),
        ("probe_dns_query_succeeded", (), 1 if answered else 0),
    ]


def icmp(details: Mapping[str, Any], phases: Mapping[str, float]) -> list[Sample]:
    """Return the icmp prober's samples; rtt is the average of the replies' round trips, 0 without a reply.

    No probe_icmp_reply_hop_limit: the engine does not record the TTL (hop limit) a reply arrived with, and a
    made-up value would be worse than blackbox's own answer when its socket cannot tell, which leaves it out.
    """
    return [
        ("probe_icmp_duration_seconds", ("resolve",), phases.get("resolve", 0.0)),
        ("probe_icmp_duration_seconds", ("setup",), phases.get("connect", 0.0)),
        ("probe_icmp_duration_seconds", ("rtt",), details.get("rtt_avg", 0.0)),
    ]


def tls(facts: Mapping[str, Any] | None, *, cipher: bool) -> list[Sample]:
    """Return the certificate and TLS samples from `TLSFacts.to_dict()` data, or none without a certificate."""
    if not facts:
        return []
    names = ",".join(name for name in facts.get("sans") or () if not _is_ip(name))
    found: list[Sample] = [
        ("probe_ssl_earliest_cert_expiry", (), _unix(facts["earliest_expiry"])),
        ("probe_ssl_last_chain_expiry_timestamp_seconds", (), _unix(facts.get("chain_expiry") or facts["not_after"])),
        (
            "probe_ssl_last_chain_info",
            (facts["fingerprint_sha256"], facts["subject"], facts["issuer"], names, facts.get("serial_number") or ""),
            1,
        ),
        ("probe_tls_version_info", (TLS_VERSIONS.get(facts.get("version") or "", "unknown"),), 1),
    ]
    if cipher and facts.get("cipher"):
        found.append(("probe_tls_cipher_info", (IANA_CIPHERS.get(facts["cipher"], facts["cipher"]),), 1))
    return found


def portwatch(phases: Mapping[str, float], failure: str | None) -> list[Sample]:
    name = "portwatch_probe_phase_seconds"
    found: list[Sample] = [(name, (phase,), phases.get(phase, 0.0)) for phase in Phases.NAMES]
    if failure:
        found.append(("portwatch_probe_failure_info", (failure,), 1))
    return found


def failed_due_to_regex(failure: str | None) -> Sample:
    return ("probe_failed_due_to_regex", (), 1 if failure == str(Failure.KEYWORD_MISSING) else 0)


@functools.lru_cache(maxsize=4096)
def ip_facts(text: str) -> tuple[int, int]:
    """Return (probe_ip_protocol, probe_ip_addr_hash) of an address: (0, 0) for a name that never resolved."""
    ip = _ip(text) if _is_ip(text) else None
    return (ip.version, fnv1a(ip.packed)) if ip else (0, 0)


def fnv1a(data: bytes) -> int:
    """Return the 32-bit FNV-1a hash of `data`, as Go's hash/fnv New32a computes it."""
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return value


def _is_ip(name: str) -> bool:
    """Return whether a certificate name is an address: a name starting with a letter or * never is, and
    parsing each (~20 us as ipaddress refuses it) was a tenth of a /metrics scrape."""
    if name[:1].isalpha() or name[:1] == "*":
        return False
    return _ip(name) is not None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def _unix(iso: str | dt.datetime) -> int:
    moment = iso if isinstance(iso, dt.datetime) else dt.datetime.fromisoformat(iso)
    return int(moment.timestamp())


class _Fixed:
    """A collector of metrics made once, for one answer: each request gets its own registry."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics
