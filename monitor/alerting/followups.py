"""Every notifier run, after the changes: held problems told once nothing holds them (`release`), and
reminders and escalation for told, open, unacknowledged outages (`follow_up`). Both look first, in bulk, for
what may need them, so 10,000 open or held outages cost a few queries a run.
"""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction
from django.db.models import Max, Q

from monitor.alerting import maintenance, problems
from monitor.models import Alert, Channel, Notification
from monitor.models.alerting import Problem

DOWN = problems.DOWN


def release(now: dt.datetime) -> list[Alert]:
    """Tell held problems still open once nothing holds them; return the alerts made."""
    made: list[Alert] = []
    held = list(
        Problem.objects.filter(ended_at=None, told=None, started_at__isnull=False)
        .exclude(held="")
        .values_list("id", "service_id", "parent__ended_at", "parent_id")
    )
    # Cheap first: in bulk, who is still in maintenance, and whose parent is still down. Only the rest are
    # looked at one by one (at 10,000 services in a window, a run costs two queries, not 10,000).
    maintained = maintenance.in_maintenance(now, among={service_id for _, service_id, _, _ in held}) if held else {}
    for pk, service_id, parent_ended, parent_id in held:
        if service_id in maintained or (parent_id is not None and parent_ended is None):
            continue
        with transaction.atomic():
            problem = (
                Problem.objects.select_for_update(of=("self",))
                .select_related("service")
                .filter(pk=pk, ended_at=None)
                .first()
            )
            if problem is None or problem.told is not None or not problem.held:
                continue
            hold, parent = problems.holds(problem, now)
            if hold:
                if (hold, parent) != (problem.held, problem.parent):
                    problem.held, problem.parent = hold, parent
                    problem.save(update_fields=["held", "parent"])
                continue
            reason = problem.held.removeprefix("held: ")
            made.append(problems.tell(problem, now, released=f"held until now ({reason}); still {problem.kind}"))
    return made


def follow_up(now: dt.datetime) -> list[Alert]:
    """Send reminders and escalate, for told, unacknowledged, open down problems; return the alerts made."""
    made: list[Alert] = []
    open_told = Problem.objects.filter(kind=DOWN, ended_at=None, told__isnull=False, acknowledged_at=None)
    # Only problems something is set up to follow up: at 10,000 services down, the rest cost nothing.
    told_to = Q(alerts__notifications__channel__reminder_minutes__isnull=False) | Q(
        alerts__notifications__channel__escalate_to__isnull=False
    )
    followed = open_told.filter(Q(service__reminder_minutes__isnull=False) | told_to).distinct()
    for pk in followed.values_list("id", flat=True):
        with transaction.atomic():
            problem = (
                Problem.objects.select_for_update(of=("self",))
                .select_related("service")
                .filter(pk=pk, ended_at=None)
                .first()
            )
            if problem is None or problem.acknowledged_at is not None:
                continue
            made += _remind(problem, now)
            _escalate(problem, now)
    return made


def _remind(problem: Problem, now: dt.datetime) -> list[Alert]:
    sent = (
        Notification.objects.filter(alert__problem=problem, alert__kind__in=["down", "reminder"], status="sent")
        .values("channel_id")
        .annotate(last=Max("sent_at"))
    )
    last_by_channel = {row["channel_id"]: row["last"] for row in sent}
    if not last_by_channel:
        return []
    channels = Channel.objects.filter(pk__in=last_by_channel, enabled=True).only("id", "reminder_minutes")
    due = []
    for channel in channels:
        minutes = problem.service.reminder_minutes or channel.reminder_minutes
        if minutes and now - last_by_channel[channel.pk] >= dt.timedelta(minutes=minutes):
            due.append(channel)
    if not due:
        return []
    down = problem.alerts.filter(kind=DOWN).order_by("created").first()
    alert = problems.make_alert(
        "reminder",
        problem.service,
        now,
        since=problem.started_at,
        problem=problem,
        failure=problem.failure,
        reason=problem.reason,
        detail={"locations": problem.locations, "down_alert": down.pk if down else None},
    )
    problems.fan_out(alert, due, now, grouped=False)
    return [alert]


def _escalate(problem: Problem, now: dt.datetime) -> None:
    """Tell each chain's next channel when the outage sat unacknowledged too long where it was sent."""
    for down in problem.alerts.filter(kind=DOWN):
        told = list(down.notifications.select_related("channel__escalate_to").defer("channel__url", "channel__secret"))
        have = {notification.channel_id for notification in told}
        for notification in told:
            step = notification.channel.escalate_to
            if step is None or step.pk in have or not step.enabled or notification.status == "skipped":
                continue
            waited_from = notification.sent_at or down.created
            if now - waited_from < dt.timedelta(minutes=notification.channel.escalate_after_minutes):
                continue
            try:
                with transaction.atomic():
                    Notification.objects.create(
                        alert=down,
                        channel=step,
                        status="pending",
                        next_attempt_at=now,
                        escalated_from=notification.channel.name,
                    )
            except IntegrityError:
                continue
            have.add(step.pk)
