"""/metrics: every service's last probe, status, uptime and counters, and the daemon's health, built at scrape time.

Exposes `collect(now) -> Iterator[str]`, the exposition in Prometheus's text format (0.0.4) one family at a
time, and `FAMILIES`, every family it may write. Reads the database only, so any web process answers the same.

Decisions:
- Written as text, not through prometheus_client's objects: those cost ~2 us a sample, and 10,000 services
  make ~400,000 samples without the histogram (~1.3 million with all six phases). Each family is written
  whole (HELP and TYPE once, its samples together), label values escaped as the format says.
- The states are read in one query of only the JSON keys the series use (`->>` in SQL), past Django's row
  converters: decoding the documents whole and converting each row cost over a second at 10,000 services.
  The histogram is streamed in chunks of pairs; it is most of the answer.
- Every per-service series carries service, protocol, host, port, location and instance (host:port); label
  sets never change at runtime, and tags are only in portwatch_service_info.
- blackbox's series come from `blackbox.samples()`, the code /probe answers with, on the stored state: the
  same names, help texts and meanings. A paused pair and one never measured have no probe_* series and no
  last phases or failure: nothing current was measured (a stale probe_success 0 would keep ServiceDown firing).
- Counters (checks, the latency histogram, missed slots) are cumulative in `ServiceState.counters` and are
  written for every pair, zero until something is counted, so `rate()` sees their first increase.
- Missed slots by reason: the daemon's reason sentences map onto `stats.MISSED_REASONS`; slots counted
  before the writer kept reasons are reason="unrecorded".
- The broker is asked for queue depths with one short connection; when it does not answer, the family is
  empty and the error logged, so a broker outage never fails the scrape that should report it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Case, Count, F, JSONField, Min, Value, When
from django.db.models.fields.json import KT

from monitor.daemon.workers import ALIVE_FOR
from monitor.metrics import blackbox
from monitor.models import Schedule, Service, ServiceState, Watermark, WorkerHeartbeat
from monitor.models.history import PHASES, STATE_CHOICES
from monitor.models.service import DEFAULT_LOCATION
from monitor.probes import standard_port
from monitor.readers import WINDOWS, recent_uptimes
from monitor.stats import LATENCY_BUCKETS, MISSED_REASONS, OUTCOMES
from monitor.tasks import DISPATCHED

logger = logging.getLogger(__name__)

HISTOGRAM = "portwatch_probe_duration_seconds"
STATUSES = tuple(key for key, _ in STATE_CHOICES)  # up, warning, down, unknown, paused
WINDOW_LABELS = dict(zip(WINDOWS, ("24h", "7d", "30d"), strict=True))
REASONS = (*(key for key, _ in MISSED_REASONS), "other", "unrecorded")
PROBERS = {"http": "http", "dns": "dns"}  # blackbox's prober for a protocol; the others speak through tcp
BROKER_TIMEOUT = 2.0  # seconds for the queue-depth connection: a scrape has 10 s in deploy/prometheus.yml
# Upper bounds as Go's client writes them (5, not 5.0): deploy/prometheus/alerts_test.yml uses the same.
LE = (*(f"{bound:g}" for bound in LATENCY_BUCKETS), "+Inf")

SERVICE_LABELS = ("service", "protocol", "host", "port", "location", "instance")

# name -> (type, help); the order they are written in. blackbox's come from blackbox.FAMILIES.
OWN: dict[str, tuple[str, str]] = {
    "portwatch_service_info": (
        "gauge",
        "Always 1: a (service, location) and its tags (comma-separated), TLS mode and interval, to join on",
    ),
    "portwatch_service_status": ("gauge", "The confirmed status after the thresholds, as a state set: 1 for the one"),
    "portwatch_uptime_ratio": (
        "gauge",
        "Up (or warning) over measured slots in the window, from the last uptime snapshot; absent when none was",
    ),
    "portwatch_incident_open": ("gauge", "1 while an incident is open for the service at this location"),
    "portwatch_last_check_timestamp_seconds": ("gauge", "When the last probe that measured the service started"),
    "portwatch_checks_total": ("counter", "Recorded slots by outcome: up, warning, down, missed, error"),
    HISTOGRAM: (
        "histogram",
        "Seconds of the probes that came back up or warning, by phase (PORTWATCH_METRICS_HISTOGRAM_PHASES)",
    ),
    "portwatch_dispatch_lag_seconds": ("gauge", "How far behind now the oldest slot still waiting for dispatch is"),
    "portwatch_dispatcher_last_run_timestamp_seconds": ("gauge", "When the dispatcher last ran"),
    "portwatch_queue_depth": ("gauge", "Batches waiting in the location's broker queue"),
    "portwatch_location_unserved": (
        "gauge",
        "1 when services are scheduled at the location and no worker has reported from it recently",
    ),
    "portwatch_worker_in_flight": ("gauge", "Probes running or waiting for their slot in the worker process"),
    "portwatch_worker_last_seen_timestamp_seconds": ("gauge", "When the worker process last reported"),
    "portwatch_workers_recent": ("gauge", "Worker processes that reported from the location recently"),
    "portwatch_missed_slots_total": ("counter", "Slots that got no probe, by location and reason"),
    "portwatch_probes_total": ("counter", "Recorded slots of every service at the location, by outcome"),
}
FAMILIES: dict[str, tuple[str, str]] = {
    **{name: ("gauge", documentation) for name, (documentation, _) in blackbox.FAMILIES.items()},
    **OWN,
}
# Written in three parts: the per-service families, the histogram (streamed in chunks of pairs: alone it is
# two thirds of the answer with six phases), then the daemon's families.
PER_SERVICE = tuple(list(FAMILIES)[: list(FAMILIES).index(HISTOGRAM)])
DAEMON = tuple(list(FAMILIES)[list(FAMILIES).index(HISTOGRAM) + 1 :])
CHUNK = 1000  # pairs per chunk of the histogram

STATE_COLUMNS = (
    "service_id",
    "location",
    "status",
    "last_failure",
    "last_checked_at",
    "last_address",
    "open_incident_id",
    "consecutive_successes",
    "last_status",
)
# The keys of the state's JSON the series need, read in SQL: decoding whole documents (counters ~1 KB, TLS
# facts ~0.7 KB) cost ~25 us each here, over half a second a scrape at 10,000 services.
TLS_KEYS = ("version", "cipher", "subject", "issuer", "fingerprint_sha256", "earliest_expiry", "chain_expiry")
TLS_KEYS += ("not_after", "sans", "serial_number")
DETAILED = tuple(protocol for protocol, prober in PROBERS.items() if prober in ("http", "dns"))  # whole details


def collect(now: dt.datetime | None = None) -> Iterator[str]:
    """Yield the exposition, a family at a time: per-service families first, then the daemon's health."""
    now = now or dt.datetime.now(dt.UTC)
    lines: dict[str, list[str]] = {name: [] for name in (*PER_SERVICE, *DAEMON)}
    phases = settings.PORTWATCH_METRICS_HISTOGRAM_PHASES
    services, states = _services(), _states(phases)
    pairs = _pairs(services, states)
    uptimes, _ = recent_uptimes(pairs, now)
    probes: dict[tuple[str, str], int] = defaultdict(int)
    missed: dict[tuple[str, str], int] = defaultdict(int)
    counted = []  # (labels, counters) of each pair, for the histogram
    for pair in pairs:
        service = services[pair[0]]
        state = states.pop(pair, None)
        labels = _labels(service, pair[1])
        _service_lines(lines, labels, service, state, uptimes.get(pair) or {})
        counters = state[-1] if state else {}
        _checks(lines, labels, counters)
        _tally(probes, missed, pair[1], counters)
        counted.append((labels, counters.get("latency") or {}))
    yield from _written(lines, PER_SERVICE)
    yield _header(HISTOGRAM)
    for start in range(0, len(counted), CHUNK):
        yield "".join(_histogram(labels, latency, phases) for labels, latency in counted[start : start + CHUNK])
    _daemon_lines(lines, now, probes, missed)
    yield from _written(lines, DAEMON)


