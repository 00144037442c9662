"""The dashboard's channel pages: roles, secrets never shown, the form, "send test" against real receivers, health."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.cache import cache
from django.db.models.expressions import RawSQL
from django.test import Client
from django.urls import reverse

from dashboard.access import MANUAL_PROBES_PER_WINDOW
from monitor.models import Alert, Channel, DeliveryAttempt, Notification
from tests.alerting.conftest import receiver, refused_url  # noqa: F401  (fixtures)
from tests.dashboard.conftest import client_for, make_service, user_with_role
from tests.peers.http_server import Reply

pytestmark = pytest.mark.django_db

PATH_TOKEN = "T0KEN-in-the-path-4242"
SECRET = "signing-s3cret-abcdefgh"


@pytest.fixture(autouse=True)
def fresh_rate_limit():
    """The limit is counted in the cache by user id, and ids come back after each test's rollback."""
    cache.clear()


def form_data(**fields) -> dict[str, str]:
    return {
        "name": "ops hook",
        "kind": "webhook",
        "enabled": "on",
        "url": "",
        "secret": "",
        "timeout": "5",
        "tags": "",
        "group_window": "0",
        "escalate_after_minutes": "15",
        "schedule_timezone": "UTC",
    } | fields


def webhook(url: str = f"http://127.0.0.1:9/hooks/{PATH_TOKEN}", **fields) -> Channel:
    return Channel.objects.create(name=fields.pop("name", "ops hook"), kind="webhook", url=url, **fields)


# Seeing and the roles -----------------------------------------------------------------------------


def test_a_viewer_sees_the_list_with_the_url_masked_and_no_way_to_change(viewer):
    channel = webhook(secret=SECRET)
    page = viewer.get("/channels/").content.decode()
    assert "ops hook" in page and "http://127.0.0.1:9/***" in page
    assert PATH_TOKEN not in page and SECRET not in page
    assert "Add channel" not in page
    detail = viewer.get(f"/channels/{channel.pk}/").content.decode()
    assert PATH_TOKEN not in detail and SECRET not in detail and "Send test" not in detail


@pytest.mark.parametrize("who", ["viewer", "editor"])
def test_only_admins_may_add_edit_delete_or_test(request, who):
    client = request.getfixturevalue(who)
    channel = webhook()
    assert client.get("/channels/new").status_code == 403
    assert client.get(f"/channels/{channel.pk}/edit").status_code == 403
    assert client.post(f"/channels/{channel.pk}/delete").status_code == 403
    assert client.post(f"/channels/{channel.pk}/test").status_code == 403
    assert Channel.objects.filter(pk=channel.pk).exists()


def test_without_a_role_channels_are_refused_and_anonymous_visitors_sent_to_log_in(nobody):
    assert nobody.get("/channels/").status_code == 403
    response = Client().get("/channels/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_nav_links_to_channels_for_a_viewer(viewer):
    assert 'href="/channels/"' in viewer.get("/").content.decode()


# The form -----------------------------------------------------------------------------------------


def test_an_admin_adds_a_webhook_and_no_page_shows_its_secrets(admin_client_):
    url = f"https://hooks.example.com/services/{PATH_TOKEN}"
    response = admin_client_.post("/channels/new", form_data(url=url, secret=SECRET, schedule_days="Mon,fri"))
    channel = Channel.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/channels/{channel.pk}/"
    assert (channel.url, channel.secret, channel.schedule_days) == (url, SECRET, "mon,fri")
    for path in ("/channels/", f"/channels/{channel.pk}/", f"/channels/{channel.pk}/edit"):
        page = admin_client_.get(path).content.decode()
        assert PATH_TOKEN not in page and SECRET not in page, path
    edit = admin_client_.get(f"/channels/{channel.pk}/edit").content.decode()
    assert "Stored: https://hooks.example.com/***. Leave blank to keep it." in edit


def test_an_edit_with_empty_secret_fields_keeps_the_stored_ones(admin_client_):
    channel = webhook(secret=SECRET)
    response = admin_client_.post(f"/channels/{channel.pk}/edit", form_data(name="renamed", timeout="7"))
    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.timeout) == ("renamed", 7.0)
    assert channel.url == f"http://127.0.0.1:9/hooks/{PATH_TOKEN}" and channel.secret == SECRET


