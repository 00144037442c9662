"""Acknowledging a problem: from the signed link in a message (`by_link`, no login) or the service page (`on_service`).

The link is the credential: whoever holds it may acknowledge that one problem, within its lifetime
(monitor/alerting/acknowledgement.py), always with a note. Its POST is rate-limited per problem with
`dashboard.access.allow`: anonymous visitors share one user key (None), and a limit shared by everyone
would let one noisy link block the whole team's acknowledgements during a wide outage.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from dashboard import access, detail
from monitor.alerting.acknowledgement import MAX_NOTE, AcknowledgeError, acknowledge, problem_for
from monitor.models import Service

TOO_MANY = "Too many attempts on this link: wait a minute, then try again."


@require_http_methods(["GET", "POST"])
def by_link(request: HttpRequest, token: str) -> HttpResponse:
    """GET: show the problem and a form asking for a note. POST: acknowledge it, by "link"."""
    try:
        problem = problem_for(token)
    except AcknowledgeError as error:
        return render(request, "dashboard/acknowledge_invalid.html", {"error": str(error)}, status=400)
    context = {"problem": problem, "max_note": MAX_NOTE, "note": ""}
    if request.method == "POST":
        if not access.allow(request, f"acknowledge-{problem.pk}"):
            return render(request, "dashboard/acknowledge.html", context | {"error": TOO_MANY}, status=429)
        note = request.POST.get("note", "")
        try:
            problem = acknowledge(problem, by="link", note=note, now=timezone.now())
        except AcknowledgeError as error:
            failed = context | {"error": str(error), "note": note}
            return render(request, "dashboard/acknowledge.html", failed, status=400)
        context |= {"problem": problem, "done": True}
    return render(request, "dashboard/acknowledge.html", context)


@access.editor_required
@require_POST
def on_service(request: HttpRequest, service_id: int) -> HttpResponse:
    """Acknowledge the service's open down problem with the posted note, in the signed-in user's name."""
    service = get_object_or_404(Service, pk=service_id)
    problem = detail.open_problem(service)
    back = f"{reverse('service', args=[service.pk])}#problem"
    if problem is None:
        messages.error(request, f"{service.name} has no open outage to acknowledge.")
        return redirect(back)
    try:
        acknowledge(problem, by=request.user.get_username(), note=request.POST.get("note", ""), now=timezone.now())
    except AcknowledgeError as error:
        messages.error(request, str(error))
        return redirect(back)
    messages.success(request, f"Acknowledged the outage of {service.name}.")
    return redirect(back)
