"""`PhaseClock`: monotonic timing of a probe's network steps, summed into blackbox_exporter's phases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from monitor.probes.result import Phases


class PhaseClock:
    """Time the phases of one probe.

    resolve, connect and tls are timed around their steps. processing runs from the moment the
    connection is ready (or a request was sent) until the first byte comes back. transfer is
    what remains of the total, so the phases always add up to it.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self._spent = dict.fromkeys(("resolve", "connect", "tls", "processing"), 0.0)
        self._waiting_since: float | None = None
        self._stopped: float | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self._spent[name] += time.perf_counter() - began

    def await_first_byte(self) -> None:
        """Start the processing phase: the next byte the server sends ends it."""
        if self._spent["processing"] == 0.0:
            self._waiting_since = time.perf_counter()

    def first_byte(self) -> None:
        if self._waiting_since is not None:
            self._spent["processing"] = time.perf_counter() - self._waiting_since
            self._waiting_since = None

    def stop(self) -> Phases:
        if self._stopped is None:
            self._stopped = time.perf_counter()
        if self._waiting_since is not None:  # still waiting when the probe ended: that wait was processing
            self._spent["processing"] = self._stopped - self._waiting_since
            self._waiting_since = None
        total = self._stopped - self.started
        transfer = max(0.0, total - sum(self._spent.values()))
        return Phases(total=total, transfer=transfer, **self._spent)
