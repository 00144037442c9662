"""/metrics for alerting: is each channel healthy, its notifications by status, its delivery attempts by outcome,
and when a notifier last ran.

Exposes `FAMILIES` and `collect(now) -> str`, the three families in the text format, written as the collector
writes its own (HELP and TYPE once, then every sample). Channel names are user text: escaped as label values.
Every channel gets every status and outcome, zero included, so its label sets never change and `rate()` sees
the first attempt.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import Count

from monitor.alerting.health import channel_health
from monitor.alerting.notifier import WATERMARK as NOTIFIER_WATERMARK
from monitor.metrics.exposition import escape, escape_help
from monitor.models import Channel, DeliveryAttempt, Notification, Watermark
from monitor.models.alerting import NOTIFICATION_STATUSES

STATUSES = tuple(key for key, _ in NOTIFICATION_STATUSES)
OUTCOMES = ("ok", "error")

# name -> (type, help), in the order they are written.
FAMILIES: dict[str, tuple[str, str]] = {
    "portwatch_alert_channel_healthy": (
        "gauge",
        "0 when the channel's last 3 delivery attempts failed, or a notification failed for good in the last 24 h "
        "with nothing delivered since; else 1",
    ),
    "portwatch_alert_notifications": ("gauge", "Notifications to the channel, by status"),
    "portwatch_alert_delivery_attempts_total": ("counter", "Delivery attempts through the channel, by outcome"),
    "portwatch_notifier_last_run_timestamp_seconds": (
        "gauge",
        "When a notifier (the portwatch.notify task) last ran, in Unix seconds; absent before the first run",
    ),
}


def collect(now: dt.datetime) -> str:
    """Return the alerting families as exposition text; families without channels have HELP and TYPE only."""
    channels = list(Channel.objects.order_by("name").values_list("id", "name", "kind"))  # no secret decrypted
    health = channel_health(now)
    notifications = {
        (row["channel_id"], row["status"]): row["n"]
        for row in Notification.objects.values("channel_id", "status").annotate(n=Count("id"))
    }
    attempts = {
        (row["notification__channel_id"], row["ok"]): row["n"]
        for row in DeliveryAttempt.objects.values("notification__channel_id", "ok").annotate(n=Count("id"))
    }
    lines: dict[str, list[str]] = {name: [] for name in FAMILIES}
    for channel_id, name, kind in channels:
        channel = f'channel="{escape(name)}"'
        healthy = 0 if health[channel_id].broken else 1
        lines["portwatch_alert_channel_healthy"].append(
            f'portwatch_alert_channel_healthy{{{channel},kind="{escape(kind)}"}} {healthy}\n'
        )
        lines["portwatch_alert_notifications"] += [
            f'portwatch_alert_notifications{{{channel},status="{status}"}} '
            f"{notifications.get((channel_id, status), 0)}\n"
            for status in STATUSES
        ]
        lines["portwatch_alert_delivery_attempts_total"] += [
            f'portwatch_alert_delivery_attempts_total{{{channel},outcome="{outcome}"}} '
            f"{attempts.get((channel_id, outcome == 'ok'), 0)}\n"
            for outcome in OUTCOMES
        ]
    ran = Watermark.objects.filter(name=NOTIFIER_WATERMARK).values_list("moment", flat=True).first()
    if ran is not None:
        lines["portwatch_notifier_last_run_timestamp_seconds"].append(
            f"portwatch_notifier_last_run_timestamp_seconds {ran.timestamp():.3f}\n"
        )
    return "".join(_header(name) + "".join(samples) for name, samples in lines.items())


def _header(name: str) -> str:
    kind, documentation = FAMILIES[name]
    return f"# HELP {name} {escape_help(documentation)}\n# TYPE {name} {kind}\n"
