"""Import, last step: `apply(plan, prune=...)` writes a Plan in one transaction."""

from __future__ import annotations

from django.db import models, transaction

from monitor.services_io.plan import Change, Plan
from monitor.services_io.sections import CHANNELS, SECTIONS


def apply(plan: Plan, *, prune: bool = False, allow_empty: bool = False) -> None:
    """Write the plan in one transaction: create and update rows, set references, and with `prune` delete.

    Services are saved first and channels along their escalation chain, so that every row a
    reference names exists when it is set. Unchanged rows are not saved, so their `updated` time
    stays as it was. Pruning raises ServicesFileError as `Plan.check_prune` says unless `allow_empty`.
    """
    if prune:
        plan.check_prune(allow_empty=allow_empty)
    changed = [change for change in plan.changes if change.action != "unchanged"]
    with transaction.atomic():
        for section in SECTIONS:
            ordered = sorted((c for c in changed if c.section is section), key=lambda c: _chain_length(c.obj, changed))
            for change in ordered:
                for key, value in change.links.items():
                    if not isinstance(value, list):
                        setattr(change.obj, key, value)
                change.obj.save()
            for change in ordered:
                for key, value in change.links.items():
                    if isinstance(value, list):
                        getattr(change.obj, key).set(value)
        if prune:
            for section in reversed(SECTIONS):
                gone = [row.pk for absent_section, row in plan.absent if absent_section is section]
                section.model.objects.filter(pk__in=gone).delete()


def _chain_length(row: models.Model, changed: list[Change]) -> int:
    """Return how many rows being written a channel escalates through, so that their targets are saved first."""
    pending = {id(change.obj): change for change in changed if change.section is CHANNELS}
    length, change = 0, pending.get(id(row))
    while change is not None and (target := change.links.get("escalate_to")) is not None:
        change, length = pending.get(id(target)), length + 1
    return length
