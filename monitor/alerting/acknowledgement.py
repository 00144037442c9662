"""Acknowledging a problem: from the dashboard, or from a signed link in its message, always with a note.

An acknowledgement stops the problem's reminders and escalation; it belongs to the problem, so it is gone
when the problem ends (the service recovers). `link(problem)` is the signed URL a message carries;
`problem_for(token)` reads it back, refusing a forged, altered or expired one.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core import signing
from django.urls import reverse

from monitor.models import Problem

SALT = "portwatch.acknowledge"
LINK_LIFETIME = dt.timedelta(days=7)
MAX_NOTE = 500


class AcknowledgeError(Exception):
    """Why an acknowledgement was refused, in words for the person who tried."""


def token(problem: Problem) -> str:
    return signing.dumps({"problem": problem.pk}, salt=SALT, compress=False)


def link(problem: Problem) -> str | None:
    """Return the absolute, signed acknowledgement URL, or None when PORTWATCH_BASE_URL is unset."""
    base = settings.PORTWATCH_BASE_URL
    return f"{base}{reverse('acknowledge', args=[token(problem)])}" if base else None


def problem_for(value: str) -> Problem:
    """Return the problem a signed token names; raise AcknowledgeError when the token is bad or too old."""
    try:
        data = signing.loads(value, salt=SALT, max_age=LINK_LIFETIME)
    except signing.SignatureExpired:
        raise AcknowledgeError("This acknowledgement link has expired; acknowledge from the dashboard.") from None
    except signing.BadSignature:
        raise AcknowledgeError("This acknowledgement link is not valid.") from None
    try:
        return Problem.objects.select_related("service").get(pk=data["problem"])
    except (Problem.DoesNotExist, KeyError, TypeError):
        raise AcknowledgeError("The problem this link names no longer exists.") from None


def acknowledge(problem: Problem, *, by: str, note: str, now: dt.datetime) -> Problem:
    """Acknowledge an open problem with a note; raise AcknowledgeError when it is over or the note is empty.

    A second acknowledgement keeps the first (who said it first, and what).
    """
    note = " ".join(note.split())
    if not note:
        raise AcknowledgeError("Say what is being done: an acknowledgement needs a note.")
    if len(note) > MAX_NOTE:
        raise AcknowledgeError(f"Keep the note under {MAX_NOTE} characters.")
    updated = Problem.objects.filter(pk=problem.pk, ended_at=None, acknowledged_at=None).update(
        acknowledged_at=now, acknowledged_by=by[:150], acknowledgement=note
    )
    problem.refresh_from_db()
    if not updated and problem.ended_at is not None:
        raise AcknowledgeError("This problem is already over: nothing to acknowledge.")
    return problem