# Reading ---------------------------------------------------------------------------------------------------------


def _services() -> dict[int, tuple]:
    """Return {id: (name, protocol, host, port, tls_mode, tags, locations, interval)}."""
    rows = Service.objects.values_list(
        "id", "name", "protocol", "host", "port", "tls_mode", "tags", "locations", "interval"
    )
    found = {}
    for service_id, name, protocol, host, port, tls_mode, tags, locations, interval in rows:
        port = port or standard_port(protocol, tls_mode) or 0
        found[service_id] = (name, protocol, host, port, tls_mode, tags, locations, interval)
    return found


def _states(phases: Iterable[str]) -> dict[tuple[int, str], tuple]:
    """Return {(service id, location): (STATE_COLUMNS after the pair..., last phases, TLS facts, details, counters)}.

    Only the JSON keys the series use are read, each in SQL (`KT`, `->>`): TLS facts and counters become small
    dicts of those keys, with numbers as the database wrote them (PostgreSQL gives text, SQLite numbers; both
    are written as they come). Details are read whole for the http and dns probers only, whose series use them.
    """
    phases = list(phases)
    columns = {f"phase_{name}": KT(f"last_phases__{name}") for name in PHASES}
    columns |= {f"tls_{key}": KT(f"tls__{key}") for key in TLS_KEYS}
    columns["details_"] = Case(
        When(service__protocol__in=DETAILED, then=F("details")), default=Value(None), output_field=JSONField()
    )
    columns |= {f"checks_{outcome}": KT(f"counters__checks__{outcome}") for outcome in OUTCOMES}
    columns["missed_"] = KT("counters__missed")
    for phase in phases:
        columns |= {
            f"{part}_{phase}": KT(f"counters__latency__{phase}__{part}") for part in ("buckets", "count", "sum")
        }
    query = ServiceState.objects.annotate(**columns).values_list(*STATE_COLUMNS, *columns).query
    found = {}
    width, tls_at = len(STATE_COLUMNS), len(STATE_COLUMNS) + len(PHASES)
    details_at = tls_at + len(TLS_KEYS)
    for row in _raw(query):
        last_phases = {name: float(v) for name, v in zip(PHASES, row[width:tls_at], strict=True) if v is not None}
        tls = None
        if row[tls_at + 4] is not None:  # a fingerprint: there are TLS facts
            tls = dict(zip(TLS_KEYS, row[tls_at:details_at], strict=True))
            tls["sans"] = json.loads(tls["sans"]) if tls["sans"] else []
        at = details_at + 1
        checks = {
            outcome: n for outcome, n in zip(OUTCOMES, row[at : at + len(OUTCOMES)], strict=True) if n is not None
        }
        at += len(OUTCOMES)
        counters: dict[str, Any] = {"checks": checks, "latency": {}}
        if row[at]:
            counters["missed"] = json.loads(row[at])
        at += 1
        for phase in phases:
            buckets, count, total = row[at : at + 3]
            at += 3
            if count is not None:
                bounds = buckets[1:-1].replace(" ", "").split(",")
                counters["latency"][phase] = {"buckets": bounds, "count": count, "sum": total}
        details = json.loads(row[details_at]) if isinstance(row[details_at], str) else row[details_at]
        checked_at = row[4]
        if isinstance(checked_at, str):  # SQLite's text, which Django's converters would have parsed
            checked_at = dt.datetime.fromisoformat(checked_at).replace(tzinfo=dt.UTC)
        found[row[0], row[1]] = (*row[2:4], checked_at, *row[5:width], last_phases, tls, details, counters)
    return found


