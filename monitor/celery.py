"""The Celery app, configured from Django settings named CELERY_*; run it as `celery -A monitor.celery worker`.

Exposes `app`, `worker_queues(location)` (the `-Q` value for a worker probing from a location) and
`ensure_broker_folders()`. Commands, with <queues> from `worker_queues()`:

    celery -A monitor.celery worker -Q portwatch,probe.default -c 2    # any number of machines
    celery -A monitor.celery beat                                       # exactly one, anywhere

or, on one machine, `celery -A monitor.celery worker -B -Q portwatch,probe.default`. Without -Q a
worker consumes `portwatch` and `probe.<PORTWATCH_LOCATION>`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from pathlib import Path
from typing import Any

from celery import Celery, signals
from django.conf import settings
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "monitor.settings")

# Database connections in tasks: Celery's Django fixup would close every connection before and after
# each task; with several tasks a second that is a new PostgreSQL backend each time (~6 ms of the
# database's CPU apiece). Instead the fixup recycles rarely (CELERY_DB_REUSE_MAX) and each task
# starts and ends as a Django request does: close_old_connections() drops a connection that errored
# or outlived CONN_MAX_AGE, and CONN_HEALTH_CHECKS pings a kept one before its first use. So after
# PostgreSQL restarts, the next task connects afresh and the worker carries on (tests/daemon/test_daemon.py).
DB_REUSE_MAX = 10_000  # tasks between the fixup's own forced reconnects
app = Celery("monitor")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.CELERY_DB_REUSE_MAX = DB_REUSE_MAX
app.autodiscover_tasks()


def worker_queues(location: str) -> str:
    """Return the comma-separated `-Q` value for a worker at `location`: maintenance plus that location's probes."""
    return f"{app.conf.task_default_queue},probe.{location}"


# A worker started without -Q consumes these: maintenance and the probes of PORTWATCH_LOCATION.
# Batches for other locations still reach their queues (task_create_missing_queues).
app.conf.task_queues = [
    Queue(name, Exchange(name), routing_key=name) for name in worker_queues(settings.PORTWATCH_LOCATION).split(",")
]


def ensure_broker_folders() -> None:
    """Create the filesystem broker's folders: kombu writes into them and fails if they are missing."""
    options = app.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if key in options:
            # The portwatch.E001 check reports an unwritable data directory with a hint.
            with contextlib.suppress(OSError):
                Path(options[key]).mkdir(parents=True, exist_ok=True)


ensure_broker_folders()


# Each worker process that runs tasks keeps one prober (monitor.daemon.prober): a persistent event
# loop that probe_batch hands jobs to. Prefork children start theirs when forked; a worker whose
# pool runs tasks in its own process (solo, threads) starts it when ready.
DRAIN_SECONDS = 12.0  # a stopping worker's probes in flight get this long to finish and be recorded


def probe_locations() -> list[str]:
    """Return the locations this worker probes from: its `probe.<location>` queues."""
    queues = app.amqp.queues
    names = queues.consume_from.keys() if queues.consume_from else queues.keys()
    return sorted(name.removeprefix("probe.") for name in names if name.startswith("probe."))


def _start_prober() -> None:
    from monitor.daemon import prober
    from monitor.probes import resolver

    locations = probe_locations()
    if locations:
        _raise_open_files_limit()
        if settings.PORTWATCH_DNS_SERVERS:
            resolver.configure(nameservers=settings.PORTWATCH_DNS_SERVERS)
        name = f"{socket.gethostname()}:{os.getpid()}"
        prober.start_process_prober(name, locations, max_in_flight=settings.PORTWATCH_MAX_IN_FLIGHT)


def _raise_open_files_limit() -> None:
    """Raise this process's soft limit on open files to the hard one: each probe in flight holds a socket.

    Many systems start processes with a soft limit of 1,024, which 2,000 probes in flight would hit
    as "Too many open files" failures that look like the services' fault.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@signals.task_prerun.connect
@signals.task_postrun.connect
def _tidy_database_connections(**_: Any) -> None:
    from django.db import close_old_connections

    close_old_connections()


@signals.worker_process_init.connect
def _prober_in_pool_process(**_: Any) -> None:
    _start_prober()


@signals.worker_ready.connect
def _prober_in_main_process(sender: Any = None, **_: Any) -> None:
    pool = type(getattr(sender, "pool", None)).__module__
    if not pool.startswith("celery.concurrency.prefork"):
        _start_prober()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _stop_prober(**_: Any) -> None:
    from monitor.daemon import prober

    prober.stop_process_prober(drain=DRAIN_SECONDS)
