"""The dashboard's routes. Public without login: the status pages, their JSON, the badges, acknowledgement links
and the login page."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard.views import acknowledge, channels, detail, incidents, maintenance, overview, services, status, users

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="dashboard/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Overview: one row per service; ?fragment=1 returns the part that refreshes.
    path("", overview.overview, name="overview"),
    # Service detail and "check now" (POST; runs the probe at once, saves nothing).
    path("services/<int:service_id>/", detail.service_detail, name="service"),
    path("services/<int:service_id>/check", detail.check_now, name="check_now"),
    # Editing: add (also ?url=smtps://host to fill the form), edit, pause, resume, delete, test, bulk.
    path("services/new", services.add, name="service_add"),
    path("services/<int:service_id>/edit", services.edit, name="service_edit"),
    path("services/<int:service_id>/pause", services.pause, name="service_pause"),
    path("services/<int:service_id>/resume", services.resume, name="service_resume"),
    path("services/<int:service_id>/delete", services.delete, name="service_delete"),
    path("services/test", services.test, name="service_test"),
    path("services/bulk", services.bulk, name="service_bulk"),
    path("incidents/", incidents.incidents, name="incidents"),
    path("maintenance/", maintenance.maintenance_page, name="maintenance"),
    # Alert channels: list, page, add, edit, delete, "send test" (POST); acknowledging an outage on its service.
    path("channels/", channels.channels, name="channels"),
    path("channels/new", channels.add, name="channel_add"),
    path("channels/<int:channel_id>/", channels.channel, name="channel"),
    path("channels/<int:channel_id>/edit", channels.edit, name="channel_edit"),
    path("channels/<int:channel_id>/delete", channels.delete, name="channel_delete"),
    path("channels/<int:channel_id>/test", channels.send_test, name="channel_test"),
    path("services/<int:service_id>/acknowledge", acknowledge.on_service, name="service_acknowledge"),
    path("users/", users.users, name="users"),
    path("users/new", users.add, name="user_add"),
    path("users/<int:user_id>/edit", users.edit, name="user_edit"),
    # Public, no login.
    path("status/<slug:slug>/", status.status_page, name="status_page"),
    path("status/<slug:slug>.json", status.status_json, name="status_json"),
    path("badge/<str:token>/<str:kind>.svg", status.badge, name="badge"),
    # The signed link in an alert message is the credential (monitor/alerting/acknowledgement.py).
    path("ack/<str:token>", acknowledge.by_link, name="acknowledge"),
]
