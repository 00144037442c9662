"""From recorded facts to alerts: problems open, are held or told, and are resolved.

A `Problem` is one thing wrong as people are told it: a service down across its locations, slow, flapping,
or the monitor itself unwell. Its opening alert goes to the matching channels on duty; its resolution goes
to every channel its opening alert (or an escalation of it) went to, and is never held back by anything.

- **Quorum.** `apply(change)` keeps the set of locations where the service is down (from the daemon's
  per-location status changes, in order). The down problem starts when `service.quorum` of them see it
  down, and ends when fewer do. Before that it is "forming" and tells nobody.
- **Holds** (`holds`). A problem that starts while its service is in maintenance, while a service it depends
  on is down, or while it is flapping is held: no alert, `held` says why; `followups.release` tells it once
  nothing holds it. A held problem that ends is never told, so neither is its end. When a parent's down
  alert is made, its dependents' down alerts still waiting in their grouping window are held too and
  listed with it.
- Beside this module: `bulk.py` applies the common change in bulk, `followups.py` releases held problems
  and sends reminders and escalations, `flapping.py` measures flapping, and `conditions.py` and
  `certificates.py` open and resolve the problems status changes do not carry.

Every function runs inside the caller's transaction where it changes rows, and takes `now`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count

from monitor.alerting import flapping, maintenance
from monitor.alerting.payload import held_by_problem
from monitor.models import Alert, Channel, Notification, Service, StatusChange
from monitor.models.alerting import RESOLVES, UNSETTLED, MaintenanceWindow, Problem

DOWN = "down"
RESOLUTION = {opening: resolution for resolution, opening in RESOLVES.items()}  # "down" -> "up"
HELD_KINDS = ("down", "degraded", "flapping")  # monitor problems are never held: a dead monitor is never silent


# --- Status changes: the down problem and its quorum ------------------------------------------------


@dataclass
class Context:
    """What every change of one evaluation needs, read once for all of them (not once per change).

    `maintained`: services in maintenance now; `dependent`: services that depend on another; `depended`:
    services another depends on; `flapping`: services with an open flapping problem; `busy`: services with
    enough recent changes that they may be flapping (the rest cannot be: see `flapping.min_changes`).
    """

    now: dt.datetime
    channels: list[Channel]
    maintained: dict[int, tuple[MaintenanceWindow, dt.datetime]]
    dependent: set[int]
    depended: set[int]
    flapping: set[int]
    busy: set[int] = field(default_factory=set)

    @classmethod
    def read(cls, now: dt.datetime) -> Context:
        links = list(Service.depends_on.through.objects.values_list("from_service_id", "to_service_id"))
        return cls(
            now=now,
            channels=enabled_channels(),
            maintained=maintenance.in_maintenance(now),
            dependent={child for child, _ in links},
            depended={parent for _, parent in links},
            flapping=set(Problem.objects.filter(kind="flapping", ended_at=None).values_list("service_id", flat=True)),
        )

    def prepare(self, service_ids: Iterable[int]) -> None:
        """Find which of these services changed state often enough lately to be flapping."""
        since = self.now - flapping.LOOKBACK
        counted = (
            StatusChange.objects.filter(service_id__in=list(service_ids), created__gte=since)
            .values("service_id")
            .annotate(changes=Count("id"))
            .filter(changes__gte=flapping.min_changes())
        )
        self.busy |= {row["service_id"] for row in counted}


def apply(change: StatusChange, now: dt.datetime, *, context: Context | None = None) -> list[Alert]:
    """Apply `change` (claimed by the caller, in its transaction) to its service's problems; return alerts made.

    `context`: what a caller applying many changes read once (`Context.read`, then `prepare` for their
    services); without it, each question is asked of the database.
    """
    service = change.service
    made: list[Alert] = []
    if change.new_status == DOWN:
        made += _location_down(service, change, now, context)
    elif change.old_status == DOWN:
        made += _location_recovered(service, change, now, context)
    if context is None or service.pk in context.busy:
        made += flapping.check(service, change, now, context)
    return made


def _open(kind: str, service: Service | None, key: str = "") -> Problem | None:
    problem = Problem.objects.select_for_update().filter(kind=kind, service=service, key=key, ended_at=None).first()
    if problem is not None:
        problem.service = service  # already loaded by the caller: no second query for it
    return problem


def _location_down(service: Service, change: StatusChange, now: dt.datetime, context: Context | None) -> list[Alert]:
    problem = _open(DOWN, service) or Problem(kind=DOWN, service=service, opened_at=change.created)
    if change.location not in problem.locations:
        problem.locations = sorted({*problem.locations, change.location})
    problem.failure, problem.reason = change.failure, change.reason  # the latest location's words
    if problem.started_at is None and _seen_down(problem, service) >= service.quorum:
        problem.started_at = change.created
        problem.save()
        return _start(problem, now, location=change.location, change=change, context=context)
    problem.save()
    return []


def _location_recovered(
    service: Service, change: StatusChange, now: dt.datetime, context: Context | None
) -> list[Alert]:
    problem = _open(DOWN, service)
    if problem is None:
        return []
    problem.locations = [location for location in problem.locations if location != change.location]
    if problem.started_at is None:
        if not _seen_down(problem, service):  # never reached its quorum: it ends as it came, telling nobody
            problem.ended_at = change.created
        problem.save()
        return []
    if _seen_down(problem, service) >= service.quorum:
        problem.save()
        return []
    problem.locations = sorted({*problem.locations, change.location})  # where it was seen, for the record
    return end(problem, change.created, now, location=change.location, change=change, context=context)


def _seen_down(problem: Problem, service: Service) -> int:
    """Return how many of the locations the service is probed from see it down (a location dropped since counts not)."""
    return sum(location in service.location_list for location in problem.locations)


# --- Other kinds: opened and resolved by their detectors ---------------------------------------------


def open_problem(
    kind: str,
    *,
    service: Service | None,
    at: dt.datetime,
    now: dt.datetime,
    key: str = "",
    failure: str = "",
    reason: str = "",
    location: str = "",
    detail: dict | None = None,
) -> list[Alert]:
    """Open a problem of `kind` unless one is open (then nothing); tell it, or hold it. Return the alerts made."""
    if _open(kind, service, key) is not None:
        return []
    try:
        with transaction.atomic():
            problem = Problem.objects.create(
                kind=kind,
                service=service,
                key=key,
                opened_at=at,
                started_at=at,
                locations=[location] if location else [],
                failure=failure,
                reason=reason[:500],
            )
    except IntegrityError:
        return []  # another notifier opened it a moment ago
    return _start(problem, now, location=location, detail=detail)


def resolve_problem(
    kind: str,
    *,
    service: Service | None,
    at: dt.datetime,
    now: dt.datetime,
    key: str = "",
    location: str = "",
    detail: dict | None = None,
) -> list[Alert]:
    """End the open problem of `kind`, if any, and send its resolution where its opening went."""
    problem = _open(kind, service, key)
    if problem is None:
        return []
    return end(problem, at, now, location=location, detail=detail)


def announce(
    kind: str, *, service: Service, now: dt.datetime, reason: str, location: str = "", detail: dict | None = None
) -> Alert:
    """Make a one-off alert (a certificate warning) to the service's channels on duty; nothing resolves it."""
    alert = make_alert(kind, service, now, since=now, location=location, reason=reason, detail=detail or {})
    fan_out(alert, channels_for(service, now), now)
    return alert


