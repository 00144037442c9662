"""The Channel admin through real requests: every kind offered, each kind's `url` checked, secrets never shown."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from monitor.models import Channel

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/monitor/channel/add/"
TOKEN = "AAFtok3n-s3cret-98765"


def form_data(**fields) -> dict[str, str]:
    return {
        "name": "chat",
        "kind": "apprise",
        "enabled": "on",
        "tags": "",
        "url": "",
        "secret": "",
        "timeout": "10",
    } | fields


def test_the_add_form_offers_every_channel_kind(admin_client):
    page = admin_client.get(ADD_URL).content.decode()
    for kind in ("webhook", "email", "apprise"):
        assert f'<option value="{kind}"' in page


def test_an_apprise_channel_is_saved_encrypted_and_shown_masked(admin_client):
    url = f"tgram://123456:{TOKEN}/-100200300"
    response = admin_client.post(ADD_URL, form_data(url=url))
    assert response.status_code == 302, response.content.decode()[:2000]
    channel = Channel.objects.get()
    assert channel.apprise_urls == [url]
    change = admin_client.get(f"/admin/monitor/channel/{channel.pk}/change/").content.decode()
    listing = admin_client.get("/admin/monitor/channel/").content.decode()
    assert TOKEN not in change and TOKEN not in listing
    assert "Stored: tgram://***" in change


def test_a_bad_apprise_url_is_named_at_its_field_without_its_token(admin_client):
    response = admin_client.post(ADD_URL, form_data(url=f"nosuchservice://{TOKEN}"))
    page = response.content.decode()
    assert response.status_code == 200 and not Channel.objects.exists()
    assert "apprise cannot use URL #1 (nosuchservice://***)" in page
    assert TOKEN not in page


def test_an_email_channel_takes_comma_separated_addresses(admin_client):
    response = admin_client.post(
        ADD_URL, form_data(name="mail", kind="email", url="ops@example.com, oncall@example.com")
    )
    assert response.status_code == 302
    assert Channel.objects.get().email_recipients == ["ops@example.com", "oncall@example.com"]


def test_the_model_refuses_a_webhook_url_that_is_not_http_without_echoing_it():
    channel = Channel(name="hook", kind="webhook", url="ftp://user:T0KEN@files.example.com/hook")
    with pytest.raises(ValidationError) as refused:
        channel.full_clean()
    assert refused.value.message_dict["url"] == ["A webhook URL starts with http:// or https://."]
    assert "T0KEN" not in str(refused.value)
