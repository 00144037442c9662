"""Alert channels in the dashboard: the list with each one's health, its page, add, edit, delete and "send test".

Exposes the views `channels`, `channel`, `add`, `edit`, `delete` and `send_test`. Seeing needs
monitor.view_channel, changing monitor.add/change/delete_channel (dashboard/roles.py: admins). Secrets
are shown masked only (`Channel.masked_url`); the form never renders them (dashboard/channel_forms.py).
"Send test" makes the server connect out, so it counts against the same per-user limit as "check now".
"""

from __future__ import annotations

import copy
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard import access
from dashboard.channel_forms import ChannelForm
from monitor.alerting import notifier
from monitor.alerting.channels import Delivery, cut
from monitor.alerting.health import NEVER_TRIED, channel_health
from monitor.models import Channel, Notification

RECENT_NOTIFICATIONS = 20  # on a channel's page
MAX_TEST_ERROR = 500  # characters of a test's error shown; the channel already bounds what a receiver said
TOO_MANY_TESTS = (
    f"Too many connections started by hand: at most {access.MANUAL_PROBES_PER_WINDOW} every "
    f"{access.MANUAL_PROBE_WINDOW} seconds (channel tests, service tests and checks together). Try again in a minute."
)


def _requiring(permission: str):
    """Send anonymous users to the login page; answer 403 to users without `permission` (as dashboard.access)."""

    def decorator(view):
        return login_required(permission_required(permission, raise_exception=True)(view))

    return decorator


@_requiring("monitor.view_channel")
def channels(request: HttpRequest) -> HttpResponse:
    # Secrets are read only where shown, masked (a key that changed makes them unreadable, not the page).
    found = list(
        Channel.objects.prefetch_related("services")
        .select_related("escalate_to")
        .defer("url", "secret", "escalate_to__url", "escalate_to__secret")
    )
    health = channel_health(timezone.now())
    rows = [(channel, health.get(channel.pk, NEVER_TRIED)) for channel in found]
    return render(request, "dashboard/channels.html", {"rows": rows, "nav": "channels"})


@_requiring("monitor.view_channel")
def channel(request: HttpRequest, channel_id: int) -> HttpResponse:
    found = get_object_or_404(Channel.objects.defer("url", "secret"), pk=channel_id)
    return render(request, "dashboard/channel.html", _page(found))


@_requiring("monitor.change_channel")
@require_POST
def send_test(request: HttpRequest, channel_id: int) -> HttpResponse:
    """Send a test message through the channel now and show how it went; nothing is recorded."""
    found = get_object_or_404(Channel, pk=channel_id)
    if not access.allow(request):
        return render(request, "dashboard/channel.html", _page(found) | {"limited": TOO_MANY_TESTS}, status=429)
    delivery = notifier.send_test(found)
    return render(request, "dashboard/channel.html", _page(found) | {"test": _tested(delivery)})


def _tested(delivery: Delivery) -> dict[str, Any]:
    return {
        "ok": delivery.ok,
        "status": delivery.status,
        "error": cut(delivery.error, MAX_TEST_ERROR),  # already free of secrets; the template escapes it
        "elapsed": delivery.elapsed,
    }


def _page(found: Channel) -> dict[str, Any]:
    recent = (
        Notification.objects.filter(channel=found)
        .select_related("alert__service")
        .order_by("-next_attempt_at", "-id")[:RECENT_NOTIFICATIONS]
    )
    return {
        "channel": found,
        "health": channel_health(timezone.now()).get(found.pk, NEVER_TRIED),
        "services": list(found.services.only("id", "name")),
        "notifications": list(recent),
        "nav": "channels",
    }


@_requiring("monitor.add_channel")
def add(request: HttpRequest) -> HttpResponse:
    return _edited(request, Channel())


@_requiring("monitor.change_channel")
def edit(request: HttpRequest, channel_id: int) -> HttpResponse:
    return _edited(request, get_object_or_404(Channel, pk=channel_id))


def _edited(request: HttpRequest, found: Channel) -> HttpResponse:
    saved = found if found.pk else None
    if request.method != "POST":
        return _form_page(request, ChannelForm(instance=found), saved)
    # The form writes posted values onto its instance while validating: a copy keeps the heading as stored.
    form = ChannelForm(request.POST, instance=copy.copy(found))
    if not form.is_valid():
        return _form_page(request, form, saved)
    found = form.save()
    messages.success(request, f"Saved {found.name}." if saved else f"Added {found.name}.")
    return redirect("channel", found.pk)


def _form_page(request: HttpRequest, form: ChannelForm, saved: Channel | None) -> HttpResponse:
    return render(request, "dashboard/channel_form.html", {"form": form, "channel": saved, "nav": "channels"})


@_requiring("monitor.delete_channel")
def delete(request: HttpRequest, channel_id: int) -> HttpResponse:
    """GET: ask, saying what goes with the channel. POST: delete it and its notification history."""
    found = get_object_or_404(Channel.objects.defer("url", "secret"), pk=channel_id)
    if request.method == "POST":
        name = found.name
        found.delete()
        messages.success(request, f"Deleted {name} and its notification history.")
        return redirect("channels")
    context = {"channel": found, "notifications": found.notifications.count(), "nav": "channels"}
    return render(request, "dashboard/channel_delete.html", context)
