"""The admin through real requests: the add form shows each error at its field and saves good services; ensureadmin."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils.html import escape

from monitor.models import Service

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/monitor/service/add/"


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", password="a long test password")
    client.force_login(user)
    return client


def form_data(**fields) -> dict[str, str]:
    return {
        "name": "mail",
        "enabled": "on",
        "tags": "mail",
        "protocol": "smtp",
        "host": "mail.example.com",
        "port": "",
        "tls_mode": "none",
        "interval": "60",
        "timeout": "10",
        "failure_threshold": "2",
        "recovery_threshold": "1",
        "options": "{}",
    } | fields


def test_the_root_asks_anonymous_visitors_to_log_in(client):
    response = client.get("/")
    assert (response.status_code, response["Location"]) == (302, "/login/?next=/")


def test_the_add_form_lists_each_protocols_options(admin_client):
    response = admin_client.get(ADD_URL)
    assert response.status_code == 200
    assert "tcp: read_banner, send, expect." in response.content.decode()


def test_the_add_form_refuses_a_bad_service_showing_each_error_at_its_field(admin_client):
    response = admin_client.post(ADD_URL, form_data(host="mail example.com", port="70000", options='{"colour": 1}'))
    assert response.status_code == 200  # the form again, not a redirect
    errors = response.context["adminform"].form.errors
    host_error = "Host must be a DNS name, an IPv4 address or an IPv6 address: 'mail example.com' contains a space."
    port_error = "Port must be between 1 and 65535, or empty for the protocol's standard port, not 70000."
    assert errors["host"] == [host_error]
    assert errors["port"] == [port_error]
    assert errors["options"][0].startswith("options.colour: unknown option")
    page = response.content.decode()
    assert escape(host_error) in page and escape(port_error) in page
    assert not Service.objects.exists()


def test_the_add_form_refuses_a_tls_mode_the_protocol_lacks(admin_client):
    response = admin_client.post(ADD_URL, form_data(protocol="dns", host="127.0.0.1", tls_mode="implicit"))
    assert response.context["adminform"].form.errors["tls_mode"] == [
        "TLS mode for dns must be one of none, not 'implicit'."
    ]


def test_the_add_form_saves_a_good_service_normalised(admin_client):
    response = admin_client.post(
        ADD_URL, form_data(host="Bücher.example", tags="Mail, EU", options='{"tls_warn_days": "7"}')
    )
    assert (response.status_code, response["Location"]) == (302, "/admin/monitor/service/")
    saved = Service.objects.get(name="mail")
    assert (saved.host, saved.port, saved.tags, saved.options) == (
        "xn--bcher-kva.example",
        None,
        "mail,eu",
        {"tls_warn_days": 7},
    )


def test_the_add_form_saves_an_emptied_options_box_as_no_options(admin_client):
    admin_client.post(ADD_URL, form_data(options=""))
    assert Service.objects.get(name="mail").options == {}


def test_the_list_finds_a_service_by_host(admin_client):
    Service.objects.create(name="imap", host="imap.example.com", protocol="imap")
    Service.objects.create(name="web", host="www.example.com", protocol="http")
    page = admin_client.get("/admin/monitor/service/", {"q": "imap.example"}).content.decode()
    assert "imap.example.com" in page and "www.example.com" not in page


def test_ensureadmin_creates_one_superuser_whose_printed_password_works(client):
    out = io.StringIO()
    call_command("ensureadmin", stdout=out)
    password = re.search(r"password: (\S+)", out.getvalue())[1]
    assert client.login(username="admin", password=password)

    again = io.StringIO()
    call_command("ensureadmin", stdout=again)
    assert again.getvalue() == "A superuser exists already; no user created.\n"
    assert get_user_model().objects.count() == 1


def test_ensureadmin_will_not_promote_an_existing_ordinary_user():
    get_user_model().objects.create_user("admin", password="ordinary user password")
    with pytest.raises(CommandError, match="exists but is not a superuser"):
        call_command("ensureadmin", stdout=io.StringIO())
