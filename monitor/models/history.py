"""What probing produced: raw results, the current state, status changes, incidents and rollups."""

from __future__ import annotations

from django.db import models

from monitor.models.service import Service

STATUS_CHOICES = [("up", "Up"), ("warning", "Warning"), ("down", "Down"), ("unknown", "Unknown")]
# A state's status may also be paused: nobody probes it (service disabled, or location removed).
STATE_CHOICES = [*STATUS_CHOICES, ("paused", "Paused")]
PHASES = ("resolve", "connect", "tls", "processing", "transfer", "total")


class ProbeResult(models.Model):
    """One probe of one service from one location; kept `PORTWATCH_RESULT_RETENTION_DAYS` (7) days."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="results")
    location = models.CharField(max_length=40)
    scheduled_at = models.DateTimeField()  # the slot; with the unique constraint, a re-run task records nothing
    started_at = models.DateTimeField()
    status = models.CharField(max_length=8, choices=STATUS_CHOICES)
    failure = models.CharField(max_length=32, blank=True)
    reason = models.CharField(max_length=500)
    resolve = models.FloatField(default=0.0)
    connect = models.FloatField(default=0.0)
    tls = models.FloatField(default=0.0)
    processing = models.FloatField(default=0.0)
    transfer = models.FloatField(default=0.0)
    total = models.FloatField(default=0.0)
    address = models.CharField(max_length=64, blank=True)
    tls_version = models.CharField(max_length=16, blank=True)
    tls_days_left = models.FloatField(null=True, blank=True)
    tls_fingerprint = models.CharField(max_length=64, blank=True)
    banner = models.CharField(max_length=512, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service", "location", "scheduled_at"], name="result_once_per_slot")
        ]
        indexes = [
            models.Index(fields=["service", "location", "started_at"], name="result_service_time"),
            models.Index(fields=["started_at"], name="result_time"),  # prune and rollups scan by time
        ]

    def __str__(self) -> str:
        return f"{self.service_id}@{self.location} {self.started_at:%Y-%m-%d %H:%M:%S} {self.status}"


class Incident(models.Model):
    """An outage: opened after `failure_threshold` failures in a row, closed after `recovery_threshold` successes."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="incidents")
    location = models.CharField(max_length=40)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    failure = models.CharField(max_length=32, blank=True)  # what opened it
    reason = models.CharField(max_length=500)
    # Why it closed when it did not close on a good probe, e.g. "monitoring stopped: service disabled".
    end_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [models.Index(fields=["service", "location", "started_at"], name="incident_service_time")]

    @property
    def duration(self):
        return None if self.ended_at is None else self.ended_at - self.started_at

    def __str__(self) -> str:
        return f"{self.service_id}@{self.location} down since {self.started_at:%Y-%m-%d %H:%M:%S}"


class ServiceState(models.Model):
    """The current state of one service at one location: the one small table the dashboard and /metrics read."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="states")
    location = models.CharField(max_length=40)
    status = models.CharField(max_length=8, choices=STATE_CHOICES, default="unknown")  # after the thresholds
    since = models.DateTimeField()
    last_result = models.ForeignKey(ProbeResult, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=8, choices=STATUS_CHOICES, default="unknown")  # of the last probe
    last_failure = models.CharField(max_length=32, blank=True)
    last_reason = models.CharField(max_length=500, blank=True)
    last_phases = models.JSONField(default=dict, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_successes = models.PositiveIntegerField(default=0)
    # When the current run of failures (or of successes) began: the start of its first probe. An
    # incident starts, and ends, there, so its duration is the real outage, not the thresholds' lag.
    streak_since = models.DateTimeField(null=True, blank=True)
    # The newest slot applied to this state; an older slot arriving late is stored but not applied.
    last_scheduled_at = models.DateTimeField(null=True, blank=True)
    tls = models.JSONField(null=True, blank=True)  # the last TLS facts seen, as Result.tls.to_dict()
    details = models.JSONField(default=dict, blank=True)  # the last probe's protocol details
    open_incident = models.ForeignKey(Incident, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service", "location"], name="state_service_location")]

    @property
    def failing_since(self):
        """Return when the current run of failed probes began, or None after a success."""
        return self.streak_since if self.consecutive_failures else None

    def __str__(self) -> str:
        return f"{self.service_id}@{self.location} {self.status} since {self.since:%Y-%m-%d %H:%M:%S}"


class StatusChange(models.Model):
    """A change of a service's status, recorded before anyone is told; notifiers claim it once via `processed`."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="status_changes")
    location = models.CharField(max_length=40)
    created = models.DateTimeField()
    old_status = models.CharField(max_length=8, choices=STATE_CHOICES)
    new_status = models.CharField(max_length=8, choices=STATE_CHOICES)
    failure = models.CharField(max_length=32, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    incident = models.ForeignKey(Incident, on_delete=models.SET_NULL, null=True, blank=True, related_name="changes")
    processed = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # Notifiers look only for unprocessed rows; a partial index keeps that cheap as history grows.
            models.Index(fields=["created"], condition=models.Q(processed=None), name="change_unprocessed"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id}@{self.location} {self.old_status} -> {self.new_status} at {self.created}"


class Rollup(models.Model):
    """Counts and latency statistics of one service at one location over one period.

    `latency` maps each phase (and total) to {"min", "avg", "max", "p95"} in seconds, over the
    probes that reached the server (status up or warning). `count` is every slot of the period;
    `unknown_count` the slots nothing measured (missed, internal error, config error), so the
    down ones are `count - up_count - unknown_count` and uptime counts measured slots only.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="+")
    location = models.CharField(max_length=40)
    start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    up_count = models.PositiveIntegerField(default=0)  # up or warning: the service answered as it should
    unknown_count = models.PositiveIntegerField(default=0)  # not measured: missed slots and internal errors
    latency = models.JSONField(default=dict)

    class Meta:
        abstract = True

    @property
    def down_count(self) -> int:
        return self.count - self.up_count - self.unknown_count

    @property
    def uptime(self) -> float | None:
        """Return the share of measured slots that were up or warning; None when nothing was measured."""
        measured = self.count - self.unknown_count
        return self.up_count / measured if measured else None


class HourlyRollup(Rollup):
    """Kept `PORTWATCH_HOURLY_RETENTION_DAYS` (400) days."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service", "location", "start"], name="hourly_once")]
        indexes = [models.Index(fields=["start"], name="hourly_start")]


class DailyRollup(Rollup):
    """Kept for good: one small row per service, location and day."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service", "location", "start"], name="daily_once")]
        indexes = [models.Index(fields=["start"], name="daily_start")]
