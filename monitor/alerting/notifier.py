"""The notifier: recorded status changes become alerts, alerts become notifications, notifications are delivered.

Exposes `run(now)` (what the `portwatch.notify` task calls), and its steps `evaluate(now)` (claim changes,
make alerts and fan them out to channels, one transaction per change) and `deliver_due(now)` (claim due
notifications with a lease, send, record the attempt, settle or retry). Every step takes `now`, so tests
move time instead of waiting. Safe with any number of notifiers at once:

1. **A change is claimed once.** `UPDATE ... SET processed = now WHERE id = %s AND processed IS NULL` must
   change one row; the alert and its notifications are written in the same transaction, so a notifier that
   dies leaves the change unclaimed rather than claimed and lost.
2. **Down, then up, never an up alone.** A change to down makes a down alert. A change from down makes an up
   alert only when the incident's down alert went to some channel, and only to those channels (a resolution
   for every alert sent, never one for an alert never sent). A recovery is left for the next run while its
   incident's down change is still unclaimed (another notifier may be making the down alert right now).
   Changes that do not involve down make nothing, for now.
3. **No storm on restart.** A down change older than PORTWATCH_ALERT_MAX_AGE when first claimed gets its
   alert and notification rows, marked skipped with the reason. Recoveries are not held back by age: the
   down alert they resolve was sent, and a receiver would otherwise believe the outage never ended.
4. **A notification is sent by one notifier at a time.** Claiming sets status `sending` and a lease
   (`claimed_until`) with a conditional UPDATE; a notifier that died mid-send leaves the lease to expire, and
   the notification is sent again (at least once: receivers dedupe on `alert_id`). Settling is conditional
   on the lease still being the claimer's.
5. **Retried, recorded.** Every attempt is a DeliveryAttempt. A retryable failure is tried again after
   RETRY_BASE doubling to RETRY_CAP, until PORTWATCH_ALERT_RETRY_WINDOW after the alert; then, or at once
   for a failure only the channel's owner can fix, the notification is failed. An up notification waits
   until its down notification to the same channel is settled, so the recovery never overtakes the outage.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from monitor.alerting.channels import Delivery, webhook
from monitor.alerting.channels import apprise as apprise_channel
from monitor.alerting.channels import email as email_channel
from monitor.alerting.messages import message
from monitor.alerting.payload import payload
from monitor.models import Alert, Channel, DeliveryAttempt, Notification, StatusChange
from monitor.models.alerting import MAX_CHANNEL_TIMEOUT, UNSETTLED
from monitor.secrets import DecryptionError

logger = logging.getLogger(__name__)

DOWN = "down"
EVALUATE_BATCH = 500  # changes read per run; the rest wait for the next run, 5 s later
DELIVER_BATCH = 200  # notifications looked at per run
DELIVER_BUDGET = 60.0  # seconds of sending per run before leaving the rest to the next one
# A claim outlives the slowest delivery (one deadline of at most MAX_CHANNEL_TIMEOUT, plus a name lookup that
# no deadline bounds), so a live sender never loses its claim; a dead one's notification waits this long.
LEASE = dt.timedelta(seconds=2 * MAX_CHANNEL_TIMEOUT + 30)
RETRY_BASE = dt.timedelta(seconds=30)
RETRY_CAP = dt.timedelta(minutes=30)


def run(now: dt.datetime | None = None) -> dict[str, int]:
    """Evaluate new changes, then deliver what is due; return counts of each."""
    alerts = evaluate(now)
    return {"alerts": alerts, **deliver_due(now)}


# --- Evaluate and fan out ---------------------------------------------------------------------------


def evaluate(now: dt.datetime | None = None, *, limit: int = EVALUATE_BATCH) -> int:
    """Claim unprocessed status changes, oldest first, and make their alerts; return how many alerts were made."""
    now = now or timezone.now()
    changes = StatusChange.objects.filter(processed=None).select_related("service", "incident")
    made = 0
    for change in changes.order_by("created", "id")[:limit]:
        if _recovery(change) and _down_unclaimed(change):
            continue  # its down alert is being made by another notifier: next run
        with transaction.atomic():
            if StatusChange.objects.filter(pk=change.pk, processed=None).update(processed=now) != 1:
                continue  # another notifier claimed it
            made += _alert_for(change, now) is not None
    return made


def _recovery(change: StatusChange) -> bool:
    return change.old_status == DOWN and change.new_status != DOWN


def _down_unclaimed(change: StatusChange) -> bool:
    if change.incident_id is None:
        return False
    return StatusChange.objects.filter(incident_id=change.incident_id, new_status=DOWN, processed=None).exists()


def _alert_for(change: StatusChange, now: dt.datetime) -> Alert | None:
    """Make the change's alert and its notifications (in the claiming transaction); None when it makes none."""
    incident = change.incident
    if change.new_status == DOWN:
        channels = [
            channel
            for channel in Channel.objects.filter(enabled=True).only("id", "tags")
            if channel.matches(change.service)
        ]
        stale = _staleness(change, now)
        alert = _make(
            change,
            now,
            "down",
            change.failure,
            change.reason,
            since=incident.started_at if incident else change.created,
            notified=bool(channels) and not stale,
        )
        Notification.objects.bulk_create([_notification(alert, channel.pk, now, skipped=stale) for channel in channels])
        return alert
    if not _recovery(change) or change.incident_id is None:
        return None
    down = Alert.objects.filter(incident_id=change.incident_id, kind=DOWN, notified=True).first()
    if down is None:
        return None  # nobody was told of the outage: nobody is told it ended
    told = list(
        down.notifications.filter(status__in=[*UNSETTLED, "sent"])
        .select_related("channel")
        .defer("channel__url", "channel__secret")
    )
    ended = incident.ended_at if incident and incident.ended_at else change.created
    alert = _make(
        change, now, "up", down.failure, down.reason, since=ended, notified=any(n.channel.enabled for n in told)
    )
    Notification.objects.bulk_create(
        [
            _notification(
                alert,
                n.channel_id,
                now,
                follows=n,
                skipped="not sent: the channel is disabled" if not n.channel.enabled else "",
            )
            for n in told
        ]
    )
    return alert