# --- Starting, holding, telling, ending -------------------------------------------------------------


def _start(
    problem: Problem,
    now: dt.datetime,
    *,
    location: str = "",
    change: StatusChange | None = None,
    detail: dict | None = None,
    context: Context | None = None,
) -> list[Alert]:
    """Tell the problem that just started, or hold it; return the alerts made."""
    hold, parent = holds(problem, now, context)
    if hold:
        problem.held, problem.parent = hold, parent
        problem.save(update_fields=["held", "parent"])
        return []
    return [tell(problem, now, location=location, change=change, detail=detail, context=context)]


def holds(problem: Problem, now: dt.datetime, context: Context | None = None) -> tuple[str, Problem | None]:
    """Return why `problem` must not be told now ("" when nothing holds it) and the parent problem holding it."""
    service = problem.service
    if service is None or problem.kind not in HELD_KINDS:
        return "", None
    window = context.maintained.get(service.pk) if context else maintenance.covering(service, now)
    if window is not None:
        name, end = window[0].name, window[1]
        return f"held: {service.name} is in maintenance {name!r} until {end:%Y-%m-%d %H:%M} UTC", None
    parent = None
    if context is None or service.pk in context.dependent:
        parent = (
            Problem.objects.filter(kind=DOWN, ended_at=None, started_at__isnull=False, service__dependents=service)
            .select_related("service")
            .order_by("started_at")
            .first()
        )
    if parent is not None:
        return f"held: {service.name} depends on {parent.service.name}, which is down", parent
    flapping = (
        service.pk in context.flapping
        if context
        else Problem.objects.filter(kind="flapping", service=service, ended_at=None).exists()
    )
    if problem.kind == DOWN and flapping:
        return f"held: {service.name} is flapping", None
    down = Problem.objects.filter(kind=DOWN, service=service, ended_at=None, started_at__isnull=False)
    if problem.kind == "degraded" and down.exists():
        return f"held: {service.name} is down", None
    return "", None


