"""URL routes: the dashboard at the root (dashboard/urls.py), the Django admin at /admin/, /probe and /metrics."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from monitor.metrics import views as metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    # blackbox_exporter's multi-target endpoint: /probe?target=...&module=... (needs the metrics token).
    path("probe", metrics.probe, name="probe"),
    # Every service and the daemon's health, built from the database at scrape time (the same token).
    path("metrics", metrics.metrics, name="metrics"),
    path("", include("dashboard.urls")),
]
