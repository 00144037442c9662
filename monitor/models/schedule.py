"""When each service is next due at each location; the dispatcher claims rows here."""

from __future__ import annotations

import datetime as dt

from django.db import models

from monitor.models.service import Service


class Schedule(models.Model):
    """One row per (service, location): the next slot, and the slot last handed to a worker.

    Slots sit on a fixed grid per row (an offset within the interval, from a hash of the service and
    location), so start times are spread across each interval and stay put over time. A claim moves
    `due_at` to the next slot on the grid, skipping slots already in the past, so a backlog after an
    outage never turns into a burst. `claimed_slot` is the last slot handed to a worker: the next
    one is never sooner than half an interval after it, even when the interval changes meanwhile.
    Slots before `active_since` (when the row was created or moved onto a new grid) were never
    due, so the sweeper does not count them as missed.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="schedules")
    location = models.CharField(max_length=40)
    due_at = models.DateTimeField()
    claimed_slot = models.DateTimeField(null=True, blank=True)
    active_since = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service", "location"], name="schedule_service_location")]
        indexes = [models.Index(fields=["location", "due_at"], name="schedule_location_due")]

    def __str__(self) -> str:
        return f"{self.service_id}@{self.location} due {self.due_at:%H:%M:%S}"


class WorkerHeartbeat(models.Model):
    """A worker process that probes from `location`, as it last reported itself.

    A location with no heartbeat newer than `workers.ALIVE_FOR` is unserved: the dispatcher stops
    sending it batches and records its slots as missed, saying so.
    """

    name = models.CharField(max_length=200)  # host:pid of the probing process
    location = models.CharField(max_length=40)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    in_flight = models.PositiveIntegerField(default=0)  # probes running or waiting for their slot
    probes = models.PositiveBigIntegerField(default=0)  # outcomes recorded since start
    loop_lag_ms = models.FloatField(default=0.0)  # worst event-loop lag in the last heartbeat period

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "location"], name="heartbeat_once")]

    def __str__(self) -> str:
        return f"{self.name} at {self.location}, seen {self.last_seen:%H:%M:%S}"


# A Watermark: when dispatch last ran (written by monitor.tasks; read by /metrics and the monitor-health alerts).
DISPATCHED = "dispatched_at"


class Watermark(models.Model):
    """A named moment the daemon has done something up to, e.g. the sweeper's `swept_until`."""

    name = models.CharField(max_length=40, unique=True)
    moment = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} = {self.moment}"

    @classmethod
    def note(cls, name: str, moment: dt.datetime, *, forward_only: bool = False) -> None:
        """Set watermark `name` to `moment`, making it the first time; `forward_only` never moves it back."""
        rows = cls.objects.filter(name=name)
        if not (rows.filter(moment__lt=moment) if forward_only else rows).update(moment=moment):
            cls.objects.get_or_create(name=name, defaults={"moment": moment})
