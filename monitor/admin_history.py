"""Read-only Django admin pages for what probing produced: results, current state, changes, incidents, rollups.

Imported by `monitor/admin.py` (`from monitor import admin_history  # noqa: F401`); history is written
only by the daemon, so every page here lists and shows but never adds, edits or deletes.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from monitor.models import DailyRollup, HourlyRollup, Incident, ProbeResult, ServiceState, StatusChange


class ReadOnlyAdmin(admin.ModelAdmin):
    list_select_related = ("service",)
    show_full_result_count = False  # COUNT(*) over millions of results on every page view is slow

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ServiceState)
class ServiceStateAdmin(ReadOnlyAdmin):
    list_display = ("service", "location", "status", "since", "last_checked_at", "last_reason")
    list_filter = ("status", "location")
    search_fields = ("service__name",)


@admin.register(ProbeResult)
class ProbeResultAdmin(ReadOnlyAdmin):
    list_display = ("service", "location", "started_at", "status", "failure", "total", "reason")
    list_filter = ("status", "failure", "location")
    search_fields = ("service__name",)
    date_hierarchy = "started_at"


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ("service", "location", "started_at", "ended_at", "failure", "reason")
    list_filter = ("failure", "location")
    search_fields = ("service__name",)


@admin.register(StatusChange)
class StatusChangeAdmin(ReadOnlyAdmin):
    list_display = ("service", "location", "created", "old_status", "new_status", "reason", "processed")
    list_filter = ("new_status", "location")
    search_fields = ("service__name",)


@admin.register(HourlyRollup, DailyRollup)
class RollupAdmin(ReadOnlyAdmin):
    list_display = ("service", "location", "start", "count", "up_count", "uptime")
    list_filter = ("location",)
    search_fields = ("service__name",)
