"""Flapping: Icinga's measure over a location's last 21 checks, and the flapping problem it opens and ends.

Each of the 20 steps between the checks that changed state weighs from 0.8 (the oldest) to 1.2 (the newest);
the share is their sum over 20. Above PORTWATCH_ALERT_FLAP_HIGH percent (30) a flapping problem opens, with
one "flapping" message; `settle(now)`, every run, ends it when every location is below
PORTWATCH_ALERT_FLAP_LOW (25): "stable again". While it is open, the service's new down alerts are held
(`problems.holds`). `check` runs when a status change is applied, only for services with enough recent
changes to be flapping (`min_changes`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

from monitor.alerting import problems
from monitor.models import Alert, ProbeResult, Service, StatusChange
from monitor.models.alerting import Problem

CHECKS = 21
LOOKBACK = dt.timedelta(days=1)  # 21 checks at intervals of up to an hour


def flap_share(statuses: Iterable[str]) -> float:
    """Return Icinga's flapping percentage for statuses, oldest first.

    The last 21 checks make 20 steps; a step that changed state counts its weight, from 0.8 for the oldest
    step to 1.2 for the newest, and the sum over 20 is the share. Fewer checks count the missing steps as
    unchanged, so a new service does not start out flapping.
    """
    values = ["down" if status == "down" else "up" for status in statuses][-CHECKS:]
    steps = CHECKS - 1
    offset = steps - (len(values) - 1)  # the newest step always weighs 1.2
    changed = 0.0
    for index in range(1, len(values)):
        if values[index] != values[index - 1]:
            changed += 0.8 + 0.4 * (offset + index - 1) / (steps - 1)
    return 100.0 * changed / steps


def min_changes() -> int:
    """Return the fewest status changes with which a share above PORTWATCH_ALERT_FLAP_HIGH is possible.

    Each changed step weighs at most 1.2 of 20: a service with fewer changes in LOOKBACK is not
    flapping, and its results are not read to find out.
    """
    return math.floor(settings.PORTWATCH_ALERT_FLAP_HIGH * (CHECKS - 1) / 100 / 1.2) + 1


def check(service: Service, change: StatusChange, now: dt.datetime, context: problems.Context | None) -> list[Alert]:
    share = _share(service, change.location)
    if share > settings.PORTWATCH_ALERT_FLAP_HIGH:
        if context is not None:
            context.flapping.add(service.pk)
        return problems.open_problem(
            "flapping",
            service=service,
            at=change.created,
            now=now,
            location=change.location,
            reason=f"{share:.0f}% of the last {CHECKS} checks changed state",
            detail={"share": round(share, 1)},
        )
    return []


def _share(service: Service, location: str) -> float:
    statuses = list(
        ProbeResult.objects.filter(service=service, location=location)
        .exclude(status="unknown")
        .order_by("-scheduled_at")
        .values_list("status", flat=True)[:CHECKS]
    )
    return flap_share(reversed(statuses))


def settle(now: dt.datetime) -> list[Alert]:
    """End flapping problems whose locations all fell below PORTWATCH_ALERT_FLAP_LOW ("stable again")."""
    made: list[Alert] = []
    for pk in Problem.objects.filter(kind="flapping", ended_at=None).values_list("id", flat=True):
        with transaction.atomic():
            problem = (
                Problem.objects.select_for_update(of=("self",))
                .select_related("service")
                .filter(pk=pk, ended_at=None)
                .first()
            )
            if problem is None:
                continue
            shares = [_share(problem.service, location) for location in problem.service.location_list]
            if max(shares, default=0.0) < settings.PORTWATCH_ALERT_FLAP_LOW:
                made += problems.end(problem, now, now, detail={"share": round(max(shares, default=0.0), 1)})
    return made
