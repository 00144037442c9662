"""Detectors every notifier run calls beside status changes: certificates expiring, slow services, the monitor's
own health. `check(now) -> int` runs those that are due; `certificates(now)`, `degraded(now)` and
`monitor_health(now)` each run one at once. Each returns how many alerts it made.

1. **In bulk, throttled.** A detector reads what it needs for every service at once (a few queries, only
   services with the feature set) and writes only where something changes. `check` runs each at most once per
   `EVERY` across all notifiers: the notifier that moves the detector's `conditions.<name>` Watermark runs it,
   the others skip it (a conditional UPDATE on the moment it read).
2. **Certificates**: `monitor.alerting.certificates` (its docstring tells how).
3. **Degraded.** Per location, the last `degraded_checks` measured results (up or warning; down and unmeasured
   slots are skipped) within `LOOKBACK_CHECKS` intervals: all slower than `degraded_latency` (total) opens the
   service's problem, at the first slow check; all within it, at the locations the problem was seen (or any,
   when those are no longer probed), resolves it ("normal"). Fewer results decide nothing. Only services
   whose last result was slow, or with an open problem, have their results read.
4. **The monitor's health**, problems without a service, keyed by what and where:
   - `no_worker:<location>`: the location has enabled services and no worker heartbeat within
     PORTWATCH_ALERT_WORKER_GRACE, and has needed one for longer than that (its schedule rows' `active_since`).
     That grace is the only start-up allowance: a notifier started before a location's workers beat for the
     first time may alert once, then resolve;
   - `dispatcher`: the `dispatched_at` watermark, which `monitor.tasks.dispatch` moves after every completed
     tick, is older than `DISPATCH_STALLED_AFTER` while services are scheduled. It stays still when beat is
     stopped and when every tick fails, which is what stops probes. With no watermark yet, a schedule row
     overdue by that long says the same;
   - `missed:<location>`: more than PORTWATCH_ALERT_MISSED_SHARE percent of the location's results in the
     last `MISSED_WINDOW` measured nothing through the monitor's fault (failure `missed` or `internal_error`;
     a `config_error` is the service's own). Slots missed because nobody serves the location, or nothing was
     dispatched, are left out: the two problems above tell those, and would otherwise be told twice and the
     share would outlast their end by ten minutes. Read at most once per `MISSED_EVERY`.
   A problem ends when its condition no longer holds, or its location is gone.
5. **Several notifiers at once.** `problems.open_problem` relies on the open-problem constraint, and a
   resolution locks the problem row; each runs in its own transaction here.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, Q

from monitor.alerting import problems
from monitor.alerting.certificates import certificates
from monitor.humanize import span
from monitor.models import (
    ProbeResult,
    Problem,
    Schedule,
    Service,
    ServiceState,
    Watermark,
    WorkerHeartbeat,
)
from monitor.models.schedule import DISPATCHED
from monitor.probes import Failure
from monitor.stats import MISSED_REASONS

EVERY = {
    "certificates": dt.timedelta(seconds=60),  # reads every TLS service's facts; days pass slowly
    "degraded": dt.timedelta(seconds=30),  # reads every latency-watched state; N checks take minutes anyway
    "monitor_health": dt.timedelta(seconds=15),  # two aggregates and a watermark
}
MISSED_EVERY = dt.timedelta(seconds=60)  # the share scans ten minutes of results: ~100,000 rows at 10,000 services
MISSED_WINDOW = dt.timedelta(minutes=10)
DISPATCH_STALLED_AFTER = dt.timedelta(seconds=60)  # dispatch runs every second and notes it every 10 s at most
LOOKBACK_CHECKS = 5  # intervals beyond degraded_checks in which its measured results must fall
MEASURED = ("up", "warning")
UNMEASURED = (str(Failure.MISSED), str(Failure.INTERNAL_ERROR))
TOLD_ELSEWHERE = tuple(dict(MISSED_REASONS)[key] for key in ("unserved", "never_dispatched"))
CHUNK = 500  # service ids per query


def check(now: dt.datetime) -> int:
    """Run each detector that is due (see `EVERY`); return how many alerts were made."""
    made = 0
    detectors: dict[str, Callable[[dt.datetime], int]] = {
        "certificates": certificates,
        "degraded": degraded,
        "monitor_health": monitor_health,
    }
    if not settings.PORTWATCH_ALERT_MONITOR_HEALTH:
        del detectors["monitor_health"]
    for name, detector in detectors.items():
        if _due(f"conditions.{name}", EVERY[name], now):
            made += detector(now)
    return made


def _due(name: str, every: dt.timedelta, now: dt.datetime) -> bool:
    """Claim this period's run of `name`; True for the one notifier that moved its watermark to `now`."""
    moment = Watermark.objects.filter(name=name).values_list("moment", flat=True).first()
    if moment is None:
        try:
            with transaction.atomic():
                Watermark.objects.create(name=name, moment=now)
        except IntegrityError:
            return False  # another notifier made it a moment ago, and runs the detector
        return True
    if abs(now - moment) < every:  # a moment far ahead is a clock that jumped back: run rather than stall
        return False
    return Watermark.objects.filter(name=name, moment=moment).update(moment=now) == 1


