"""Channel health from the delivery history (monitor/alerting/health.py), on real rows in the database."""

from __future__ import annotations

import datetime as dt

import pytest

from monitor.alerting.health import channel_health
from monitor.models import Alert, Channel, DeliveryAttempt, Notification, Service

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def hook() -> Channel:
    return Channel.objects.create(name="hook", kind="webhook", url="http://127.0.0.1:9/hook")


def alert(at: dt.datetime) -> Alert:
    service, _ = Service.objects.get_or_create(
        name="mail", defaults={"host": "127.0.0.1", "port": 25, "protocol": "smtp"}
    )
    return Alert.objects.create(service=service, kind="down", status="down", created=at, since=at)


def notification(channel: Channel, status: str, at: dt.datetime, *outcomes: bool) -> Notification:
    """Make a notification of a new alert to `channel`, with one attempt a minute from `at` for each outcome."""
    made = Notification.objects.create(alert=alert(at), channel=channel, status=status, next_attempt_at=at)
    for minute, ok in enumerate(outcomes):
        DeliveryAttempt.objects.create(
            notification=made,
            at=at + dt.timedelta(minutes=minute),
            ok=ok,
            status=204 if ok else 500,
            error="" if ok else "the receiver answered 500",
            elapsed=0.1,
        )
    return made


def test_a_channel_never_used_is_healthy(hook):
    health = channel_health(NOW)[hook.pk]
    assert (health.broken, health.last_attempt_at, health.last_ok) == (False, None, None)


def test_three_failed_attempts_in_a_row_break_a_channel(hook):
    notification(hook, "sent", NOW - dt.timedelta(hours=2), True)
    notification(hook, "pending", NOW - dt.timedelta(minutes=10), False, False, False)
    health = channel_health(NOW)[hook.pk]
    assert health.broken and health.consecutive_failures == 3 and health.pending == 1
    assert health.why == "The last 3 delivery attempts failed."
    assert health.last_ok is False


def test_two_failures_after_a_success_are_the_retries_at_work(hook):
    notification(hook, "pending", NOW - dt.timedelta(minutes=10), True, False, False)
    health = channel_health(NOW)[hook.pk]
    assert not health.broken and health.consecutive_failures == 2


def test_a_notification_failed_for_good_today_breaks_a_channel_until_a_delivery_succeeds(hook):
    notification(hook, "failed", NOW - dt.timedelta(hours=3), False)
    broken = channel_health(NOW)[hook.pk]
    assert broken.broken and broken.failed_24h == 1
    assert broken.why == "1 notification failed for good in the last 24 h, and nothing was delivered since."
    notification(hook, "sent", NOW - dt.timedelta(hours=1), True)
    mended = channel_health(NOW)[hook.pk]
    assert not mended.broken and mended.failed_24h == 1 and mended.last_ok is True


def test_a_failure_older_than_a_day_no_longer_counts(hook):
    notification(hook, "failed", NOW - dt.timedelta(hours=25), False)
    health = channel_health(NOW)[hook.pk]
    assert not health.broken and health.failed_24h == 0


def test_each_channel_is_judged_on_its_own_attempts(hook):
    other = Channel.objects.create(name="other", kind="webhook", url="http://127.0.0.1:9/other")
    notification(hook, "pending", NOW - dt.timedelta(minutes=10), False, False, False)
    notification(other, "sent", NOW - dt.timedelta(minutes=10), False, True)
    health = channel_health(NOW)
    assert health[hook.pk].broken and not health[other.pk].broken
    assert health[other.pk].consecutive_failures == 0


def test_one_failed_message_carrying_many_notifications_is_one_attempt(hook):
    for _ in range(5):  # five alerts sent together in one message that failed once
        notification(hook, "pending", NOW - dt.timedelta(minutes=1), False)
    health = channel_health(NOW)[hook.pk]
    assert (health.broken, health.consecutive_failures, health.pending) == (False, 1, 5)
