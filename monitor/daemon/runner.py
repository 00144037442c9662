"""Run a batch of claimed probes in one event loop, each starting on its slot, and record the outcomes.

Exposes `run_checks(claims) -> int`, which the `probe_batch` task calls. Safe to run twice: a
slot already recorded is skipped here, and `recording.record()` is idempotent per slot anyway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from monitor.daemon import recording
from monitor.models import ProbeResult, Service
from monitor.probes import Failure, OptionsError, Phases, Result, Status, run_probe
from monitor.daemon.scheduling import Claim, late_limit

logger = logging.getLogger(__name__)


def run_checks(claims: Sequence[Claim | Mapping[str, Any]]) -> int:
    """Probe each claim's service at its slot, all at once in one event loop; return how many results were new.

    1. Load the services in one query; drop claims of disabled or deleted services and slots
       already recorded (a task delivered twice).
    2. In one `asyncio.run()`, wait until each slot and probe; a claim whose `start_by` has passed
       is dropped, since the next slot probes that service on time.
    3. Record every outcome in one `recording.record()` call.
    """
    todo = [claim if isinstance(claim, Claim) else Claim.from_data(claim) for claim in claims]
    services = Service.objects.in_bulk({claim.service_id for claim in todo})
    recorded = _recorded_slots(todo)
    todo = [
        claim
        for claim in todo
        if claim.service_id in services
        and services[claim.service_id].enabled
        and (claim.service_id, claim.location, claim.slot) not in recorded
    ]
    if not todo:
        return 0
    outcomes = asyncio.run(_probe_all(todo, services))
    return recording.record(outcomes) if outcomes else 0


def _recorded_slots(claims: Sequence[Claim]) -> set[tuple[int, str, dt.datetime]]:
    if not claims:
        return set()
    rows = ProbeResult.objects.filter(
        service_id__in={claim.service_id for claim in claims}, scheduled_at__in={claim.slot for claim in claims}
    ).values_list("service_id", "location", "scheduled_at")
    return set(rows)


async def _probe_all(claims: Sequence[Claim], services: Mapping[int, Service]) -> list[recording.Outcome]:
    done = await asyncio.gather(
        *(_probe_at_slot(claim, services[claim.service_id]) for claim in claims), return_exceptions=True
    )
    outcomes = []
    for claim, outcome in zip(claims, done, strict=True):
        if isinstance(outcome, BaseException):
            # A bug in a prober: log it loudly, but do not record it as an outage of the service.
            logger.error("probe of service %s at %s failed", claim.service_id, claim.slot, exc_info=outcome)
        elif outcome is not None:
            outcomes.append(outcome)
    return outcomes


async def _probe_at_slot(claim: Claim, service: Service) -> recording.Outcome | None:
    start_by = claim.start_by or claim.slot + late_limit(service.interval)
    # Sleep in a loop: the event loop may wake a hair early, and started_at must not precede the slot.
    while (delay := (claim.slot - _now()).total_seconds()) > 0:
        await asyncio.sleep(delay)
    started = _now()
    if started > start_by:
        logger.warning("service %s slot %s dropped: %.1f s late", claim.service_id, claim.slot, _late(claim, started))
        return None
    result = await _probe(service)
    return recording.Outcome(
        service_id=service.id, location=claim.location, scheduled_at=claim.slot, started_at=started, result=result
    )


async def _probe(service: Service) -> Result:
    try:
        target, options = service.target(), service.probe_options()
    except (OptionsError, ValueError) as error:
        # Stored settings that no longer parse (an engine upgrade, a bulk update past validation)
        # are the service's problem to show, not a reason to lose the rest of the batch.
        reason = f"the service's settings are not valid any more: {error}"
        return Result(Status.DOWN, Failure.CONFIG_ERROR, reason, Phases())
    return await run_probe(service.protocol, target, options, timeout=service.timeout)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _late(claim: Claim, started: dt.datetime) -> float:
    return (started - claim.slot).total_seconds()
