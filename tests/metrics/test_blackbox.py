"""Result -> blackbox series: what blackbox's format needs that a probe against a server cannot show by itself."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics.blackbox import exposition, fnv1a, series
from monitor.probes import Failure, Phases, Result, Status


def answer(result: Result, prober: str, host: str = "192.0.2.1") -> dict:
    text = exposition(series(result, prober, host=host)).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def only(families: dict, name: str) -> float:
    (sample,) = families[name].samples
    return sample.value


def test_the_address_hash_is_fnv1a_of_its_bytes_as_go_hashes_them():
    assert fnv1a(bytes([127, 0, 0, 1])) == 3668918509  # what blackbox_exporter 0.23 reported for 127.0.0.1
    families = answer(Result(Status.UP, None, "ok", Phases(), address="::1"), "tcp")
    assert (only(families, "probe_ip_protocol"), only(families, "probe_ip_addr_hash")) == (6, fnv1a(bytes(15) + b"\1"))


def test_a_name_that_never_resolved_has_no_address_family():
    result = Result(Status.DOWN, Failure.DNS_RESOLUTION, "no such domain", Phases(resolve=0.01, total=0.01))
    families = answer(result, "tcp", host="nowhere.test")
    assert (only(families, "probe_ip_protocol"), only(families, "probe_ip_addr_hash")) == (0, 0)
    assert only(families, "portwatch_probe_failure_info") == 1


def test_a_warning_is_a_success_that_still_names_its_kind():
    result = Result(Status.WARNING, Failure.TLS_EXPIRING, "expires in 3 days", Phases())
    families = answer(result, "tcp")
    assert only(families, "probe_success") == 1
    assert families["portwatch_probe_failure_info"].samples[0].labels == {"kind": "tls_expiring"}


def test_what_the_engine_does_not_record_is_nan_or_unknown_not_zero():
    dns = answer(Result(Status.UP, None, "ok", Phases(), details={"rcode": "NOERROR", "answers": ["a"]}), "dns")
    assert math.isnan(only(dns, "probe_dns_authority_rrs")) and only(dns, "probe_dns_answer_rrs") == 1
    http = answer(Result(Status.DOWN, Failure.HTTP_STATUS, "HTTP 503", Phases(), details={"status": 503}), "http")
    assert (only(http, "probe_http_status_code"), only(http, "probe_http_content_length")) == (503, -1)
