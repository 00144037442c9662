"""The probe engine: plain asyncio, no Django. `PROTOCOLS` maps a protocol key to what its module declares.

Every protocol module in `protocols/` has the same shape: `probe(target, options, *, deadline) -> Result`,
an `Options` dataclass, and `PROTOCOL = Protocol(...)` stating its schemes, ports, TLS modes, flags and
failure kinds (see `protocol.py`). `run_probe()` is the convenient entry point.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from monitor.probes.errors import ProbeTimeout
from monitor.probes.options import ConnectionOptions, OptionsError, TLSOptions
from monitor.probes.protocol import Protocol
from monitor.probes.protocols import FAILURE_KINDS, SCHEMES, standard_port
from monitor.probes.protocols import REGISTRY as PROTOCOLS
from monitor.probes.protocols import get as protocol_named
from monitor.probes.result import Failure, Phases, Result, Status, TLSFacts
from monitor.probes.session import Target

logger = logging.getLogger(__name__)


# A probe that overruns its deadline by this much is cut off; it means a read escaped its bound.
DEADLINE_GRACE = 0.5
MAX_REASON_CHARS = 300  # an exception's text can be anything, e.g. a whole server reply

__all__ = [
    "FAILURE_KINDS",
    "PROTOCOLS",
    "SCHEMES",
    "ConnectionOptions",
    "Failure",
    "OptionsError",
    "Phases",
    "Protocol",
    "Result",
    "Status",
    "TLSFacts",
    "TLSOptions",
    "Target",
    "parse_options",
    "protocol_named",
    "run_probe",
    "standard_port",
]


def parse_options(protocol: str, raw: Mapping[str, Any] | None) -> ConnectionOptions:
    """Return the protocol's typed options from plain data; raise OptionsError naming the bad field."""
    return protocol_named(protocol).options.from_mapping(raw)


async def run_probe(protocol: str, target: Target, options: ConnectionOptions, *, timeout: float) -> Result:
    """Probe `target` with the protocol's prober, within `timeout` seconds from now.

    This is the engine's last boundary: a prober that raises (a bug, not a down service) gives an
    `internal_error` result of status unknown with the exception in its reason, logged with its
    traceback, so one broken prober never takes other probes or a worker down with it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    started = time.perf_counter()
    try:
        async with asyncio.timeout_at(deadline + DEADLINE_GRACE):
            return await PROTOCOLS[protocol].probe(target, options, deadline=deadline)
    except TimeoutError:
        elapsed = time.perf_counter() - started
        return Result(Status.DOWN, ProbeTimeout.failure, f"timed out after {timeout:g} s", Phases(total=elapsed))
    except Exception as error:
        logger.exception("the %s prober failed on %s port %s", protocol, target.host, target.port)
        elapsed = time.perf_counter() - started
        reason = f"the {protocol} prober failed: {type(error).__name__}: {error}"[:MAX_REASON_CHARS]
        return Result(Status.UNKNOWN, Failure.INTERNAL_ERROR, reason, Phases(total=elapsed))
