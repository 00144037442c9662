"""What the service detail page reads: states, latency by phase, the status timeline, results and incidents.

Exposes `RANGES`, `states()`, `overall()`, `location_rows()`, `latency_series()`, `latency_table()`,
`timeline()`, `daily_row()`, `recent_results()`, `incidents()`, `alerts()` (what was sent, and every
attempt), `open_problem()`, and from what those read,
`certificates()` and `greetings()` (`certificate()` and `greeting_text()` for one probe). Each
reader is one query (two for the 24 h and 7 d charts, three for the 30 d one, four for the latency
table) whatever the amount of history, and raw results are read for the last hours only: the 1 h
chart, the hours not rolled up yet, the 24 h timeline (from an index alone) and the latest results.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import Avg, Count, F, FloatField, Prefetch, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, ExtractMinute, Floor, Trunc

from dashboard.charts import PHASES, Point
from dashboard.severity import rank
from monitor.models import (
    Alert,
    DailyRollup,
    DeliveryAttempt,
    HourlyRollup,
    Incident,
    Notification,
    ProbeResult,
    Problem,
    Service,
    ServiceState,
)
from monitor.probes import PROTOCOLS, Protocol
from monitor.probes.text import printable
from monitor.readers import latency_summaries
from monitor.stats import DAY, HOUR, OK_STATUSES, ceil, floor

RANGES = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
RANGE_LABELS = {"1h": "1 h", "24h": "24 h", "7d": "7 d", "30d": "30 d"}
DAILY_CHARTS = {"30d"}  # drawn a point a day; the other rolled-up ranges a point an hour
DEFAULT_RANGE = "24h"
MAX_RAW_POINTS = 720  # the 1 h chart: one point per probe, so at most one every 5 s
QUARTER = dt.timedelta(minutes=15)
TIMELINE_BUCKETS = 96  # 24 h of 15 min
DAILY_BARS = 30
RECENT_RESULTS = 50
RECENT_INCIDENTS = 20
RECENT_ALERTS = 20
NOTIFICATION_COLUMNS = ("id", "alert_id", "channel_id", "status", "attempts", "sent_at", "last_error")


def states(service: Service) -> list[ServiceState]:
    """Return the service's state at each location, with each one's last result (for its banner), in one query."""
    return list(ServiceState.objects.filter(service=service).select_related("last_result").order_by("location"))


def overall(service_states: Sequence[ServiceState]) -> tuple[str, dt.datetime | None]:
    """Return the worst status over the locations and since when it holds (the earliest among the worst)."""
    if not service_states:
        return "unknown", None
    worst = max(service_states, key=lambda state: rank(state.status)).status
    return worst, min(state.since for state in service_states if state.status == worst)


@dataclass(frozen=True)
class LocationRow:
    location: str
    state: ServiceState | None  # None: nothing recorded there yet
    probed: bool  # the location is in the service's list (a removed one keeps its paused state)


def location_rows(service: Service, service_states: Sequence[ServiceState]) -> list[LocationRow]:
    """Return one row per location the service is probed from or has a state at."""
    by_location = {state.location: state for state in service_states}
    names = sorted(set(service.location_list) | by_location.keys())
    return [LocationRow(name, by_location.get(name), name in service.location_list) for name in names]


# --- Latency -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    points: list[Point]
    start: dt.datetime
    end: dt.datetime
    step: dt.timedelta  # the expected spacing of points, to tell a hole from the normal gap
    source: str  # said under the chart: where the numbers come from


def latency_series(service: Service, key: str, now: dt.datetime) -> Series:
    """Return the chart's points for range `key` (all locations together): probes for 1 h, else period averages.

    24 h and 7 d read `HourlyRollup` (24 or 168 points, averaged in SQL), and raw results of the last
    two hours for an hour not rolled up yet (the current one, and the last one during the rollup's
    grace). 30 d is a point a day (`_daily_series()`).
    """
    if key == "1h":
        rows = (
            ProbeResult.objects.filter(service=service, status__in=OK_STATUSES, started_at__gt=now - HOUR)
            .order_by("-started_at")
            .values_list("started_at", *PHASES)[: MAX_RAW_POINTS * len(service.location_list)]
        )
        step = dt.timedelta(seconds=service.interval)
        return Series(_per_interval(reversed(rows), step), now - HOUR, now, step, "each successful probe")
    if key in DAILY_CHARTS:
        return _daily_series(service, RANGES[key], now)
    current = floor(now, HOUR)
    first = current - RANGES[key] + HOUR
    hours = _rolled_up(HourlyRollup, service, first)
    for hour, average in _recent_hours(service, current - HOUR).items():
        hours.setdefault(hour, average)  # not rolled up yet: from its raw results
    points = [Point(hour, hours[hour].phases) for hour in sorted(hours)]
    return Series(points, first, now, HOUR, "hourly averages of successful probes")


def _daily_series(service: Service, span: dt.timedelta, now: dt.datetime) -> Series:
    """Return a point a day over `span` to now: days from `DailyRollup`, today (or a day not rolled up yet) from hours.

    Read from `HourlyRollup`, the 30-day chart was 720 rows a location, each on its own heap page
    (rollups are written hour by hour for the whole fleet): 50 ms at the median and over 100 ms
    for a service not in PostgreSQL's buffers at 10,000 services, the page's slowest query. A day
    is the weighted average of its hours, as an hour is of its probes; what a point a day hides
    (an hour's spike) the table beside the chart still shows as the window's p95 and max.
    """
    today = floor(now, DAY)
    first = today - span + DAY
    days = _rolled_up(DailyRollup, service, first)
    hours = _rolled_up(HourlyRollup, service, today - DAY)  # today's, and yesterday's until its day is rolled up
    for hour, average in _recent_hours(service, floor(now, HOUR) - HOUR).items():
        hours.setdefault(hour, average)
    by_day: dict[dt.datetime, list[Average]] = defaultdict(list)
    for hour, average in hours.items():
        by_day[floor(hour, DAY)].append(average)
    for day, averages in by_day.items():
        if day >= first and day not in days:
            days[day] = _combined(averages)
    points = [Point(day, days[day].phases) for day in sorted(days)]
    return Series(points, first, now, DAY, "daily averages of successful probes")


def _per_interval(rows: Iterable[tuple], step: dt.timedelta) -> list[Point]:
    """Return a point per interval, averaging the locations' probes in it: drawn one by one, they zigzag.

    A service probed from one location gets exactly one point per probe.
    """
    groups: dict[int, list[tuple]] = defaultdict(list)
    for at, *phases in rows:
        groups[int(at.timestamp() // step.total_seconds())].append((at, phases))
    return [
        Point(group[0][0], tuple(sum(values) / len(group) for values in zip(*(p for _, p in group), strict=True)))
        for _, group in sorted(groups.items())
    ]


class Average(NamedTuple):
    """The average phases of a period's successful probes, and how many there were (its weight)."""

    probes: int
    phases: tuple[float, ...]


def _combined(averages: Sequence[Average]) -> Average:
    """Return the average of several periods' averages, each weighted by its successful probes."""
    probes = sum(average.probes for average in averages)
    sums = (sum(average.probes * average.phases[index] for average in averages) for index in range(len(PHASES)))
    return Average(probes, tuple(value / probes for value in sums))


def _rolled_up(
    model: type[HourlyRollup | DailyRollup], service: Service, first: dt.datetime
) -> dict[dt.datetime, Average]:
    """Return {period: Average} from the rollups since `first`, the locations weighted by successful probes.

    Each phase's `avg` is taken out of the latency JSON and weighted in SQL, grouped by period:
    reading each rollup's whole JSON and combining them in Python (`stats.combine()` per hour) took
    ~50 ms of the 30-day page at 10,000 services. A rollup without successful probes has an empty
    latency and counts for nothing, as in `combine()`.
    """
    weighted = {
        phase: Sum(F("up_count") * Cast(KT(f"latency__{phase}__avg"), FloatField()), output_field=FloatField())
        for phase in PHASES
    }
    rows = (
        model.objects.filter(service=service, start__gte=first, up_count__gt=0, latency__has_key=PHASES[0])
        .values("start")
        .annotate(probes=Sum("up_count"), **weighted)
        .values_list("start", "probes", *PHASES)
    )
    return {start: Average(probes, tuple(value / probes for value in phases)) for start, probes, *phases in rows}


def _recent_hours(service: Service, since: dt.datetime) -> dict[dt.datetime, Average]:
    """Return {hour: Average} of the successful raw results since `since`, averaged in SQL."""
    rows = (
        ProbeResult.objects.filter(service=service, status__in=OK_STATUSES, started_at__gte=since)
        .annotate(hour=Trunc("started_at", "hour", tzinfo=dt.UTC))
        .values("hour")
        .annotate(probes=Count("*"), **{phase: Avg(phase) for phase in PHASES})
        .values_list("hour", "probes", *PHASES)
    )
    return {hour: Average(probes, tuple(float(value or 0.0) for value in phases)) for hour, probes, *phases in rows}


NO_LATENCY: dict[str, float | None] = dict.fromkeys(("min", "avg", "p95", "max"))


@dataclass(frozen=True)
class SummaryRow:
    location: str
    total: dict[str, float | None]  # min, avg, p95, max of the total time, in seconds; None when nothing succeeded


def latency_table(service: Service, locations: Sequence[str], now: dt.datetime) -> dict[str, list[SummaryRow]]:
    """Return {range key: [SummaryRow per location]} for every range, from one `latency_summaries()` call.

    The windows end at the end of the current hour, where nothing is recorded yet, so 24 h, 7 d
    and 30 d start on a whole hour (the same hours the chart shows) and the reader takes them from
    rollups, plus raw results only after the newest rollup: a window starting mid-hour would read
    its first hour raw, 7 or 30 days back. The 1 h window is stretched by the same amount, so it
    still starts exactly one hour ago.
    """
    end = ceil(now, HOUR)
    windows = {key: (end - now) + span if key == "1h" else span for key, span in RANGES.items()}
    pairs = [(service.id, location) for location in locations]
    summaries = latency_summaries(pairs, tuple(windows.values()), end)
    return {
        key: [SummaryRow(name, summaries[(service.id, name)][window].get("total") or NO_LATENCY) for name in locations]
        for key, window in windows.items()
    }


# --- The status timeline -------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """Counts of one period's results: up (and warning among them), down, missed and other unmeasured."""

    start: dt.datetime
    end: dt.datetime
    up: int = 0
    warning: int = 0
    down: int = 0
    missed: int = 0
    unmeasured: int = 0  # status unknown for another reason: an internal or a configuration error

    @property
    def measured(self) -> bool:
        return bool(self.up or self.down)

    @property
    def status(self) -> str | None:
        """Return the worst measured status (down, warning, up), or None when nothing was measured."""
        if self.down:
            return "down"
        if self.warning:
            return "warning"
        return "up" if self.up else None


def timeline(service: Service, now: dt.datetime) -> list[Bucket]:
    """Return the last 24 h as 96 buckets of 15 min, oldest first, from one grouped query on the raw results.

    The query names only columns of the index `result_service_status` (the id is not one of them:
    `Count("*")`, and missed slots counted by their failure), so PostgreSQL counts from the index
    alone: read from the heap, the 1,440 rows a location of a service not in its buffers are one
    page each, 60 ms at the median at 10,000 services.
    """
    end = _ceil_quarter(now)
    start = end - DAY
    rows = (
        ProbeResult.objects.filter(service=service, started_at__gte=start, started_at__lt=end)
        .annotate(
            hour=Trunc("started_at", "hour", tzinfo=dt.UTC),
            quarter=Floor(ExtractMinute("started_at", tzinfo=dt.UTC) / 15),
        )
        .values("hour", "quarter", "status")
        .annotate(n=Count("*"), missed=Count("failure", filter=Q(failure="missed")))
        .values_list("hour", "quarter", "status", "n", "missed")
    )
    counts: dict[dt.datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for hour, quarter, status, n, missed in rows:
        tally = counts[hour + int(quarter) * QUARTER]
        if status in OK_STATUSES:
            tally["up"] += n
            tally["warning"] += n if status == "warning" else 0
        elif status == "down":
            tally["down"] += n
        else:
            tally["missed"] += missed
            tally["unmeasured"] += n - missed
    starts = [start + index * QUARTER for index in range(TIMELINE_BUCKETS)]
    return [Bucket(moment, moment + QUARTER, **counts.get(moment, {})) for moment in starts]


def _ceil_quarter(moment: dt.datetime) -> dt.datetime:
    hour = floor(moment, HOUR)
    return hour + QUARTER * -(-(moment - hour) // QUARTER)


def daily_row(service: Service, now: dt.datetime) -> list[Bucket]:
    """Return the 30 whole days before today from `DailyRollup` (every location summed); an empty day is a gap."""
    today = floor(now, DAY)
    first = today - DAILY_BARS * DAY
    counts: dict[dt.datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = DailyRollup.objects.filter(service=service, start__gte=first, start__lt=today)
    for start, count, up, unknown in rows.values_list("start", "count", "up_count", "unknown_count"):
        counts[start]["up"] += up
        counts[start]["down"] += count - up - unknown
        counts[start]["missed"] += unknown  # rollups count every unmeasured slot together
    days = [first + index * DAY for index in range(DAILY_BARS)]
    return [Bucket(day, day + DAY, **counts.get(day, {})) for day in days]


# --- Lists ----------------------------------------------------------------------------------------


def recent_results(service: Service, now: dt.datetime) -> list[ProbeResult]:
    """Return the service's latest results (every location), newest first, from the last 24 h only.

    On PostgreSQL, each location's latest are one index walk, backwards, joined in one UNION ALL:
    read for the service as a whole, the rows of its last day (1,440 at one a minute, each on its
    own heap page, since results are written in time order) were all read and sorted to keep 50,
    which took 45 ms for a service not in the cache. SQLite cannot slice the parts of a UNION.
    """
    recent = ProbeResult.objects.filter(service=service, started_at__gte=now - DAY)
    newest_first = ("-started_at", "-id")
    locations = sorted(set(ServiceState.objects.filter(service=service).values_list("location", flat=True)))
    if len(locations) < 2 or not connection.features.supports_slicing_ordering_in_compound:
        latest = recent.filter(location=locations[0]) if len(locations) == 1 else recent
        return list(latest.order_by(*newest_first)[:RECENT_RESULTS])
    parts = [recent.filter(location=location).order_by(*newest_first)[:RECENT_RESULTS] for location in locations]
    merged = parts[0].union(*parts[1:], all=True)
    return sorted(merged, key=lambda row: (row.started_at, row.id), reverse=True)[:RECENT_RESULTS]


def incidents(service: Service) -> list[Incident]:
    """Return the service's latest incidents, newest first."""
    return list(Incident.objects.filter(service=service).order_by("-started_at", "-id")[:RECENT_INCIDENTS])


def open_problem(service: Service) -> Problem | None:
    """Return the service's open down problem once it has started (enough locations agree), or None."""
    return Problem.objects.filter(service=service, kind="down", ended_at=None, started_at__isnull=False).first()


def alerts(service: Service) -> list[Alert]:
    """Return the service's latest alerts, newest first, with what was sent to each channel and every attempt.

    Three queries. Channels are read by name only: their URLs and secrets are neither decrypted nor shown.
    """
    sent = Notification.objects.select_related("channel").only(
        *NOTIFICATION_COLUMNS, "channel__id", "channel__name", "channel__kind"
    )
    attempts = DeliveryAttempt.objects.order_by("at", "id")
    return list(
        Alert.objects.filter(service=service)
        .order_by("-created", "-id")
        .prefetch_related(
            Prefetch("notifications", queryset=sent.order_by("channel__name")),
            Prefetch("notifications__attempts_made", queryset=attempts),
        )[:RECENT_ALERTS]
    )


# --- Certificates and greetings -------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """What the page shows of one TLS connection's certificate (a `TLSFacts.to_dict()`), days counted from now."""

    location: str  # or several: "eu, us"
    where: str  # "" for the service's connection, else the redirect hop: "hop 2: https://..."
    subject: str
    issuer: str
    sans: list[str]
    not_after: dt.datetime | None
    days_left: float | None
    first_expiry: str  # when a certificate other than the leaf expires first: its role and subject
    first_expiry_days: float | None
    version: str
    cipher: str
    fingerprint: str
    verified: bool
    verify_error: str


def certificates(service_states: Sequence[ServiceState], now: dt.datetime) -> list[Certificate]:
    """Return the certificates of each location's last probe: every redirect hop's, else the connection's.

    Locations that saw the same certificate on the same connection share one entry ("eu, us").
    """
    found: list[Certificate] = []
    for state in service_states:
        details = state.details if isinstance(state.details, dict) else {}
        hops = [hop for hop in details.get("hops") or [] if isinstance(hop, dict)]
        with_tls = [(number, hop) for number, hop in enumerate(hops, 1) if isinstance(hop.get("tls"), dict)]
        for number, hop in with_tls:
            where = f"hop {number}: {hop.get('url', '')}" if len(hops) > 1 else ""
            found.append(certificate(hop["tls"], now, state.location, where))
        if not with_tls and isinstance(state.tls, dict):
            found.append(certificate(state.tls, now, state.location))
    merged: dict[tuple, Certificate] = {}
    for cert in found:
        key = (cert.where, cert.fingerprint, cert.version, cert.cipher, cert.verified, cert.verify_error)
        seen = merged.get(key)
        merged[key] = dataclasses.replace(seen, location=f"{seen.location}, {cert.location}") if seen else cert
    return list(merged.values())


def certificate(tls: Mapping[str, Any], now: dt.datetime, location: str = "", where: str = "") -> Certificate:
    """Return what the page shows of one `TLSFacts.to_dict()`."""
    not_after = _moment(tls.get("not_after"))
    stored_left = _number(tls.get("days_left"))
    days_left = (not_after - now).total_seconds() / 86400 if not_after else stored_left
    first_expiry, first_days = "", None
    role, chain_left = tls.get("chain_expiry_role"), _number(tls.get("chain_days_left"))
    if role and role != "leaf" and chain_left is not None and stored_left is not None and days_left is not None:
        first_expiry = f"{role} {tls.get('chain_expiry_subject') or ''}".strip()
        first_days = days_left - (stored_left - chain_left)  # the same lead over the leaf as at the handshake
    return Certificate(
        location=location,
        where=where,
        subject=str(tls.get("subject") or ""),
        issuer=str(tls.get("issuer") or ""),
        sans=[str(name) for name in tls.get("sans") or []],
        not_after=not_after,
        days_left=days_left,
        first_expiry=first_expiry,
        first_expiry_days=first_days,
        version=str(tls.get("version") or ""),
        cipher=str(tls.get("cipher") or ""),
        fingerprint=str(tls.get("fingerprint_sha256") or ""),
        verified=bool(tls.get("verified")),
        verify_error=str(tls.get("verify_error") or ""),
    )


def _moment(value: object) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


MAX_GREETING_BYTES = 4096  # the engine bounds banners and replies already; a page still shows at most this
SIGNIFICANT_DIGITS = 4  # of a float shown: RTTs and login times are measured to the microsecond, not read so


@dataclass(frozen=True)
class Greeting:
    locations: str  # the locations whose last probe saw this text, "default" or "eu, us"
    text: str
    truncated: bool


def greeting_text(protocol: str | Protocol, banner: str, details: Mapping[str, Any] | None) -> tuple[str, bool]:
    """Return (text, truncated): the banner and the details the protocol shows, at most `MAX_GREETING_BYTES`.

    Which details, under which heading and in which order is the protocol module's `shown`; an unknown
    protocol (a module removed since the result was stored) shows the banner alone. A mapping is one
    "KEY value" line per entry, a list one line per item, anything else "Heading: value".
    """
    known = protocol if isinstance(protocol, Protocol) else PROTOCOLS.get(protocol)
    details = details if isinstance(details, Mapping) else {}
    blocks = [banner.rstrip()] if banner else []
    for key, heading in known.shown if known else ():
        value = details.get(key)
        if value in (None, ""):
            continue
        if isinstance(value, Mapping) and value:
            lines = [f"  {_compact(name)} {_compact(item)}".rstrip() for name, item in value.items()]
            blocks.append("\n".join([f"{heading}:", *lines]))
        elif isinstance(value, (list, tuple)) and value:
            blocks.append("\n".join([f"{heading}:", *(f"  {_compact(item)}" for item in value)]))
        else:
            blocks.append(f"{heading}: {_compact(value)}")
    return _bounded("\n\n".join(blocks))


def _compact(value: object) -> str:
    """Return a details value on one line: a mapping as "key=value ...", a list comma-separated, floats rounded.

    A mapping's keys come in a fixed order, "name" first. An empty list or mapping is "none": a server that
    lists no capabilities said so. Text goes through `printable()` again, bounded: the engine cleaned it,
    but a line break in a value stored by an older version would still read as a heading of its own.
    """
    if isinstance(value, Mapping):
        # PostgreSQL's jsonb keeps no key order: a fixed one, the name first, reads the same on either database.
        ordered = sorted(value.items(), key=lambda pair: (pair[0] != "name", str(pair[0])))
        parts = (f"{_compact(name)}={_compact(item)}" for name, item in ordered if item not in (None, ""))
        return " ".join(parts) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_compact(item) for item in value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _rounded(value)
    return printable(str(value), limit=MAX_GREETING_BYTES)


def _rounded(value: float) -> str:
    """Return `value` to `SIGNIFICANT_DIGITS` without an exponent: an RTT of 3.1e-05 s reads 0.000031."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    text = f"{value:.{SIGNIFICANT_DIGITS}g}"
    if "e" in text:
        decimals = max(0, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value))))
        text = f"{float(text):.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _bounded(text: str) -> tuple[str, bool]:
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_GREETING_BYTES:
        return text, False
    return encoded[:MAX_GREETING_BYTES].decode("utf-8", "ignore"), True


def greetings(protocol: str, service_states: Sequence[ServiceState], results: Sequence[ProbeResult]) -> list[Greeting]:
    """Return what each location's last measured probe heard, locations that heard the same text together.

    The banner is the newest one heard: the state's last result's, else the newest among `results`
    (newest first). A missed slot or a refused connection heard nothing, and must not hide what the
    server said a minute earlier.
    """
    heard: dict[tuple[str, bool], list[str]] = {}
    for state in service_states:
        measured = [state.last_result] if state.last_result else []
        measured += [result for result in results if result.location == state.location]
        banner = next((result.banner for result in measured if result.banner), "")
        text, truncated = greeting_text(protocol, banner, state.details)
        if text:
            heard.setdefault((text, truncated), []).append(state.location)
    return [Greeting(", ".join(locations), text, truncated) for (text, truncated), locations in heard.items()]
