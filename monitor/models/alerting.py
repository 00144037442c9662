"""Who is told, and what was told: `Channel`, `Alert` (one thing to tell), `Notification` (one alert to one
channel) and `DeliveryAttempt` (every try). Written by `monitor.alerting.notifier`; see docs/architecture.md.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models

from monitor.models.history import STATE_CHOICES, Incident, StatusChange
from monitor.models.service import Service, TagsField
from monitor.secrets import DecryptionError, EncryptedTextField, masked

# One module per kind in monitor/alerting/channels/. What `url` holds, by kind: webhook, the URL to POST to;
# email, the recipients' addresses, comma-separated; apprise, one or more apprise URLs, space-separated
# (an apprise URL may itself hold commas: `mailto://...?to=a@x,b@x`).
CHANNEL_KINDS = [("webhook", "Webhook"), ("email", "Email"), ("apprise", "Apprise")]
UNREADABLE = "(cannot be read: was PORTWATCH_SECRETS_KEY changed? enter it again)"
MAX_CHANNEL_TIMEOUT = 60.0  # seconds; a delivery holds its notification's lease that long at most
WEBHOOK_SCHEMES = ("http://", "https://")
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
MAX_GROUP_WINDOW = 600.0  # seconds; a grouped alert waits at most this long for company


class Channel(models.Model):
    """Where notifications go. Secrets (`url`, `secret`) are encrypted at rest; show them with `masked()` only."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=CHANNEL_KINDS, default="webhook")
    url = EncryptedTextField(
        help_text="Webhook: where to POST. Email: the recipients, comma-separated. Apprise: one or more apprise "
        "URLs, space-separated. Stored encrypted, shown back masked."
    )
    secret = EncryptedTextField(
        blank=True, default="", help_text="HMAC-SHA256 signing secret; empty sends unsigned. Stored encrypted."
    )
    enabled = models.BooleanField(default=True)
    tags = TagsField(
        max_length=200,
        blank=True,
        default="",
        help_text="Only services with any of these tags; empty means every service.",
    )
    services = models.ManyToManyField(
        Service,
        blank=True,
        related_name="channels",
        help_text="These services, besides any with one of the tags; no services and no tags means every service.",
    )
    group_window = models.FloatField(
        default=30.0,
        validators=[
            MinValueValidator(0, "Grouping window cannot be negative."),
            MaxValueValidator(MAX_GROUP_WINDOW, f"Grouping window must be at most {MAX_GROUP_WINDOW:g} s."),
        ],
        help_text="Seconds to wait after an alert for others to send with it, as one message; 0 sends each at once.",
    )
    reminder_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1, "Reminder interval must be at least 1 minute.")],
        help_text="Remind every this many minutes while an unacknowledged outage lasts (a service's own "
        "setting wins); empty never reminds.",
    )
    escalate_to = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The next channel in the chain: told when an outage sent here is not acknowledged in time.",
    )
    escalate_after_minutes = models.PositiveIntegerField(
        default=15,
        validators=[MinValueValidator(1, "Escalation delay must be at least 1 minute.")],
        help_text="Minutes an outage told here may stay unacknowledged before the next channel is told.",
    )
    schedule_days = models.CharField(
        max_length=40,
        blank=True,
        default="",
        help_text="Days this channel is on duty, e.g. mon,tue,wed,thu,fri; empty means every day.",
    )
    schedule_from = models.TimeField(null=True, blank=True, help_text="On duty from this time of day.")
    schedule_until = models.TimeField(
        null=True, blank=True, help_text="On duty until this time of day; earlier than 'from' spans midnight."
    )
    schedule_timezone = models.CharField(
        max_length=64, default="UTC", help_text="The time zone of the schedule, e.g. Europe/Berlin."
    )
    timeout = models.FloatField(
        default=10.0,
        validators=[
            MinValueValidator(0.1, "Timeout must be at least 0.1 s."),
            MaxValueValidator(MAX_CHANNEL_TIMEOUT, f"Timeout must be at most {MAX_CHANNEL_TIMEOUT:g} s."),
        ],
        help_text="Seconds one delivery may take in all.",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name  # never the URL: it is a secret

    @property
    def tag_list(self) -> list[str]:
        return [tag for tag in self.tags.split(",") if tag]

    def matches(self, service: Service) -> bool:
        """Return True when this channel is for `service`: attached to it, a tag in common, or attached to nothing.

        Reads `services` through a prefetch when there is one (the notifier prefetches `services` ids).
        """
        wanted = self.tag_list
        attached = {other.pk for other in self.services.all()}
        if not wanted and not attached:
            return True
        return service.pk in attached or bool(set(wanted) & set(service.tag_list))

    @property
    def day_list(self) -> list[str]:
        return [day for day in self.schedule_days.split(",") if day]

    def on_duty(self, at: dt.datetime) -> bool:
        """Return True when the schedule (days and times of day, in `schedule_timezone`) covers `at`."""
        local = at.astimezone(zoneinfo.ZoneInfo(self.schedule_timezone or "UTC"))
        start, end = self.schedule_from, self.schedule_until
        day = local.date()
        if start is not None and end is not None and start > end and local.time() < end:
            day -= dt.timedelta(days=1)  # the early hours of a shift that began the evening before
        if self.day_list and WEEKDAYS[day.weekday()] not in self.day_list:
            return False
        now = local.time()
        if start is None and end is None:
            return True
        if start is not None and end is not None and start > end:
            return now >= start or now < end
        return (start is None or now >= start) and (end is None or now < end)

    @property
    def masked_url(self) -> str:
        """Return the URL as it may be shown (`masked`), or say it cannot be read (the secrets key changed)."""
        try:
            return masked(self.url or "")
        except DecryptionError:
            return UNREADABLE

    @property
    def signed(self) -> bool | None:
        """Return whether deliveries are signed; None when the secret cannot be read."""
        try:
            return bool(self.secret)
        except DecryptionError:
            return None

    @property
    def email_recipients(self) -> list[str]:
        """Return an email channel's addresses, from `url`."""
        return [address.strip() for address in (self.url or "").split(",") if address.strip()]

    @property
    def apprise_urls(self) -> list[str]:
        """Return an apprise channel's URLs, from `url`."""
        return (self.url or "").split()

    def clean(self) -> None:
        """Check `url` for the kind: a webhook's http(s), email addresses valid, apprise URLs parsed by apprise;
        never echo a token.
        Also the schedule (days, time zone) and the escalation chain (no loops)."""
        super().clean()
        self._clean_schedule()
        self._clean_escalation()
        if self.kind == "webhook" and self.url and not self.url.lower().startswith(WEBHOOK_SCHEMES):
            raise ValidationError({"url": "A webhook URL starts with http:// or https://."})  # never echoes the URL
        if self.kind == "email":
            self._clean_recipients()
        elif self.kind == "apprise":
            self._clean_apprise()

    def _clean_schedule(self) -> None:
        days = [day.strip().lower()[:3] for day in self.schedule_days.split(",") if day.strip()]
        unknown = [day for day in days if day not in WEEKDAYS]
        if unknown:
            raise ValidationError(
                {"schedule_days": f"Days must be among {', '.join(WEEKDAYS)}, not {', '.join(map(repr, unknown))}."}
            )
        self.schedule_days = ",".join(day for day in WEEKDAYS if day in days)
        try:
            zoneinfo.ZoneInfo(self.schedule_timezone or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValidationError(
                {"schedule_timezone": f"Unknown time zone {self.schedule_timezone!r}: use a name like Europe/Berlin."}
            ) from None

    def _clean_escalation(self) -> None:
        seen, step = ({self.pk} if self.pk else set()), self.escalate_to
        while step is not None:
            if step.pk in seen:
                raise ValidationError({"escalate_to": f"The escalation chain loops back through {step.name!r}."})
            seen.add(step.pk)
            step = step.escalate_to

    def _clean_recipients(self) -> None:
        recipients = self.email_recipients
        if not recipients:
            raise ValidationError({"url": "Give at least one email address, comma-separated."})
        for address in recipients:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError({"url": f"Not a valid email address: {address!r}."}) from None

    def _clean_apprise(self) -> None:
        from monitor.alerting.channels.apprise import invalid_urls  # imports apprise, only when needed

        urls = self.apprise_urls
        if not urls:
            raise ValidationError({"url": "Give at least one apprise URL."})
        bad = invalid_urls(urls)
        if bad:
            which = ", ".join(f"#{number} ({masked(urls[number - 1])})" for number in bad)
            raise ValidationError(
                {"url": f"apprise cannot use URL {which}: check its scheme and parts (see apprise's wiki)."}
            )


ALERT_KINDS = [
    ("down", "Down"),
    ("up", "Up"),  # resolves a down alert
    ("reminder", "Still down"),
    ("degraded", "Degraded"),
    ("normal", "Normal again"),  # resolves a degraded alert
    ("flapping", "Flapping"),
    ("stable", "Stable again"),  # resolves a flapping alert
    ("certificate", "Certificate expiring"),
    ("monitor", "Monitor problem"),
    ("monitor_ok", "Monitor healthy again"),  # resolves a monitor alert
]
# What resolves what: a resolution goes to every channel its opening alert went to, never held back.
RESOLVES = {"up": "down", "normal": "degraded", "stable": "flapping", "monitor_ok": "monitor"}
PROBLEM_KINDS = [("down", "Down"), ("degraded", "Degraded"), ("flapping", "Flapping"), ("monitor", "Monitor")]


class Problem(models.Model):
    """One thing wrong, as alerting sees it: a service down across its locations (the quorum decides), slow,
    flapping, or the monitor itself unwell. Alerts open and resolve it; acknowledgement, reminders and
    escalation hang on it.

    `started_at` is None while a down problem is forming (fewer locations than the quorum see it down).
    `held` says why its opening alert was not sent (maintenance, a parent down, flapping); `parent` is the
    problem of the service it depends on, whose messages list it. `told` is when its opening alert was made
    for some channel: only then is its resolution sent.
    """

    kind = models.CharField(max_length=16, choices=PROBLEM_KINDS)
    service = models.ForeignKey(Service, on_delete=models.CASCADE, null=True, blank=True, related_name="problems")
    key = models.CharField(max_length=100, blank=True, default="")  # monitor problems: what and where
    opened_at = models.DateTimeField()  # the first change that counted towards it
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    locations = models.JSONField(default=list, blank=True)  # where it is seen now; at the end, where it was
    failure = models.CharField(max_length=32, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    held = models.CharField(max_length=300, blank=True)
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="held_children")
    told = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    acknowledgement = models.CharField(max_length=500, blank=True)  # the note, required

    class Meta:
        # One open problem per kind and service (and key); the monitor's own, without a service, per kind and key.
        # Two partial constraints, not NULLS NOT DISTINCT: SQLite, the embedded default, has no such constraint.
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "service", "key"],
                condition=models.Q(ended_at=None, service__isnull=False),
                name="problem_open_once",
            ),
            models.UniqueConstraint(
                fields=["kind", "key"],
                condition=models.Q(ended_at=None, service__isnull=True),
                name="monitor_problem_open_once",
            ),
        ]
        indexes = [models.Index(fields=["service", "ended_at"], name="problem_service")]

    def __str__(self) -> str:
        return f"{self.kind} {self.service_id or self.key} from {self.opened_at:%Y-%m-%d %H:%M:%S}"

    @property
    def open(self) -> bool:
        return self.ended_at is None


