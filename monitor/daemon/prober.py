"""A worker process's prober: one persistent event loop that takes new jobs while earlier ones still run.

Exposes `Prober`. A Celery task hands it jobs with `submit()` and returns at once, so a slow,
silent or flooding service never holds a worker process, and dispatch never waits behind probes.

Threads, per worker process:

1. **The loop thread** runs one asyncio event loop for the life of the process. Each job becomes
   a task that sleeps until its slot, takes one of `max_in_flight` places, probes and hands its
   outcome to the recorder. Sleeping jobs hold no place; a job that finds no place before its
   start-by time is recorded as missed, saying so. A small task measures how late the loop wakes
   (its lag), which is how far latency phases can be off under load.
2. **The recorder thread** writes outcomes in batches (every `FLUSH_EVERY` seconds or
   `FLUSH_SIZE` outcomes) through the `record` callable, with its own database connection, so
   probes never wait for the database. When the database is away it keeps the outcomes (up to
   `MAX_PENDING`) and retries. It also sends the heartbeat every `workers.BEAT_EVERY` seconds.

`stop()` drains: jobs still waiting for their slot are recorded as missed ("the worker stopped"),
probes in flight get up to `drain` seconds to finish, and everything is recorded before it returns.
A process killed outright records nothing: the sweeper accounts for those slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from django.db import connection

from monitor.daemon import runner
from monitor.daemon.recording import Outcome
from monitor.daemon.workers import BEAT_EVERY
from monitor.probes import Failure, Phases, Result, Status

logger = logging.getLogger(__name__)

FLUSH_EVERY = 0.5  # seconds between writes of outcomes: a few large transactions beat many small ones
FLUSH_SIZE = 1000  # outcomes per write at most
MAX_PENDING = 200_000  # outcomes kept while the database is away; the oldest go beyond (logged)
RETRY_PAUSE = 2.0  # seconds between attempts to write while the database is away
LAG_TICK = 0.25  # seconds between event-loop lag measurements
FINAL_ATTEMPTS = 5  # writes tried after stop() before outcomes are given up
SEEN_FOR = dt.timedelta(minutes=15)  # slots this old are forgotten; a job delivered twice comes sooner
FORGET_EVERY = 30.0  # seconds between sweeps of the remembered slots

Recorder = Callable[[Sequence[Outcome]], object]
Heartbeat = Callable[["Prober"], object]


class Prober:
    """Probe submitted jobs on their slots in a background event loop; record outcomes in a background thread."""

    def __init__(
        self,
        *,
        record: Recorder,
        max_in_flight: int,
        heartbeat: Heartbeat | None = None,
        on_stopped: Callable[[], object] | None = None,
    ) -> None:
        self.record, self.heartbeat, self.on_stopped = record, heartbeat, on_stopped
        self.max_in_flight = max_in_flight
        self.started_at = dt.datetime.now(dt.UTC)
        self.recorded = 0  # outcomes written
        self.worst_lag = 0.0  # seconds, since the last heartbeat
        self._loop = asyncio.new_event_loop()
        self._gate: asyncio.Semaphore | None = None
        self._waiting: set[asyncio.Task] = set()  # jobs sleeping until their slot
        self._running: set[asyncio.Task] = set()  # jobs past their slot: probing, or waiting for a place
        self._seen: set[tuple[int, str, dt.datetime]] = set()  # (service, location, slot) of jobs taken
        self._next_forget = time.monotonic() + FORGET_EVERY
        self._outcomes: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run_loop, name="portwatch-prober", daemon=True),
            threading.Thread(target=self._run_recorder, name="portwatch-recorder", daemon=True),
        ]

    # --- the caller's side --------------------------------------------------------------------

    def start(self) -> Prober:
        for thread in self._threads:
            thread.start()
        return self

    @property
    def in_flight(self) -> int:
        """Return the jobs accepted and not finished: waiting for their slot, or probing."""
        return len(self._waiting) + len(self._running)

    def submit(self, jobs: Sequence[runner.Job]) -> None:
        """Take jobs from any thread; each is probed on its slot. A slot already taken is ignored."""
        if self._stopping.is_set():
            for job in jobs:
                self._outcomes.put(_stopped(job))
            return
        self._loop.call_soon_threadsafe(self._accept, list(jobs))

    def stop(self, drain: float = 15.0) -> None:
        """Stop taking jobs, record waiting ones as missed, give running probes `drain` seconds, flush."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        future = asyncio.run_coroutine_threadsafe(self._drain(drain), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=drain + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._outcomes.put(None)  # wakes the recorder, which flushes and ends
        for thread in self._threads:
            thread.join(timeout=drain + 10)
        if self.on_stopped is not None:
            with contextlib.suppress(Exception):
                self.on_stopped()

    # --- the loop thread ----------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._gate = asyncio.Semaphore(self.max_in_flight)
        self._loop.create_task(self._watch_lag())
        self._loop.run_forever()
        leftover = asyncio.all_tasks(self._loop)  # the lag watcher; jobs were drained by stop()
        for task in leftover:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        self._loop.close()

    def _accept(self, jobs: list[runner.Job]) -> None:
        for job in jobs:
            key = (job.claim.service_id, job.claim.location, job.claim.slot)
            if key in self._seen:
                continue
            self._seen.add(key)
            task = self._loop.create_task(self._run(job))
            self._waiting.add(task)
        if time.monotonic() >= self._next_forget:
            self._forget_old(dt.datetime.now(dt.UTC))

    async def _run(self, job: runner.Job) -> None:
        task = asyncio.current_task()
        try:
            await runner.sleep_until(job.claim.slot)
        except asyncio.CancelledError:
            self._waiting.discard(task)
            self._outcomes.put(_stopped(job))
            return
        self._waiting.discard(task)
        self._running.add(task)
        try:
            outcome = await runner.start_job(job, self._gate)
        except Exception as error:  # start_job turns prober errors into results; this is a bug of ours
            logger.exception("job for service %s slot %s failed", job.claim.service_id, job.claim.slot)
            outcome = _failed(job, error)
        finally:
            self._running.discard(task)
        self._outcomes.put(outcome)

    async def _drain(self, drain: float) -> None:
        for task in list(self._waiting):
            task.cancel()
        deadline = time.monotonic() + drain
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._running):  # still running past the drain: their slots go to the sweeper
            task.cancel()

    async def _watch_lag(self) -> None:
        while True:
            before = self._loop.time()
            await asyncio.sleep(LAG_TICK)
            self.worst_lag = max(self.worst_lag, self._loop.time() - before - LAG_TICK)

    def _forget_old(self, now: dt.datetime) -> None:
        self._seen = {key for key in self._seen if now - key[2] < SEEN_FOR}
        self._next_forget = time.monotonic() + FORGET_EVERY

    # --- the recorder thread ------------------------------------------------------------------

    def _run_recorder(self) -> None:
        pending: list[Outcome] = []
        next_beat, finished, attempts_left = 0.0, False, FINAL_ATTEMPTS
        while not finished or pending:
            if not finished:
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + BEAT_EVERY
                finished = self._collect(pending, timeout=min(FLUSH_EVERY, max(0.0, next_beat - time.monotonic())))
            if pending and not self._write(pending) and finished:
                attempts_left -= 1
                if not attempts_left:
                    logger.error(
                        "dropping %d outcomes: the database stayed away while the worker stopped", len(pending)
                    )
                    return

    def _collect(self, pending: list[Outcome], timeout: float) -> bool:
        """Add outcomes that arrive within `timeout` to `pending`; return True once told to finish."""
        deadline = time.monotonic() + timeout
        while len(pending) < FLUSH_SIZE:
            try:
                item = self._outcomes.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if item is None:
                while True:  # take what is left, then finish
                    try:
                        rest = self._outcomes.get_nowait()
                    except queue.Empty:
                        return True
                    if rest is not None:
                        pending.append(rest)
            pending.append(item)
        return False

    def _write(self, pending: list[Outcome]) -> bool:
        """Record `pending` and empty it; on failure keep it (bounded), pause, and return False."""
        try:
            self.record(list(pending))
        except Exception:
            logger.exception("recording %d outcomes failed; keeping them to retry", len(pending))
            _reset_database_connection()
            if len(pending) > MAX_PENDING:
                logger.error(
                    "dropping %d oldest outcomes: the database has been away too long", len(pending) - MAX_PENDING
                )
                del pending[: len(pending) - MAX_PENDING]
            time.sleep(RETRY_PAUSE)
            return False
        self.recorded += len(pending)
        pending.clear()
        return True

    def _beat(self) -> None:
        if self.heartbeat is None:
            return
        try:
            self.heartbeat(self)
        except Exception:
            logger.exception("heartbeat failed")
            _reset_database_connection()
        self.worst_lag = 0.0


