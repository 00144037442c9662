"""Run one probe now through the engine, for "check now" and "test"; nothing is saved as a slot.

`probe_service(service)` takes a saved or unsaved `Service` (already validated) and returns the
engine's `Result`. It runs on its own event loop in the request's thread, bounded by the service's
timeout, like `manage.py probe`.
"""

from __future__ import annotations

import asyncio

from monitor.models import Service
from monitor.probes import Failure, OptionsError, Phases, Result, Status, run_probe


def probe_service(service: Service) -> Result:
    """Return the result of probing `service` now; a configuration the engine refuses is an unknown result."""
    try:
        options = service.probe_options()
        target = service.target()
    except (OptionsError, ValueError) as error:
        return Result(Status.UNKNOWN, Failure.CONFIG_ERROR, f"the settings do not make a probe: {error}", Phases())
    return asyncio.run(run_probe(service.protocol, target, options, timeout=service.timeout))