class Alert(models.Model):
    """One thing to tell people, made from one StatusChange by the notifier's evaluation, at most once.

    `since` is when the change took effect (a down alert: the outage's start; an up alert: its end).
    `notified`: a down alert went to at least one channel (was not skipped); only then does its
    incident's recovery make an up alert, and only to the channels the down alert went to.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, null=True, blank=True, related_name="alerts")
    location = models.CharField(max_length=40, blank=True)  # the change's; a problem's are in `detail`
    kind = models.CharField(max_length=16, choices=ALERT_KINDS)
    status = models.CharField(max_length=8, choices=STATE_CHOICES)  # the status changed to
    created = models.DateTimeField()  # when the notifier made it; the retry window counts from here
    since = models.DateTimeField()
    change = models.ForeignKey(StatusChange, on_delete=models.CASCADE, null=True, blank=True, related_name="alerts")
    incident = models.ForeignKey(Incident, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts")
    problem = models.ForeignKey(Problem, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts")
    detail = models.JSONField(default=dict, blank=True)  # kind-specific facts: locations, certificate, latency
    failure = models.CharField(max_length=32, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    notified = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["change", "kind"], name="alert_once_per_change")]
        indexes = [
            models.Index(fields=["incident", "kind"], name="alert_incident"),
            models.Index(fields=["problem", "kind"], name="alert_problem"),
        ]

    def __str__(self) -> str:
        subject = self.service_id or self.detail.get("key", "")
        return f"{self.kind} {subject}@{self.location} since {self.since:%Y-%m-%d %H:%M:%S}"


NOTIFICATION_STATUSES = [
    ("pending", "Pending"),  # waiting for next_attempt_at
    ("sending", "Sending"),  # claimed until claimed_until; claimable again after it (the sender died)
    ("sent", "Sent"),
    ("failed", "Failed"),  # for good: not retryable, or the retry window ended
    ("skipped", "Skipped"),  # never sent, on purpose; last_error says why
]
UNSETTLED = ("pending", "sending")


class Notification(models.Model):
    """One alert to one channel: claimed with a lease, retried with backoff, settled once."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="notifications")
    status = models.CharField(max_length=8, choices=NOTIFICATION_STATUSES, default="pending")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claimed_until = models.DateTimeField(null=True, blank=True)
    escalated_from = models.CharField(max_length=100, blank=True, default="")  # the channel that did not ack in time
    claim = models.CharField(max_length=32, blank=True, default="")  # the claiming run's token: a group is sent as one
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)  # Delivery.error: already free of secrets
    # An up alert's notification waits until its down alert's one to the same channel is settled,
    # so a receiver never gets the recovery before the outage while the down one is being retried.
    follows = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["alert", "channel"], name="notification_once_per_channel")]
        indexes = [
            # The deliverer looks only for unsettled rows; settled ones pile up as history.
            models.Index(fields=["next_attempt_at"], condition=models.Q(status__in=UNSETTLED), name="notification_due"),
        ]

    def __str__(self) -> str:
        return f"alert {self.alert_id} to channel {self.channel_id}: {self.status}"


