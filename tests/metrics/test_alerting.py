"""/metrics' alerting families (monitor/metrics/alerting.py), scraped through Django's test client."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from monitor.models import Alert, Channel, DeliveryAttempt, Notification, Service
from tests.metrics.conftest import TOKEN

pytestmark = pytest.mark.django_db

HOSTILE = 'ops "night"\\shift\nteam'  # a channel name is user text: quotes, a backslash, a line feed


def scrape() -> tuple[str, dict[str, list]]:
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return body, found


def attempts(channel: Channel, status: str, *outcomes: bool) -> None:
    now = dt.datetime.now(dt.UTC)
    service, _ = Service.objects.get_or_create(
        name="mail", defaults={"host": "127.0.0.1", "port": 25, "protocol": "smtp"}
    )
    made = Alert.objects.create(service=service, kind="down", status="down", created=now, since=now)
    notification = Notification.objects.create(alert=made, channel=channel, status=status, next_attempt_at=now)
    for ok in outcomes:
        DeliveryAttempt.objects.create(notification=notification, at=now, ok=ok, status=None, error="", elapsed=0.1)


def by_labels(samples: list, *names: str) -> dict[tuple[str, ...], float]:
    return {tuple(sample.labels[name] for name in names): sample.value for sample in samples}


def test_each_channel_reports_its_health_notifications_and_attempts():
    good = Channel.objects.create(name="good", kind="email", url="ops@example.com")
    bad = Channel.objects.create(name=HOSTILE, kind="webhook", url="http://127.0.0.1:9/s3cret-path")
    attempts(good, "sent", False, True)
    attempts(bad, "failed", False, False, False)
    attempts(bad, "pending")

    body, found = scrape()

    assert by_labels(found["portwatch_alert_channel_healthy"], "channel", "kind") == {
        ("good", "email"): 1.0,
        (HOSTILE, "webhook"): 0.0,
    }
    notifications = by_labels(found["portwatch_alert_notifications"], "channel", "status")
    assert notifications[("good", "sent")] == 1 and notifications[("good", "failed")] == 0
    assert notifications[(HOSTILE, "failed")] == 1 and notifications[(HOSTILE, "pending")] == 1
    assert by_labels(found["portwatch_alert_delivery_attempts_total"], "channel", "outcome") == {
        ("good", "ok"): 1.0,
        ("good", "error"): 1.0,
        (HOSTILE, "ok"): 0.0,
        (HOSTILE, "error"): 3.0,
    }
    assert 'channel="ops \\"night\\"\\\\shift\\nteam"' in body  # escaped as the text format says
    assert "s3cret-path" not in body
    assert "# TYPE portwatch_alert_delivery_attempts_total counter" in body


def test_without_channels_the_families_have_no_samples():
    _, found = scrape()
    assert not any(name.startswith("portwatch_alert_") for name in found)
