"""Which workers probe from which locations: heartbeats written by workers, read by the dispatcher and the sweeper.

Exposes `beat()` (a worker process says it is alive, per location it serves), `forget()` (it stops),
`served_locations()` (locations with a live worker, cached briefly for the dispatcher), and
`locations_report()` for `manage.py locations`.

A location is served while some worker's heartbeat is younger than `ALIVE_FOR`. Workers beat every
`BEAT_EVERY` seconds, so a killed worker stops counting after at most `ALIVE_FOR`; a worker that
stops cleanly removes its rows at once.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count, Max, Q

from monitor.models import ProbeResult, Schedule, WorkerHeartbeat
from monitor.probes import Failure

BEAT_EVERY = 5.0  # seconds between a worker's heartbeats
ALIVE_FOR = dt.timedelta(seconds=20)  # a heartbeat older than this means the worker is gone
FORGET_AFTER = dt.timedelta(days=1)  # rows of workers gone this long are deleted
CACHE_FOR = 2.0  # seconds the dispatcher trusts its last read of served locations


def beat(name: str, locations: Iterable[str], *, started_at: dt.datetime, in_flight: int, probes: int, lag_ms: float):
    """Record that worker `name` is alive and probing from `locations`."""
    now = dt.datetime.now(dt.UTC)
    rows = [
        WorkerHeartbeat(
            name=name[:200],
            location=location,
            started_at=started_at,
            last_seen=now,
            in_flight=in_flight,
            probes=probes,
            loop_lag_ms=lag_ms,
        )
        for location in locations
    ]
    WorkerHeartbeat.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["name", "location"],
        update_fields=["started_at", "last_seen", "in_flight", "probes", "loop_lag_ms"],
    )
    if int(now.timestamp()) % 600 < BEAT_EVERY:  # now and then, not every beat
        WorkerHeartbeat.objects.filter(last_seen__lt=now - FORGET_AFTER).delete()


def forget(name: str) -> None:
    """Remove worker `name`'s heartbeats: it stopped cleanly, so its locations may be unserved now."""
    WorkerHeartbeat.objects.filter(name=name[:200]).delete()


def served_locations(now: dt.datetime | None = None) -> set[str]:
    """Return the locations with a live worker (read at most every CACHE_FOR seconds per process)."""
    global _cache
    if _cache is not None and time.monotonic() - _cache[0] < CACHE_FOR:
        return _cache[1]
    now = now or dt.datetime.now(dt.UTC)
    served = set(
        WorkerHeartbeat.objects.filter(last_seen__gte=now - ALIVE_FOR).values_list("location", flat=True).distinct()
    )
    _cache = (time.monotonic(), served)
    return served


_cache: tuple[float, set[str]] | None = None


def forget_cache() -> None:
    global _cache
    _cache = None


@dataclass(frozen=True)
class LocationReport:
    """One location as `manage.py locations` shows it."""

    location: str
    services: int  # (service, location) pairs scheduled here
    workers: int  # live worker processes
    in_flight: int
    last_seen: dt.datetime | None  # newest heartbeat, live or not
    missed_last_hour: int

    @property
    def served(self) -> bool:
        return self.workers > 0


def locations_report(now: dt.datetime | None = None) -> list[LocationReport]:
    """Return every location that has services or workers, with whether it is served, in three queries."""
    now = now or dt.datetime.now(dt.UTC)
    services = dict(Schedule.objects.values_list("location").annotate(n=Count("id")).values_list("location", "n"))
    live = Q(last_seen__gte=now - ALIVE_FOR)
    beats = {
        row["location"]: row
        for row in WorkerHeartbeat.objects.values("location").annotate(
            workers=Count("id", filter=live), in_flight=Max("in_flight", filter=live), last_seen=Max("last_seen")
        )
    }
    missed: dict[str, int] = defaultdict(int)
    rows = (
        ProbeResult.objects.filter(started_at__gte=now - dt.timedelta(hours=1), failure=str(Failure.MISSED))
        .values_list("location")
        .annotate(n=Count("id"))
    )
    for location, count in rows:
        missed[location] = count
    return [
        LocationReport(
            location=location,
            services=services.get(location, 0),
            workers=beats.get(location, {}).get("workers", 0),
            in_flight=beats.get(location, {}).get("in_flight") or 0,
            last_seen=beats.get(location, {}).get("last_seen"),
            missed_last_hour=missed.get(location, 0),
        )
        for location in sorted(services.keys() | beats.keys())
    ]
