"""The Django app for Portwatch: registers system checks and signals; binds the Celery app when Django starts."""

from __future__ import annotations

from django.apps import AppConfig


class MonitorConfig(AppConfig):
    name = "monitor"
    verbose_name = "Portwatch"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not in monitor/__init__.py as the Celery docs suggest: that package is also
        # the parent of monitor.probes, and the engine must import without Django or Celery.
        # Loading the app here still makes @shared_task bind to it in every Django process.
        from monitor import celery, checks, signals  # noqa: F401