def _raw(query) -> Iterator[tuple]:
    """Yield the rows of a compiled query without Django's per-row converters (~45 us a row here)."""
    sql, params = query.get_compiler(using="default").as_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(2000):
            yield from rows


def _pairs(services: Mapping[int, tuple], states: Mapping[tuple[int, str], tuple]) -> list[tuple[int, str]]:
    """Return every pair a service is configured for, and the paused pairs of locations it no longer has."""
    pairs = [
        (service_id, location)
        for service_id, service in services.items()
        for location in [name for name in service[6].split(",") if name] or [DEFAULT_LOCATION]
    ]
    return sorted(dict.fromkeys([*pairs, *(pair for pair in states if pair[0] in services)]))


# Per service -----------------------------------------------------------------------------------------------------


def _labels(service: tuple, location: str) -> str:
    name, protocol, host, port = service[:4]
    instance = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    values = (name, protocol, host, str(port), location, instance)
    return ",".join(f'{key}="{escape(value)}"' for key, value in zip(SERVICE_LABELS, values, strict=True))


def _service_lines(lines: dict[str, list[str]], labels: str, service: tuple, state: tuple | None, uptime: dict):
    _, protocol, host, _, tls_mode, tags, _, interval = service
    info = f'tags="{escape(tags)}",tls_mode="{tls_mode}",interval="{interval}"'
    lines["portwatch_service_info"].append(f"portwatch_service_info{{{labels},{info}}} 1\n")
    status = state[0] if state else "unknown"
    lines["portwatch_service_status"] += [
        f'portwatch_service_status{{{labels},status="{one}"}} {int(one == status)}\n' for one in STATUSES
    ]
    for window, counts in uptime.items():
        ratio = counts.uptime
        if ratio is not None:
            lines["portwatch_uptime_ratio"].append(
                f'portwatch_uptime_ratio{{{labels},window="{WINDOW_LABELS[window]}"}} {number(ratio)}\n'
            )
    if state is None:
        lines["portwatch_incident_open"].append(f"portwatch_incident_open{{{labels}}} 0\n")
        return
    _, failure, checked_at, address, incident, successes, last_status, last_phases, tls, details, _ = state
    lines["portwatch_incident_open"].append(f"portwatch_incident_open{{{labels}}} {int(incident is not None)}\n")
    if checked_at is None:
        return  # never measured: nothing below would be true
    lines["portwatch_last_check_timestamp_seconds"].append(
        f"portwatch_last_check_timestamp_seconds{{{labels}}} {number(checked_at.timestamp())}\n"
    )
    if status == "paused":
        return
    # The last result may be a missed slot: success is the last measured probe's, the kind the last result's.
    ok = last_status in ("up", "warning") if last_status != "unknown" else successes > 0
    samples = blackbox.samples(
        PROBERS.get(protocol, "tcp"),
        ok=ok,
        failure=failure or None,
        phases=last_phases or {},
        address=address,
        host=host,
        details=details or {},
        tls=tls,
    )
    for family, values, value in samples:
        text = repr(value)  # number(), inlined: this loop writes ~30 samples a pair
        if text[-1] in "nfe":  # nan, inf, -inf, True, False
            text = _SPECIAL[text]
        if values:
            names = blackbox.FAMILIES[family][1]
            extra = ",".join(f'{key}="{escape(label)}"' for key, label in zip(names, values, strict=True))
            lines[family].append(f"{family}{{{labels},{extra}}} {text}\n")
        else:
            lines[family].append(f"{family}{{{labels}}} {text}\n")


