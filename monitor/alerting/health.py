"""Is each channel still reaching people? Read from the delivery history, for the dashboard and /metrics.

Exposes `Health` and `channel_health(now) -> {channel id: Health}`, a bulk reader: five queries whatever the
number of channels and attempts. A channel is broken when

1. its last BROKEN_AFTER or more delivery attempts all failed (a receiver that went away), or
2. a notification to it failed for good in the last 24 h and nothing was delivered through it since
   (a single failure the retries could not fix: the owner has to look; a later success says it is fixed).

"Send test" records no attempt, so testing a channel neither breaks nor mends its health.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import reduce
from operator import or_

from django.db.models import Count, Max, Q

from monitor.models import Channel, DeliveryAttempt, Notification
from monitor.models.alerting import UNSETTLED

BROKEN_AFTER = 3  # failed attempts in a row; one or two are the retries doing their work
RECENT = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Health:
    last_attempt_at: dt.datetime | None
    last_ok: bool | None  # how the last attempt went; None: never tried
    consecutive_failures: int  # failed attempts since the last delivered one
    pending: int  # notifications waiting to be sent or being sent
    failed_24h: int  # notifications that failed for good in the last 24 h
    broken: bool
    why: str  # a sentence when broken, else ""


NEVER_TRIED = Health(None, None, 0, 0, 0, False, "")


def channel_health(now: dt.datetime) -> dict[int, Health]:
    """Return the health of every channel, by id; a channel never tried is healthy."""
    ids = list(Channel.objects.values_list("id", flat=True))  # ids only: no secret is decrypted
    if not ids:
        return {}  # no channel: nothing to read from the delivery history (the overview asks on every load)
    by_channel = "notification__channel_id"
    latest = {
        row[by_channel]: row
        for row in DeliveryAttempt.objects.values(by_channel).annotate(
            last=Max("at"), last_ok_at=Max("at", filter=Q(ok=True))
        )
    }
    failing = _failures_since_last_ok(latest)
    gave_up = {
        row[by_channel]: (row["n"], row["latest"])
        for row in DeliveryAttempt.objects.filter(ok=False, at__gte=now - RECENT, notification__status="failed")
        .values(by_channel)
        .annotate(n=Count("notification_id", distinct=True), latest=Max("at"))
    }
    pending = dict(
        Notification.objects.filter(status__in=UNSETTLED)
        .values("channel_id")
        .annotate(n=Count("id"))
        .values_list("channel_id", "n")
    )
    found = {}
    for channel_id in ids:
        row = latest.get(channel_id)
        if row is None and channel_id not in pending:
            found[channel_id] = NEVER_TRIED
            continue
        last, last_ok_at = (row["last"], row["last_ok_at"]) if row else (None, None)
        failed, failed_at = gave_up.get(channel_id, (0, None))
        streak = failing.get(channel_id, 0)
        why = ""
        if streak >= BROKEN_AFTER:
            why = f"The last {streak} delivery attempts failed."
        elif failed and (last_ok_at is None or last_ok_at < failed_at):
            noun = "notification" if failed == 1 else "notifications"
            why = f"{failed} {noun} failed for good in the last 24 h, and nothing was delivered since."
        found[channel_id] = Health(
            last_attempt_at=last,
            last_ok=None if last is None else last_ok_at == last,
            consecutive_failures=streak,
            pending=pending.get(channel_id, 0),
            failed_24h=failed,
            broken=bool(why),
            why=why,
        )
    return found


def _failures_since_last_ok(latest: dict[int, dict]) -> dict[int, int]:
    """Return {channel id: failed delivery attempts after its last delivered one}, in one query for every channel.

    Attempts are counted by moment: a grouped message is one attempt, however many notifications it carried.
    """
    never_ok = [channel_id for channel_id, row in latest.items() if row["last_ok_at"] is None]
    conditions = [Q(notification__channel_id__in=never_ok)] if never_ok else []
    conditions += [
        Q(notification__channel_id=channel_id, at__gt=row["last_ok_at"])
        for channel_id, row in latest.items()
        if row["last_ok_at"] is not None and row["last"] > row["last_ok_at"]
    ]
    if not conditions:
        return {}
    rows = (
        DeliveryAttempt.objects.filter(reduce(or_, conditions), ok=False)
        .values("notification__channel_id")
        .annotate(n=Count("at", distinct=True))  # one message of a group records one attempt per notification
    )
    return {row["notification__channel_id"]: row["n"] for row in rows}
