"""Changing services through the dashboard: roles, the form's field errors, test without saving, pause, delete, bulk."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading

import pytest
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from dashboard import access, roles
from monitor.models import ProbeResult, Schedule, Service, ServiceState
from tests.dashboard.conftest import DOWN, UP, make_service, probes, user_with_role

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

HOSTILE = "<script>alert(1)</script>"
HOSTILE_IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Counters of manual probes live in the cache, which outlives a test's database transaction."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def banner_server():
    """Yield a function that starts a real TCP server on 127.0.0.1:0 greeting with one line; it returns the port."""
    running = []

    def start(greeting: bytes = b"220 ready\r\n", cert=None) -> int:
        loop = asyncio.new_event_loop()
        context = None
        if cert is not None:  # implicit TLS, as tls:// URLs and tls_mode implicit expect
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)

        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(greeting)
            await writer.drain()
            await reader.read()  # until the probe hangs up
            writer.close()

        server = loop.run_until_complete(asyncio.start_server(greet, "127.0.0.1", 0, ssl=context))
        threading.Thread(target=loop.run_forever, daemon=True).start()
        running.append((loop, server))
        return server.sockets[0].getsockname()[1]

    yield start
    for loop, server in running:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)


def flashed(response) -> list[str]:
    """Return the messages the view queued for the next page (without following the redirect)."""
    return [str(message) for message in get_messages(response.wsgi_request)]


def form_data(**fields: str) -> dict[str, str]:
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
        "locations": "",
        "failure_threshold": "2",
        "recovery_threshold": "1",
        "options": "{}",
        "action": "save",
    } | fields


def banner_form(port: int, **fields: str) -> dict[str, str]:
    return form_data(
        **{"protocol": "tcp", "host": "127.0.0.1", "port": str(port), "options": '{"read_banner": true}'} | fields
    )


# Who may -----------------------------------------------------------------------------------------

EDITING = [
    ("get", "/services/new"),
    ("post", "/services/new"),
    ("get", "/services/{id}/edit"),
    ("post", "/services/{id}/edit"),
    ("get", "/services/{id}/pause"),
    ("post", "/services/{id}/pause"),
    ("get", "/services/{id}/resume"),
    ("post", "/services/{id}/resume"),
    ("get", "/services/{id}/delete"),
    ("post", "/services/{id}/delete"),
    ("get", "/services/test"),
    ("post", "/services/test"),
    ("get", "/services/bulk"),
    ("post", "/services/bulk"),
]


@pytest.mark.parametrize(("method", "url"), EDITING)
def test_a_viewer_gets_403_from_every_editing_view(viewer, method, url):
    service = make_service(enabled=True)

    response = getattr(viewer, method)(url.format(id=service.id), {"service": [service.id], "action": "pause"})

    assert response.status_code == 403
    assert Service.objects.get().enabled


@pytest.mark.parametrize(("method", "url"), EDITING)
def test_a_user_without_a_role_gets_403_from_every_editing_view(nobody, method, url):
    service = make_service()

    assert getattr(nobody, method)(url.format(id=service.id)).status_code == 403


@pytest.mark.parametrize(("method", "url"), EDITING)
def test_anonymous_visitors_are_sent_to_log_in(client, method, url):
    service = make_service()
    path = url.format(id=service.id)

    response = getattr(client, method)(path)

    assert (response.status_code, response["Location"]) == (302, f"/login/?next={path}")


@pytest.mark.parametrize("url", ["/services/new", "/services/{id}/edit", "/services/{id}/delete"])
def test_an_editor_sees_the_editing_pages(editor, url):
    service = make_service()

    assert editor.get(url.format(id=service.id)).status_code == 200


@pytest.mark.parametrize("action", ["pause", "resume", "bulk", "test"])
def test_actions_that_change_or_probe_refuse_get(editor, action):
    service = make_service()
    url = f"/services/{service.id}/{action}" if action in ("pause", "resume") else f"/services/{action}"

    assert editor.get(url).status_code == 405


def test_a_post_without_its_csrf_token_is_refused(db):
    service = make_service()
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user_with_role("strict", roles.EDITOR))

    response = strict.post(f"/services/{service.id}/pause")

    assert response.status_code == 403
    assert Service.objects.get().enabled


# The form ---------------------------------------------------------------------------------------


def test_saving_a_new_service_redirects_to_its_page_with_a_message(editor):
    response = editor.post("/services/new", form_data())

    service = Service.objects.get()
    assert (response.status_code, response["Location"], flashed(response)) == (
        302,
        f"/services/{service.id}/",
        ["Added mail."],
    )


def test_saving_an_edit_changes_the_service(editor):
    service = make_service(name="mail", host="127.0.0.1")

    response = editor.post(f"/services/{service.id}/edit", form_data(host="smtp.example.org", interval="120"))

    assert response["Location"] == f"/services/{service.id}/"
    service.refresh_from_db()
    assert (service.host, service.interval) == ("smtp.example.org", 120)


@pytest.mark.parametrize(
    ("fields", "field", "error"),
    [
        (
            {"port": "70000"},
            "port",
            "Port must be between 1 and 65535, or empty for the protocol's standard port, not 70000.",
        ),
        ({"timeout": "90"}, "timeout", "Timeout must be shorter than the interval (60 s), not 90 s."),
        (
            {"tls_mode": "implicit", "protocol": "dns"},
            "tls_mode",
            "TLS mode for dns must be one of none, not 'implicit'.",
        ),
        ({"options": '{"colour": 1}'}, "options", "options.colour: unknown option"),
        ({"host": "mail example.com"}, "host", "contains a space"),
    ],
)
def test_the_form_shows_the_models_error_at_the_field(editor, fields, field, error):
    response = editor.post("/services/new", form_data(**fields))

    assert response.status_code == 200
    assert any(error in message for message in response.context["form"].errors[field])
    assert Service.objects.count() == 0


def test_a_field_error_is_rendered_under_its_input_which_points_at_it(editor):
    html = editor.post("/services/new", form_data(timeout="90")).content.decode()

    assert 'aria-describedby="id_timeout_helptext id_timeout_error"' in html
    assert (
        '<ul class="errorlist" id="id_timeout_error"><li>Timeout must be shorter than the interval (60 s), not 90 s.'
        in html
    )


def test_the_form_lists_each_protocols_options_and_tls_modes_from_the_engine(editor):
    html = editor.get("/services/new").content.decode()

    assert "tcp: read_banner, send, expect." in html
    assert "smtp: none, starttls, implicit" in html


def test_the_edit_page_escapes_a_hostile_service_name(editor):
    service = make_service(name=HOSTILE)

    html = editor.get(f"/services/{service.id}/edit").content.decode()

    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# Test without saving ----------------------------------------------------------------------------


def test_the_test_button_probes_a_real_server_and_shows_it_up(editor, banner_server):
    port = banner_server()

    response = editor.post("/services/new", banner_form(port, action="test"))

    assert response.status_code == 200
    result = response.context["result"]
    assert (result.status, result.banner) == ("up", "220 ready")
    assert 'id="test-result"' in response.content.decode()


def test_the_test_button_saves_nothing(editor, banner_server):
    port = banner_server()

    editor.post("/services/new", banner_form(port, action="test"))

    assert (Service.objects.count(), ProbeResult.objects.count(), ServiceState.objects.count()) == (0, 0, 0)


def test_testing_an_edit_leaves_the_stored_service_as_it_was(editor, banner_server):
    service = make_service(name="old", protocol="smtp", host="127.0.0.1", port=25)
    port = banner_server()

    response = editor.post(f"/services/{service.id}/edit", banner_form(port, name="new", action="test"))

    assert response.context["result"].status == "up"
    service.refresh_from_db()
    assert (service.name, service.protocol, service.port) == ("old", "smtp", 25)


def test_testing_an_edit_keeps_the_stored_name_in_the_heading(editor, banner_server):
    service = make_service(name="stored-name")

    response = editor.post(f"/services/{service.id}/edit", banner_form(banner_server(), name="typed", action="test"))

    assert response.context["service"].name == "stored-name"
    assert 'value="typed"' in response.content.decode()


def test_the_test_keeps_the_values_typed_in_the_form(editor, banner_server):
    port = banner_server()

    html = editor.post("/services/new", banner_form(port, name="typed-name", action="test")).content.decode()

    assert 'value="typed-name"' in html


def test_the_test_shows_the_certificate_the_server_presented(editor, banner_server, certs):
    port = banner_server(cert=certs.good)
    options = json.dumps({"read_banner": True, "tls_ca_file": certs.ca_file})

    response = editor.post("/services/new", banner_form(port, tls_mode="implicit", options=options, action="test"))

    html = response.content.decode()
    assert response.context["result"].tls.verified
    assert "<dt>Verified</dt><dd>yes</dd>" in html
    assert "<dt>Names</dt><dd>localhost, 127.0.0.1, ::1</dd>" in html


def test_the_test_escapes_what_the_server_sent(editor, banner_server):
    port = banner_server(f"220 {HOSTILE_IMG}\r\n".encode())

    html = editor.post("/services/new", banner_form(port, action="test")).content.decode()

    assert HOSTILE_IMG not in html
    assert "220 &lt;img src=x onerror=alert(1)&gt;" in html


def test_the_test_of_an_invalid_form_shows_the_errors_and_probes_nothing(editor):
    response = editor.post("/services/new", form_data(timeout="90", action="test"))

    assert "result" not in response.context
    assert response.context["form"].errors["timeout"]


def test_the_test_route_tests_a_posted_form(editor, banner_server):
    port = banner_server()

    response = editor.post("/services/test", banner_form(port))

    assert response.context["result"].status == "up"
    assert Service.objects.count() == 0


def test_tests_over_the_rate_limit_get_429_and_a_clear_message(editor, banner_server):
    port = banner_server()
    for _ in range(access.MANUAL_PROBES_PER_WINDOW):
        assert editor.post("/services/new", banner_form(port, action="test")).status_code == 200

    response = editor.post("/services/new", banner_form(port, action="test"))

    assert response.status_code == 429
    assert "Too many probes started by hand" in response.content.decode()
    assert 'value="127.0.0.1"' in response.content.decode()  # the form is kept


# Pause, resume, delete --------------------------------------------------------------------------


def test_pausing_disables_the_service_and_pauses_its_state(editor):
    service = make_service()
    probes(service, [UP])

    editor.post(f"/services/{service.id}/pause")

    assert not Service.objects.get().enabled
    assert ServiceState.objects.get().status == "paused"


def test_resuming_enables_the_service_and_schedules_it_again(editor):
    service = make_service(enabled=False)

    editor.post(f"/services/{service.id}/resume")

    assert Service.objects.get().enabled
    assert Schedule.objects.filter(service=service).exists()


def test_pausing_returns_to_a_local_next_page(editor):
    service = make_service()

    response = editor.post(f"/services/{service.id}/pause", {"next": "/?tag=mail"})

    assert response["Location"] == "/?tag=mail"


def test_pausing_ignores_an_external_next_and_returns_to_the_service(editor):
    service = make_service()

    response = editor.post(f"/services/{service.id}/pause", {"next": "https://evil.test/"})

    assert response["Location"] == f"/services/{service.id}/"


def test_the_delete_page_asks_first_and_deletes_nothing(editor):
    service = make_service(name=HOSTILE)

    html = editor.get(f"/services/{service.id}/delete").content.decode()

    assert '<button type="submit" class="danger">Delete</button>' in html
    assert "&lt;script&gt;" in html and HOSTILE not in html
    assert Service.objects.count() == 1


def test_deleting_removes_the_service_and_its_history(editor):
    service = make_service()
    probes(service, [DOWN, DOWN])

    response = editor.post(f"/services/{service.id}/delete")

    assert (response["Location"], flashed(response)) == ("/", ["Deleted mail and its history."])
    assert (Service.objects.count(), ProbeResult.objects.count(), ServiceState.objects.count()) == (0, 0, 0)


# Bulk -------------------------------------------------------------------------------------------


def test_bulk_pause_pauses_every_selected_service_and_its_state(editor):
    services = [make_service(f"s{n}") for n in range(3)]
    for service in services:
        probes(service, [UP])

    response = editor.post("/services/bulk", {"service": [s.id for s in services], "action": "pause"})

    assert not Service.objects.filter(enabled=True).exists()
    assert set(ServiceState.objects.values_list("status", flat=True)) == {"paused"}
    assert flashed(response) == ["Paused 3 services."]


def test_bulk_pause_removes_the_schedules_at_once(editor):
    services = [make_service(f"s{n}") for n in range(2)]

    editor.post("/services/bulk", {"service": [s.id for s in services], "action": "pause"})

    assert not Schedule.objects.exists()


def test_bulk_pause_leaves_unselected_services_running(editor):
    chosen = make_service("chosen")
    make_service("other")

    editor.post("/services/bulk", {"service": [chosen.id], "action": "pause"})

    assert list(Service.objects.filter(enabled=True).values_list("name", flat=True)) == ["other"]


def test_bulk_resume_enables_and_schedules_the_services(editor):
    services = [make_service(f"s{n}", enabled=False) for n in range(2)]

    editor.post("/services/bulk", {"service": [s.id for s in services], "action": "resume"})

    assert Service.objects.filter(enabled=True).count() == 2
    assert Schedule.objects.count() == 2


def test_bulk_tag_adds_a_tag_once(editor):
    first, second = make_service("a", tags="mail"), make_service("b", tags="web,mail")

    editor.post("/services/bulk", {"service": [first.id, second.id], "action": "tag", "tag": "Prod"})

    assert dict(Service.objects.values_list("name", "tags")) == {"a": "mail,prod", "b": "web,mail,prod"}


def test_bulk_untag_removes_the_tag(editor):
    service = make_service("a", tags="mail,prod,web")

    editor.post("/services/bulk", {"service": [service.id], "action": "untag", "tag": "prod"})

    assert Service.objects.get().tags == "mail,web"


def test_bulk_tag_refuses_a_bad_tag_with_the_models_message(editor):
    service = make_service("a", tags="mail")

    response = editor.post("/services/bulk", {"service": [service.id], "action": "tag", "tag": "-bad"})

    assert Service.objects.get().tags == "mail"
    assert "start with a letter or digit" in flashed(response)[0]


def test_bulk_with_nothing_selected_says_so(editor):
    response = editor.post("/services/bulk", {"action": "pause"})

    assert flashed(response) == ["Select at least one service first."]


def test_bulk_ignores_an_external_next(editor):
    service = make_service()

    response = editor.post("/services/bulk", {"service": [service.id], "action": "pause", "next": "https://evil.test/"})

    assert response["Location"] == "/"


# Queries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/services/new", "/services/{id}/edit", "/services/{id}/delete"])
def test_a_page_runs_as_many_queries_with_many_services_as_with_one(editor, url):
    service = make_service("first")
    path = url.format(id=service.id)

    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert editor.get(path).status_code == 200
        return len(captured)

    few = count()
    for n in range(20):
        make_service(f"more-{n}")

    assert count() == few
