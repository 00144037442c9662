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
from pathlib import Path

from celery import Celery
from django.conf import settings
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "monitor.settings")

# Database connections in tasks: Celery's Django fixup (active because DJANGO_SETTINGS_MODULE is
# set before the app is made) closes every connection before and after each task, as Django does
# per request. So after PostgreSQL restarts, at most the task running at that moment fails; the
# next dispatch tick connects afresh and the worker carries on (tests/test_daemon.py).
app = Celery("monitor")
app.config_from_object("django.conf:settings", namespace="CELERY")
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