def _make(change: StatusChange, now: dt.datetime, kind: str, failure: str, reason: str, **fields) -> Alert:
    return Alert.objects.create(
        service_id=change.service_id,
        location=change.location,
        kind=kind,
        status=change.new_status,
        created=now,
        change=change,
        incident_id=change.incident_id,
        failure=failure,
        reason=reason,
        **fields,
    )


def _staleness(change: StatusChange, now: dt.datetime) -> str:
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


def _notification(
    alert: Alert, channel_id: int, now: dt.datetime, *, skipped: str = "", follows: Notification | None = None
) -> Notification:
    return Notification(
        alert=alert,
        channel_id=channel_id,
        status="skipped" if skipped else "pending",
        last_error=skipped,
        next_attempt_at=now,
        follows=follows,
    )


# --- Deliver ----------------------------------------------------------------------------------------


def deliver_due(now: dt.datetime | None = None, *, limit: int = DELIVER_BATCH) -> dict[str, int]:
    """Claim and send due notifications, one at a time; return how many were sent, retried later, failed.

    Reads them `limit` at a time, again while a pass settled something: a recovery becomes due when its
    outage's notification is settled, in the same run.
    """
    now = now or timezone.now()
    counts = {"sent": 0, "retrying": 0, "failed": 0}
    started = time.monotonic()
    progressed = True
    while progressed:
        progressed = False
        for pk in list(_due(now).order_by("next_attempt_at", "id").values_list("id", flat=True)[:limit]):
            if time.monotonic() - started > DELIVER_BUDGET:
                return counts  # the next run, seconds away, takes the rest; this one's task must end
            settled = _deliver_one(pk, now)
            if settled is not None:
                counts[settled] += 1
                progressed = True
    return counts


