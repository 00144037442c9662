"""The notifier: recorded status changes become problems and alerts, alerts become notifications, and
notifications are delivered, grouped per channel.

`run(now)` is what the `portwatch.notify` task calls every few seconds. Its steps, each taking `now` so
tests move time instead of waiting:

1. `evaluate(now)`: claim each new StatusChange once and apply it to its service's problem
   (`monitor.alerting.problems`: quorum across locations, holds, the opening and resolving alerts).
2. `followups.release(now)`, `followups.follow_up(now)` (reminders, escalation), `flapping.settle(now)`
   and the detectors in `monitor.alerting.conditions` (certificates, latency, the monitor's own health).
3. `deliver_due(now)`: send what is due, one message per channel for everything waiting there.

Safe with any number of notifiers at once:

1. **A change is claimed once.** `UPDATE ... SET processed = now WHERE ... AND processed IS NULL`; the
   problem, its alert and its notifications are written in the same transaction, so a
   notifier that dies leaves the change unclaimed rather than claimed and lost. A notifier first locks the
   rows of the services it applies (SKIP LOCKED: others take other services), then claims and applies
   all their changes oldest first, so a service's changes are applied in order by one notifier at a time.
2. **No storm on restart.** A down change older than PORTWATCH_ALERT_MAX_AGE when first claimed gets its
   alert and notification rows, marked skipped with the reason. Resolutions are never held back.
3. **Grouping.** A notification waits its channel's `group_window` after its alert; when the first of a
   channel's notifications is due, every unsettled, unleased notification of that channel that is due or
   still waiting for its first try is claimed with one token and sent as one message (at most MAX_GROUP).
   So an alert waits at most the window, and alerts made within it go out together.
4. **A notification is sent by one notifier at a time.** Claiming sets status `sending`, a lease
   (`claimed_until`) and the claim token with a conditional UPDATE; a notifier that died mid-send leaves the
   lease to expire, and the notification is sent again (at least once: receivers dedupe on `alert_id`).
   Settling is conditional on the claim still being the claimer's.
5. **Retried, recorded.** Every attempt is a DeliveryAttempt. A retryable failure is tried again after
   RETRY_BASE doubling to RETRY_CAP, until PORTWATCH_ALERT_RETRY_WINDOW after the alert; then, or at once
   for a failure only the channel's owner can fix, the notification is failed. A resolution waits until
   its opening notification to the same channel is settled, so it never overtakes the outage.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.html import escape

from monitor.alerting import bulk, conditions, flapping, followups, problems
from monitor.alerting.channels import Delivery, webhook
from monitor.alerting.channels import apprise as apprise_channel
from monitor.alerting.channels import email as email_channel
from monitor.alerting.messages import message
from monitor.alerting.payload import body
from monitor.models import Alert, Channel, DeliveryAttempt, Notification, Service, StatusChange, Watermark
from monitor.models.alerting import MAX_CHANNEL_TIMEOUT, UNSETTLED
from monitor.secrets import DecryptionError

logger = logging.getLogger(__name__)

EVALUATE_BATCH = 2_000  # unprocessed changes looked at a time, for the services they name
SERVICES_PER_CLAIM = 50  # services locked, and their changes applied, per transaction
EVALUATE_LIMIT = 20_000  # changes applied per run at most
EVALUATE_BUDGET = 30.0  # seconds of applying changes per run before leaving the rest to the next one
DELIVER_BATCH = 200  # due notifications looked at per pass, for the channels they name
WATERMARK = "notifier"  # Watermark row: when a notifier last ran
MAX_GROUP = 100  # notifications in one message; a bigger burst is sent as several
DELIVER_BUDGET = 60.0  # seconds of sending per run before leaving the rest to the next one
# A claim outlives the slowest delivery (one deadline of at most MAX_CHANNEL_TIMEOUT, plus a name lookup that
# no deadline bounds), so a live sender never loses its claim; a dead one's notification waits this long.
LEASE = dt.timedelta(seconds=2 * MAX_CHANNEL_TIMEOUT + 30)
RETRY_BASE = dt.timedelta(seconds=30)
RETRY_CAP = dt.timedelta(minutes=30)


def run(now: dt.datetime | None = None) -> dict[str, int]:
    """Evaluate new changes, release, remind, escalate and detect, then deliver what is due; return counts."""
    now = now or timezone.now()
    _mark(now)
    alerts = evaluate(now)
    alerts += len(followups.release(now))
    alerts += len(followups.follow_up(now))
    alerts += len(flapping.settle(now))
    alerts += conditions.check(now)
    return {"alerts": alerts, **deliver_due(now)}


def _mark(now: dt.datetime) -> None:
    """Note that a notifier ran (for /metrics and the PortwatchNotifierStalled rule: a dead notifier is not silent)."""
    Watermark.note(WATERMARK, now, forward_only=True)


# --- Evaluate ---------------------------------------------------------------------------------------


def evaluate(now: dt.datetime | None = None, *, limit: int = EVALUATE_LIMIT) -> int:
    """Claim unprocessed status changes, service by service, and apply them in order; return the alerts made.

    Takes the services with the oldest unprocessed changes, SERVICES_PER_CLAIM at a time, locking their rows
    with SKIP LOCKED: a service another notifier is applying is left to it, and this one takes the next, so
    notifiers share a burst instead of queueing on the same rows. Holding a service's row, it claims all of
    that service's unprocessed changes and applies them oldest first, in one transaction. Up to `limit`
    changes or EVALUATE_BUDGET seconds; the rest wait for the next run (or another notifier).
    """
    now = now or timezone.now()
    started = time.monotonic()
    made = applied = 0
    context = problems.Context.read(now)
    while applied < limit and time.monotonic() - started < EVALUATE_BUDGET:
        oldest = StatusChange.objects.filter(processed=None).order_by("created", "id")
        waiting = list(dict.fromkeys(oldest.values_list("service_id", flat=True)[:EVALUATE_BATCH]))
        progressed = False
        for start in range(0, len(waiting), SERVICES_PER_CLAIM):
            if time.monotonic() - started >= EVALUATE_BUDGET:
                break
            with transaction.atomic():
                mine = _lock(waiting[start : start + SERVICES_PER_CLAIM])
                if not mine:
                    continue  # other notifiers are applying these: on to the next ones
                changes = list(
                    StatusChange.objects.filter(service_id__in=mine, processed=None)
                    .select_related("service")
                    .order_by("created", "id")
                )
                StatusChange.objects.filter(pk__in=[change.pk for change in changes], processed=None).update(
                    processed=now
                )
                context.prepare(mine)
                made += bulk.apply_all(changes, now, context)
                applied += len(changes)
                progressed = progressed or bool(changes)
        if not progressed:
            break
    return made


def _lock(service_ids: list[int]) -> list[int]:
    """Lock these services' rows for this transaction, skipping those another notifier holds; return the locked.

    SQLite has one writer at a time and no row locks: every service is this notifier's.
    """
    locked = Service.objects.select_for_update(skip_locked=True).filter(pk__in=service_ids)
    return list(locked.values_list("id", flat=True))


# --- Deliver ----------------------------------------------------------------------------------------


def deliver_due(now: dt.datetime | None = None, *, limit: int = DELIVER_BATCH) -> dict[str, int]:
    """Send due notifications, one message per channel; return how many notifications were sent, retried, failed.

    Looks again while a pass settled something: a resolution becomes due when its outage's notification is
    settled, in the same run.
    """
    now = now or timezone.now()
    counts = {"sent": 0, "retrying": 0, "failed": 0}
    started = time.monotonic()
    progressed = True
    while progressed:
        progressed = False
        due = _due(now).order_by("next_attempt_at", "id").values_list("channel_id", flat=True)[:limit]
        for channel_id in dict.fromkeys(due):
            if time.monotonic() - started > DELIVER_BUDGET:
                return counts  # the next run, seconds away, takes the rest; this one's task must end
            for outcome in _deliver_group(channel_id, now):
                counts[outcome] += 1
                progressed = True
    return counts


def _due(now: dt.datetime):
    """Return unsettled notifications due at `now` and not leased, whose opening notification (if any) is settled."""
    return _ready(_claimable(Notification.objects.all(), now).filter(next_attempt_at__lte=now))


def _ready(notifications):
    return notifications.filter(Q(follows=None) | ~Q(follows__status__in=UNSETTLED))


def _claimable(notifications, now: dt.datetime):
    # Conditions on the row's own columns only: PostgreSQL re-checks them on the row a concurrent claim just
    # updated, where a condition through a join (UPDATE ... WHERE id IN (SELECT ...)) is not re-checked and
    # two notifiers could both claim (the concurrency test caught it). The join on `follows` is read before
    # claiming: a settled notification never becomes unsettled again, so a stale read is still true.
    return notifications.filter(status__in=UNSETTLED).filter(Q(claimed_until=None) | Q(claimed_until__lt=now))


def _deliver_group(channel_id: int, now: dt.datetime) -> list[str]:
    """Claim the channel's due and waiting notifications, send them as one message, settle each; return outcomes."""
    waiting = Q(next_attempt_at__lte=now) | Q(attempts=0, status="pending")
    members = list(
        _ready(_claimable(Notification.objects.filter(channel_id=channel_id), now))
        .filter(waiting)
        .order_by("alert__created", "alert_id")
        .values_list("id", flat=True)[:MAX_GROUP]
    )
    token, lease = uuid.uuid4().hex, now + LEASE
    mine = _claimable(Notification.objects.filter(pk__in=members), now)
    if not mine.update(status="sending", claimed_until=lease, claim=token, attempts=F("attempts") + 1):
        return []  # another notifier has them, or they were settled meanwhile
    claimed = list(
        Notification.objects.filter(claim=token, status="sending")
        .select_related("alert__service", "alert__incident", "alert__problem")
        .order_by("alert__created", "alert_id")
    )
    if not any(notification.next_attempt_at <= now for notification in claimed):
        # Only early ones were left (the due one went to another notifier): let them wait their window.
        Notification.objects.filter(claim=token, status="sending").update(
            status="pending", claimed_until=None, attempts=F("attempts") - 1
        )
        return []
    delivery = _send(channel_id, claimed)
    return _settle(claimed, delivery, now, token)


