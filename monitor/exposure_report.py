"""What the service page, the overview, /metrics and `manage.py audit` read about version exposure.

Exposes `ServiceExposure` and `Located` (frozen), `findings(service_ids)` ({(service id, location): Finding}, one
query), `exposures(service_ids)` (every service with its locations' findings, two queries), `exposed_ids(kind)`
and `counts()`; and for /metrics, which assesses each state when the state writer renders its series,
`assess_state()` (one state's finding from its evidence), `evidence(details)`, `evidence_columns()` with
`evidence_from_columns()` (the same evidence taken out of the JSON in SQL) and `heard_banner()`. The rules are
`monitor.exposure`'s; this module only gathers their evidence.

Decisions:
- The evidence is each location's last *measured* probe: the state's details, and the banner of the result
  that probe stored (found by its start, `last_checked_at`, on the (service, location, started_at) index).
  A missed slot stores an empty banner and must not make a greeting heard a minute earlier disappear.
- Paused states are left out: nobody probes them, so what they heard is history, not exposure.
- Only the details keys the rules read are taken out of the JSON in SQL, not whole documents (an HTTP
  probe's hops and TLS facts are ~2 KB a state): /metrics reads every state on each scrape.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import OuterRef, Subquery
from django.db.models.fields.json import KT

from monitor.exposure import EVIDENCE_KEYS, Finding, Software, assess
from monitor.models import ProbeResult, Service, ServiceState
from monitor.probes import standard_port

KINDS = ("version", "plaintext")  # what the overview filters on: reveals a version, offers login in clear text
OK = ("up", "warning")


@dataclass(frozen=True)
class Located:
    """One location's finding."""

    location: str
    finding: Finding


@dataclass(frozen=True)
class ServiceExposure:
    """A service and what each location's last measured probe found; `locations` empty until one was."""

    id: int
    name: str
    protocol: str
    host: str
    port: int | None
    tls_mode: str
    enabled: bool
    locations: tuple[Located, ...] = ()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host

    @property
    def software(self) -> tuple[Software, ...]:
        """Return every product heard, once per name and version, in the order of the locations."""
        seen: dict[tuple[str, str | None], Software] = {}
        for located in self.locations:
            for item in located.finding.software:
                seen.setdefault((item.name, item.version), item)
        return tuple(seen.values())

    @property
    def heard(self) -> bool:
        return any(located.finding.heard for located in self.locations)

    @property
    def reveals_version(self) -> bool:
        return any(located.finding.reveals_version for located in self.locations)

    @property
    def reveals_software(self) -> bool:
        return any(located.finding.reveals_software for located in self.locations)

    @property
    def plaintext_login(self) -> bool:
        return any(located.finding.plaintext_login for located in self.locations)

    @property
    def plaintext_why(self) -> str:
        why = (located.finding.plaintext_why for located in self.locations if located.finding.plaintext_login)
        return next(why, "")

    @property
    def exposed(self) -> bool:
        return self.reveals_version or self.plaintext_login

    def to_dict(self) -> dict[str, Any]:
        """Return the service and its findings as JSON-ready values (what `audit --json` prints)."""
        return {
            "service": self.name,
            "protocol": self.protocol,
            "host": self.host,
            "port": self.port,
            "tls_mode": self.tls_mode,
            "enabled": self.enabled,
            "heard": self.heard,
            "reveals_software": self.reveals_software,
            "reveals_version": self.reveals_version,
            "plaintext_login": self.plaintext_login,
            "locations": [
                {
                    "location": located.location,
                    "software": [
                        {
                            "name": item.name,
                            "version": item.version,
                            "distro": item.distro,
                            "source": item.source,
                            "evidence": item.evidence,
                        }
                        for item in located.finding.software
                    ],
                    "reveals_version": located.finding.reveals_version,
                    "plaintext_login": located.finding.plaintext_login,
                    "plaintext_why": located.finding.plaintext_why,
                }
                for located in self.locations
            ],
        }


def findings(service_ids: Iterable[int] | None = None) -> dict[tuple[int, str], Finding]:
    """Return {(service id, location): Finding} of every active, measured state (of `service_ids` only, if given)."""
    columns = evidence_columns()
    states = ServiceState.objects.filter(last_checked_at__isnull=False).exclude(status="paused")
    if service_ids is not None:
        states = states.filter(service_id__in=list(service_ids))
    rows = states.annotate(heard_banner=heard_banner(), **columns).values_list(
        "service_id", "location", "service__protocol", "service__tls_mode", "last_status", "heard_banner", *columns
    )
    found = {}
    for service_id, location, protocol, tls_mode, status, banner_text, *values in rows:
        details = evidence_from_columns(dict(zip(columns, values, strict=True)))
        found[service_id, location] = assess_state(protocol, tls_mode, status, banner_text or "", details)
    return found