class DeliveryAttempt(models.Model):
    """One try at delivering a notification, whatever came of it."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempts_made")
    at = models.DateTimeField()
    ok = models.BooleanField()
    status = models.PositiveSmallIntegerField(null=True, blank=True)  # the HTTP status, None without an answer
    error = models.TextField(blank=True)
    elapsed = models.FloatField()  # seconds

    def __str__(self) -> str:
        return f"attempt on notification {self.notification_id} at {self.at:%Y-%m-%d %H:%M:%S}: {self.ok}"


REPEATS = [("none", "Once"), ("daily", "Every day"), ("weekly", "Every week")]


class MaintenanceWindow(models.Model):
    """A time when services (by name or tag) are expected to be down: their new alerts are held, and shown so.

    A repeating window recurs from `starts_at` every day or week, at the same local time in `timezone`,
    until `repeat_until`. Resolutions of alerts already sent are never held; what is still down when the
    window ends is notified then.
    """

    name = models.CharField(max_length=100, unique=True)
    services = models.ManyToManyField(Service, blank=True, related_name="maintenance_windows")
    tags = TagsField(max_length=200, blank=True, default="", help_text="Also every service with one of these tags.")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    repeat = models.CharField(max_length=8, choices=REPEATS, default="none")
    repeat_until = models.DateTimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC", help_text="Where the window's local time is kept.")
    note = models.CharField(max_length=300, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["starts_at"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Check the times: ends after it starts, a repeat shorter than its period, a known time zone."""
        super().clean()
        from monitor.alerting.maintenance import validate  # the rules live with the occurrence logic

        validate(self)


class CertificateWarning(models.Model):
    """A certificate warning sent: one per certificate (by fingerprint) and threshold, whatever restarts."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="+")
    fingerprint = models.CharField(max_length=64)
    days = models.PositiveSmallIntegerField()  # the threshold crossed
    alert = models.ForeignKey("Alert", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service", "fingerprint", "days"], name="certificate_warning_once")
        ]
