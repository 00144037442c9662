"""Celery tasks: thin wrappers over `scheduling`, `runner`, `rollups` and `retention`, taking plain data only.

Exposes `dispatch` (beat, every second), `probe_batch` (sent by dispatch to `probe.<location>`),
`update_rollups` (every minute) and `prune` (hourly). Each is safe to run twice; the beat schedule
is `CELERY_BEAT_SCHEDULE` in `monitor/settings.py`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from monitor.daemon import retention, rollups, runner, scheduling

logger = logging.getLogger(__name__)

DISPATCH_TIME_LIMIT = 60  # seconds; a claim is a few queries, so this only catches a wedged database
# Every step of a batch is bounded (sleep until a slot, each probe's deadline, recording), so this
# hard limit is a last resort that frees a worker process stuck on something unforeseen.
PROBE_BATCH_TIME_LIMIT = 15 * 60


@shared_task(name="portwatch.dispatch", ignore_result=True, time_limit=DISPATCH_TIME_LIMIT)
def dispatch() -> int:
    """Claim what is due and send it to the location queues in batches; return how many probes were sent.

    Claims are committed before they are sent: if sending fails, those slots are missed and the
    next slots probe the services, rather than a slot being probed twice.
    """
    now = dt.datetime.now(dt.UTC)
    scheduling.maybe_sync(now)
    claims = scheduling.claim_due(now)
    for batch in scheduling.plan_batches(claims, size=settings.PORTWATCH_BATCH_SIZE):
        probe_batch.apply_async(
            args=[[claim.to_data() for claim in batch.claims]], queue=batch.queue, expires=batch.expires
        )
    return len(claims)


@shared_task(name="portwatch.probe_batch", ignore_result=True, time_limit=PROBE_BATCH_TIME_LIMIT)
def probe_batch(claims: list[dict[str, Any]]) -> int:
    """Probe a batch of claims (`Claim.to_data()` dicts) and record the results; return how many were new."""
    return runner.run_checks(claims)


@shared_task(name="portwatch.update_rollups", ignore_result=True)
def update_rollups() -> int:
    """Recompute the hourly and daily rollups touched recently."""
    return rollups.update_rollups()


@shared_task(name="portwatch.prune", ignore_result=True)
def prune() -> dict[str, int]:
    """Delete results and rollups past their retention, in bounded chunks."""
    return retention.prune()
