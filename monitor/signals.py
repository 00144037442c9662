"""Keep what follows from a service in step with it: its Schedule rows, and its stored exposure verdicts.

A saved service gets (or loses) its Schedule rows at once; one whose protocol or TLS mode changed has its
states' exposure verdicts and its summary assessed again (the state writer assessed them with the old ones).

Rows of a deleted service go with it (ON DELETE CASCADE). Writes that skip `save()` (bulk
creates, queryset updates) are caught by the periodic `scheduling.maybe_sync()` in dispatch.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from monitor import exposure_report
from monitor.daemon import scheduling
from monitor.models import Service


@receiver(post_save, sender=Service, dispatch_uid="portwatch-sync-schedule")
def sync_schedule_on_save(sender: type[Service], instance: Service, raw: bool = False, **_: Any) -> None:
    """Create, remove or re-align the saved service's Schedule rows (not for fixtures loaded raw)."""
    if not raw:
        scheduling.sync_service(instance)


@receiver(post_save, sender=Service, dispatch_uid="portwatch-reassess-exposure")
def reassess_exposure_on_save(sender: type[Service], instance: Service, raw: bool = False, **_: Any) -> None:
    """Assess the service's exposure again when its protocol or TLS mode changed, so the overview follows at once."""
    if not raw and instance.exposure_inputs_changed:
        exposure_report.reassess([instance.pk])
        instance._loaded_exposure_inputs = (instance.protocol, instance.tls_mode)
