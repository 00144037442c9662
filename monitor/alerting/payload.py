"""The webhook's JSON body, schema 1: `payload(alert) -> dict`, what `channels.webhook.deliver` sends.

    {
      "schema": 1,                      # webhook.SCHEMA_VERSION; a breaking change bumps it
      "alert_id": 42,                   # unique per alert: a receiver drops a repeat it already has
      "kind": "down" | "up",            # "up": the outage below is over
      "status": "down",                 # the status the service changed to: down; or up, warning, paused
      "service": {"id": 7, "name": "mail", "protocol": "smtp", "host": "mx.example.com", "port": 25,
                  "location": "default"},
      "failure": {"kind": "refused", "reason": "connection refused"},   # for "up": what the outage was
      "since": "2026-11-28T12:00:00Z",  # ISO 8601 UTC: when the outage began ("down") or ended ("up")
      "url": "https://portwatch.example.com/services/7/",   # null unless PORTWATCH_BASE_URL is set
      "duration_seconds": 300           # "up" only: how long the outage lasted
    }

A delivery may be repeated (at least once: a sender that dies after the receiver answered, before it
recorded so): receivers dedupe on `alert_id`. What came from a probed server (the reason) is cut to
MAX_REASON characters, control characters replaced, so a hostile server cannot fill a chat channel.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.urls import reverse

from monitor.alerting.channels import cut
from monitor.alerting.channels.webhook import SCHEMA_VERSION
from monitor.models import Alert

MAX_REASON = 300  # characters of a probe's reason put in a message


def payload(alert: Alert) -> dict:
    """Return the schema 1 body for `alert` (its service and incident loaded, or fetched here)."""
    service = alert.service
    body = {
        "schema": SCHEMA_VERSION,
        "alert_id": alert.pk,
        "kind": alert.kind,
        "status": alert.status,
        "service": {
            "id": service.pk,
            "name": service.name,
            "protocol": service.protocol,
            "host": service.host,
            "port": service.effective_port(),
            "location": alert.location,
        },
        "failure": {"kind": alert.failure or None, "reason": bounded(alert.reason)},
        "since": iso(alert.since),
        "url": service_url(service.pk),
    }
    if alert.kind == "up":
        body["duration_seconds"] = _duration(alert)
    return body


def bounded(text: str) -> str:
    """Return `text` with control characters as spaces, cut to MAX_REASON characters."""
    shown = "".join(char if char.isprintable() else " " for char in text)
    return cut(shown, MAX_REASON)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def service_url(service_id: int) -> str | None:
    """Return the service page's absolute URL, or None when PORTWATCH_BASE_URL (the public origin) is unset."""
    base = settings.PORTWATCH_BASE_URL
    return f"{base}{reverse('service', args=[service_id])}" if base else None


def _duration(alert: Alert) -> int | None:
    incident = alert.incident
    if incident is None or incident.ended_at is None:
        return None  # the incident was deleted meanwhile
    return max(0, round((incident.ended_at - incident.started_at).total_seconds()))
