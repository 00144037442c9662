"""Who is told, and what was told: `Channel`, `Alert` (one thing to tell), `Notification` (one alert to one
channel) and `DeliveryAttempt` (every try). Written by `monitor.alerting.notifier`; see docs/architecture.md.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models

from monitor.models.history import STATE_CHOICES, Incident, StatusChange
from monitor.models.service import Service, TagsField
from monitor.secrets import EncryptedTextField, masked

# One module per kind in monitor/alerting/channels/. What `url` holds, by kind: webhook, the URL to POST to;
# email, the recipients' addresses, comma-separated; apprise, one or more apprise URLs, space-separated
# (an apprise URL may itself hold commas: `mailto://...?to=a@x,b@x`).
CHANNEL_KINDS = [("webhook", "Webhook"), ("email", "Email"), ("apprise", "Apprise")]
MAX_CHANNEL_TIMEOUT = 60.0  # seconds; a delivery holds its notification's lease that long at most


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
        """Return True when this channel is for `service`: no tags, or a tag in common."""
        wanted = self.tag_list
        return not wanted or bool(set(wanted) & set(service.tag_list))

    @property
    def masked_url(self) -> str:
        return masked(self.url or "")

    @property
    def email_recipients(self) -> list[str]:
        """Return an email channel's addresses, from `url`."""
        return [address.strip() for address in (self.url or "").split(",") if address.strip()]

    @property
    def apprise_urls(self) -> list[str]:
        """Return an apprise channel's URLs, from `url`."""
        return (self.url or "").split()

    def clean(self) -> None:
        """Check `url` for the kind: email addresses valid, apprise URLs parsed by apprise; never echo a token."""
        super().clean()
        if self.kind == "email":
            self._clean_recipients()
        elif self.kind == "apprise":
            self._clean_apprise()

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


ALERT_KINDS = [("down", "Down"), ("up", "Up")]


class Alert(models.Model):
    """One thing to tell people, made from one StatusChange by the notifier's evaluation, at most once.

    `since` is when the change took effect (a down alert: the outage's start; an up alert: its end).
    `notified`: a down alert went to at least one channel (was not skipped); only then does its
    incident's recovery make an up alert, and only to the channels the down alert went to.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="alerts")
    location = models.CharField(max_length=40)
    kind = models.CharField(max_length=8, choices=ALERT_KINDS)
    status = models.CharField(max_length=8, choices=STATE_CHOICES)  # the status changed to
    created = models.DateTimeField()  # when the notifier made it; the retry window counts from here
    since = models.DateTimeField()
    change = models.ForeignKey(StatusChange, on_delete=models.CASCADE, related_name="alerts")
    incident = models.ForeignKey(Incident, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts")
    failure = models.CharField(max_length=32, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    notified = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["change", "kind"], name="alert_once_per_change")]
        indexes = [models.Index(fields=["incident", "kind"], name="alert_incident")]

    def __str__(self) -> str:
        return f"{self.kind} {self.service_id}@{self.location} since {self.since:%Y-%m-%d %H:%M:%S}"


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