def _due(now: dt.datetime):
    """Return unsettled notifications due at `now` and not leased, whose down notification (if any) is settled."""
    return _claimable(Notification.objects.all(), now).filter(Q(follows=None) | ~Q(follows__status__in=UNSETTLED))


def _claimable(notifications, now: dt.datetime):
    # Conditions on the row's own columns only: PostgreSQL re-checks them on the row a concurrent claim just
    # updated, where a condition through a join (UPDATE ... WHERE id IN (SELECT ...)) is not re-checked and
    # two notifiers could both claim (the concurrency test caught it).
    return notifications.filter(status__in=UNSETTLED, next_attempt_at__lte=now).filter(
        Q(claimed_until=None) | Q(claimed_until__lt=now)
    )


def _deliver_one(pk: int, now: dt.datetime) -> str | None:
    """Claim notification `pk`, send it, record the attempt and settle it; return how, or None if not claimed."""
    lease = now + LEASE
    mine = _claimable(Notification.objects.filter(pk=pk), now)
    if mine.update(status="sending", claimed_until=lease, attempts=F("attempts") + 1) != 1:
        return None  # another notifier has it, or it was settled meanwhile
    notification = Notification.objects.select_related("alert__service", "alert__incident").get(pk=pk)
    delivery = _send(notification)
    return _settle(notification, delivery, now, lease)


def _send(notification: Notification) -> Delivery:
    try:
        channel = Channel.objects.get(pk=notification.channel_id)  # decrypts the URL and the secret
    except DecryptionError as error:  # the key changed: retryable, once someone restores it
        return Delivery(False, None, f"the channel's secrets cannot be read: {error}", True, 0.0)
    return SENDERS[channel.kind](channel, notification.alert)


def _send_webhook(channel: Channel, alert: Alert) -> Delivery:
    return webhook.deliver(channel.url, payload(alert), secret=channel.secret or None, timeout=channel.timeout)


def _send_email(channel: Channel, alert: Alert) -> Delivery:
    said = message(alert)
    recipients = channel.email_recipients
    return email_channel.deliver(recipients, said.subject, said.text, said.html, timeout=channel.timeout)


def _send_apprise(channel: Channel, alert: Alert) -> Delivery:
    said = message(alert)
    return apprise_channel.deliver(channel.apprise_urls, said.subject, said.text, timeout=channel.timeout)


SENDERS: dict[str, Callable[[Channel, Alert], Delivery]] = {
    "webhook": _send_webhook,
    "email": _send_email,
    "apprise": _send_apprise,
}


def _settle(notification: Notification, delivery: Delivery, now: dt.datetime, lease: dt.datetime) -> str:
    """Record the attempt and mark the notification sent, pending a retry, or failed; return which."""
    retry_at = now + min(RETRY_BASE * 2 ** (notification.attempts - 1), RETRY_CAP)
    window_end = notification.alert.created + dt.timedelta(seconds=settings.PORTWATCH_ALERT_RETRY_WINDOW)
    if delivery.ok:
        outcome, fields = "sent", {"status": "sent", "sent_at": now, "last_error": ""}
    elif delivery.retryable and retry_at <= window_end:
        outcome, fields = "retrying", {"status": "pending", "next_attempt_at": retry_at, "last_error": delivery.error}
    else:
        gave_up = " (retries stopped: PORTWATCH_ALERT_RETRY_WINDOW ended)" if delivery.retryable else ""
        outcome, fields = "failed", {"status": "failed", "last_error": delivery.error + gave_up}
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            notification=notification,
            at=now,
            ok=delivery.ok,
            status=delivery.status,
            error=delivery.error,
            elapsed=delivery.elapsed,
        )
        # Only while the lease is ours: past it, another notifier may have claimed and settled it.
        Notification.objects.filter(pk=notification.pk, status="sending", claimed_until=lease).update(
            claimed_until=None, **fields
        )
    if not delivery.ok:
        logger.warning("notification %s (%s): %s", notification.pk, outcome, delivery.error)
    return outcome
