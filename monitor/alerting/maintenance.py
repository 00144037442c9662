"""When maintenance windows apply: `occurrence()`, `occurrences()`, `next_occurrence()`, `covering()`,
`in_maintenance()`, `validate()` (the admin form's checks), `zone()` and `from_wall()` (a local time as UTC).

Plain functions over the ORM, read by the notifier (to hold new alerts), the dashboard and /metrics.

Decisions:
- A repeating window recurs at the same local wall-clock time in `window.timezone`: occurrence k starts at
  the local time of `starts_at` plus k days (or weeks) and lasts as long, on the wall clock, as the first.
  So a 02:00-04:00 Europe/Berlin window stays 02:00-04:00 local across a DST change, and lasts 1 h or 3 h
  of real time on the two nights the clocks move.
- A local time the clocks skip (02:30 on the night Berlin jumps from 02:00 to 03:00) is read as the wall
  clock reads it after the jump (03:30): the window starts late and is shorter that night, never earlier.
- A local time the clocks show twice (02:30 on the night Berlin falls back) starts an occurrence at its
  first moment and ends one at its second: the window is never shorter than its wall-clock span, since
  cutting a maintenance short would release alerts about work still going on.
- `repeat_until` is the last moment an occurrence may start; an occurrence that started before it runs to
  its end, for the same reason. A window that does not repeat ignores it.
- An occurrence covers [start, end): at its end the service is out of maintenance.
- Windows are few and services many: windows are read in one query with their services' ids (a join, one
  row per attached service), occurrences computed in Python, and tags matched in Python against one query
  of the services' ids and tags, only when a covering window has tags.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, Iterator

from django.core.exceptions import ValidationError
from django.db.models import F, Q

from monitor.models import MaintenanceWindow, Service

PERIODS = {"daily": dt.timedelta(days=1), "weekly": dt.timedelta(days=7)}
LONGEST_PERIOD = max(PERIODS.values())
TOO_LONG = {
    "daily": "A daily window must last less than a day.",
    "weekly": "A weekly window must last less than a week.",
}

Occurrence = tuple[dt.datetime, dt.datetime]  # start, end (aware, UTC)


def occurrence(window: MaintenanceWindow, at: dt.datetime) -> Occurrence | None:
    """Return the occurrence of `window` covering `at` (start <= at < end), or None; never for a disabled one."""
    if not window.enabled:
        return None
    period = PERIODS.get(window.repeat)
    if period is None:
        return (window.starts_at, window.ends_at) if window.starts_at <= at < window.ends_at else None
    tz = zone(window)
    first = _wall(window.starts_at, tz)
    nearest = (_wall(at, tz) - first) // period
    # The wall-clock guess can be off by one where offsets differ; a later occurrence ends later: try it first.
    for number in (nearest + 1, nearest, nearest - 1):
        found = _nth(window, tz, number)
        if found is not None and found[0] <= at < found[1]:
            return found
    return None


def occurrences(window: MaintenanceWindow, since: dt.datetime, until: dt.datetime) -> Iterator[Occurrence]:
    """Yield the occurrences of `window` that overlap [since, until), in order; none for a disabled one."""
    if not window.enabled:
        return
    period = PERIODS.get(window.repeat)
    if period is None:
        if window.starts_at < until and window.ends_at > since:
            yield window.starts_at, window.ends_at
        return
    tz = zone(window)
    number = max(0, (_wall(since, tz) - _wall(window.starts_at, tz)) // period - 1)
    while (found := _nth(window, tz, number)) is not None and found[0] < until:
        if found[1] > since:
            yield found
        number += 1


def covering(service: Service, at: dt.datetime) -> tuple[MaintenanceWindow, dt.datetime] | None:
    """Return the window holding `service` at `at` and when its occurrence ends (the latest-ending of several)."""
    tags = set(service.tag_list)
    found = None
    for window, service_ids in _current(at, Q(services=service) | ~Q(tags="")):
        if service.pk not in service_ids and not tags & _tags(window):
            continue
        span = occurrence(window, at)
        if span is not None and (found is None or span[1] > found[1]):
            found = (window, span[1])
    return found


def in_maintenance(
    at: dt.datetime, among: Iterable[int] | None = None
) -> dict[int, tuple[MaintenanceWindow, dt.datetime]]:
    """Return {service id: (window, end of its occurrence)} for every service in maintenance at `at`.

    `among` limits the answer (and the tag query) to those services, e.g. one page of the overview.
    Two queries at most whatever the number of services: the windows, and the tags if a covering window has any.
    """
    wanted = None if among is None else set(among)
    held: dict[int, tuple[MaintenanceWindow, dt.datetime]] = {}

    def hold(service_id: int, window: MaintenanceWindow, end: dt.datetime) -> None:
        if (wanted is None or service_id in wanted) and (service_id not in held or end > held[service_id][1]):
            held[service_id] = (window, end)

    by_tag: list[tuple[set[str], MaintenanceWindow, dt.datetime]] = []
    for window, service_ids in _current(at):
        span = occurrence(window, at)
        if span is None:
            continue
        for service_id in service_ids:
            hold(service_id, window, span[1])
        if tags := _tags(window):
            by_tag.append((tags, window, span[1]))
    if by_tag:
        services = Service.objects.exclude(tags="")
        if wanted is not None:
            services = services.filter(pk__in=wanted)
        for service_id, listed in services.values_list("pk", "tags").iterator(chunk_size=2000):
            service_tags = set(listed.split(","))
            for window_tags, window, end in by_tag:
                if service_tags & window_tags:
                    hold(service_id, window, end)
    return held


def next_occurrence(window: MaintenanceWindow, at: dt.datetime) -> Occurrence | None:
    """Return the occurrence covering `at`, else the next one to start, or None when there is none left."""
    current = occurrence(window, at)
    if current is not None:
        return current
    if window.repeat not in PERIODS:
        return (window.starts_at, window.ends_at) if window.enabled and window.starts_at > at else None
    return next(occurrences(window, at, at + LONGEST_PERIOD + dt.timedelta(days=1)), None)


def validate(window: MaintenanceWindow) -> None:
    """Raise ValidationError, by field, when `window` cannot be applied: its times, its repetition or its zone."""
    errors: dict[str, str] = {}
    tz = None
    try:
        tz = zone(window)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        errors["timezone"] = f"Unknown time zone {window.timezone!r}: use a name like Europe/Berlin."
    starts, ends, until, repeat = window.starts_at, window.ends_at, window.repeat_until, window.repeat
    if starts is not None and ends is not None:
        if ends <= starts:
            errors["ends_at"] = "The window must end after it starts."
        elif repeat in PERIODS and tz is not None and _wall(ends, tz) - _wall(starts, tz) >= PERIODS[repeat]:
            # One occurrence would still run when the next began: the services would never leave maintenance.
            errors["ends_at"] = TOO_LONG[repeat]
    if until is not None:
        if window.repeat not in PERIODS:
            errors["repeat_until"] = "Only a repeating window has an end to its repetition."
        elif starts is not None and until <= starts:
            errors["repeat_until"] = "The repetition must end after the window first starts."
    if errors:
        raise ValidationError(errors)


# --- Reading ---------------------------------------------------------------------------------------------------


def _current(at: dt.datetime, *more: Q) -> list[tuple[MaintenanceWindow, set[int]]]:
    """Return the enabled windows that may cover `at`, each with its attached services' ids, in one query.

    Joined to the services, a window comes once per attached service (`service_ref`), or once with None.
    """
    may_cover = Q(repeat="none", ends_at__gt=at) | (
        ~Q(repeat="none") & (Q(repeat_until=None) | Q(repeat_until__gt=at - LONGEST_PERIOD))
    )
    rows = (
        MaintenanceWindow.objects.filter(may_cover, *more, enabled=True, starts_at__lte=at)
        .annotate(service_ref=F("services__id"))
        .order_by("pk")
    )
    windows: dict[int, tuple[MaintenanceWindow, set[int]]] = {}
    for row in rows:
        _, service_ids = windows.setdefault(row.pk, (row, set()))
        if row.service_ref is not None:
            service_ids.add(row.service_ref)
    return list(windows.values())


def _tags(window: MaintenanceWindow) -> set[str]:
    return {tag for tag in window.tags.split(",") if tag}  # stored normalised: lowercase, comma-separated


# --- Local time ------------------------------------------------------------------------------------------------


def zone(window: MaintenanceWindow) -> zoneinfo.ZoneInfo:
    """Return the window's time zone (UTC when none is set)."""
    return zoneinfo.ZoneInfo(window.timezone or "UTC")


def _wall(moment: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """Return `moment` as a naive local wall-clock time in `tz`."""
    return moment.astimezone(tz).replace(tzinfo=None)


def _nth(window: MaintenanceWindow, tz: zoneinfo.ZoneInfo, number: int) -> Occurrence | None:
    """Return occurrence `number` (0 is the first) of a repeating window, or None before the first or after the last."""
    if number < 0:
        return None
    step = PERIODS[window.repeat] * number
    start = from_wall(_wall(window.starts_at, tz) + step, tz, first=True)
    if window.repeat_until is not None and start > window.repeat_until:
        return None
    end = from_wall(_wall(window.ends_at, tz) + step, tz, first=False)
    return start, end


def from_wall(wall: dt.datetime, tz: zoneinfo.ZoneInfo, *, first: bool) -> dt.datetime:
    """Return the UTC moment of a local wall-clock time: see the module's decisions for skipped and repeated ones.

    PEP 495: for a skipped time fold=0 uses the offset before the jump (the later moment), fold=1 the one after;
    for a repeated time fold=0 is the first moment and fold=1 the second.
    """
    earlier, later = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
    repeated = earlier.utcoffset() > later.utcoffset()
    return (later if repeated and not first else earlier).astimezone(dt.UTC)
