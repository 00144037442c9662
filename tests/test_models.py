"""The Service model: each validation rule with its exact message, normalised hosts and tags, ports, engine calls."""

from __future__ import annotations

import dataclasses

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from monitor.models import Service
from monitor.probes import PROTOCOLS, Target
from monitor.probes.protocols import tcp
from tests.conftest import need

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

TCP_OPTIONS = "expect, ip_family, read_banner, resolver, send, tls_ca_file, tls_server_name, tls_verify, tls_warn_days"


def service(**fields) -> Service:
    return Service(**({"name": "mail", "host": "mail.example.com", "protocol": "smtp"} | fields))


def errors_of(candidate: Service) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as error:
        candidate.full_clean()
    return error.value.message_dict


def needs_tls_mode(protocol: str, mode: str) -> None:
    need(mode in PROTOCOLS[protocol].tls_modes, f"the {protocol} module does not support {mode} yet")


def test_a_valid_service_passes_and_saves():
    candidate = service(port=587, tags="mail", options={"tls_warn_days": 7})
    candidate.full_clean()
    candidate.save()
    assert Service.objects.get(name="mail").port == 587


@pytest.mark.parametrize("port", [0, 70000, -1])
def test_it_refuses_a_port_outside_1_to_65535(port):
    assert errors_of(service(port=port)) == {
        "port": [f"Port must be between 1 and 65535, or empty for the protocol's standard port, not {port}."]
    }


def test_it_refuses_an_unknown_protocol_listing_the_known_ones():
    assert errors_of(service(protocol="gopher")) == {
        "protocol": [f"Protocol must be one of {', '.join(PROTOCOLS)}, not 'gopher'."]
    }


def test_it_refuses_an_unknown_tls_mode():
    assert errors_of(service(tls_mode="sometimes")) == {
        "tls_mode": ["TLS mode must be one of none, starttls, implicit, not 'sometimes'."]
    }


def test_it_refuses_a_tls_mode_the_protocol_does_not_support():
    assert errors_of(service(protocol="dns", host="127.0.0.1", tls_mode="starttls")) == {
        "tls_mode": ["TLS mode for dns must be one of none, not 'starttls'."]
    }


def test_it_refuses_starttls_for_tcp():
    assert errors_of(service(protocol="tcp", port=22, tls_mode="starttls")) == {
        "tls_mode": ["TLS mode for tcp must be one of none, implicit, not 'starttls'."]
    }


def test_it_refuses_an_interval_under_5_seconds():
    assert errors_of(service(interval=3, timeout=1)) == {"interval": ["Interval must be at least 5 seconds, not 3."]}


def test_it_refuses_a_timeout_as_long_as_the_interval():
    assert errors_of(service(interval=60, timeout=60)) == {
        "timeout": ["Timeout must be shorter than the interval (60 s), not 60 s."]
    }


def test_it_refuses_a_timeout_of_zero():
    assert errors_of(service(timeout=0)) == {"timeout": ["Timeout must be more than 0 seconds, not 0."]}


def test_it_accepts_a_fractional_timeout():
    candidate = service(interval=5, timeout=4.5)
    candidate.full_clean()
    assert candidate.timeout == 4.5


def test_it_refuses_tcp_without_a_port():
    assert errors_of(service(protocol="tcp", port=None)) == {"port": ["Port is required: tcp has no standard port."]}


def test_it_refuses_tcp_with_implicit_tls_without_a_port():
    assert errors_of(service(protocol="tcp", tls_mode="implicit")) == {
        "port": ["Port is required: tcp has no standard port."]
    }


def test_it_refuses_an_unknown_option_naming_it_and_the_known_ones():
    assert errors_of(service(protocol="tcp", port=22, options={"colour": "blue"})) == {
        "options": [f"options.colour: unknown option; known options are {TCP_OPTIONS}"]
    }


def test_it_refuses_a_bad_common_option_value():
    assert errors_of(service(options={"tls_warn_days": 5000})) == {
        "options": ["options.tls_warn_days: must be between 0 and 3650 days, not 5000"]
    }


def test_it_refuses_an_option_of_the_wrong_type():
    assert errors_of(service(options={"ip_family": "ipv5"})) == {
        "options": ["options.ip_family: must be one of any, ipv4, ipv6, not 'ipv5'"]
    }


def test_it_refuses_a_bad_tcp_expect_pattern():
    [message] = errors_of(service(protocol="tcp", port=22, options={"expect": "(unclosed"}))["options"]
    assert message.startswith("options.expect: is not a valid regular expression: ")


def test_it_refuses_options_that_are_not_a_json_object():
    assert errors_of(service(options=["tls_warn_days"])) == {
        "options": ['Options must be a JSON object of option names and values, such as {"tls_warn_days": 7}, not list.']
    }


def test_it_stores_option_values_typed():
    candidate = service(options={"tls_warn_days": "7", "tls_verify": "false"})
    candidate.full_clean()
    assert candidate.options == {"tls_warn_days": 7, "tls_verify": False}


def test_http_expect_status_is_validated_by_the_http_module():
    need(
        "expect_status" in {f.name for f in dataclasses.fields(PROTOCOLS["http"].options)}, "http has no expect_status"
    )
    good = service(protocol="http", host="www.example.com", options={"expect_status": "200-299,301"})
    good.full_clean()
    [message] = errors_of(service(protocol="http", host="www.example.com", options={"expect_status": "banana"}))[
        "options"
    ]
    assert message.startswith("options.expect_status: ")