def assess_state(protocol: str, tls_mode: str, last_status: str, banner: str, details: Mapping[str, Any]) -> Finding:
    """Return the finding of one state: its last result's status, its last measured probe's banner and details.

    `details` are the evidence only (`evidence()`): a state whose probe recorded none of it, heard no banner
    and did not succeed (a refused connection) reached nothing, so it reveals nothing.
    """
    reached = last_status in OK or bool(banner) or bool(details)
    return assess(protocol, tls_mode, banner, details, reached=reached)


def heard_banner() -> Subquery:
    """Return the banner of the result a state's last measured probe stored, for `.annotate()` on states.

    Found by its start (`last_checked_at`) on the (service, location, started_at) index: the state's
    `last_result` may be a missed slot since, which stores no banner.
    """
    banner = ProbeResult.objects.filter(
        service_id=OuterRef("service_id"), location=OuterRef("location"), started_at=OuterRef("last_checked_at")
    ).values("banner")[:1]
    return Subquery(banner)


def exposures(service_ids: Iterable[int] | None = None) -> list[ServiceExposure]:
    """Return every service (of `service_ids`, if given) by name, each with its locations' findings."""
    ids = None if service_ids is None else list(service_ids)
    by_service: dict[int, list[Located]] = defaultdict(list)
    for (service_id, location), finding in sorted(findings(ids).items()):
        by_service[service_id].append(Located(location, finding))
    services = Service.objects.order_by("name")
    if ids is not None:
        services = services.filter(pk__in=ids)
    result = []
    for pk, name, protocol, host, port, tls_mode, enabled in services.values_list(
        "pk", "name", "protocol", "host", "port", "tls_mode", "enabled"
    ):
        port = port or standard_port(protocol, tls_mode)
        result.append(ServiceExposure(pk, name, protocol, host, port, tls_mode, enabled, tuple(by_service[pk])))
    return result


def exposed_ids(kind: str) -> set[int]:
    """Return the ids of services one of whose locations reveals a version ("version") or offers plaintext login."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return {service_id for (service_id, _), finding in findings().items() if _is(finding, kind)}


def counts() -> dict[str, int]:
    """Return how many services reveal a version, and how many offer plaintext login (one query)."""
    matched: dict[str, set[int]] = {kind: set() for kind in KINDS}
    for (service_id, _), finding in findings().items():
        for kind in KINDS:
            if _is(finding, kind):
                matched[kind].add(service_id)
    return {kind: len(ids) for kind, ids in matched.items()}


def _is(finding: Finding, kind: str) -> bool:
    return finding.reveals_version if kind == "version" else finding.plaintext_login


def evidence_columns() -> dict[str, KT]:
    """Return {column: expression} taking the details keys the rules read out of a state's JSON, in SQL."""
    columns = {f"key_{key}": KT(f"details__{key}") for key in (*EVIDENCE_KEYS, "plaintext_login_offered")}
    return columns | {"key_auth": KT("details__extensions__AUTH"), "key_capabilities": KT("details__capabilities")}


def evidence_from_columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return the details the rules read from the values SQL took out of the JSON (text, or numbers on SQLite)."""
    details: dict[str, Any] = {}
    for key in (*EVIDENCE_KEYS, "plaintext_login_offered"):
        if values[f"key_{key}"] is not None:
            details[key] = values[f"key_{key}"]
    if values["key_auth"] is not None:
        details["extensions"] = {"AUTH": str(values["key_auth"])}
    capabilities = values["key_capabilities"]
    if isinstance(capabilities, str):  # the JSON array as text
        try:
            capabilities = json.loads(capabilities)
        except ValueError:
            capabilities = None
    if isinstance(capabilities, list):
        details["capabilities"] = capabilities
    return details


def evidence(details: Any) -> dict[str, Any]:
    """Return the details the rules read from a state's whole details, as `evidence_from_columns()` does from SQL.

    Applied to its own output it returns the same: a caller may pass whole details or the evidence alone.
    """
    if not isinstance(details, Mapping):
        return {}
    found = {key: details[key] for key in (*EVIDENCE_KEYS, "plaintext_login_offered") if details.get(key) is not None}
    extensions = details.get("extensions")
    if isinstance(extensions, Mapping) and extensions.get("AUTH") is not None:
        auth = extensions["AUTH"]
        found["extensions"] = {"AUTH": auth if isinstance(auth, str) else json.dumps(auth)}  # as ->> writes it
    if isinstance(details.get("capabilities"), list):
        found["capabilities"] = details["capabilities"]
    return found
