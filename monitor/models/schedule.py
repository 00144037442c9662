"""When each service is next due at each location; the dispatcher claims rows here."""

from __future__ import annotations

from django.db import models

from monitor.models.service import Service


class Schedule(models.Model):
    """One row per (service, location): the next slot, and the slot last handed to a worker.

    Slots sit on a fixed grid per row (an offset within the interval, from a hash of the service and
    location), so start times are spread across each interval and stay put over time. A claim moves
    `due_at` to the next slot on the grid, skipping slots already in the past, so a backlog after an
    outage never turns into a burst; the slot handed out is kept in `claimed_slot` until a worker
    records its result or `lease_until` passes.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="schedules")
    location = models.CharField(max_length=40)
    due_at = models.DateTimeField()
    claimed_slot = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service", "location"], name="schedule_service_location")]
        indexes = [models.Index(fields=["location", "due_at"], name="schedule_location_due")]

    def __str__(self) -> str:
        return f"{self.service_id}@{self.location} due {self.due_at:%H:%M:%S}"
