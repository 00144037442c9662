"""One (service, location)'s /metrics series as text: rendered when its state is written, joined at scrape time.

Exposes `PairState` (what the series are made of), `render(protocol, host, phases, state, tls_mode=) -> str`,
`key(protocol, host, phases, tls_mode=) -> str` (what a rendering depends on besides the state), `SEPARATOR` and
`LABELS`; and the families /metrics writes (`FAMILIES`, `PER_SERVICE`, `RENDERED`, `DAEMON`, `HISTOGRAM`)
with `header()`, `escape()` and `number()`. No database access: `collector.py` reads, and the state writer
(`monitor.daemon.expositions`) stores what `render()` returns beside each state.

Decisions:
- A rendering is each family of `RENDERED` in order, joined by SEPARATOR, so a scrape splits it and
  writes every family whole (HELP and TYPE once, then its samples: the text format requires it). The
  service's labels are LABELS in every line, filled in at scrape time from the service as it is then, so
  renaming a service or changing its tags needs no new rendering. `portwatch_service_info` and
  `portwatch_uptime_ratio` come from the service and the uptime snapshots and are written at scrape time.
- The version-exposure families (`monitor.metrics.exposure`) are rendered here too, from the state's details
  and the banner its last measured probe heard (`PairState.banner`): assessed at every scrape they cost
  80-130 ms at 5,000 states. Their verdict reads the service's TLS mode for a few protocols
  (`READS_TLS_MODE`), so the key holds the TLS mode for those (the default "none" leaves the key as it was).
  They are not the state's stored flags (`ServiceState.reveals_version`, what the overview counts): those keep
  the TLS mode the last measured probe ran with, while a scrape renders a service whose TLS mode changed live,
  as the service page assesses it. Version 3: the status they read is the last *measured* probe's, as the stored
  flags' (a missed slot made a Telnet server that sent no banner stop offering plaintext login).
- SEPARATOR and LABELS are control characters no rendered value can hold: `escape()` turns them (and
  NUL, which PostgreSQL text cannot store) into U+FFFD in every label value, so a certificate subject a
  hostile server chose cannot split a rendering or be filled with another service's labels.
- Written as text, not through prometheus_client's objects: those cost ~2 us a sample, and 10,000
  services make ~400,000 samples without the histogram (~1.3 million with all six phases).
- A paused pair and one never measured have no probe_* series and no last phases or failure: nothing
  current was measured (a stale probe_success 0 would keep ServiceDown firing).
- Counters (checks, the latency histogram) are cumulative in `ServiceState.counters` and are written for
  every pair, zero until something is counted, so `rate()` sees their first increase.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from monitor.exposure import READS_TLS_MODE
from monitor.exposure_report import measured_status
from monitor.metrics import blackbox, exposure
from monitor.models.history import PHASES, STATE_CHOICES
from monitor.probes import PROTOCOLS
from monitor.stats import LATENCY_BUCKETS, OUTCOMES

VERSION = "3"  # of the rendering: a change to what render() writes bumps it, so stored texts are redone live
SEPARATOR = "\x1e"  # between families (ASCII record separator)
LABELS = "\x1f"  # the service's labels, in every line (ASCII unit separator)
_UNSAFE = {ord(SEPARATOR): "\ufffd", ord(LABELS): "\ufffd", 0: "\ufffd"}

HISTOGRAM = "portwatch_probe_duration_seconds"
STATUSES = tuple(key for key, _ in STATE_CHOICES)  # up, warning, down, unknown, paused
PROBERS = {key: protocol.blackbox_prober for key, protocol in PROTOCOLS.items()}  # whose families a protocol's carry
DETAILED = tuple(key for key, prober in PROBERS.items() if prober in blackbox.DETAILED_PROBERS)  # read the details
# Upper bounds as Go's client writes them (5, not 5.0): deploy/prometheus/alerts_test.yml uses the same.
LE = (*(f"{bound:g}" for bound in LATENCY_BUCKETS), "+Inf")

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
    **{name: ("gauge", documentation) for name, documentation in exposure.FAMILIES.items()},
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
_NAMES = list(FAMILIES)
PER_SERVICE = tuple(_NAMES[: _NAMES.index(HISTOGRAM) + 1])  # the histogram last: it is most of the answer
DAEMON = tuple(_NAMES[_NAMES.index(HISTOGRAM) + 1 :])
AT_SCRAPE = ("portwatch_service_info", "portwatch_uptime_ratio")
RENDERED = tuple(name for name in PER_SERVICE if name not in AT_SCRAPE)


class PairState(NamedTuple):
    """What one (service, location)'s rendered series are made of: its `ServiceState`, as plain values."""

    status: str
    failure: str  # of the last result
    checked_at: dt.datetime | None  # when the last probe that measured something started
    address: str
    incident_open: bool
    successes: int  # consecutive successful probes
    last_status: str  # of the last result: up, warning, down, unknown
    last_phases: Mapping[str, float]
    tls: Mapping[str, Any] | None
    details: Mapping[str, Any]
    counters: Mapping[str, Any]  # `stats.counted()`'s checks and latency
    banner: str = ""  # of the result the last measured probe stored: evidence for the exposure families