def tell(
    problem: Problem,
    now: dt.datetime,
    *,
    location: str = "",
    change: StatusChange | None = None,
    detail: dict | None = None,
    released: str = "",
    context: Context | None = None,
) -> Alert:
    """Make the problem's opening alert and send it to the channels on duty; mark the problem told."""
    facts = {**(detail or {}), "released": released} if released else detail
    channels = context.channels if context else None
    to = channels_for(problem.service, now, channels) if problem.service else monitor_channels(now)
    alert, rows = opening(problem, now, to, location=location, change=change, detail=facts)
    alert.save()
    Notification.objects.bulk_create(rows)
    problem.held, problem.parent = "", None
    if alert.notified:
        problem.told = now
    problem.save(update_fields=["held", "parent", "told"])
    if problem.kind == DOWN and alert.notified and (context is None or problem.service_id in context.depended):
        _hold_waiting_children(problem, now)
    return alert


def opening(
    problem: Problem,
    now: dt.datetime,
    to: list[Channel],
    *,
    location: str = "",
    change: StatusChange | None = None,
    detail: dict | None = None,
) -> tuple[Alert, list[Notification]]:
    """Return the problem's opening alert and its notifications to `to`, unsaved (save the alert first).

    A change older than PORTWATCH_ALERT_MAX_AGE gets its notifications marked skipped, saying why.
    """
    stale = staleness(change, now) if change is not None else ""
    alert = Alert(
        service=problem.service,
        kind=problem.kind,  # an opening alert has its problem's kind
        status=_status(problem.kind),
        created=now,
        since=problem.started_at or now,
        location=location,
        change=change,
        problem=problem,
        failure=problem.failure,
        reason=problem.reason,
        detail={**(detail or {}), "locations": problem.locations},
        notified=bool(to) and not stale,
    )
    event = change.created if change is not None else None
    return alert, [notification_row(alert, channel, now, skipped=stale, event=event) for channel in to]


def end(
    problem: Problem,
    at: dt.datetime,
    now: dt.datetime,
    *,
    location: str = "",
    change: StatusChange | None = None,
    detail: dict | None = None,
    context: Context | None = None,
) -> list[Alert]:
    """End `problem` at `at`; when it was told, send its resolution to everyone told, whatever holds."""
    problem.ended_at = at
    problem.save(update_fields=["ended_at", "locations"])
    if problem.told is None:
        return []  # held or forming all along: nobody heard of it, nobody hears of its end
    facts = dict(detail or {})
    if problem.kind == DOWN and (context is None or problem.service_id in context.depended):
        # Who was held behind it, as of now: the release tells them right after.
        facts["held"] = held_by_problem([problem.pk]).get(problem.pk, [])
    told = told_channels([problem]).get(problem.pk, {})
    alert, rows = resolution(problem, at, now, told, location=location, change=change, detail=facts)
    alert.save()
    Notification.objects.bulk_create(rows)
    return [alert]


def told_channels(opened: list[Problem]) -> dict[int, dict[int, Notification]]:
    """Return, for each problem, its opening alert's first notification to each channel, to be or already sent.

    Their channels (secrets not read) and alerts are loaded: `resolution` reads both.
    """
    found: dict[int, dict[int, Notification]] = {}
    for kind in {problem.kind for problem in opened}:
        notifications = (
            Notification.objects.filter(
                alert__problem__in=[problem.pk for problem in opened if problem.kind == kind],
                alert__kind=kind,
                status__in=[*UNSETTLED, "sent"],
            )
            .select_related("channel", "alert")
            .defer("channel__url", "channel__secret")
            .order_by("alert__created", "alert_id", "id")
        )
        for notification in notifications:
            found.setdefault(notification.alert.problem_id, {}).setdefault(notification.channel_id, notification)
    return found


def resolution(
    problem: Problem,
    at: dt.datetime,
    now: dt.datetime,
    told: dict[int, Notification],
    *,
    location: str = "",
    change: StatusChange | None = None,
    detail: dict | None = None,
) -> tuple[Alert, list[Notification]]:
    """Return the ended problem's resolution and its notifications, unsaved (save the alert first).

    `told`: the problem's entry of `told_channels`. Each notification follows the opening one to its channel,
    so the resolution never overtakes the outage; a channel disabled since gets a skipped row saying so.
    """
    first = next(iter(told.values())).alert if told else None
    alert = Alert(
        service=problem.service,
        kind=RESOLUTION[problem.kind],
        status=change.new_status if change is not None else _status(RESOLUTION[problem.kind]),
        created=now,
        since=at,
        location=location,
        change=change,
        problem=problem,
        failure=first.failure if first else problem.failure,
        reason=first.reason if first else problem.reason,
        detail={**(detail or {}), "locations": problem.locations},
        notified=any(notification.channel.enabled for notification in told.values()),
    )
    rows = [
        notification_row(
            alert,
            notification.channel,
            now,
            follows=notification,
            skipped="" if notification.channel.enabled else "not sent: the channel is disabled",
            event=at,
        )
        for notification in told.values()
    ]
    return alert, rows


