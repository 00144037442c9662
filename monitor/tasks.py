"""Celery tasks: thin wrappers over the daemon's modules, taking plain data only.

Exposes `dispatch` (beat, every second), `probe_batch` (sent by dispatch to `probe.<location>`; it
hands the jobs to the worker process's prober and returns at once), `sweep` (every 15 s: missed
slots), `update_rollups` (every minute), `refresh_uptimes` (every ten minutes), `prune` (hourly) and
`notify` (every 5 s: alerts and their deliveries, `monitor.alerting.notifier`).
Each is safe to run twice; the beat schedule is `CELERY_BEAT_SCHEDULE` in `monitor/settings.py`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from monitor.alerting import notifier
from monitor.celery import app
from monitor.daemon import prober, recording, retention, rollups, runner, scheduling, snapshots, sweeper, workers
from monitor.models import Watermark
from monitor.models.schedule import DISPATCHED

logger = logging.getLogger(__name__)

DISPATCH_TIME_LIMIT = 60  # seconds; a claim is a few queries, so this only catches a wedged database
PROBE_BATCH_TIME_LIMIT = 60  # seconds; handing jobs to the prober is one query, so this catches a wedged database


@shared_task(name="portwatch.dispatch", ignore_result=True, time_limit=DISPATCH_TIME_LIMIT)
def dispatch() -> int:
    """Claim what is due and send it to the location queues in batches; return how many probes were sent.

    Claims are committed before they are sent: if sending fails, those slots are missed and the
    next slots probe the services, rather than a slot being probed twice. Claims for a location
    no live worker serves are not sent: they are recorded as missed at once, and that location's
    queue is emptied, so batches never pile up where nobody takes them.
    """
    now = dt.datetime.now(dt.UTC)
    scheduling.maybe_sync(now)
    claims = scheduling.claim_due(now)
    served = workers.served_locations(now)
    _account_unserved([claim for claim in claims if claim.location not in served], served)
    sent = [claim for claim in claims if claim.location in served]
    for batch in scheduling.plan_batches(sent, size=settings.PORTWATCH_BATCH_SIZE):
        probe_batch.apply_async(
            args=[[claim.to_data() for claim in batch.claims]], queue=batch.queue, expires=batch.expires
        )
    _ran(now)
    return len(sent)


# Written at most this often by each process: the alert on a stalled dispatcher waits 60 s, and on
# SQLite every write takes the one write lock the probes' recorder needs too.
DISPATCHED_EVERY = dt.timedelta(seconds=10)
_noted_at: dt.datetime | None = None  # when this process last wrote it


def _ran(now: dt.datetime) -> None:
    """Note that dispatch ran, unless this process did so less than DISPATCHED_EVERY ago."""
    global _noted_at
    if _noted_at is not None and now - _noted_at < DISPATCHED_EVERY:
        return
    Watermark.note(DISPATCHED, now)
    _noted_at = now


def _account_unserved(claims: list[scheduling.Claim], served: set[str]) -> None:
    if claims:
        reason = "not probed: no worker is serving location {!r}".format
        recording.record(
            [recording.Outcome.missed(c.service_id, c.location, c.slot, reason(c.location)) for c in claims]
        )
    for location in {claim.location for claim in claims} - _purged:
        _purged.add(location)  # once per spell unserved, even if the broker refused: no warning every tick
        _purge(f"probe.{location}")
    _purged.difference_update(served)  # served again: empty its queue again should it lose its workers


_purged: set[str] = set()  # unserved locations whose queue this process emptied


def _purge(queue: str) -> None:
    """Drop batches waiting in `queue`: they expire before any worker could take them, and were accounted for."""
    try:
        with app.connection_for_write() as connection:
            dropped = connection.default_channel.queue_purge(queue)
    except Exception:  # a queue the broker never saw, or a broker hiccup: the next tick tries again
        logger.warning("could not empty queue %s", queue, exc_info=True)
        return
    if dropped:
        logger.warning("emptied %s: %s batches for a location no worker serves", queue, dropped)


@shared_task(name="portwatch.probe_batch", ignore_result=True, time_limit=PROBE_BATCH_TIME_LIMIT)
def probe_batch(claims: list[dict[str, Any]]) -> int:
    """Hand a batch of claims (`Claim.to_data()` dicts) to this worker process's prober; return how many."""
    jobs = runner.jobs_for(claims)
    prober.process_prober().submit(jobs)
    return len(jobs)


@shared_task(name="portwatch.sweep", ignore_result=True, time_limit=DISPATCH_TIME_LIMIT)
def sweep() -> int:
    """Record slots that were due and got no result as missed."""
    return sweeper.sweep()


@shared_task(name="portwatch.update_rollups", ignore_result=True)
def update_rollups() -> int:
    """Recompute the hourly and daily rollups touched recently."""
    return rollups.update_rollups()


@shared_task(name="portwatch.refresh_uptimes", ignore_result=True)
def refresh_uptimes() -> int:
    """Recompute every service's uptime over a day, a week and a month, for the overview and /metrics."""
    return snapshots.refresh()


@shared_task(name="portwatch.prune", ignore_result=True)
def prune() -> dict[str, int]:
    """Delete results and rollups past their retention, in bounded chunks."""
    return retention.prune()


NOTIFY_TIME_LIMIT = 300  # seconds; deliver_due stops taking new work after 60 s, so this only catches a wedge


@shared_task(name="portwatch.notify", ignore_result=True, time_limit=NOTIFY_TIME_LIMIT)
def notify() -> dict[str, int]:
    """Turn new status changes into alerts and deliver due notifications; runs at once share the work by claims."""
    return notifier.run()
