"""What probing produced: raw results, the current state, status changes, incidents and rollups."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from django.db import models

from monitor.models.service import Service

STATUS_CHOICES = [("up", "Up"), ("warning", "Warning"), ("down", "Down"), ("unknown", "Unknown")]
# A state's status may also be paused: nobody probes it (service disabled, or location removed).
STATE_CHOICES = [*STATUS_CHOICES, ("paused", "Paused")]
PHASES = ("resolve", "connect", "tls", "processing", "transfer", "total")
# How bad a status is, best to worst: the one order for the worst of several locations or services.
# Paused (nobody probes it) ranks lowest, so one disabled part hides nothing.
SEVERITY = ("paused", "up", "unknown", "warning", "down")


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
            # Covering status and failure: the service page's 24 h timeline counts them from the index
            # alone, on pages vacuum marked all-visible (see migration 0007), where it read 1,440 rows a
            # location, each on its own heap page: 60 ms at the median, up to 160, for a service not in
            # PostgreSQL's buffers at 10,000 services. The key is the one before: no extra index to write.
            models.Index(
                fields=["service", "location", "started_at"],
                include=["status", "failure"],
                name="result_service_status",
            ),
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
    last_address = models.CharField(max_length=64, blank=True)  # the IP address the last measuring probe reached
    # Every slot recorded since the state was created, by outcome, and the latency histogram of the
    # good ones (`stats.counted()`): cumulative counters for /metrics, kept here because the state
    # row is written with every batch anyway.
    counters = models.JSONField(default=dict, blank=True)
    # The version-exposure verdicts of the last measured probe (`monitor.exposure`'s rules on its banner and
    # details, with the service's protocol and TLS mode), set by the state writer when it applies one: the
    # overview counted them by assessing every state on each request, 86-147 ms at 11,000 states.
    reveals_version = models.BooleanField(default=False)
    offers_plaintext_login = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service", "location"], name="state_service_location")]

    def save(self, *args, **kwargs) -> None:
        """Save, and drop the stored /metrics series: rendered from the state as it was, they no longer match it.

        The state writer (`monitor.daemon.recording`) writes states with its own statements and renders the
        series again; anything else that saves a state (a data fix, a test) makes a scrape render it live.
        """
        super().save(*args, **kwargs)
        StateExposition.objects.filter(state_id=self.pk).delete()

    @property
    def failing_since(self):
        """Return when the current run of failed probes began, or None after a success."""
        return self.streak_since if self.consecutive_failures else None

    def __str__(self) -> str:
        return f"{self.service_id}@{self.location} {self.status} since {self.since:%Y-%m-%d %H:%M:%S}"


class StateExposition(models.Model):
    """A state's /metrics series, rendered by the state writer when it writes the state: a scrape only joins them.

    `text` is `monitor.metrics.exposition.render()` of the state in UTF-8: its per-service families in the
    collector's order, separated by `exposition.SEPARATOR`, each line's service labels left as
    `exposition.LABELS` for the scrape to fill in from the service as it is then. `key` says what the text
    was rendered with (the format's version, the service's protocol and host, the histogram's phases): a
    scrape renders a pair live from its state when the key is not the one it would use. Kept apart from
    `ServiceState`, which every page reads: the text is 2.5 KB (the `total` histogram) to 9 KB a pair.
    """

    state = models.OneToOneField(ServiceState, on_delete=models.CASCADE, primary_key=True, related_name="+")
    key = models.CharField(max_length=32)
    text = models.BinaryField()  # UTF-8: a scrape fills in labels and joins bytes, with nothing to decode or encode

    def __str__(self) -> str:
        return f"series of state {self.state_id} ({len(self.text)} bytes)"


class ServiceSummary(models.Model):
    """What a service's states add up to, in one narrow row: what the overview counts, filters and sorts on.

    Kept by the state writer (`monitor.daemon.summaries.refresh()`, called by `recording` in the
    transaction that saves the states), so it is never behind them. A service without any state
    yet has no summary. `summarize()` is the one definition of each value:
    - `status`: the worst status of its locations (`SEVERITY`), `severity` its position there;
    - `since`, `reason`: when the worst location entered that status (the earliest on a tie) and its
      last reason, unless it is up or paused;
    - `latency`: the slowest active (not paused) location's last total, in seconds;
    - `cert_days`: the fewest days left of any active location's certificate chain;
    - `last_checked_at`: the newest check of any location;
    - `reveals_version`, `plaintext_login`: whether any active location's last measured probe revealed a
      version, or offered login in clear text (the states' flags). Not indexed: the overview counts them in
      one scan of these narrow rows, and filters on them beside other conditions.
    """

    service = models.OneToOneField(Service, on_delete=models.CASCADE, primary_key=True, related_name="summary")
    status = models.CharField(max_length=8, choices=STATE_CHOICES)
    severity = models.PositiveSmallIntegerField()
    since = models.DateTimeField()
    reason = models.CharField(max_length=500, blank=True)
    latency = models.FloatField(null=True, blank=True)
    cert_days = models.FloatField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    reveals_version = models.BooleanField(default=False)
    plaintext_login = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["status"], name="summary_status"),
            models.Index(fields=["latency"], name="summary_latency"),
            models.Index(fields=["cert_days"], name="summary_cert_days"),
            models.Index(fields=["last_checked_at"], name="summary_last_checked"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id} {self.status} since {self.since:%Y-%m-%d %H:%M:%S}"


class StateFacts(NamedTuple):
    """The part of a ServiceState a summary is made of; numbers as read out of its JSON (None when absent)."""

    status: str
    since: dt.datetime
    reason: str
    latency: float | None
    cert_days: float | None
    last_checked_at: dt.datetime | None
    reveals_version: bool = False
    offers_plaintext_login: bool = False


def summarize(states: list[StateFacts]) -> dict:
    """Return a ServiceSummary's fields from the facts of one service's states (at least one)."""
    worst = min(states, key=lambda state: (-severity(state.status), state.since))
    active = [state for state in states if state.status != "paused"]
    return {
        "status": worst.status,
        "severity": severity(worst.status),
        "since": worst.since,
        "reason": "" if worst.status in ("up", "paused") else worst.reason,
        "latency": max((state.latency for state in active if state.latency is not None), default=None),
        "cert_days": min((state.cert_days for state in active if state.cert_days is not None), default=None),
        "last_checked_at": max((state.last_checked_at for state in states if state.last_checked_at), default=None),
        "reveals_version": any(state.reveals_version for state in active),
        "plaintext_login": any(state.offers_plaintext_login for state in active),
    }


def severity(status: str) -> int:
    """Return `status`'s position in SEVERITY; a status it does not know ranks as unknown."""
    return SEVERITY.index(status) if status in SEVERITY else SEVERITY.index("unknown")


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


class UptimeSnapshot(models.Model):
    """A (service, location)'s uptime over the last day, week and month, as of `computed_at`.

    Written every ten minutes by `monitor.daemon.snapshots.refresh()` from the rollups, for every pair at
    once; read by `monitor.readers.recent_uptimes()`, so the overview and /metrics get uptime for a
    page or the whole fleet in one short query instead of summing rollups while someone waits.
    Counts as in `readers.Uptime`: up (or warning), down, and unknown (not measured).
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="+")
    location = models.CharField(max_length=40)
    computed_at = models.DateTimeField()  # each window ends here
    day_up = models.PositiveIntegerField(default=0)
    day_down = models.PositiveIntegerField(default=0)
    day_unknown = models.PositiveIntegerField(default=0)
    week_up = models.PositiveIntegerField(default=0)
    week_down = models.PositiveIntegerField(default=0)
    week_unknown = models.PositiveIntegerField(default=0)
    month_up = models.PositiveIntegerField(default=0)
    month_down = models.PositiveIntegerField(default=0)
    month_unknown = models.PositiveIntegerField(default=0)

    WINDOW_NAMES = ("day", "week", "month")  # readers.WINDOWS, in order: 1, 7 and 30 days
    COUNTS = tuple(f"{name}_{part}" for name in WINDOW_NAMES for part in ("up", "down", "unknown"))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service", "location"], name="uptime_snapshot_pair")]

    def __str__(self) -> str:
        return f"{self.service_id}@{self.location} uptime as of {self.computed_at:%Y-%m-%d %H:%M:%S}"


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
