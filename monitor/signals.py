"""Keep the schedule in step with services: a saved service gets (or loses) its Schedule rows at once.

Rows of a deleted service go with it (ON DELETE CASCADE). Writes that skip `save()` (bulk
creates, queryset updates) are caught by the periodic `scheduling.maybe_sync()` in dispatch.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from monitor.daemon import scheduling
from monitor.models import Service


@receiver(post_save, sender=Service, dispatch_uid="portwatch-sync-schedule")
def sync_schedule_on_save(sender: type[Service], instance: Service, raw: bool = False, **_: Any) -> None:
    """Create, remove or re-align the saved service's Schedule rows (not for fixtures loaded raw)."""
    if not raw:
        scheduling.sync_service(instance)
