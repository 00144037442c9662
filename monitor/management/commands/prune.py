"""`manage.py prune`: delete raw results and hourly rollups past their retention (once rolled up); say how many."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from monitor.daemon import retention


class Command(BaseCommand):
    help = (
        "Delete probe results older than PORTWATCH_RESULT_RETENTION_DAYS and hourly rollups older than "
        "PORTWATCH_HOURLY_RETENTION_DAYS, a chunk at a time, once their hour and day are rolled up. "
        "Daily rollups are kept."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        counts = retention.prune()
        self.stdout.write(
            f"Deleted {counts['results']} probe results older than {settings.PORTWATCH_RESULT_RETENTION_DAYS} days "
            f"and {counts['hourly']} hourly rollups older than {retention.hourly_retention_days()} days."
        )