def test_the_models_own_checks_show_at_their_fields_without_echoing_secrets(admin_client_):
    channel = webhook(secret=SECRET)
    response = admin_client_.post(
        f"/channels/{channel.pk}/edit",
        form_data(schedule_days="mon,someday", schedule_timezone="Mars/Olympus", escalate_to=str(channel.pk)),
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "Days must be among mon, tue, wed, thu, fri, sat, sun, not &#x27;som&#x27;." in page
    assert PATH_TOKEN not in page and SECRET not in page
    assert Channel.objects.get().schedule_days == ""


def test_an_escalation_loop_is_refused(admin_client_):
    first = webhook(name="first")
    second = webhook(name="second", escalate_to=first)
    response = admin_client_.post(f"/channels/{first.pk}/edit", form_data(name="first", escalate_to=str(second.pk)))
    assert "The escalation chain loops back through &#x27;first&#x27;." in response.content.decode()
    first.refresh_from_db()
    assert first.escalate_to is None


def test_a_webhook_url_must_be_http(admin_client_):
    response = admin_client_.post("/channels/new", form_data(url=f"ftp://example.com/{PATH_TOKEN}"))
    page = response.content.decode()
    assert "A webhook URL starts with http:// or https://." in page and PATH_TOKEN not in page
    assert not Channel.objects.exists()


def test_delete_asks_first_then_removes_the_channel(admin_client_):
    channel = webhook()
    ask = admin_client_.get(f"/channels/{channel.pk}/delete").content.decode()
    assert "Delete ops hook?" in ask and Channel.objects.exists()
    assert admin_client_.post(f"/channels/{channel.pk}/delete").status_code == 302
    assert not Channel.objects.exists()


# Send test ----------------------------------------------------------------------------------------


def test_send_test_reaches_a_real_receiver_signed(admin_client_, receiver):  # noqa: F811
    server = receiver(Reply(204))
    channel = webhook(url=server.url("/hook"), secret=SECRET)
    page = admin_client_.post(f"/channels/{channel.pk}/test").content.decode()
    assert "Sent: the receiver accepted it (HTTP 204)" in page
    (request,) = server.received
    body = json.loads(request.body)
    assert body["test"] is True and body["channel"] == "ops hook"
    assert request.headers["x-portwatch-signature"].startswith("sha256=")


def test_send_test_shows_a_receivers_refusal_escaped_with_its_status(admin_client_, receiver):  # noqa: F811
    server = receiver(Reply(500, b"<script>alert(1)</script> broken"))
    channel = webhook(url=server.url(f"/hook/{PATH_TOKEN}"))
    page = admin_client_.post(f"/channels/{channel.pk}/test").content.decode()
    assert "Not sent (HTTP 500)" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert PATH_TOKEN not in page


def test_send_test_to_a_refused_port_shows_the_error(admin_client_, refused_url):  # noqa: F811
    channel = webhook(url=refused_url)
    page = admin_client_.post(f"/channels/{channel.pk}/test").content.decode()
    assert 'id="test-error"' in page and "refused" in page.lower()


def test_send_test_is_a_post_with_a_csrf_token(admin_client_):
    channel = webhook()
    assert admin_client_.get(f"/channels/{channel.pk}/test").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user_with_role("ada2", "admins"))
    assert strict.post(f"/channels/{channel.pk}/test").status_code == 403


def test_send_test_is_rate_limited(admin_client_, refused_url):  # noqa: F811
    channel = webhook(url=refused_url)
    statuses = [admin_client_.post(f"/channels/{channel.pk}/test").status_code for _ in range(11)]
    assert statuses[:MANUAL_PROBES_PER_WINDOW] == [200] * MANUAL_PROBES_PER_WINDOW
    assert statuses[-1] == 429


# Health -------------------------------------------------------------------------------------------


def failing(channel: Channel, count: int = 3) -> None:
    now = dt.datetime.now(dt.UTC)
    service = make_service("mail")
    alert = Alert.objects.create(service=service, kind="down", status="down", created=now, since=now)
    made = Notification.objects.create(alert=alert, channel=channel, status="pending", next_attempt_at=now)
    for retry in range(count):  # retries, a minute apart
        DeliveryAttempt.objects.create(
            notification=made,
            at=now - dt.timedelta(minutes=count - retry),
            ok=False,
            status=502,
            error="<b>bad gateway</b>",
            elapsed=0.2,
        )


def test_a_broken_channel_shows_on_the_list_its_page_and_the_overview(viewer):
    channel = webhook(name="pager <duty>")
    failing(channel)
    listing = viewer.get("/channels/").content.decode()
    assert "Broken" in listing and "The last 3 delivery attempts failed." in listing
    assert "Broken" in viewer.get(f"/channels/{channel.pk}/").content.decode()
    overview = viewer.get("/").content.decode()
    assert 'id="broken-channels"' in overview and "pager &lt;duty&gt;" in overview


def test_a_disabled_broken_channel_raises_no_banner(viewer):
    failing(webhook(enabled=False))
    assert 'id="broken-channels"' not in viewer.get("/").content.decode()


def test_the_service_page_shows_every_attempt_of_each_alert_escaped(viewer):
    channel = webhook(name="pager")
    failing(channel, count=2)
    service_id = Alert.objects.get().service_id
    page = viewer.get(f"/services/{service_id}/").content.decode()
    assert 'id="alerts"' in page and "pager" in page
    assert page.count("&lt;b&gt;bad gateway&lt;/b&gt;") == 2 and "<b>bad gateway</b>" not in page
    assert PATH_TOKEN not in page


def test_an_admin_user_is_a_real_role_not_a_superuser():
    """The admins group alone holds the channel permissions (the data migration granted them)."""
    user = user_with_role("root-less", "admins")
    assert not user.is_superuser
    assert user.has_perm("monitor.change_channel") and user.has_perm("monitor.delete_channel")
    assert client_for(user).get("/channels/new").status_code == 200


def test_a_channel_whose_secrets_cannot_be_read_still_shows_on_the_list_and_its_page(viewer):
    channel = webhook(secret="whsec-0123456789abcdef")
    # As after PORTWATCH_SECRETS_KEY changed: the stored tokens no longer decrypt.
    Channel.objects.filter(pk=channel.pk).update(url=RawSQL("'gAAAAAnot-a-token'", []))
    Channel.objects.filter(pk=channel.pk).update(secret=RawSQL("'gAAAAAnot-a-token'", []))
    for page in (viewer.get(reverse("channels")), viewer.get(reverse("channel", args=[channel.pk]))):
        assert page.status_code == 200
        assert "cannot be read" in page.content.decode()
