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
from monitor.models.alerting import Problem

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
    """Apply simple changes in bulk; return the ids of those applied and how many alerts were made.

    Left to `problems.apply`: a change to down while a problem is open, a recovery of a problem not started.
    """
    if not changes:
        return set(), 0
    open_by_service = {
        problem.service_id: problem
        for problem in Problem.objects.select_for_update().filter(
            kind=DOWN, service_id__in=[change.service_id for change in changes], ended_at=None
        )
    }
    downs, ups, done = [], [], set()
    for change in changes:
        problem = open_by_service.get(change.service_id)
        if change.new_status == DOWN:
            if problem is not None:
                continue
            downs.append(change)
        elif problem is not None:
            if problem.started_at is None:
                continue
            ups.append((change, problem))
        # else: a recovery with no problem changes nothing
        done.add(change.pk)
    return done, _bulk_downs(downs, now, context) + _bulk_ups(ups, now)


def _bulk_downs(changes: list[StatusChange], now: dt.datetime, context: problems.Context) -> int:
    """Open, start and tell a problem for each change to down: three INSERTs for them all."""
    opened = [
        Problem(
            kind=DOWN,
            service=change.service,
            opened_at=change.created,
            started_at=change.created,
            locations=[change.location],
            failure=change.failure,
            reason=change.reason,
        )
        for change in changes
    ]
    made = [
        problems.opening(
            problem,
            now,
            problems.channels_for(change.service, now, context.channels),
            location=change.location,
            change=change,
        )
        for change, problem in zip(changes, opened, strict=True)
    ]
    for problem, (alert, _) in zip(opened, made, strict=True):
        problem.told = now if alert.notified else None
    Problem.objects.bulk_create(opened)
    Alert.objects.bulk_create([alert for alert, _ in made])
    Notification.objects.bulk_create([row for _, rows in made for row in rows])
    return len(made)


def _bulk_ups(ending: list[tuple[StatusChange, Problem]], now: dt.datetime) -> int:
    """End each recovered problem, and send the told ones' resolutions: four queries for them all."""
    for change, problem in ending:
        problem.ended_at = change.created
    Problem.objects.bulk_update([problem for _, problem in ending], ["ended_at"])
    told = problems.told_channels([problem for _, problem in ending if problem.told is not None])
    made = [
        problems.resolution(
            problem, change.created, now, told.get(problem.pk, {}), location=change.location, change=change
        )
        for change, problem in ending
        if problem.told is not None  # held or untold all along: nobody hears of its end
    ]
    Alert.objects.bulk_create([alert for alert, _ in made])
    Notification.objects.bulk_create([row for _, rows in made for row in rows])
    return len(made)
