"""The webhook's JSON body, schema 2: `body(alerts) -> dict`, what `channels.webhook.deliver` sends.

One body carries every alert sent together to a channel (its grouping window), oldest first:

    {
      "schema": 2,                      # webhook.SCHEMA_VERSION; a breaking change bumps it
      "alerts": [payload(alert), ...]
    }

and `payload(alert)` is one alert:

    {
      "alert_id": 42,                   # unique per alert: a receiver drops a repeat it already has
      "kind": "down",                   # down | up | reminder | degraded | normal | flapping | stable |
                                        # certificate | monitor | monitor_ok; up, normal, stable and
                                        # monitor_ok resolve the down, degraded, flapping, monitor alert
                                        # of the same problem_id
      "status": "down",                 # the service's status: down, up, warning, paused
      "service": {"id": 7, "name": "mail", "protocol": "smtp", "host": "mx.example.com", "port": 25,
                  "location": "default"},       # null for the monitor's own alerts
      "locations": ["eu", "us"],        # where the problem is seen (the quorum's locations)
      "failure": {"kind": "refused", "reason": "connection refused"},   # for a resolution: what it was
      "since": "2026-11-28T12:00:00Z",  # ISO 8601 UTC: when the problem began, or ended for a resolution
      "url": "https://portwatch.example.com/services/7/",   # null unless PORTWATCH_BASE_URL is set
      "problem_id": 9,                  # null for a certificate warning
      "acknowledge_url": "https://...", # a signed link (down and reminder alerts; null without a base URL)
      "held": [{"id": 8, "name": "imap"}],   # dependents down too, held behind this outage
      "escalated_from": "team-chat",    # set when sent here because that channel did not acknowledge in time
      "detail": {...},                  # kind-specific facts: certificate days, latency, flapping share
      "duration_seconds": 300           # resolutions only: how long the problem lasted
    }

A delivery may be repeated (at least once: a sender that dies after the receiver answered, before it
recorded so): receivers dedupe on `alert_id`. What came from a probed server (the reason) is cut to
MAX_REASON characters, control characters replaced, so a hostile server cannot fill a chat channel.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.urls import reverse

from monitor.alerting import acknowledgement
from monitor.alerting.channels import cut
from monitor.alerting.channels.webhook import SCHEMA_VERSION
from monitor.models import Alert, Problem
from monitor.models.alerting import RESOLVES

MAX_REASON = 300  # characters of a probe's reason put in a message


def body(alerts: list[Alert], *, escalated_from: str = "") -> dict:
    """Return the schema 2 body for `alerts` sent together (their held dependents read in one query)."""
    held = held_by_problem([alert.problem_id for alert in alerts if alert.problem_id])
    return {
        "schema": SCHEMA_VERSION,
        "alerts": [payload(alert, escalated_from=escalated_from, held=held) for alert in alerts],
    }


def held_by_problem(problem_ids: list[int]) -> dict[int, list[dict]]:
    """Return {problem id: [{"id", "name"} of each open problem held behind it]} for these problems."""
    found: dict[int, list[dict]] = {}
    children = Problem.objects.filter(parent_id__in=problem_ids, ended_at=None).order_by("service__name")
    for parent_id, service_id, name in children.values_list("parent_id", "service_id", "service__name"):
        found.setdefault(parent_id, []).append({"id": service_id, "name": name})
    return found


def payload(alert: Alert, *, escalated_from: str = "", held: dict[int, list[dict]] | None = None) -> dict:
    """Return one alert's part of the body (its service, incident and problem loaded, or fetched here).

    `held`: `held_by_problem` for a message's alerts, read once; without it, read here.
    """
    service = alert.service
    problem = alert.problem
    data = {
        "alert_id": alert.pk,
        "kind": alert.kind,
        "status": alert.status,
        "service": None,
        "locations": list(alert.detail.get("locations") or ([alert.location] if alert.location else [])),
        "failure": {"kind": alert.failure or None, "reason": bounded(alert.reason)},
        "since": iso(alert.since),
        "url": service_url(service.pk) if service is not None else None,
        "problem_id": alert.problem_id,
        "acknowledge_url": None,
        "held": [],
        "escalated_from": escalated_from or None,
        "detail": {key: value for key, value in alert.detail.items() if key not in ("locations", "held")},
    }
    if service is not None:
        data["service"] = {
            "id": service.pk,
            "name": service.name,
            "protocol": service.protocol,
            "host": service.host,
            "port": _port(service),
            "location": alert.location,
        }
    if problem is not None and alert.kind in ("down", "reminder") and problem.ended_at is None:
        data["acknowledge_url"] = acknowledgement.link(problem)
    if "held" in alert.detail:  # a recovery: who was held when it was made
        data["held"] = alert.detail["held"]
    elif problem is not None and alert.kind in ("down", "reminder"):  # who is held as it is sent
        data["held"] = (held if held is not None else held_by_problem([problem.pk])).get(problem.pk, [])
    if alert.kind in RESOLVES:
        data["duration_seconds"] = _duration(alert)
    return data


def _port(service) -> int | None:
    try:
        return service.effective_port()
    except ValueError:
        return None


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
    problem = alert.problem
    if problem is not None and problem.ended_at is not None and problem.started_at is not None:
        return max(0, round((problem.ended_at - problem.started_at).total_seconds()))
    incident = alert.incident
    if incident is None or incident.ended_at is None:
        return None  # the incident was deleted meanwhile
    return max(0, round((incident.ended_at - incident.started_at).total_seconds()))
