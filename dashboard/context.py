"""Context every dashboard template gets: the signed-in user's role."""

from __future__ import annotations

from django.http import HttpRequest

from dashboard.roles import role_of


def role(request: HttpRequest) -> dict[str, str | None]:
    user = getattr(request, "user", None)
    return {"role": role_of(user) if user is not None else None}
