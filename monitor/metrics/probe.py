"""Run one /probe request through the engine: guard the target, probe it, check the module's expectations.

Exposes `run(module, target, options, timeout=..., policy=...) -> Result` (async), `Policy`, `Refused`
and `probe_timeout(module_timeout, scrape_timeout_header)`. Plain Python, like the engine it calls.

Decisions:
- The timeout is blackbox's: the module's, capped by the scrape timeout Prometheus sends in
  X-Prometheus-Scrape-Timeout-Seconds less 0.5 s (its --timeout-offset), so an answer arrives before
  Prometheus gives up. Without either, blackbox allows 119.5 s; here MAX_TIMEOUT caps every probe,
  since deploy/systemd's gunicorn kills a request after 30 s and the scrape would get nothing at all.
- A target is resolved once for the guard, within the probe's deadline; that time is added to the
  result's resolve phase, as the engine's own lookup then comes from the cache. When the guard cannot
  resolve it, that failure is the result: the engine would fail the same way, and must not connect
  to whatever a later answer says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from monitor.metrics import guard, query_response
from monitor.metrics.modules import Module
from monitor.probes import ConnectionOptions, Phases, Result, Target, run_probe
from monitor.probes.errors import ProbeError
from monitor.probes.net import resolve

logger = logging.getLogger(__name__)

TIMEOUT_OFFSET = 0.5  # seconds left to Prometheus after the probe, blackbox's --timeout-offset default
DEFAULT_SCRAPE_TIMEOUT = 120.0  # blackbox's, when Prometheus sent no header
MAX_TIMEOUT = 25.0  # under gunicorn's 30 s worker timeout in deploy/systemd/portwatch-web.service
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"


class Refused(Exception):
    """The guard refuses the target; the message says why."""


@dataclasses.dataclass(frozen=True)
class Policy:
    allow: guard.AllowList = dataclasses.field(default_factory=guard.AllowList)
    own: tuple[guard.Service, ...] = ()  # refused; empty when the operator allows them

    def __bool__(self) -> bool:
        return bool(self.allow or self.own)


def probe_timeout(module_timeout: float | None, header: str | None) -> float:
    """Return the seconds a probe may take; raise ValueError for a header that is not a positive number."""
    scrape = DEFAULT_SCRAPE_TIMEOUT
    if header is not None and header.strip():
        try:
            scrape = float(header)
        except ValueError:
            raise ValueError(f"{SCRAPE_TIMEOUT_HEADER} must be a number of seconds, not {header!r}") from None
        if not 0 < scrape < float("inf"):
            raise ValueError(f"{SCRAPE_TIMEOUT_HEADER} must be a positive number of seconds, not {header!r}")
    most = scrape - TIMEOUT_OFFSET
    if most <= 0:
        raise ValueError(f"{SCRAPE_TIMEOUT_HEADER} {header} leaves no time once {TIMEOUT_OFFSET:g} s are kept back")
    timeout = module_timeout if module_timeout is not None and module_timeout < most else most
    return min(timeout, MAX_TIMEOUT)


async def run(module: Module, target: Target, options: ConnectionOptions, *, timeout: float, policy: Policy) -> Result:
    """Return the result of probing `target` with `module` now; raise Refused when the guard says no.

    1. With a policy, resolve the target and the own services, and ask the guard.
    2. Probe through the engine within what is left of the timeout.
    3. Check the module's query_response expectations against what the dialogue recorded.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    spent = 0.0
    if policy:
        started = time.perf_counter()
        try:
            addresses = await _addresses(target.host, target.port, options, deadline)
        except ProbeError as error:
            elapsed = time.perf_counter() - started
            return Result(error.status, error.failure, str(error), Phases(resolve=elapsed, total=elapsed))
        spent = time.perf_counter() - started
        own = [dataclasses.replace(service, addresses=await _own(service, deadline)) for service in policy.own]
        reason = guard.refusal(target.host, target.port, addresses, allow=policy.allow, own=own)
        if reason is not None:
            raise Refused(reason)
    left = max(deadline - loop.time(), 0.001)
    result = await run_probe(module.protocol, target, options, timeout=left)
    if spent:
        phases = dataclasses.replace(
            result.phases, resolve=result.phases.resolve + spent, total=result.phases.total + spent
        )
        result = dataclasses.replace(result, phases=phases)
    return query_response.unmet(result, module.protocol, module.expects)


async def _addresses(host: str, port: int, options: ConnectionOptions, deadline: float) -> list[guard.Address]:
    return [guard.address(sockaddr[0]) for _, sockaddr in await resolve(host, port, options, deadline=deadline)]


async def _own(service: guard.Service, deadline: float) -> tuple[guard.Address, ...]:
    """Return the addresses of one of Portwatch's own services; none when its name does not resolve now."""
    try:
        return tuple(await _addresses(service.host, service.port, ConnectionOptions(), deadline))
    except ProbeError as error:
        logger.warning("cannot resolve the %s host %s to guard /probe: %s", service.label, service.host, error)
        return ()