# --- Degraded ---------------------------------------------------------------------------------------


class Watched(NamedTuple):
    limit: float  # seconds of total latency
    checks: int
    interval: int


def degraded(now: dt.datetime) -> int:
    """Open or resolve services' degraded problems from their last measured latencies; return alerts made."""
    watched: dict[int, Watched] = {}
    locations: defaultdict[int, list[str]] = defaultdict(list)
    slow_now: set[int] = set()
    states = (
        ServiceState.objects.filter(service__enabled=True, service__degraded_latency__isnull=False)
        .exclude(status="paused")
        .values_list(
            "service_id",
            "location",
            "last_phases",
            "service__degraded_latency",
            "service__degraded_checks",
            "service__interval",
        )
    )
    for service_id, location, phases, limit, checks, interval in states.iterator(chunk_size=2000):
        watched[service_id] = Watched(limit, max(checks, 1), interval)
        locations[service_id].append(location)
        if isinstance(phases, dict) and (phases.get("total") or 0) > limit:
            slow_now.add(service_id)
    opened = {
        row[0]: row[1:]
        for row in Problem.objects.filter(kind="degraded", ended_at=None).values_list(
            "service_id", "locations", "started_at"
        )
    }
    made = _stop_unwatched(set(opened) - set(watched), now)
    candidates = {service_id for service_id in watched if service_id in slow_now or service_id in opened}
    latest = _latest_measured(candidates, watched, now)
    services = Service.objects.in_bulk(candidates)
    for service_id in sorted(candidates):
        rule, service = watched[service_id], services.get(service_id)
        if service is None:
            continue
        verdicts = {location: _verdict(latest[(service_id, location)], rule) for location in locations[service_id]}
        if service_id in opened:
            made += _maybe_resolve(service, verdicts, opened[service_id], rule, now)
        else:
            made += _maybe_open(service, verdicts, rule, now)
    return made


def _latest_measured(
    candidates: set[int], watched: dict[int, Watched], now: dt.datetime
) -> defaultdict[tuple[int, str], list[tuple[dt.datetime, float]]]:
    """Return each candidate (service, location)'s recent measured results, newest first, as (start, total).

    One query per lookback span and CHUNK services: services share a handful of intervals.
    """
    by_span: defaultdict[dt.timedelta, list[int]] = defaultdict(list)
    for service_id in sorted(candidates):
        rule = watched[service_id]
        by_span[dt.timedelta(seconds=rule.interval * (rule.checks + LOOKBACK_CHECKS))].append(service_id)
    latest: defaultdict[tuple[int, str], list[tuple[dt.datetime, float]]] = defaultdict(list)
    for lookback, service_ids in by_span.items():
        for start in range(0, len(service_ids), CHUNK):
            rows = (
                ProbeResult.objects.filter(
                    service_id__in=service_ids[start : start + CHUNK],
                    started_at__gte=now - lookback,
                    started_at__lte=now,
                    status__in=MEASURED,
                )
                .order_by("-scheduled_at")
                .values_list("service_id", "location", "started_at", "total")
            )
            for service_id, location, started_at, total in rows:
                latest[(service_id, location)].append((started_at, total))
    return latest