def _hold_waiting_children(parent: Problem, now: dt.datetime) -> None:
    """Hold the dependents' down alerts still waiting in their grouping window: the parent's message lists them."""
    children = Problem.objects.filter(
        kind=DOWN, ended_at=None, told__isnull=False, service__depends_on=parent.service
    ).select_for_update(of=("self",))
    for child in children:
        waiting = Notification.objects.filter(
            alert__problem=child, alert__kind=DOWN, status="pending", attempts=0, claim=""
        )
        if waiting.count() != Notification.objects.filter(alert__problem=child, alert__kind=DOWN).count():
            continue  # some channel already has it (or is sending it): its resolution will follow there
        waiting.update(status="skipped", last_error=f"held: {parent.service.name}, which it depends on, is down")
        Alert.objects.filter(problem=child, kind=DOWN).update(notified=False)
        child.told, child.parent = None, parent
        child.held = f"held: {child.service.name} depends on {parent.service.name}, which is down"
        child.save(update_fields=["told", "parent", "held"])


# --- Alerts and their notifications -----------------------------------------------------------------


def enabled_channels() -> list[Channel]:
    """Return the enabled channels, their attached services prefetched and their secrets not read."""
    return list(Channel.objects.filter(enabled=True).prefetch_related("services").defer("url", "secret"))


def channels_for(service: Service, now: dt.datetime, channels: list[Channel] | None = None) -> list[Channel]:
    """Return the enabled channels (of `channels`, else read now) for `service` that are on duty at `now`."""
    candidates = enabled_channels() if channels is None else channels
    return [channel for channel in candidates if channel.matches(service) and channel.on_duty(now)]


def monitor_channels(now: dt.datetime) -> list[Channel]:
    """Return the channels for the monitor's own health: those attached to no service and no tag, on duty."""
    channels = Channel.objects.filter(enabled=True, tags="", services=None).defer("url", "secret")
    return [channel for channel in channels if channel.on_duty(now)]


def make_alert(kind: str, service: Service | None, now: dt.datetime, *, status: str = "", **fields) -> Alert:
    return Alert.objects.create(service=service, kind=kind, status=status or _status(kind), created=now, **fields)


def _status(kind: str) -> str:
    return {"down": "down", "reminder": "down", "up": "up"}.get(kind, "up" if kind in RESOLVES else "warning")


def fan_out(
    alert: Alert,
    channels: Iterable[Channel],
    now: dt.datetime,
    *,
    skipped: str = "",
    grouped: bool = True,
    event: dt.datetime | None = None,
) -> bool:
    """Make one notification per channel; return True when at least one is to be sent (not skipped)."""
    rows = [
        notification_row(alert, channel, now, skipped=skipped, grouped=grouped, event=event) for channel in channels
    ]
    Notification.objects.bulk_create(rows)
    notified = bool(rows) and not skipped
    if alert.notified != notified:
        alert.notified = notified
        alert.save(update_fields=["notified"])
    return notified


def notification_row(
    alert: Alert,
    channel: Channel,
    now: dt.datetime,
    *,
    skipped: str = "",
    follows: Notification | None = None,
    grouped: bool = True,
    event: dt.datetime | None = None,
) -> Notification:
    """Return an unsaved notification, due when the channel's grouping window after `event` (the status change
    that made the alert; else `now`) ends: the window groups what happened together, whenever it was noticed."""
    wait = dt.timedelta(seconds=channel.group_window if grouped else 0)
    return Notification(
        alert=alert,
        channel_id=channel.pk,
        status="skipped" if skipped else "pending",
        last_error=skipped,
        next_attempt_at=max(now, (event or now) + wait),
        follows=follows,
    )


def staleness(change: StatusChange, now: dt.datetime) -> str:
    """Return why the change is too old to be told, or "" when it is fresh."""
    age, limit = now - change.created, dt.timedelta(seconds=settings.PORTWATCH_ALERT_MAX_AGE)
    if age <= limit:
        return ""
    return (
        f"not sent: the change was {_minutes(age)} old when the notifier first saw it, more than "
        f"PORTWATCH_ALERT_MAX_AGE ({_minutes(limit)})"
    )


def _minutes(span: dt.timedelta) -> str:
    return f"{span.total_seconds() / 60:.0f} min"