def _send(channel_id: int, notifications: list[Notification]) -> Delivery:
    try:
        channel = Channel.objects.get(pk=channel_id)  # decrypts the URL and the secret
    except DecryptionError as error:  # the key changed: retryable, once someone restores it
        return Delivery(False, None, f"the channel's secrets cannot be read: {error}", True, 0.0)
    escalated = next((n.escalated_from for n in notifications if n.escalated_from), "")
    return SENDERS[channel.kind](channel, [n.alert for n in notifications], escalated)


def _send_webhook(channel: Channel, alerts: list[Alert], escalated_from: str) -> Delivery:
    data = body(alerts, escalated_from=escalated_from)
    return webhook.deliver(channel.url, data, secret=channel.secret or None, timeout=channel.timeout)


def _send_email(channel: Channel, alerts: list[Alert], escalated_from: str) -> Delivery:
    said = message(alerts, escalated_from=escalated_from)
    recipients = channel.email_recipients
    return email_channel.deliver(recipients, said.subject, said.text, said.html, timeout=channel.timeout)


def _send_apprise(channel: Channel, alerts: list[Alert], escalated_from: str) -> Delivery:
    said = message(alerts, escalated_from=escalated_from)
    return apprise_channel.deliver(channel.apprise_urls, said.subject, said.text, timeout=channel.timeout)