def _verdict(results: list[tuple[dt.datetime, float]], rule: Watched) -> tuple[str, list[tuple[dt.datetime, float]]]:
    """Return "slow", "fast" or "" (too few, or mixed) for a location's newest results, and the ones that decided."""
    last = results[: rule.checks]
    if len(last) < rule.checks:
        return "", last
    if all(total > rule.limit for _, total in last):
        return "slow", last
    if all(total <= rule.limit for _, total in last):
        return "fast", last
    return "", last


def _maybe_open(service: Service, verdicts: dict, rule: Watched, now: dt.datetime) -> int:
    slow = [location for location, (verdict, _) in verdicts.items() if verdict == "slow"]
    if not slow:
        return 0
    location = slow[0]
    last = verdicts[location][1]
    latency = last[0][1]
    with transaction.atomic():
        made = problems.open_problem(
            "degraded",
            service=service,
            at=last[-1][0],
            now=now,
            location=location,
            reason=f"latency {latency * 1000:.0f} ms above {rule.limit * 1000:.0f} ms for {rule.checks} checks",
            detail={"latency": round(latency, 6), "limit": rule.limit},
        )
    return len(made)


def _maybe_resolve(
    service: Service, verdicts: dict, problem: tuple[list[str], dt.datetime | None], rule: Watched, now: dt.datetime
) -> int:
    seen_at, started_at = problem
    if any(verdict == "slow" for verdict, _ in verdicts.values()):
        return 0
    relevant = [location for location in seen_at if location in verdicts] or list(verdicts)
    if not relevant or any(verdicts[location][0] != "fast" for location in relevant):
        return 0
    # Normal again from the first of the good checks, where the last location to recover had them.
    at = max(verdicts[location][1][-1][0] for location in relevant)
    latency = max(verdicts[location][1][0][1] for location in relevant)
    with transaction.atomic():
        made = problems.resolve_problem(
            "degraded",
            service=service,
            at=max(at, started_at) if started_at else at,
            now=now,
            location=relevant[0],
            detail={"latency": round(latency, 6), "limit": rule.limit},
        )
    return len(made)


def _stop_unwatched(service_ids: set[int], now: dt.datetime) -> int:
    """End degraded problems of services no longer watched (latency limit cleared, service disabled)."""
    made = 0
    for service in Service.objects.filter(pk__in=service_ids):
        with transaction.atomic():
            made += len(
                problems.resolve_problem(
                    "degraded", service=service, at=now, now=now, detail={"ended": "latency is no longer watched"}
                )
            )
    return made


# --- The monitor's own health -----------------------------------------------------------------------


def monitor_health(now: dt.datetime) -> int:
    """Open and resolve the monitor's problems: unserved locations, a stalled dispatcher, missed slots."""
    opened = set(Problem.objects.filter(kind="monitor", ended_at=None).values_list("key", flat=True))
    made = _workers(now, opened) + _dispatcher(now, opened)
    if _due("conditions.missed", MISSED_EVERY, now):
        made += _missed(now, opened)
    return made


