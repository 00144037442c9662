"""The common status change, applied in bulk: a few INSERTs for many services, with the outcome `problems.apply`
would give change by change.

Common: the only change of its service in the batch, a service probed from one location, in no maintenance
window, no dependency, not flapping or changing often. A change to down opens, starts and tells its
problem; a recovery ends its told problem and tells every channel the outage went to. `apply_all` sends
the rest through `problems.apply`.
"""

from __future__ import annotations

import datetime as dt

from monitor.alerting import problems
from monitor.models import Alert, Notification, StatusChange
from monitor.models.alerting import UNSETTLED, Problem

DOWN = problems.DOWN


def apply_all(changes: list[StatusChange], now: dt.datetime, context: problems.Context) -> int:
    """Apply claimed changes (oldest first, their services locked by the caller); return how many alerts were made.

    The common case goes in bulk, a few queries for many services at once: a service with one change in the
    batch, probed from one location, in no maintenance window, no dependency and not changing often. A
    change to down opens, starts and tells its problem; a recovery ends its told problem and tells everyone
    the outage went to. Everything else goes through `apply`, change by change, with the same outcome.
    """
    by_service: dict[int, list[StatusChange]] = {}
    for change in changes:
        by_service.setdefault(change.service_id, []).append(change)
    simple = [found[0] for found in by_service.values() if len(found) == 1 and _simple(found[0], context)]
    done, made = _in_bulk(simple, now, context)
    for change in changes:
        if change.pk not in done:
            made += len(problems.apply(change, now, context=context))
    return made


def _simple(change: StatusChange, context: problems.Context) -> bool:
    service = change.service
    quiet = {service.pk}.isdisjoint(context.busy | context.dependent | context.depended | context.flapping)
    single = service.location_list == [change.location]
    moving = change.new_status == DOWN or change.old_status == DOWN
    return quiet and single and moving and service.pk not in context.maintained


def _in_bulk(changes: list[StatusChange], now: dt.datetime, context: problems.Context) -> tuple[set[int], int]:
    """Apply simple changes in bulk; return the ids of those applied and how many alerts were made."""
    if not changes:
        return set(), 0
    service_ids = [change.service_id for change in changes]
    open_by_service = {
        problem.service_id: problem
        for problem in Problem.objects.select_for_update().filter(kind=DOWN, service_id__in=service_ids, ended_at=None)
    }
    downs = [change for change in changes if change.new_status == DOWN and change.service_id not in open_by_service]
    ups = [
        change
        for change in changes
        if change.new_status != DOWN
        and change.service_id in open_by_service
        and open_by_service[change.service_id].started_at is not None
    ]
    made = _bulk_downs(downs, now, context) + _bulk_ups(ups, open_by_service, now)
    unopened = {
        change.pk for change in changes if change.new_status != DOWN and change.service_id not in open_by_service
    }
    return {change.pk for change in downs + ups} | unopened, made  # a recovery with no problem changes nothing


def _bulk_downs(changes: list[StatusChange], now: dt.datetime, context: problems.Context) -> int:
    planned = []
    for change in changes:
        stale = problems.staleness(change, now)
        to = problems.channels_for(change.service, now, context.channels)
        told = bool(to) and not stale
        problem = Problem(
            kind=DOWN,
            service=change.service,
            opened_at=change.created,
            started_at=change.created,
            locations=[change.location],
            failure=change.failure,
            reason=change.reason,
            told=now if told else None,
        )
        planned.append((change, problem, to, stale, told))
    Problem.objects.bulk_create([problem for _, problem, _, _, _ in planned])
    alerts = [
        Alert(
            service=change.service,
            kind=DOWN,
            status=DOWN,
            created=now,
            since=change.created,
            location=change.location,
            change=change,
            problem=problem,
            failure=problem.failure,
            reason=problem.reason,
            detail={"locations": problem.locations},
            notified=told,
        )
        for change, problem, _, _, told in planned
    ]
    Alert.objects.bulk_create(alerts)
    Notification.objects.bulk_create(
        [
            problems.notification_row(alert, channel, now, skipped=stale, event=change.created)
            for alert, (change, _, to, stale, _) in zip(alerts, planned, strict=True)
            for channel in to
        ]
    )
    return len(alerts)


def _bulk_ups(changes: list[StatusChange], open_by_service: dict[int, Problem], now: dt.datetime) -> int:
    ending = [open_by_service[change.service_id] for change in changes]
    for change, problem in zip(changes, ending, strict=True):
        problem.ended_at = change.created
    Problem.objects.bulk_update(ending, ["ended_at"])
    told = [problem.pk for problem in ending if problem.told is not None]
    openings: dict[int, dict[int, Notification]] = {}
    for notification in (
        Notification.objects.filter(alert__problem__in=told, alert__kind=DOWN, status__in=[*UNSETTLED, "sent"])
        .select_related("channel", "alert")
        .defer("channel__url", "channel__secret")
        .order_by("alert__created", "alert_id", "id")
    ):
        openings.setdefault(notification.alert.problem_id, {}).setdefault(notification.channel_id, notification)
    planned = []
    for change, problem in zip(changes, ending, strict=True):
        if problem.told is None:
            continue  # held or untold all along: nobody hears of its end
        seen = openings.get(problem.pk, {})
        first = next(iter(seen.values())).alert if seen else None
        alert = Alert(
            service=change.service,
            kind="up",
            status=change.new_status,
            created=now,
            since=change.created,
            location=change.location,
            change=change,
            problem=problem,
            failure=first.failure if first else problem.failure,
            reason=first.reason if first else problem.reason,
            detail={"locations": problem.locations},
            notified=any(notification.channel.enabled for notification in seen.values()),
        )
        planned.append((change, alert, seen))
    Alert.objects.bulk_create([alert for _, alert, _ in planned])
    Notification.objects.bulk_create(
        [
            problems.notification_row(
                alert,
                notification.channel,
                now,
                follows=notification,
                skipped="" if notification.channel.enabled else "not sent: the channel is disabled",
                event=change.created,
            )
            for change, alert, seen in planned
            for notification in seen.values()
        ]
    )
    return len(planned)