def test_it_stores_an_international_host_name_in_ascii_form():
    candidate = service(host="Bücher.example")
    candidate.full_clean()
    assert candidate.host == "xn--bcher-kva.example"


def test_it_accepts_an_ipv6_literal_and_stores_it_canonical():
    candidate = service(host="[2001:DB8:0::1]")
    candidate.full_clean()
    assert candidate.host == "2001:db8::1"


def test_it_accepts_an_ipv4_address():
    candidate = service(host="192.0.2.10")
    candidate.full_clean()
    assert candidate.host == "192.0.2.10"


def test_it_accepts_underscores_and_drops_the_root_dot():
    candidate = service(host="Mail_Server.Example.COM.")
    candidate.full_clean()
    assert candidate.host == "mail_server.example.com"


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("mail example.com", "'mail example.com' contains a space"),
        ("mail..example.com", "'mail..example.com' has an empty label (two dots in a row, or a leading dot)"),
        ("a" * 64 + ".example", f"the label {'a' * 20!r}... is 64 characters long; the most is 63"),
        (".".join(["a" * 60] * 5), "the name is 304 characters long; the most a DNS name can have is 253"),
        (
            "-mail.example.com",
            "the label '-mail' may hold only letters, digits, hyphens and underscores, "
            "and must not start or end with a hyphen",
        ),
        ("2001:db8::zz", "'2001:db8::zz' is not a valid IPv6 address"),
        ("192.0.2", "'192.0.2' is neither an IPv4 address (four numbers 0-255) nor a DNS name"),
        (
            "https://mail.example.com",
            "'https://mail.example.com' looks like a URL; enter only the host name and choose the protocol",
        ),
    ],
)
def test_it_refuses_a_bad_host_saying_what_is_allowed(host, problem):
    assert errors_of(service(host=host)) == {
        "host": [f"Host must be a DNS name, an IPv4 address or an IPv6 address: {problem}."]
    }


def test_it_refuses_an_empty_host():
    assert errors_of(service(host="")) == {
        "host": ["Host is required: a DNS name, an IPv4 address or an IPv6 address."]
    }


def test_it_normalises_tags_lowercase_and_without_duplicates():
    candidate = service(tags=" Mail, production  MAIL,,eu-west ")
    candidate.full_clean()
    assert candidate.tags == "mail,production,eu-west"
    assert candidate.tag_list == ["mail", "production", "eu-west"]


def test_it_refuses_a_tag_with_punctuation():
    assert errors_of(service(tags="mail, prod!")) == {
        "tags": [
            "Tags are separated by commas or spaces; each may hold letters, digits, '-', '_' and '.', "
            "start with a letter or digit and have at most 40 characters, not 'prod!'."
        ]
    }


def test_it_refuses_a_second_service_with_the_same_name():
    service().save()
    assert errors_of(service(host="other.example.com")) == {"name": ["Service with this Name already exists."]}


def test_the_database_refuses_an_out_of_range_port_written_around_validation():
    service(port=25).save()
    with pytest.raises(IntegrityError):
        Service.objects.update(port=0)


@pytest.mark.parametrize(
    ("protocol", "tls_mode", "port"),
    [
        ("smtp", "none", 25),
        ("smtp", "starttls", 25),
        ("smtp", "implicit", 465),
        ("pop3", "none", 110),
        ("pop3", "implicit", 995),
        ("imap", "none", 143),
        ("imap", "implicit", 993),
        ("http", "none", 80),
        ("http", "implicit", 443),
        ("dns", "none", 53),
    ],
)
def test_an_empty_port_means_the_standard_port(protocol, tls_mode, port):
    assert service(protocol=protocol, tls_mode=tls_mode).effective_port() == port


def test_a_set_port_wins_over_the_standard_port():
    assert service(protocol="smtp", port=2525).effective_port() == 2525


@pytest.mark.parametrize(("protocol", "tls_mode"), [("smtp", "starttls"), ("imap", "implicit"), ("http", "implicit")])
def test_a_service_on_its_standard_port_validates_without_a_port(protocol, tls_mode):
    needs_tls_mode(protocol, tls_mode)
    service(protocol=protocol, tls_mode=tls_mode).full_clean()


def test_target_is_what_the_engine_connects_to():
    candidate = service(protocol="imap", host="imap.example.com", tls_mode="none")
    assert candidate.target() == Target("imap.example.com", 143, "none")


def test_probe_options_are_the_protocols_typed_options():
    options = service(protocol="tcp", port=22, options={"read_banner": True, "expect": "^SSH-"}).probe_options()
    assert options == tcp.Options(read_banner=True, expect="^SSH-")


def test_a_protocol_without_ports_takes_none_and_is_probed_without_one():
    ping = Service(name="router", host="192.0.2.1", protocol="icmp")
    ping.full_clean()
    assert ping.target() == Target("192.0.2.1", 0, "none")
    assert errors_of(Service(name="router", host="192.0.2.1", protocol="icmp", port=7)) == {
        "port": ["Port must be empty: icmp has no ports."]
    }


def test_tls_options_are_refused_where_the_protocol_cannot_speak_tls():
    assert errors_of(service(protocol="udp", port=8000, options={"send": "ping", "tls_warn_days": 7})) == {
        "options": [
            "options.tls_warn_days: unknown option; known options are expect, expect_hex, ip_family, resolver, "
            "send, send_hex"
        ]
    }