def _checks(lines: dict[str, list[str]], labels: str, counters: Mapping[str, Any]) -> None:
    checks = counters.get("checks") or {}
    lines["portwatch_checks_total"] += [
        f'portwatch_checks_total{{{labels},outcome="{outcome}"}} {checks.get(outcome, 0)}\n' for outcome in OUTCOMES
    ]


def _histogram(labels: str, latency: Mapping[str, Any], phases: Iterable[str]) -> str:
    """Return one pair's histogram lines for each phase: zeros for a phase nothing was counted in yet."""
    out = []
    for phase in phases:
        histogram = latency.get(phase)
        if histogram:
            count, total = histogram["count"], histogram["sum"]
            total = total if isinstance(total, str) else number(total)  # PostgreSQL's ->> gives text already
            out.append(_SERIES[phase].format(labels, *histogram["buckets"], count, total, count))
        else:
            out.append(_SERIES[phase].format(labels, *EMPTY))
    return "".join(out)


def _series_template(phase: str) -> str:
    """Return one pair's histogram lines for `phase` as a str.format template: labels, bucket counts, sum, count.

    One format call per series instead of one f-string per line: 14 lines a phase and pair made this the
    costliest part of the scrape.
    """

    def line(suffix: str, le: str, field: int) -> str:
        le_label = f',le="{le}"' if le else ""
        return f'{HISTOGRAM}_{suffix}{{{{{{0}},phase="{phase}"{le_label}}}}} {{{field}}}\n'

    lines = [line("bucket", le, index) for index, le in enumerate(LE, start=1)]
    return "".join([*lines, line("sum", "", len(LE) + 1), line("count", "", len(LE) + 2)])


_SERIES = {phase: _series_template(phase) for phase in PHASES}
EMPTY = [0] * (len(LE) + 2)


def _tally(probes: dict, missed: dict, location: str, counters: Mapping[str, Any]) -> None:
    checks = counters.get("checks") or {}
    for outcome, count in checks.items():
        probes[location, outcome] += int(count)
    by_reason = counters.get("missed") or {}
    for reason, count in by_reason.items():
        missed[location, reason if reason in REASONS else "other"] += count
    unrecorded = int(checks.get("missed", 0)) - sum(by_reason.values())
    if unrecorded > 0:
        missed[location, "unrecorded"] += unrecorded


