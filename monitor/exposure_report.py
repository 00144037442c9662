"""What the service page, the overview, /metrics, the state writer and `manage.py audit` read about version exposure.

Exposes `ServiceExposure` and `Located` (frozen), `findings(service_ids)` ({(service id, location): Finding}, one
query), `exposures(service_ids)` (every service with its locations' findings, two queries), and for the overview
`counts()`, `exposed_ids(kind)` and `SUMMARY_FLAGS`, which read the flags the state writer stores (`ServiceSummary`)
in SQL. For the state writer, `verdicts()` (one measured probe's two flags); for its migration's backfill
`assessed()`; for /metrics, which assesses each state when the state writer renders its series, `assess_state()`
(one state's finding from its evidence), `measured_status()`, `evidence(details)`, `evidence_columns()` with
`evidence_from_columns()` (the same evidence taken out of the JSON in SQL) and `heard_banner()`. The rules are
`monitor.exposure`'s; this module only gathers their evidence.

Decisions:
- The evidence is each location's last *measured* probe: the state's details, and the banner of the result
  that probe stored (found by its start, `last_checked_at`, on the (service, location, started_at) index), and
  its status (`measured_status()`). A missed slot stores an empty banner and status unknown and must not make a
  greeting heard a minute earlier disappear.
- Paused states are left out: nobody probes them, so what they heard is history, not exposure.
- Only the details keys the rules read are taken out of the JSON in SQL, not whole documents (an HTTP
  probe's hops and TLS facts are ~2 KB a state): /metrics reads every state on each scrape.
- The overview reads verdicts, not evidence: the state writer stores each state's two flags when it applies a
  measured probe (`verdicts()`), and the service's summary whether any active location has them. Assessing
  every state for the overview's counts and its exposure filter cost 86-147 ms a request at 11,000 states; the
  summaries' flags are counted in one scan of narrow rows. The flags keep the TLS mode the probe ran with until
  the next measured probe; the service page and the audit assess the evidence with the service as it is now.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KT

from monitor.exposure import EVIDENCE_KEYS, Finding, Software, assess
from monitor.models import ProbeResult, Service, ServiceState, ServiceSummary
from monitor.probes import standard_port

KINDS = ("version", "plaintext")  # what the overview filters on: reveals a version, offers login in clear text
SUMMARY_FLAGS = {"version": "reveals_version", "plaintext": "plaintext_login"}  # KINDS -> ServiceSummary field
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
    states = ServiceState.objects.all()
    if service_ids is not None:
        states = states.filter(service_id__in=list(service_ids))
    return {(service_id, location): finding for _, service_id, location, finding in assessed(states, ProbeResult)}


def assessed(states: QuerySet, result_model: type = ProbeResult) -> Iterable[tuple[int, int, str, Finding]]:
    """Yield (state id, service id, location, Finding) of the active, measured ones of `states`, in one query.

    Takes the result model as an argument so that the migration that brought the stored flags runs it with its
    historical models.
    """
    columns = evidence_columns()
    rows = (
        states.filter(last_checked_at__isnull=False)
        .exclude(status="paused")
        .annotate(heard_banner=heard_banner(result_model), **columns)
        .values_list(
            "pk",
            "service_id",
            "location",
            "service__protocol",
            "service__tls_mode",
            "last_status",
            "consecutive_successes",
            "heard_banner",
            *columns,
        )
    )
    for pk, service_id, location, protocol, tls_mode, last_status, successes, banner_text, *values in rows:
        details = evidence_from_columns(dict(zip(columns, values, strict=True)))
        status = measured_status(last_status, successes)
        yield pk, service_id, location, assess_state(protocol, tls_mode, status, banner_text or "", details)


def reassess(service_ids: Iterable[int]) -> int:
    """Store the exposure flags of the services' states again, and their summaries; return how many states.

    For a service whose protocol or TLS mode changed: the state writer assessed its last probe with the old
    ones, and would only assess again at its next measured probe (`Service.exposure_inputs_changed`).
    """
    from monitor.daemon import summaries  # the daemon's writer; this module is otherwise a reader

    ids = list(service_ids)
    verdicts_of = {
        pk: (finding.reveals_version, finding.plaintext_login)
        for pk, _, _, finding in assessed(ServiceState.objects.filter(service_id__in=ids))
    }
    for pk, (version, plaintext) in verdicts_of.items():  # a few locations a service: a few small updates
        ServiceState.objects.filter(pk=pk).update(reveals_version=version, offers_plaintext_login=plaintext)
    summaries.refresh(ids)
    return len(verdicts_of)


def measured_status(last_status: str, successes: int) -> str:
    """Return the status of an active state's last measured probe from its last result's and its run of successes.

    A last result of status unknown measured nothing (a missed slot): the probe before it succeeded when the
    state's run of successes goes on, since only measured probes move it.
    """
    if last_status != "unknown":
        return last_status
    return "up" if successes else "down"


def verdicts(protocol: str, tls_mode: str, status: str, banner: str, details: Any) -> tuple[bool, bool]:
    """Return (reveals a version, offers plaintext login) of one measured probe: what the state writer stores."""
    finding = assess_state(protocol, tls_mode, status, banner, evidence(details))
    return finding.reveals_version, finding.plaintext_login


def assess_state(protocol: str, tls_mode: str, last_status: str, banner: str, details: Mapping[str, Any]) -> Finding:
    """Return the finding of one state: its last measured probe's status, banner and details.

    `details` are the evidence only (`evidence()`): a state whose probe recorded none of it, heard no banner
    and did not succeed (a refused connection) reached nothing, so it reveals nothing.
    """
    reached = last_status in OK or bool(banner) or bool(details)
    return assess(protocol, tls_mode, banner, details, reached=reached)


def heard_banner(result_model: type = ProbeResult) -> Subquery:
    """Return the banner of the result a state's last measured probe stored, for `.annotate()` on states.

    Found by its start (`last_checked_at`) on the (service, location, started_at) index: the state's
    `last_result` may be a missed slot since, which stores no banner.
    """
    banner = result_model.objects.filter(
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


def exposed_ids(kind: str) -> QuerySet:
    """Return the ids of services one of whose active locations reveals a version ("version") or offers plaintext
    login ("plaintext"), as a query: `pk__in=` makes it a subquery."""
    return ServiceSummary.objects.filter(**{_flag(kind): True}).values_list("service_id", flat=True)


def counts() -> dict[str, int]:
    """Return how many services reveal a version, and how many offer plaintext login (one query, on the summaries)."""
    return ServiceSummary.objects.aggregate(**{kind: Count("pk", filter=Q(**{_flag(kind): True})) for kind in KINDS})


def _flag(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return SUMMARY_FLAGS[kind]


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
