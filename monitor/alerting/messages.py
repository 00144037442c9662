"""What a person reads: `message(alert) -> Message` (subject, plain text, HTML), for email and apprise.

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
from monitor.alerting.payload import bounded, iso, payload
from monitor.humanize import span
from monitor.models import Alert, ProbeResult, ServiceState

CERTIFICATE_FAILURES = ("tls_handshake", "tls_expired", "tls_hostname", "tls_untrusted", "tls_expiring")
MAX_NAME = 200  # characters of a certificate's subject or issuer shown


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str


def message(alert: Alert) -> Message:
    """Return the message for `alert` (see `render`)."""
    return render(facts(alert))


def facts(alert: Alert) -> dict[str, Any]:
    """Return `payload(alert)` plus `last_good` ({at, latency}, or None) and `certificate` (a dict, or None)."""
    data = payload(alert)
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
    if alert.failure in CERTIFICATE_FAILURES:
        state = ServiceState.objects.filter(service_id=alert.service_id, location=alert.location).only("tls").first()
        if state is not None and state.tls:
            data["certificate"] = {
                key: state.tls.get(key) for key in ("subject", "issuer", "not_after", "days_left", "verify_error")
            }
    return data


def _outage_start(alert: Alert) -> dt.datetime:
    incident = alert.incident
    return incident.started_at if incident is not None else alert.since


def render(data: dict[str, Any]) -> Message:
    """Return the subject, text and HTML saying `data` (as `facts` returns it)."""
    lines = _lines(data)
    text = "\n".join(f"{label}: {value}" if label else value for label, value, _ in lines) + "\n"
    rows = "\n".join(
        f"<tr><th align='left'>{html.escape(label)}</th><td>{_html_value(value, link)}</td></tr>"
        for label, value, link in lines
        if label
    )
    headline = html.escape(_headline(data))
    page = f"<html><body>\n<p><strong>{headline}</strong></p>\n<table>\n{rows}\n</table>\n</body></html>\n"
    return Message(subject=subject(data), text=text, html=page)


def subject(data: dict[str, Any]) -> str:
    """Return "DOWN: mail (smtp mail.example.com:25) from default", or "RECOVERED: ... after 5 min"."""
    service = data["service"]
    target = f"{service['protocol']} {service['host']}:{service['port']}"
    said = f"{service['name']} ({target}) from {service['location']}"
    if data["kind"] == "up":
        after = data.get("duration_seconds")
        return f"RECOVERED: {said}" + (f" after {span(after)}" if after is not None else "")
    return f"DOWN: {said}"


def _headline(data: dict[str, Any]) -> str:
    name = data["service"]["name"]
    if data["kind"] == "up":
        return f"{name} is {data['status']} again."
    return f"{name} is down."


def _lines(data: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Return (label, value, is a link) rows; the first row, without a label, is the headline."""
    service, failure = data["service"], data["failure"]
    what = f"{failure['kind'] or 'unknown'}: {bounded(failure['reason'] or '')}"
    rows = [("", _headline(data), False)]
    rows.append(("Service", f"{service['name']} ({service['protocol']} {service['host']}:{service['port']})", False))
    rows.append(("Location", service["location"], False))
    if data["kind"] == "up":
        rows.append(("Recovered at", data["since"], False))
        if data.get("duration_seconds") is not None:
            rows.append(("Outage lasted", span(data["duration_seconds"]), False))
        rows.append(("Cause", what, False))
    else:
        rows.append(("Failure", what, False))
        rows.append(("Down since", data["since"], False))
    good = data.get("last_good")
    if good:
        rows.append(("Last good check", f"{good['at']} ({good['latency'] * 1000:.0f} ms)", False))
    rows += _certificate_rows(data.get("certificate"))
    if data.get("url"):
        rows.append(("Service page", data["url"], True))
    return rows


def _certificate_rows(certificate: dict[str, Any] | None) -> list[tuple[str, str, bool]]:
    if not certificate:
        return []
    rows = [
        ("Certificate subject", cut(bounded(certificate.get("subject") or ""), MAX_NAME)),
        ("Certificate issuer", cut(bounded(certificate.get("issuer") or ""), MAX_NAME)),
        ("Certificate expires", f"{certificate.get('not_after')} ({certificate.get('days_left')} days left)"),
    ]
    if certificate.get("verify_error"):
        rows.append(("Verification", bounded(certificate["verify_error"])))
    return [(label, value, False) for label, value in rows]


def _html_value(value: str, link: bool) -> str:
    escaped = html.escape(value)
    return f"<a href='{escaped}'>{escaped}</a>" if link else escaped
