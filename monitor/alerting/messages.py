"""What a person reads: `message(alerts) -> Message` (subject, plain text, HTML), for email and apprise.

Alerts sent together (a channel's grouping window) make one message: one alert reads as before, several
get a summary subject ("12 alerts: 10 down, 2 recovered") and one section each.

`facts(alert)` gathers what is said from the database: the webhook's `payload(alert)` plus the last good
check and, for a certificate failure, the last certificate seen. `render(facts)` is plain Python over that
dict, so it is tested without a database. Everything a probed server chose (the reason, the certificate's
subject and issuer) is bounded by `payload.bounded` and escaped in the HTML: a hostile server must not
inject markup into someone's mailbox.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from typing import Any

from monitor.alerting.channels import cut
from monitor.alerting.payload import bounded, held_by_problem, iso, payload
from monitor.humanize import span
from monitor.models import Alert, ProbeResult, ServiceState
from monitor.models.alerting import RESOLVES

CERTIFICATE_FAILURES = ("tls_handshake", "tls_expired", "tls_hostname", "tls_untrusted", "tls_expiring")
MAX_NAME = 200  # characters of a certificate's subject or issuer shown
MAX_HELD = 50  # held dependents named in one alert
RESOLUTIONS = tuple(RESOLVES)


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str


def message(alerts: list[Alert] | Alert, *, escalated_from: str = "") -> Message:
    """Return the message for `alerts` sent together (see `render` and `render_group`)."""
    if isinstance(alerts, Alert):
        alerts = [alerts]
    held = held_by_problem([alert.problem_id for alert in alerts if alert.problem_id])
    said = [facts(alert, escalated_from=escalated_from, held=held) for alert in alerts]
    return render(said[0]) if len(said) == 1 else render_group(said)


def facts(alert: Alert, *, escalated_from: str = "", held: dict[int, list[dict]] | None = None) -> dict[str, Any]:
    """Return `payload(alert)` plus `last_good` ({at, latency}, or None) and `certificate` (a dict, or None)."""
    data = payload(alert, escalated_from=escalated_from, held=held)
    if alert.service_id is None:
        return data | {"last_good": None, "certificate": None}
    good = (
        ProbeResult.objects.filter(
            service_id=alert.service_id, location=alert.location, status="up", started_at__lt=_outage_start(alert)
        )
        .order_by("-started_at")
        .values("started_at", "total")
        .first()
    )
    data["last_good"] = {"at": iso(good["started_at"]), "latency": good["total"]} if good else None
    data["certificate"] = None
    if alert.kind == "certificate":  # the warned certificate may be a chain's or a redirect hop's: its own facts
        detail = alert.detail
        data["certificate"] = {
            "subject": detail.get("subject"),
            "not_after": detail.get("not_after"),
            "days_left": detail.get("days_left"),
            "which": detail.get("which"),
        }
        return data
    if alert.failure in CERTIFICATE_FAILURES:
        state = ServiceState.objects.filter(service_id=alert.service_id, location=alert.location).only("tls").first()
        if state is not None and state.tls:
            data["certificate"] = {
                key: state.tls.get(key) for key in ("subject", "issuer", "not_after", "days_left", "verify_error")
            }
    return data


def _outage_start(alert: Alert) -> dt.datetime:
    if alert.problem is not None and alert.problem.started_at is not None:
        return alert.problem.started_at
    incident = alert.incident
    return incident.started_at if incident is not None else alert.since


def render(data: dict[str, Any]) -> Message:
    """Return the subject, text and HTML saying `data` (as `facts` returns it)."""
    lines = _lines(data)
    return Message(subject=subject(data), text=_text(lines), html=_page([(_headline(data), lines)]))


def render_group(said: list[dict[str, Any]]) -> Message:
    """Return one message for several alerts: a summary subject, then each alert in turn."""
    counts: dict[str, int] = {}
    for data in said:
        counts[WORDS[data["kind"]]] = counts.get(WORDS[data["kind"]], 0) + 1
    summary = ", ".join(f"{count} {word}" for word, count in counts.items())
    sections = [(_headline(data), _lines(data)) for data in said]
    text = f"{len(said)} alerts: {summary}.\n\n" + "\n".join(_text(lines) for _, lines in sections)
    return Message(subject=f"{len(said)} alerts: {summary}", text=text, html=_page(sections))


SUBJECTS = {
    "down": "DOWN",
    "up": "RECOVERED",
    "reminder": "STILL DOWN",
    "degraded": "DEGRADED",
    "normal": "NORMAL",
    "flapping": "FLAPPING",
    "stable": "STABLE",
}
WORDS = {
    "down": "down",
    "up": "recovered",
    "reminder": "still down",
    "degraded": "degraded",
    "normal": "normal again",
    "flapping": "flapping",
    "stable": "stable again",
    "certificate": "certificate expiring",
    "monitor": "monitor problem",
    "monitor_ok": "monitor healthy again",
}


def _text(lines: list[tuple[str, str, bool]]) -> str:
    return "\n".join(f"{label}: {value}" if label else value for label, value, _ in lines) + "\n"


def _page(sections: list[tuple[str, list[tuple[str, str, bool]]]]) -> str:
    parts = []
    for headline, lines in sections:
        rows = "\n".join(
            f"<tr><th align='left'>{html.escape(label)}</th><td>{_html_value(value, link)}</td></tr>"
            for label, value, link in lines
            if label
        )
        parts.append(f"<p><strong>{html.escape(headline)}</strong></p>\n<table>\n{rows}\n</table>")
    return "<html><body>\n" + "\n<hr>\n".join(parts) + "\n</body></html>\n"


def subject(data: dict[str, Any]) -> str:
    """Return "DOWN: mail (smtp mail.example.com:25) from default", "RECOVERED: ... after 5 min", and so on."""
    kind, service = data["kind"], data["service"]
    if service is None:  # the monitor's own health
        return f"{'MONITOR OK' if kind == 'monitor_ok' else 'MONITOR'}: {bounded(data['failure']['reason'] or '')}"
    target = f"{service['protocol']} {service['host']}:{service['port']}"
    said = f"{service['name']} ({target}) from {_where(data)}"
    if kind == "certificate":
        return f"CERTIFICATE EXPIRES in {(data.get('detail') or {}).get('days_left', '?')} days: {said}"
    lasted = data.get("duration_seconds")
    after = f" after {span(lasted)}" if kind in RESOLUTIONS and lasted is not None else ""
    return f"{SUBJECTS.get(kind, 'DOWN')}: {said}{after}"


def _where(data: dict[str, Any]) -> str:
    return ", ".join(data.get("locations") or [data["service"]["location"]])


def _headline(data: dict[str, Any]) -> str:
    kind, service = data["kind"], data["service"]
    if service is None:
        return ("The monitor is healthy again: " if kind == "monitor_ok" else "The monitor needs attention: ") + (
            bounded(data["failure"]["reason"] or "")
        )
    name = service["name"]
    return {
        "up": f"{name} is {data['status']} again.",
        "reminder": f"{name} is still down.",
        "degraded": f"{name} is slow.",
        "normal": f"{name} is no longer slow.",
        "flapping": f"{name} is flapping: its alerts are held until it is stable.",
        "stable": f"{name} is stable again.",
        "certificate": f"{name}'s certificate expires soon.",
    }.get(kind, f"{name} is down.")


def _lines(data: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Return (label, value, is a link) rows; the first row, without a label, is the headline."""
    kind, service, failure = data["kind"], data["service"], data["failure"]
    what = f"{failure['kind'] or 'unknown'}: {bounded(failure['reason'] or '')}"
    rows = [("", _headline(data), False)]
    if data.get("escalated_from"):
        rows.append(("Escalated", f"not acknowledged in time on {data['escalated_from']}", False))
    if service is not None:
        rows.append(
            ("Service", f"{service['name']} ({service['protocol']} {service['host']}:{service['port']})", False)
        )
        where = data.get("locations") or [service["location"]]
        rows.append(("Locations" if len(where) > 1 else "Location", ", ".join(where), False))
    detail = data.get("detail") or {}
    if detail.get("released"):
        rows.append(("Note", bounded(detail["released"]), False))
    if kind in RESOLUTIONS:
        outage = kind == "up"
        rows.append(("Recovered at" if outage else "Ended at", data["since"], False))
        if data.get("duration_seconds") is not None:
            rows.append(("Outage lasted" if outage else "Lasted", span(data["duration_seconds"]), False))
        rows.append(("Cause", what, False))
    elif service is not None and kind in ("down", "reminder"):
        rows.append(("Failure", what, False))
        rows.append(("Down since", data["since"], False))
    elif service is not None:
        rows.append(("What", bounded(failure["reason"] or ""), False))
        rows.append(("Since", data["since"], False))
    if kind == "degraded" and detail.get("latency") is not None:
        rows.append(
            ("Latency", f"{detail['latency'] * 1000:.0f} ms (limit {detail.get('limit', 0) * 1000:.0f} ms)", False)
        )
    held = data.get("held") or []
    if held:
        names = ", ".join(child["name"] for child in held[:MAX_HELD])
        more = f" and {len(held) - MAX_HELD} more" if len(held) > MAX_HELD else ""
        rows.append(("Also down, held (they depend on it)", names + more, False))
    good = data.get("last_good")
    if good and kind in ("down", "reminder", "up"):
        rows.append(("Last good check", f"{good['at']} ({good['latency'] * 1000:.0f} ms)", False))
    rows += _certificate_rows(data.get("certificate"))
    if data.get("url"):
        rows.append(("Service page", data["url"], True))
    if data.get("acknowledge_url"):
        rows.append(("Acknowledge", data["acknowledge_url"], True))
    return rows


def _certificate_rows(certificate: dict[str, Any] | None) -> list[tuple[str, str, bool]]:
    if not certificate:
        return []
    rows = [("Certificate subject", cut(bounded(certificate.get("subject") or ""), MAX_NAME))]
    if certificate.get("issuer"):
        rows.append(("Certificate issuer", cut(bounded(certificate["issuer"]), MAX_NAME)))
    if certificate.get("which"):
        rows.append(("Which certificate", cut(bounded(certificate["which"]), MAX_NAME)))
    rows.append(("Certificate expires", f"{certificate.get('not_after')} ({certificate.get('days_left')} days left)"))
    if certificate.get("verify_error"):
        rows.append(("Verification", bounded(certificate["verify_error"])))
    return [(label, value, False) for label, value in rows]


def _html_value(value: str, link: bool) -> str:
    escaped = html.escape(value)
    return f"<a href='{escaped}'>{escaped}</a>" if link else escaped