def key(protocol: str, host: str, phases: Iterable[str], tls_mode: str = "none") -> str:
    """Return what a rendering depends on besides the state, in 32 characters: equal keys, equal texts.

    The TLS mode is part of it only where the exposure verdict reads it, and only when it is not "none".
    """
    text = f"{VERSION}\n{protocol}\n{host}\n{','.join(phases)}"
    if protocol in READS_TLS_MODE and tls_mode != "none":
        text += f"\n{tls_mode}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def render(protocol: str, host: str, phases: Iterable[str], state: PairState | None, tls_mode: str = "none") -> str:
    """Return the pair's series of each `RENDERED` family, joined by SEPARATOR, its labels left as LABELS.

    `state` None is a pair nothing was recorded for yet: status unknown and zero counters. `tls_mode` is the
    service's, which the exposure verdict of some protocols reads.
    """
    lines: dict[str, list[str]] = {name: [] for name in RENDERED}
    _state_lines(lines, protocol, host, state, tls_mode)
    counters = state.counters if state else {}
    checks = counters.get("checks") or {}
    lines["portwatch_checks_total"] += [
        f'portwatch_checks_total{{{LABELS},outcome="{outcome}"}} {checks.get(outcome, 0)}\n' for outcome in OUTCOMES
    ]
    lines[HISTOGRAM].append(_histogram(counters.get("latency") or {}, phases))
    return SEPARATOR.join("".join(lines[name]) for name in RENDERED)


def _state_lines(lines: dict[str, list[str]], protocol: str, host: str, state: PairState | None, tls_mode: str) -> None:
    status = state.status if state else "unknown"
    lines["portwatch_service_status"] += [
        f'portwatch_service_status{{{LABELS},status="{one}"}} {int(one == status)}\n' for one in STATUSES
    ]
    lines["portwatch_incident_open"].append(
        f"portwatch_incident_open{{{LABELS}}} {int(bool(state and state.incident_open))}\n"
    )
    if state is None or state.checked_at is None:
        return  # never measured: nothing below would be true
    lines["portwatch_last_check_timestamp_seconds"].append(
        f"portwatch_last_check_timestamp_seconds{{{LABELS}}} {number(state.checked_at.timestamp())}\n"
    )
    if status == "paused":
        return
    # The last result may be a missed slot: success is the last measured probe's, the kind the last result's.
    measured = measured_status(state.last_status, state.successes)
    revealed, plaintext = exposure.values(protocol, tls_mode, measured, state.banner, state.details or {})
    lines[exposure.VERSION].append(f"{exposure.VERSION}{{{LABELS}}} {revealed}\n")
    lines[exposure.PLAINTEXT].append(f"{exposure.PLAINTEXT}{{{LABELS}}} {plaintext}\n")
    ok = measured in ("up", "warning")
    samples = blackbox.samples(
        PROBERS.get(protocol),
        ok=ok,
        failure=state.failure or None,
        phases=state.last_phases or {},
        address=state.address,
        host=host,
        details=(state.details or {}) if protocol in DETAILED else {},
        tls=state.tls,
    )
    for family, values, value in samples:
        text = repr(value)  # number(), inlined: this loop writes ~30 samples a pair
        if text[-1] in "nfe":  # nan, inf, -inf, True, False
            text = _SPECIAL[text]
        if values:
            names = blackbox.FAMILIES[family][1]
            extra = ",".join(f'{name}="{escape(str(label))}"' for name, label in zip(names, values, strict=True))
            lines[family].append(f"{family}{{{LABELS},{extra}}} {text}\n")
        else:
            lines[family].append(f"{family}{{{LABELS}}} {text}\n")


def _histogram(latency: Mapping[str, Any], phases: Iterable[str]) -> str:
    """Return the pair's histogram lines for each phase: zeros for a phase nothing was counted in yet."""
    out = []
    for phase in phases:
        histogram = latency.get(phase)
        if histogram:
            count, total = histogram["count"], histogram["sum"]
            total = total if isinstance(total, str) else number(total)  # PostgreSQL's ->> gives text already
            out.append(_SERIES[phase].format(*histogram["buckets"], count, total, count))
        else:
            out.append(_SERIES[phase].format(*EMPTY))
    return "".join(out)


def _series_template(phase: str) -> str:
    """Return a pair's histogram lines for `phase` as a str.format template: bucket counts, sum, count.

    One format call per phase instead of one f-string per line: 14 lines a phase and pair.
    """

    def line(suffix: str, le: str, field: int) -> str:
        le_label = f',le="{le}"' if le else ""
        return f'{HISTOGRAM}_{suffix}{{{{{LABELS},phase="{phase}"{le_label}}}}} {{{field}}}\n'

    lines = [line("bucket", le, index) for index, le in enumerate(LE)]
    return "".join([*lines, line("sum", "", len(LE)), line("count", "", len(LE) + 1)])


_SERIES = {phase: _series_template(phase) for phase in PHASES}
EMPTY = [0] * (len(LE) + 2)


def header(name: str) -> str:
    kind, documentation = FAMILIES[name]
    return f"# HELP {name} {escape_help(documentation)}\n# TYPE {name} {kind}\n"


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape(value: str) -> str:
    """Return a label value escaped as the text format wants (backslash, double quote, line feed), made safe
    to store and join (SEPARATOR, LABELS and NUL become U+FFFD)."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    if SEPARATOR in value or LABELS in value or "\x00" in value:
        value = value.translate(_UNSAFE)
    return value


def number(value: float) -> str:
    """Return a sample value as Prometheus writes it: NaN, +Inf and -Inf spelled so, integers without a point."""
    text = repr(value)
    return _SPECIAL.get(text, text)


_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf", "True": "1", "False": "0"}
