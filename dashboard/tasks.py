"""Celery tasks of the dashboard: `refresh_status_pages`, which beat runs every `statuspage.REFRESH_SECONDS`."""

from __future__ import annotations

from celery import shared_task

from dashboard import statuspage
from dashboard.models import StatusPage

# A page covering 10,000 services reads in a few seconds; one wedged read must not pile up runs.
REFRESH_TIME_LIMIT = 120


@shared_task(name="portwatch.refresh_status_pages", ignore_result=True, time_limit=REFRESH_TIME_LIMIT)
def refresh_status_pages() -> int:
    """Read every status page into the cache, so no visitor waits for a read; return how many."""
    pages = list(StatusPage.objects.all())
    for page in pages:
        statuspage.refresh(page)
    return len(pages)
