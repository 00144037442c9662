"""The certificates detector: `certificates(now)` warns of certificates expiring; `monitor.alerting.conditions` runs it.

For every active state's TLS facts: the leaf, the chain's earliest-expiring certificate when it expires before
the leaf, and the leaf and chain of every redirect hop the http probe recorded (`details["hops"]`). Days left
count from `now` to `not_after`, not from the probe, so a warning does not wait for the next probe. A
certificate is warned once per threshold (the service's `certificate_warn_days`, else
PORTWATCH_ALERT_CERTIFICATE_DAYS) by `(service, key, threshold)`: the key is the SHA-256 fingerprint, and for a
chain certificate, which the probe does not fingerprint, a SHA-256 of its subject and expiry. Thresholds crossed
at once make one warning, the smallest, and are all recorded, so the bigger ones never follow; a renewed
certificate has a new key and starts over. The smallest threshold's CertificateWarning row is inserted first,
in a savepoint: only the notifier whose insert succeeded announces.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from monitor.alerting import problems
from monitor.alerting.channels import cut
from monitor.alerting.payload import bounded, iso
from monitor.models import CertificateWarning, Service, ServiceState
from monitor.validation import parse_days

CHUNK = 500  # service ids per query
MAX_SUBJECT = 120  # characters of a certificate's subject in a warning
MAX_URL = 200


class Certificate(NamedTuple):
    key: str  # what CertificateWarning rows are kept by: the fingerprint, or a chain certificate's digest
    subject: str
    not_after: dt.datetime
    which: str  # "leaf", "chain", "hop <url>" or "hop <url> chain"
    role: str  # for a chain certificate: "intermediate" or "root"


def certificates(now: dt.datetime) -> int:
    """Warn once per certificate and threshold crossed (several at once: one warning); return warnings made."""
    found: dict[tuple[int, str], tuple[str, Certificate, list[int]]] = {}
    states = (
        ServiceState.objects.filter(service__enabled=True)
        .filter(Q(tls__isnull=False) | Q(service__protocol="http", details__has_key="hops"))
        .exclude(status="paused")
        .order_by("service_id", "location")
        .values_list("service_id", "location", "tls", "details__hops", "service__certificate_warn_days")
    )
    for service_id, location, tls, hops, warn_days in states.iterator(chunk_size=2000):
        thresholds = _thresholds(warn_days)
        for certificate in _certificates(tls, hops):
            days_left = (certificate.not_after - now).total_seconds() / 86400
            crossed = [days for days in thresholds if days_left <= days]
            if crossed:
                found.setdefault((service_id, certificate.key), (location, certificate, crossed))
    if not found:
        return 0
    known = _warned(found)
    todo = {pair: item for pair, item in found.items() if set(item[2]) - known[pair]}
    services = Service.objects.in_bulk({service_id for service_id, _ in todo})
    made = 0
    for (service_id, _), (location, certificate, crossed) in todo.items():
        if service_id in services:
            made += _warn(
                services[service_id], location, certificate, crossed, known[(service_id, certificate.key)], now
            )
    return made


def _thresholds(warn_days: str) -> list[int]:
    try:
        return parse_days(warn_days) or list(settings.PORTWATCH_ALERT_CERTIFICATE_DAYS)
    except ValueError:  # stored past validation: the defaults still warn
        return list(settings.PORTWATCH_ALERT_CERTIFICATE_DAYS)


def _certificates(tls: Any, hops: Any) -> Iterator[Certificate]:
    """Yield the leaf, chain and redirect hops' certificates in stored TLS facts; skip what does not parse."""
    yield from _of(tls, "leaf")
    for index, hop in enumerate(hops if isinstance(hops, list) else []):
        if index and isinstance(hop, dict) and hop.get("tls"):
            yield from _of(hop["tls"], f"hop {cut(bounded(str(hop.get('url') or '')), MAX_URL)}")