def _workers(now: dt.datetime, opened: set[str]) -> int:
    grace = dt.timedelta(seconds=settings.PORTWATCH_ALERT_WORKER_GRACE)
    needed = dict(
        Schedule.objects.filter(service__enabled=True)
        .values_list("location")
        .annotate(since=Min("active_since"))
        .values_list("location", "since")
    )
    seen = dict(
        WorkerHeartbeat.objects.values_list("location").annotate(last=Max("last_seen")).values_list("location", "last")
    )
    made = 0
    for location, since in sorted(needed.items()):
        last = seen.get(location)
        unserved = (last is None or last < now - grace) and since < now - grace
        heard = f"its last worker heartbeat was {span((now - last).total_seconds())} ago" if last else "no worker ever"
        reason = f"no worker is probing from location {location!r}: {heard}; its probes are recorded as missed"
        made += _monitor(f"no_worker:{location}", unserved, opened, now, at=last or since, reason=reason)
    made += _gone(opened, "no_worker:", set(needed), now)
    return made


def _dispatcher(now: dt.datetime, opened: set[str]) -> int:
    scheduled = Schedule.objects.filter(service__enabled=True)
    last = Watermark.objects.filter(name=DISPATCHED).values_list("moment", flat=True).first()
    if last is None:  # never dispatched: rows wait from their first slot
        since = scheduled.aggregate(oldest=Min("due_at"))["oldest"]
        stalled = since is not None and now - since > DISPATCH_STALLED_AFTER
        said = "has not run since probes were first due"
    else:
        since = last
        stalled = now - last > DISPATCH_STALLED_AFTER and scheduled.exists()
        said = f"last ran {span((now - last).total_seconds())} ago"
    reason = f"the dispatcher {said}: no probes are handed out (is Celery beat running, and dispatch not failing?)"
    return _monitor("dispatcher", stalled, opened, now, at=since or now, reason=reason)


def _missed(now: dt.datetime, opened: set[str]) -> int:
    unmeasured = Q(failure__in=UNMEASURED)
    for words in TOLD_ELSEWHERE:
        unmeasured &= ~Q(reason__contains=words)
    rows = (
        ProbeResult.objects.filter(started_at__gt=now - MISSED_WINDOW, started_at__lte=now)
        .values_list("location")
        .annotate(total=Count("id"), unmeasured=Count("id", filter=unmeasured))
        .values_list("location", "total", "unmeasured")
    )
    limit = settings.PORTWATCH_ALERT_MISSED_SHARE
    made, present = 0, set()
    for location, total, missed in sorted(rows):
        present.add(location)
        share = 100 * missed / total
        reason = (
            f"{share:.0f}% of the slots of location {location!r} in the last {span(MISSED_WINDOW.total_seconds())} "
            f"were not measured ({missed} of {total}; the limit is {limit}%)"
        )
        detail = {"share": round(share, 1), "missed": missed, "slots": total}
        made += _monitor(f"missed:{location}", share > limit, opened, now, at=now, reason=reason, detail=detail)
    made += _gone(opened, "missed:", present, now)
    return made


def _monitor(
    key: str,
    holds: bool,
    opened: set[str],
    now: dt.datetime,
    *,
    at: dt.datetime,
    reason: str,
    detail: dict | None = None,
) -> int:
    """Open the monitor problem `key` when its condition holds, resolve it when not; return alerts made."""
    where = key.partition(":")[2]
    facts = {"key": key, **({"location": where} if where else {}), **(detail or {})}
    with transaction.atomic():
        if holds and key not in opened:
            made = problems.open_problem(
                "monitor", service=None, key=key, at=at, now=now, reason=reason, location=where, detail=facts
            )
        elif not holds and key in opened:
            made = problems.resolve_problem(
                "monitor", service=None, key=key, at=now, now=now, location=where, detail=facts
            )
        else:
            made = []
    return len(made)


def _gone(opened: set[str], prefix: str, present: set[str], now: dt.datetime) -> int:
    """Resolve the open `prefix` problems of locations no longer there (no services, no results)."""
    made = 0
    for key in sorted(opened):
        if key.startswith(prefix) and key.removeprefix(prefix) not in present:
            made += _monitor(key, False, opened, now, at=now, reason="")
    return made
