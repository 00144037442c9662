"""Turn claims into probes: load what each claim needs, probe it on its slot, and say what happened.

Exposes `Job` (a claim with the service's probe settings, read once), `jobs_for(claims)` (one
query), `probe_job(job, gate)` (wait for the slot and a free place in flight, probe, return the
`Outcome`), `start_job()` (the same once the slot has come: the prober sleeps on its own), and
`run_checks(claims)`, which does all of it at once and records the outcomes (for tests and one-off
runs; workers keep a `monitor.daemon.prober.Prober` instead).

Every claim ends in exactly one outcome: a probe result; `missed` when it could not start on time
(it reached the worker past its start-by time, or the worker stayed at its in-flight limit until
then); `config_error` when the service's stored settings no longer make a probe; `internal_error`
when the prober raised (`run_probe` turns that into a result).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.daemon import recording
from monitor.daemon.scheduling import Claim, late_limit
from monitor.models import Service
from monitor.probes import ConnectionOptions, Failure, OptionsError, Phases, Result, Status, Target, run_probe


@dataclass(frozen=True)
class Job:
    """One claim and the service's probe settings as they were read when the claim arrived."""

    claim: Claim
    protocol: str
    timeout: float
    interval: int
    target: Target | None = None
    options: ConnectionOptions | None = None
    problem: str | None = None  # why the stored settings make no probe (then target and options are None)

    @property
    def start_by(self) -> dt.datetime:
        return self.claim.start_by or self.claim.slot + late_limit(self.interval)


def jobs_for(claims: Sequence[Claim | Mapping[str, Any]]) -> list[Job]:
    """Return a job for each claim of an enabled service, reading the services in one query."""
    todo = [claim if isinstance(claim, Claim) else Claim.from_data(claim) for claim in claims]
    services = Service.objects.in_bulk({claim.service_id for claim in todo})
    return [_job(claim, services[claim.service_id]) for claim in todo if _enabled(services.get(claim.service_id))]


def _enabled(service: Service | None) -> bool:
    return service is not None and service.enabled


def _job(claim: Claim, service: Service) -> Job:
    common = {"claim": claim, "protocol": service.protocol, "timeout": service.timeout, "interval": service.interval}
    try:
        return Job(**common, target=service.target(), options=service.probe_options())
    except (OptionsError, ValueError) as error:
        # Stored settings that no longer parse (an engine upgrade, a bulk update past validation)
        # are the service's problem to show, not a reason to lose the rest of the batch.
        return Job(**common, problem=f"the service's settings are not valid any more: {error}")


async def probe_job(job: Job, gate: asyncio.Semaphore | None = None) -> recording.Outcome:
    """Wait for the job's slot and a place in flight, then probe; return its outcome (never raises for a service).

    The slot wait happens before the gate, so jobs waiting for their slot hold no place in flight;
    the latency phases start only once the probe does, so queueing never counts as network time.
    """
    await sleep_until(job.claim.slot)
    return await start_job(job, gate)


async def start_job(job: Job, gate: asyncio.Semaphore | None = None) -> recording.Outcome:
    """Probe a job whose slot has come, once it has a place in flight; `missed` if too late for either."""
    claim = job.claim
    if _now() > job.start_by:
        return _missed(
            job,
            f"the probe reached the worker {_late(claim):.1f} s after its slot (the limit is "
            f"{(job.start_by - claim.slot).total_seconds():g} s): the worker's queue was backed up",
        )
    async with _place(gate, job) as placed:
        if not placed:
            return _missed(job, "the worker stayed at its limit of probes in flight until the slot's start-by time")
        started = _now()
        result = await _probe(job)
    return recording.Outcome(claim.service_id, claim.location, claim.slot, started, result)


@contextlib.asynccontextmanager
async def _place(gate: asyncio.Semaphore | None, job: Job):
    """Hold a place in flight (yield True), or yield False if none came free before the job's start-by time."""
    if gate is None:
        yield True
        return
    try:
        async with asyncio.timeout((job.start_by - _now()).total_seconds()):
            await gate.acquire()
    except TimeoutError:
        yield False
        return
    try:
        yield True
    finally:
        gate.release()


async def _probe(job: Job) -> Result:
    if job.problem is not None:
        return Result(Status.UNKNOWN, Failure.CONFIG_ERROR, job.problem, Phases())
    return await run_probe(job.protocol, job.target, job.options, timeout=job.timeout)


async def sleep_until(moment: dt.datetime) -> None:
    # Sleep in a loop: the event loop may wake a hair early, and started_at must not precede the slot.
    while (delay := (moment - _now()).total_seconds()) > 0:
        await asyncio.sleep(delay)


def run_checks(claims: Sequence[Claim | Mapping[str, Any]]) -> int:
    """Probe each claim's service at its slot, all at once in one event loop; record; return how many were new."""
    jobs = jobs_for(claims)
    if not jobs:
        return 0

    async def probe_all() -> list[recording.Outcome]:
        return list(await asyncio.gather(*(probe_job(job) for job in jobs)))

    return recording.record(asyncio.run(probe_all()))


def _missed(job: Job, why: str) -> recording.Outcome:
    return recording.Outcome.missed(job.claim.service_id, job.claim.location, job.claim.slot, f"not probed: {why}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _late(claim: Claim) -> float:
    return (_now() - claim.slot).total_seconds()
