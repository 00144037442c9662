"""Changing services: add (also from a probe URL), edit, test without saving, pause, resume, delete, bulk actions.

Exposes the views `add`, `edit`, `test`, `pause`, `resume`, `delete` and `bulk`, every one for the
editor role, and `result_context()` for pages that show a probe's result with `test_result.html`.
The form validates through the model's `full_clean()`, so a page shows the same errors as the
admin, each at its field.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from dashboard import access, checks
from dashboard.forms import ServiceForm, initial_from_url
from monitor import validation
from monitor.daemon import scheduling
from monitor.models import Service
from monitor.probecli import UsageError
from monitor.probes import Phases, Result

TOO_MANY_TESTS = (
    f"Too many probes started by hand: at most {access.MANUAL_PROBES_PER_WINDOW} every "
    f"{access.MANUAL_PROBE_WINDOW} seconds (tests and checks together). Try again in a minute."
)
TAGS_MAX_LENGTH = Service._meta.get_field("tags").max_length


# Add, edit, test -------------------------------------------------------------------------------


@access.editor_required
def add(request: HttpRequest) -> HttpResponse:
    """Show an empty form (or one filled from ?url=smtps://host); on POST save it, or test it without saving."""
    if request.method == "POST":
        return _submitted(request, Service())
    url = request.GET.get("url", "").strip()
    initial: dict[str, Any] = {}
    url_error = ""
    if url:
        try:
            initial = initial_from_url(url)
        except UsageError as error:
            url_error = str(error)
    return _form_page(request, ServiceForm(initial=initial), None, url=url, url_error=url_error)


@access.editor_required
def edit(request: HttpRequest, service_id: int) -> HttpResponse:
    service = get_object_or_404(Service, pk=service_id)
    if request.method == "POST":
        return _submitted(request, service)
    return _form_page(request, ServiceForm(instance=service), service)


@access.editor_required
@require_POST
def test(request: HttpRequest) -> HttpResponse:
    """Test a posted service form without saving it (for clients without the add or edit page's buttons).

    A posted `service_id` tests the form as an edit of that service, so its own name is not "taken".
    """
    service_id = request.POST.get("service_id", "")
    service = get_object_or_404(Service, pk=service_id) if service_id.isdigit() else Service()
    form = ServiceForm(request.POST, instance=copy.copy(service))
    return _tested(request, form, service if service.pk else None)


def _submitted(request: HttpRequest, service: Service) -> HttpResponse:
    # The form writes posted values onto its instance while validating; a copy keeps the page's heading
    # (the stored name) as stored when the form is shown again with errors or a test result.
    form = ServiceForm(request.POST, instance=copy.copy(service))
    saved = service if service.pk else None
    if request.POST.get("action") == "test":
        return _tested(request, form, saved)
    if not form.is_valid():
        return _form_page(request, form, saved)
    service = form.save()
    messages.success(request, f"Saved {service.name}." if saved else f"Added {service.name}.")
    return redirect("service", service.pk)


def _tested(request: HttpRequest, form: ServiceForm, saved: Service | None) -> HttpResponse:
    """Validate the form and probe what it describes now; save nothing (the instance stays unsaved)."""
    if not form.is_valid():
        return _form_page(request, form, saved, testing=True)
    if not access.allow(request):
        return _form_page(request, form, saved, limited=TOO_MANY_TESTS, status=429)
    # form.instance holds the posted values (is_valid() put them there) but was not saved.
    result = checks.probe_service(form.instance)
    return _form_page(request, form, saved, result=result)


def _form_page(
    request: HttpRequest, form: ServiceForm, saved: Service | None, *, status: int = 200, **extra: Any
) -> HttpResponse:
    context = {
        "form": form,
        "service": saved,
        "action": reverse("service_edit", args=[saved.pk]) if saved else reverse("service_add"),
        "nav": "overview" if saved else "add",
        **extra,
    }
    if "result" in extra:
        context |= result_context(extra["result"])
    return render(request, "dashboard/service_form.html", context, status=status)


def result_context(result: Result) -> dict[str, Any]:
    """Return what `dashboard/test_result.html` shows of a result: it, its phases and its details as text rows."""
    phases = [(name, getattr(result.phases, name)) for name in (*Phases.NAMES, "total")]
    return {"result": result, "phases": phases, "details": _details(result.details)}


def _details(details: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return a result's protocol details as (name, text) rows; the template escapes them."""
    rows = []
    for key, value in details.items():
        if key == "hops":
            value = [f"{hop.get('status', '---')} {hop.get('url', '')}" for hop in value]
        if isinstance(value, dict):
            text = ", ".join(f"{k} {v}".strip() for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            text = "; ".join(str(item) for item in value)
        else:
            text = str(value)
        rows.append((str(key), text))
    return rows


# Pause, resume, delete -------------------------------------------------------------------------


@access.editor_required
@require_POST
def pause(request: HttpRequest, service_id: int) -> HttpResponse:
    return _set_enabled(request, service_id, enabled=False)


@access.editor_required
@require_POST
def resume(request: HttpRequest, service_id: int) -> HttpResponse:
    return _set_enabled(request, service_id, enabled=True)


def _set_enabled(request: HttpRequest, service_id: int, *, enabled: bool) -> HttpResponse:
    """Save the flag through the model: the post_save signal removes or adds the schedule and pauses the state."""
    service = get_object_or_404(Service, pk=service_id)
    service.enabled = enabled
    service.save(update_fields=["enabled", "updated"])
    messages.success(request, f"{'Resumed' if enabled else 'Paused'} {service.name}.")
    return _back(request, reverse("service", args=[service.pk]))


@access.editor_required
def delete(request: HttpRequest, service_id: int) -> HttpResponse:
    """GET: ask, saying what goes with the service. POST: delete it and its whole history."""
    service = get_object_or_404(Service, pk=service_id)
    if request.method == "POST":
        name = service.name
        service.delete()
        messages.success(request, f"Deleted {name} and its history.")
        return redirect("overview")
    context = {"service": service, "incidents": service.incidents.count(), "nav": "overview"}
    return render(request, "dashboard/service_delete.html", context)


# Bulk ------------------------------------------------------------------------------------------


@access.editor_required
@require_POST
def bulk(request: HttpRequest) -> HttpResponse:
    """Pause, resume, tag or untag the selected services; report what was done, or what was wrong, as a message."""
    back = _back(request, reverse("overview"))
    ids = [value for value in request.POST.getlist("service") if value.isdigit()]
    action = request.POST.get("action", "")
    if not ids:
        messages.error(request, "Select at least one service first.")
        return back
    if action in ("pause", "resume"):
        _bulk_enable(request, ids, enabled=action == "resume")
    elif action in ("tag", "untag"):
        _bulk_tag(request, ids, request.POST.get("tag", ""), add=action == "tag")
    else:
        messages.error(request, f"Unknown action {action!r}; choose pause, resume, tag or untag.")
    return back


def _bulk_enable(request: HttpRequest, ids: list[str], *, enabled: bool) -> None:
    """Set the flag with one update, then sync each changed service's schedule as the post_save signal would.

    A queryset update skips signals; without the sync, schedules and states would follow only at the
    dispatcher's next `scheduling.maybe_sync()`, and the page would show paused services still up.
    """
    verb = "Resumed" if enabled else "Paused"
    with transaction.atomic():
        services = list(Service.objects.filter(pk__in=ids).only("id", "enabled", "locations", "interval"))
        changed = [service for service in services if service.enabled != enabled]
        Service.objects.filter(pk__in=[s.pk for s in changed]).update(enabled=enabled, updated=timezone.now())
        for service in changed:
            service.enabled = enabled
            scheduling.sync_service(service)
    already = len(services) - len(changed)
    note = f" ({already} already {'running' if enabled else 'paused'})" if already else ""
    messages.success(request, f"{verb} {_count(len(changed))}{note}.")


def _bulk_tag(request: HttpRequest, ids: list[str], text: str, *, add: bool) -> None:
    """Add or remove tags, checked by the model's own rules; a bad or empty tag changes nothing."""
    try:
        tags = validation.normalise_tags(text).split(",")
    except ValidationError as error:
        messages.error(request, error.messages[0])
        return
    if tags == [""]:
        messages.error(request, "Enter a tag to add or remove.")
        return
    services = list(Service.objects.filter(pk__in=ids).only("id", "name", "tags"))
    changed, too_long = [], []
    for service in services:
        kept = [tag for tag in service.tag_list if add or tag not in tags]
        new = validation.normalise_tags(",".join(kept + (tags if add else [])))
        if len(new) > TAGS_MAX_LENGTH:
            too_long.append(service.name)
        elif new != service.tags:
            service.tags, service.updated = new, timezone.now()
            changed.append(service)
    Service.objects.bulk_update(changed, ["tags", "updated"], batch_size=500)
    label = ", ".join(tags)
    messages.success(request, f"{'Tagged' if add else 'Untagged'} {_count(len(changed))} ({label}).")
    if too_long:
        messages.error(
            request, f"Tags of {', '.join(too_long)} would pass {TAGS_MAX_LENGTH} characters; left unchanged."
        )


# Helpers ---------------------------------------------------------------------------------------


def _count(number: int) -> str:
    return f"{number} service" if number == 1 else f"{number} services"


def _back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    """Redirect to the posted `next` when it is a page of this site, else to `default` (no open redirect)."""
    target = request.POST.get("next", "")
    hosts = {request.get_host()}
    safe = url_has_allowed_host_and_scheme(target, allowed_hosts=hosts, require_https=request.is_secure())
    return HttpResponseRedirect(target if target and safe else default)
