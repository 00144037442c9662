"""The Celery app, configured from Django settings named CELERY_*; run it as `celery -A monitor.celery worker`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "monitor.settings")

app = Celery("monitor")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def ensure_broker_folders() -> None:
    """Create the filesystem broker's folders: kombu writes into them and fails if they are missing."""
    options = app.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if key in options:
            # The portwatch.E001 check reports an unwritable data directory with a hint.
            with contextlib.suppress(OSError):
                Path(options[key]).mkdir(parents=True, exist_ok=True)


ensure_broker_folders()
