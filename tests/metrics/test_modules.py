"""Mapping blackbox modules onto Portwatch: the shipped file, each option's mapping, and each refusal's exact text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.metrics.modules import ModuleError, ModulesFileError, load, map_module, parse_duration
from monitor.probes import Target

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "blackbox.yml"


def module(text: str, name: str = "m"):
    return map_module(name, yaml.safe_load(text))


def refusal(text: str) -> str:
    with pytest.raises(ModuleError) as caught:
        module(text)
    return str(caught.value)


def test_every_shipped_module_maps_with_blackboxs_example_names():
    modules = load(SHIPPED).modules
    assert {"http_2xx", "tcp_connect", "tls_connect", "smtp_starttls", "dns_udp"} <= set(modules)
    assert [name for name, mapped in modules.items() if isinstance(mapped, ModuleError)] == []
    assert (modules["smtp_starttls"].protocol, modules["smtp_starttls"].tls_mode) == ("smtp", "starttls")
    assert (modules["tls_connect"].protocol, modules["tls_connect"].tls_mode) == ("tcp", "implicit")


def test_an_http_module_maps_status_codes_method_tls_config_and_redirects():
    mapped = module(
        """
        prober: http
        timeout: 1m30s
        http:
          valid_status_codes: [200, 301]
          method: head
          no_follow_redirects: true
          preferred_ip_protocol: ip4
          ip_protocol_fallback: false
          tls_config: {insecure_skip_verify: true, server_name: www.example.com}
        """
    )
    target, options = mapped.request("https://192.0.2.1:8443/health?x=1")

    assert mapped.timeout == 90
    assert target == Target("192.0.2.1", 8443, "implicit")
    assert (options.path, options.method, options.expect_status) == ("/health?x=1", "HEAD", "200,301")
    assert (options.follow_redirects, options.ip_family, options.tls_verify) == (False, "ipv4", False)
    assert options.tls_server_name == "www.example.com"


def test_several_body_regexps_must_all_match():
    mapped = module('prober: http\nhttp: {fail_if_body_not_matches_regexp: ["alpha", "be+ta"]}')
    _, options = mapped.request("example.com")

    assert re.search(options.regex, "beeta then alpha")
    assert not re.search(options.regex, "alpha only")


def test_a_dns_module_maps_blackbox_defaults():
    mapped = module("prober: dns\ndns: {query_name: example.com, transport_protocol: tcp}")
    target, options = mapped.request("192.0.2.53")

    assert target == Target("192.0.2.53", 53, "none")
    assert (options.query_name, options.record_type, options.expected_rcode, options.transport) == (
        "example.com",
        "ANY",
        "NOERROR",
        "tcp",
    )
    assert options.ip_family == "any"  # ip6 preferred with fallback: Portwatch tries both, IPv4 first


def test_an_icmp_module_sends_one_echo_request_of_blackboxs_payload_to_a_bare_host():
    mapped = module("prober: icmp\nicmp: {preferred_ip_protocol: ip4, ip_protocol_fallback: false, ttl: 0}")
    target, options = mapped.request("192.0.2.1")

    assert (mapped.prober, mapped.protocol, target) == ("icmp", "icmp", Target("192.0.2.1", 0, "none"))
    assert (options.count, options.payload_size, options.ip_family) == (1, 28, "ipv4")
    assert module("prober: icmp\nicmp: {payload_size: 1400}").request("::1")[1].payload_size == 1400
    assert module("prober: icmp").request("::1")[0].host == "::1"  # an IPv6 literal needs no brackets


@pytest.mark.parametrize("target", ["192.0.2.1:80", "[::1]:7", "http://192.0.2.1/", "a b"])
def test_an_icmp_target_with_a_port_or_path_is_refused(target):
    with pytest.raises(ModuleError) as caught:
        module("prober: icmp").request(target)
    assert (
        str(caught.value)
        == f"target {target!r}: module 'm' uses the icmp prober, so the target is a host without a port"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prober: grpc", "module 'm': prober grpc is not one Portwatch has; it probes with tcp, http, dns, icmp"),
        (
            "prober: icmp\nicmp: {dont_fragment: true}",
            "module 'm': icmp.dont_fragment: Portwatch cannot set the don't-fragment flag, so a path MTU check would "
            "pass untested; leave it out or false",
        ),
        (
            "prober: icmp\nicmp: {ttl: 5}",
            "module 'm': icmp.ttl: Portwatch sends with the system's TTL (hop limit) and cannot set another; "
            "leave it out or 0",
        ),
        (
            "prober: icmp\nicmp: {source_ip_address: 192.0.2.7}",
            "module 'm': icmp.source_ip_address: Portwatch sends from the address the system's routing picks",
        ),
        (
            "prober: icmp\nicmp: {hop_limit: 3}",
            "module 'm': icmp.hop_limit: not a blackbox option (its ttl sets the hop limit); Portwatch sets none",
        ),
        ("prober: icmp\nicmp: {payload_size: 9000}", "module 'm': icmp.payload_size: must be between 0 and 8972"),
        ("prober: icmp\nicmp: {count: 3}", "module 'm': icmp.count: Portwatch cannot map this option"),
        ("prober: http\nhttp: {body: x}", "module 'm': http.body: Portwatch cannot map this option; Portwatch maps"),
        ("prober: http\nhttp: {enable_http2: true}", "module 'm': http.enable_http2: Portwatch speaks HTTP/1.1 only"),
        (
            "prober: http\nhttp: {tls_config: {cert_file: c.pem}}",
            "module 'm': http.tls_config.cert_file: Portwatch cannot map this option; it maps insecure_skip_verify,",
        ),
        ("prober: http\nhttp: {method: BAD METHOD}", "module 'm': http.method: must be a method name"),
        ("prober: dns\ndns: {}", "module 'm': dns.query_name: is required, as blackbox requires it"),
        (
            "prober: dns\ndns: {query_name: a.test, valid_rcodes: [NOERROR, NXDOMAIN]}",
            "module 'm': dns.valid_rcodes: Portwatch expects exactly one response code",
        ),
        ("prober: tcp\ntimeout: soon", "module 'm': timeout: must be a duration such as 5s, 1m30s or 500ms"),
        ("prober: tcp\nhttp: {}", "module 'm': has http options, but its prober is tcp"),
        ("prober: tcp\nverbose: true", "module 'm': verbose: Portwatch cannot map this option"),
    ],
)
def test_what_cannot_be_mapped_is_refused_by_name(text, message):
    assert refusal(text).startswith(message)


def test_a_target_must_fit_the_prober():
    mapped = module("prober: tcp")
    with pytest.raises(ModuleError, match=r"^target 'example.com': module 'm' uses the tcp prober"):
        mapped.request("example.com")
    with pytest.raises(ModuleError, match=r"^target 'a b:80': "):
        mapped.request("a b:80")


def test_one_broken_module_leaves_the_others_working(tmp_path):
    path = tmp_path / "blackbox.yml"
    path.write_text("modules:\n  ok: {prober: tcp}\n  broken: {prober: grpc}\n")
    modules = load(path)

    assert modules.get("ok").protocol == "tcp"
    with pytest.raises(ModuleError, match="prober grpc is not one Portwatch has"):
        modules.get("broken")


def test_the_file_is_read_again_when_it_changes(tmp_path):
    path = tmp_path / "blackbox.yml"
    path.write_text("modules:\n  one: {prober: tcp}\n")
    assert set(load(path).modules) == {"one"}
    path.write_text("modules:\n  one: {prober: tcp}\n  two: {prober: tcp}\n")
    assert set(load(path).modules) == {"one", "two"}


@pytest.mark.parametrize(
    ("text", "message"),
    [("modules: [\n", "is not valid YAML"), ("probes: {}\n", "must have a mapping `modules:`, as blackbox.yml does")],
)
def test_a_broken_file_is_refused_naming_it(tmp_path, text, message):
    path = tmp_path / "blackbox.yml"
    path.write_text(text)
    with pytest.raises(ModulesFileError, match=f"the probe modules file {path} "):
        load(path)
    with pytest.raises(ModulesFileError, match=message):
        load(path)


def test_durations_read_as_go_writes_them():
    assert [parse_duration(text, "t") for text in ("5s", "500ms", "1m30s", "1.5s", 2)] == [5, 0.5, 90, 1.5, 2]


PLAIN = """
import json, sys
import monitor.metrics.blackbox, monitor.metrics.guard, monitor.metrics.modules, monitor.metrics.probe
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"django", "celery"})))
"""


def test_the_mapping_and_the_series_are_plain_python():
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    run = subprocess.run([sys.executable, "-c", PLAIN], cwd=SHIPPED.parents[2], env=env, capture_output=True, text=True)
    assert (run.returncode, run.stdout.strip()) == (0, "[]"), run.stderr
