"""The webhook body, schema 2: links, bounded reasons, the outage's duration."""

from __future__ import annotations

import datetime as dt

import pytest

from monitor.alerting.payload import MAX_REASON, body, payload
from monitor.models import Alert, Incident, Service, StatusChange

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

START = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def make_alert(kind: str = "down", reason: str = "connection refused", ended: bool = False) -> Alert:
    service = Service.objects.create(name="mail", host="mx.example.com", protocol="smtp")
    end = START + dt.timedelta(minutes=5) if ended else None
    incident = Incident.objects.create(
        service=service, location="eu", started_at=START, ended_at=end, failure="refused", reason=reason
    )
    change = StatusChange.objects.create(
        service=service, location="eu", created=START, old_status="up", new_status=kind, incident=incident
    )
    return Alert.objects.create(
        service=service,
        location="eu",
        kind=kind,
        status=kind,
        created=START,
        since=end or START,
        change=change,
        incident=incident,
        failure="refused",
        reason=reason,
    )


def test_it_names_the_service_with_its_standard_port_and_location():
    alert = make_alert()
    sent = body([alert])
    assert sent["schema"] == 2 and sent["alerts"] == [payload(alert)]
    data = sent["alerts"][0]
    assert data["service"]["port"] == 25 and data["service"]["location"] == "eu"
    assert (data["kind"], data["since"], data["locations"]) == ("down", "2026-11-28T12:00:00Z", ["eu"])
    assert "duration_seconds" not in data


def test_it_links_to_the_service_page_under_the_base_url(settings):
    settings.PORTWATCH_BASE_URL = "https://portwatch.example.com"
    alert = make_alert()
    assert payload(alert)["url"] == f"https://portwatch.example.com/services/{alert.service_id}/"


def test_it_has_no_link_without_a_base_url(settings):
    settings.PORTWATCH_BASE_URL = None
    assert payload(make_alert())["url"] is None


def test_it_bounds_a_hostile_servers_reason():
    reason = payload(make_alert(reason="\x1b[31m" + "A" * 490))["failure"]["reason"]
    assert len(reason) == MAX_REASON and reason.endswith("…")
    assert "\x1b" not in reason


def test_a_recovery_says_how_long_the_outage_lasted():
    body = payload(make_alert("up", ended=True))
    assert (body["duration_seconds"], body["since"]) == (300, "2026-11-28T12:05:00Z")
