"""Adding a service from a probe URL: /services/new?url=... fills the form as `manage.py probe` reads the URL."""

from __future__ import annotations

import json

import pytest

from monitor.models import Service
from tests.dashboard.conftest import make_service

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def filled(client, url: str) -> dict:
    """Return the form's initial values after "Fill in" with `url`."""
    response = client.get("/services/new", {"url": url})
    assert response.status_code == 200
    return response.context["form"].initial


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtps://mail.example.com:465",
            {"protocol": "smtp", "tls_mode": "implicit", "host": "mail.example.com", "port": 465},
        ),
        (
            "submission://mail.example.com",
            {"protocol": "smtp", "tls_mode": "starttls", "host": "mail.example.com", "port": 587},
        ),
        (
            "imaps://imap.example.com",
            {"protocol": "imap", "tls_mode": "implicit", "host": "imap.example.com", "port": 993},
        ),
        ("tcp://10.0.0.5:6379", {"protocol": "tcp", "tls_mode": "none", "host": "10.0.0.5", "port": 6379}),
        ("ftps://files.example.com", {"protocol": "ftp", "tls_mode": "implicit", "port": 990}),
        ("mysql://monitor@db.example.com", {"protocol": "mysql", "port": 3306, "options": {"username": "monitor"}}),
        ("icmp://router.example.com", {"protocol": "icmp", "host": "router.example.com", "port": None}),
        ("tftp://pxe.example.com/pxelinux.0", {"protocol": "tftp", "port": 69, "options": {"filename": "pxelinux.0"}}),
        ("fastcgi://127.0.0.1:9001/ping", {"protocol": "fastcgi", "port": 9001, "options": {"path": "/ping"}}),
    ],
)
def test_a_url_fills_protocol_tls_mode_host_and_port(editor, url, expected):
    initial = filled(editor, url)

    assert {key: initial[key] for key in expected} == expected


def test_the_host_becomes_the_name(editor):
    assert filled(editor, "smtps://mail.example.com")["name"] == "mail.example.com"


def test_an_https_url_puts_its_path_and_query_into_the_options(editor):
    initial = filled(editor, "https://web.example.com/health?x=1")

    assert (initial["protocol"], initial["tls_mode"], initial["port"]) == ("http", "implicit", 443)
    assert initial["options"] == {"path": "/health?x=1"}


def test_a_dns_url_puts_its_query_name_and_type_into_the_options(editor):
    initial = filled(editor, "dns://9.9.9.9/example.com?type=MX")

    assert (initial["protocol"], initial["host"], initial["port"]) == ("dns", "9.9.9.9", 53)
    assert initial["options"] == {"query_name": "example.com", "record_type": "MX"}


def test_the_filled_options_are_shown_as_json_in_the_options_box(editor):
    html = editor.get("/services/new", {"url": "https://web.example.com/health?x=1"}).content.decode()

    assert json.dumps({"path": "/health?x=1"}).replace('"', "&quot;") in html


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("gopher://example.test", "unknown URL scheme gopher:; use one of: dhcp, dns,"),
        (
            "smtp://mail.example.com:99999",
            "the port in 'smtp://mail.example.com:99999' must be a number from 1 to 65535",
        ),
        ("tcp://mail.example.com", "tcp URLs need a port, e.g. tcp://mail.example.com:1234"),
        ("smtp://mail.example.com/path", "smtp URLs take no path or query"),
    ],
)
def test_a_bad_url_shows_the_probe_commands_error_at_the_url_field(editor, url, error):
    response = editor.get("/services/new", {"url": url})

    assert error in response.context["url_error"]
    html = response.content.decode()
    assert 'aria-describedby="id_url_helptext id_url_error"' in html
    assert '<ul class="errorlist" id="id_url_error"><li>' in html


def test_a_bad_url_leaves_the_form_empty(editor):
    assert editor.get("/services/new", {"url": "gopher://example.test"}).context["form"].initial == {}


def test_a_bad_url_is_shown_escaped(editor):
    html = editor.get("/services/new", {"url": "<script>alert(1)</script>://x"}).content.decode()

    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)" in html


@pytest.mark.parametrize(
    ("url", "saved"),
    [
        ("submission://mail.example.com", ("smtp", "starttls", "mail.example.com", 587)),
        ("icmp://router.example.com", ("icmp", "none", "router.example.com", 0)),
        ("telnet://switch.example.com", ("telnet", "none", "switch.example.com", 23)),
    ],
)
def test_a_filled_form_saves_as_the_url_describes(editor, url, saved):
    initial = filled(editor, url)
    data = {key: "" if value is None else value for key, value in initial.items()}
    data |= {"options": json.dumps(initial["options"]), "interval": 60, "timeout": 10, "enabled": "on"}
    data |= {"failure_threshold": 2, "recovery_threshold": 1, "action": "save"}

    editor.post("/services/new", data)

    service = Service.objects.get()
    assert (service.protocol, service.tls_mode, service.host, service.effective_port()) == saved


def test_the_url_box_is_only_on_the_add_page(editor):
    service = make_service()

    assert 'name="url"' not in editor.get(f"/services/{service.id}/edit").content.decode()


def test_a_viewer_cannot_fill_in_from_a_url(viewer):
    assert viewer.get("/services/new", {"url": "smtps://mail.example.com"}).status_code == 403
