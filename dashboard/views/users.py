"""Managing users, for admins: the list with each user's role, adding a user, and changing role, activity or password.

Exposes the views `users`, `add` and `edit`. Roles are the groups of `dashboard.roles`; setting one
replaces the user's role groups.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.models import Permission, User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from dashboard import access, roles
from dashboard.forms import UserAddForm, UserEditForm


@dataclass
class _Holder:
    """Stands in for a user in `roles.role_of()`, with permissions read in bulk (ModelBackend reads them per user).

    Active whatever the user's flag, so the list shows an inactive user's role next to "inactive".
    """

    perms: set[str]
    is_superuser: bool
    is_authenticated: bool = True
    is_active: bool = True

    def has_perm(self, perm: str) -> bool:
        return self.is_superuser or perm in self.perms


def _roles(users: list[User]) -> dict[int, str | None]:
    """Return each user's role by `roles.role_of()`, with two queries whatever the number of users."""
    perms: dict[int, set[str]] = defaultdict(set)
    ids = [user.pk for user in users]
    by_group = Permission.objects.filter(group__user__in=ids).values_list(
        "group__user", "content_type__app_label", "codename"
    )
    direct = Permission.objects.filter(user__in=ids).values_list("user", "content_type__app_label", "codename")
    for user_id, app_label, codename in [*by_group, *direct]:
        perms[user_id].add(f"{app_label}.{codename}")
    return {user.pk: roles.role_of(_Holder(perms[user.pk], user.is_superuser)) for user in users}


def _label(role: str | None) -> str:
    """Return "editor" for the editors group; "no role" for None."""
    return role.removesuffix("s") if role else "no role"


@access.admin_required
def users(request: HttpRequest) -> HttpResponse:
    people = list(User.objects.order_by("username"))
    held = _roles(people)
    rows = [(user, _label(held[user.pk])) for user in people]
    return render(request, "dashboard/users.html", {"rows": rows, "nav": "users"})


@access.admin_required
def add(request: HttpRequest) -> HttpResponse:
    form = UserAddForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        messages.success(request, f"Added {user.username} as {_label(form.cleaned_data['role'])}.")
        return redirect("users")
    return render(request, "dashboard/user_form.html", {"form": form, "person": None, "nav": "users"})


@access.admin_required
def edit(request: HttpRequest, user_id: int) -> HttpResponse:
    person = get_object_or_404(User, pk=user_id)
    form = UserEditForm(request.POST or None, user=person, editor=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        if person.pk == request.user.pk and form.cleaned_data["password1"]:
            update_session_auth_hash(request, person)  # changing one's own password must not log one out
        messages.success(request, f"Saved {person.username}.")
        return redirect("users")
    return render(request, "dashboard/user_form.html", {"form": form, "person": person, "nav": "users"})