def _stopped(job: runner.Job) -> Outcome:
    claim = job.claim
    reason = "not probed: the worker stopped before the slot"
    return Outcome.missed(claim.service_id, claim.location, claim.slot, reason)


def _failed(job: runner.Job, error: Exception) -> Outcome:
    claim = job.claim
    result = Result(
        Status.UNKNOWN, Failure.INTERNAL_ERROR, f"the worker failed: {type(error).__name__}: {error}"[:300], Phases()
    )
    return Outcome(claim.service_id, claim.location, claim.slot, claim.slot, result)


def _reset_database_connection() -> None:
    """Drop this thread's database connection after an error, so the next attempt connects afresh."""
    with contextlib.suppress(Exception):
        connection.close()


# --- the one prober of a worker process --------------------------------------------------------

_process_prober: Prober | None = None


def start_process_prober(name: str, locations: Sequence[str], *, max_in_flight: int) -> Prober:
    """Start this process's prober, which beats for `locations` as worker `name`; return it."""
    global _process_prober
    if _process_prober is None:
        from monitor.daemon import recording, workers

        def heartbeat(prober: Prober) -> None:
            lag_ms = prober.worst_lag * 1000
            workers.beat(
                name,
                locations,
                started_at=prober.started_at,
                in_flight=prober.in_flight,
                probes=prober.recorded,
                lag_ms=lag_ms,
            )

        _process_prober = Prober(
            record=recording.record,
            max_in_flight=max_in_flight,
            heartbeat=heartbeat,
            on_stopped=lambda: workers.forget(name),
        ).start()
    return _process_prober


def process_prober() -> Prober:
    """Return this process's prober; raise when the worker did not start one."""
    if _process_prober is None:
        raise RuntimeError("this process has no prober: it is not a Portwatch worker process")
    return _process_prober


def stop_process_prober(drain: float) -> None:
    global _process_prober
    if _process_prober is not None:
        _process_prober.stop(drain)
        _process_prober = None