# The daemon ------------------------------------------------------------------------------------------------------


def _daemon_lines(lines: dict[str, list[str]], now: dt.datetime, probes: dict, missed: dict) -> None:
    """Write the dispatcher's, the queues', the workers' and the locations' series."""
    scheduled = {
        row["location"]: row
        for row in Schedule.objects.values("location").annotate(n=Count("id"), oldest=Min("due_at"))
    }
    if scheduled:
        oldest = min(row["oldest"] for row in scheduled.values())
        lag = max(0.0, (now - oldest).total_seconds())
        lines["portwatch_dispatch_lag_seconds"].append(f"portwatch_dispatch_lag_seconds {number(lag)}\n")
    mark = Watermark.objects.filter(name=DISPATCHED).values_list("moment", flat=True).first()
    if mark is not None:
        lines["portwatch_dispatcher_last_run_timestamp_seconds"].append(
            f"portwatch_dispatcher_last_run_timestamp_seconds {number(mark.timestamp())}\n"
        )
    beats = list(WorkerHeartbeat.objects.values_list("name", "location", "last_seen", "in_flight"))
    recent: dict[str, int] = defaultdict(int)
    for name, location, last_seen, in_flight in sorted(beats):
        worker = f'worker="{escape(name)}",location="{escape(location)}"'
        lines["portwatch_worker_in_flight"].append(f"portwatch_worker_in_flight{{{worker}}} {in_flight}\n")
        lines["portwatch_worker_last_seen_timestamp_seconds"].append(
            f"portwatch_worker_last_seen_timestamp_seconds{{{worker}}} {number(last_seen.timestamp())}\n"
        )
        recent[location] += last_seen >= now - ALIVE_FOR
    locations = sorted(scheduled.keys() | recent.keys() | {location for location, _ in probes})
    for location in locations:
        where = f'location="{escape(location)}"'
        unserved = int(location in scheduled and not recent.get(location))
        lines["portwatch_location_unserved"].append(f"portwatch_location_unserved{{{where}}} {unserved}\n")
        lines["portwatch_workers_recent"].append(f"portwatch_workers_recent{{{where}}} {recent.get(location, 0)}\n")
        lines["portwatch_missed_slots_total"] += [
            f'portwatch_missed_slots_total{{{where},reason="{reason}"}} {missed.get((location, reason), 0)}\n'
            for reason in REASONS
        ]
        lines["portwatch_probes_total"] += [
            f'portwatch_probes_total{{{where},outcome="{outcome}"}} {probes.get((location, outcome), 0)}\n'
            for outcome in OUTCOMES
        ]
    for location, depth in queue_depths(locations).items():
        lines["portwatch_queue_depth"].append(f'portwatch_queue_depth{{location="{escape(location)}"}} {depth}\n')


def queue_depths(locations: Iterable[str]) -> dict[str, int]:
    """Return {location: messages waiting in probe.<location>}, or {} when the broker does not answer."""
    from kombu.exceptions import ChannelError

    from monitor.celery import app

    depths = {}
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT)  # no retry: one failure says it
            channel = connection.default_channel
            for location in locations:
                try:
                    depths[location] = channel.queue_declare(queue=f"probe.{location}", passive=True).message_count
                except ChannelError:  # a queue the broker never saw holds nothing
                    depths[location] = 0
    except Exception:  # the broker is away: say so in the log, and answer the rest of the scrape
        logger.warning("/metrics: could not read the queue depths from the broker", exc_info=True)
        return {}
    return depths


# Writing ---------------------------------------------------------------------------------------------------------


def _written(lines: dict[str, list[str]], names: Iterable[str]) -> Iterator[str]:
    for name in names:
        yield _header(name) + "".join(lines.pop(name))


def _header(name: str) -> str:
    kind, documentation = FAMILIES[name]
    return f"# HELP {name} {escape_help(documentation)}\n# TYPE {name} {kind}\n"


def escape(value: str) -> str:
    """Return a label value escaped as the text format wants: backslash, double quote and line feed."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    """Return a sample value as Prometheus writes it: NaN, +Inf and -Inf spelled so, integers without a point.

    One repr and a lookup, no tests: it runs ~40 times a pair, 400,000 times a scrape at 10,000 services.
    """
    text = repr(value)
    return _SPECIAL.get(text, text)


_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf", "True": "1", "False": "0"}