def _of(tls: Any, which: str) -> Iterator[Certificate]:
    if not isinstance(tls, dict):
        return
    try:
        subject = cut(bounded(str(tls.get("subject") or "")), MAX_SUBJECT)
        not_after = _moment(tls["not_after"])
        key = "".join(char for char in str(tls["fingerprint_sha256"]).lower() if char in "0123456789abcdef")[:64]
        leaf = Certificate(key, subject, not_after, which, "leaf")
        chain = _moment(tls["chain_expiry"]) if tls.get("chain_expiry") else None
    except (KeyError, TypeError, ValueError):
        return  # facts written by an older probe, or broken: nothing to warn about
    if key:
        yield leaf
    if chain is not None and chain < not_after and tls.get("chain_expiry_role") != "leaf":
        chain_subject = cut(bounded(str(tls.get("chain_expiry_subject") or "")), MAX_SUBJECT)
        digest = hashlib.sha256(f"chain\n{chain_subject}\n{chain.isoformat()}".encode()).hexdigest()
        role = "root" if tls.get("chain_expiry_role") == "root" else "intermediate"
        yield Certificate(digest, chain_subject, chain, "chain" if which == "leaf" else f"{which} chain", role)


def _moment(text: Any) -> dt.datetime:
    moment = dt.datetime.fromisoformat(str(text))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _warned(found: dict[tuple[int, str], Any]) -> defaultdict[tuple[int, str], set[int]]:
    """Return the thresholds already warned for each (service, key) in `found`, in a query per CHUNK services."""
    known: defaultdict[tuple[int, str], set[int]] = defaultdict(set)
    service_ids = sorted({service_id for service_id, _ in found})
    keys = {key for _, key in found}
    for start in range(0, len(service_ids), CHUNK):
        rows = CertificateWarning.objects.filter(
            service_id__in=service_ids[start : start + CHUNK], fingerprint__in=keys
        ).values_list("service_id", "fingerprint", "days")
        for service_id, key, days in rows:
            known[(service_id, key)].add(days)
    return known


def _warn(
    service: Service, location: str, certificate: Certificate, crossed: list[int], known: set[int], now: dt.datetime
) -> int:
    """Record the thresholds crossed and announce the smallest, unless it was told; return warnings made."""
    smallest = min(crossed)
    rows = [
        CertificateWarning(service=service, fingerprint=certificate.key, days=days, created=now)
        for days in sorted(set(crossed) - known - {smallest})
    ]
    with transaction.atomic():
        if smallest in known:  # only bigger thresholds are new (the list grew): a more urgent one was told
            CertificateWarning.objects.bulk_create(rows, ignore_conflicts=True)
            return 0
        try:
            with transaction.atomic():
                warning = CertificateWarning.objects.create(
                    service=service, fingerprint=certificate.key, days=smallest, created=now
                )
        except IntegrityError:
            return 0  # another notifier warned a moment ago, and records the rest
        CertificateWarning.objects.bulk_create(rows, ignore_conflicts=True)
        days_left = (certificate.not_after - now).total_seconds() / 86400
        alert = problems.announce(
            "certificate",
            service=service,
            now=now,
            location=location,
            reason=_certificate_reason(certificate, days_left),
            detail={
                "days_left": round(days_left, 1),
                "threshold": smallest,
                "not_after": iso(certificate.not_after),
                "subject": certificate.subject,
                "fingerprint": certificate.key,
                "which": certificate.which,
            },
        )
        CertificateWarning.objects.filter(pk=warning.pk).update(alert=alert)
    return 1


def _certificate_reason(certificate: Certificate, days_left: float) -> str:
    where = ""
    if certificate.which.endswith("chain"):
        where = f" ({certificate.role} in the chain)"
    if certificate.which.startswith("hop "):
        where += f" at redirect {certificate.which.removeprefix('hop ').removesuffix(' chain')}"
    when = f"expires in {days_left:.1f} days" if days_left >= 0 else f"expired {-days_left:.1f} days ago"
    return f"certificate {certificate.subject}{where} {when} ({certificate.not_after:%Y-%m-%d})"