SENDERS: dict[str, Callable[[Channel, list[Alert], str], Delivery]] = {
    "webhook": _send_webhook,
    "email": _send_email,
    "apprise": _send_apprise,
}


def send_test(channel: Channel) -> Delivery:
    """Send a test message through `channel` at once (the dashboard's "send test"); nothing is recorded.

    The webhook body is `{"schema": N, "test": true, "channel": name, "text": ...}`: receivers can tell it apart.
    """
    text = f"This is a test from Portwatch's channel {channel.name!r}. If you read this, alerts reach you here."
    subject = f"Portwatch test: {channel.name}"
    if channel.kind == "webhook":
        test = {"schema": webhook.SCHEMA_VERSION, "test": True, "channel": channel.name, "text": text}
        return webhook.deliver(channel.url, test, secret=channel.secret or None, timeout=channel.timeout)
    if channel.kind == "email":
        html = f"<p>{escape(text)}</p>"
        return email_channel.deliver(channel.email_recipients, subject, text, html, timeout=channel.timeout)
    return apprise_channel.deliver(channel.apprise_urls, subject, text, timeout=channel.timeout)


def _settle(claimed: list[Notification], delivery: Delivery, now: dt.datetime, token: str) -> list[str]:
    """Record the attempt for each notification of one message and mark each sent, pending a retry, or failed.

    One transaction for the message: the attempts in one INSERT, the notifications in one UPDATE per outcome
    (retries differ only by their due time, which follows from their attempts). Return each one's outcome.
    """
    outcomes: list[str] = []
    updates: dict[tuple, list[int]] = {}
    for notification in claimed:
        outcome, fields = _outcome(notification, delivery, now)
        outcomes.append(outcome)
        updates.setdefault(tuple(sorted(fields.items())), []).append(notification.pk)
    attempt = {"at": now, "ok": delivery.ok, "status": delivery.status, "error": delivery.error}
    with transaction.atomic():
        DeliveryAttempt.objects.bulk_create(
            [DeliveryAttempt(notification=n, elapsed=delivery.elapsed, **attempt) for n in claimed]
        )
        for fields, pks in updates.items():
            # Only while the claim is ours: past the lease, another notifier may have claimed and settled them.
            Notification.objects.filter(pk__in=pks, status="sending", claim=token).update(
                claimed_until=None, **dict(fields)
            )
    if not delivery.ok:
        ids = ", ".join(str(notification.pk) for notification in claimed)
        logger.warning("notifications %s (%s): %s", ids, "/".join(sorted(set(outcomes))), delivery.error)
    return outcomes


def _outcome(notification: Notification, delivery: Delivery, now: dt.datetime) -> tuple[str, dict]:
    """Return how `delivery` settles `notification`: sent, retrying (when) or failed (why), and the fields to set."""
    retry_at = now + min(RETRY_BASE * 2 ** (notification.attempts - 1), RETRY_CAP)
    window_end = notification.alert.created + dt.timedelta(seconds=settings.PORTWATCH_ALERT_RETRY_WINDOW)
    if delivery.ok:
        return "sent", {"status": "sent", "sent_at": now, "last_error": ""}
    if delivery.retryable and retry_at <= window_end:
        return "retrying", {"status": "pending", "next_attempt_at": retry_at, "last_error": delivery.error}
    gave_up = " (retries stopped: PORTWATCH_ALERT_RETRY_WINDOW ended)" if delivery.retryable else ""
    return "failed", {"status": "failed", "last_error": delivery.error + gave_up}
