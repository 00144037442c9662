"""The dashboard's forms: a service (the model's own validation), the service a probe URL describes, and users.

Exposes `ServiceForm`, `initial_from_url()`, `UserAddForm`, `UserEditForm`, `group_role()` and `set_role()`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import Group, User

from dashboard import roles
from monitor.admin import ServiceForm as AdminServiceForm
from monitor.probecli import parse_url

ROLE_CHOICES = [(roles.VIEWER, "Viewer: sees services"), (roles.EDITOR, "Editor: also changes services")]
ROLE_CHOICES.append((roles.ADMIN, "Admin: also manages users"))

# Fields in the order the page shows them, grouped as the admin groups them.
SERVICE_FIELDSETS: list[tuple[str, tuple[str, ...]]] = [
    ("Service", ("name", "enabled", "tags")),
    ("Target", ("protocol", "host", "port", "tls_mode")),
    ("Schedule", ("interval", "timeout", "locations")),
    ("Incidents", ("failure_threshold", "recovery_threshold")),
    ("Options", ("options", "login_password", "clear_login_password")),
]


class ServiceForm(AdminServiceForm):
    """Every editable field of a Service, validated by the model's `full_clean()`; help texts as in the admin."""

    class Meta(AdminServiceForm.Meta):
        fields = [name for _, names in SERVICE_FIELDSETS for name in names]
        widgets = {"options": forms.Textarea(attrs={"rows": 4, "spellcheck": "false"})}

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("label_suffix", "")  # labels sit above their inputs, no colon needed
        super().__init__(*args, **kwargs)

    def fieldsets(self) -> list[tuple[str, list[forms.BoundField]]]:
        """Return (legend, bound fields) pairs for the template."""
        return [(legend, [self[name] for name in names]) for legend, names in SERVICE_FIELDSETS]


def initial_from_url(url: str) -> dict[str, Any]:
    """Return the form's initial values for a probe URL (as `manage.py probe` reads it); raise UsageError."""
    parsed = parse_url(url)
    return {
        "name": parsed.host,
        "protocol": parsed.protocol,
        "tls_mode": parsed.tls_mode,
        "host": parsed.host,
        "port": parsed.port or None,  # icmp has no port
        "options": parsed.options,
    }


def password_help() -> str:
    """Return the password validators' rules as plain text (Django's own help is HTML, and we escape help)."""
    return " ".join(password_validation.password_validators_help_texts())


def group_role(user: User) -> str | None:
    """Return the highest role group the user is in (what the form edits), whether or not the user is active."""
    names = set(user.groups.values_list("name", flat=True))
    return next((role for role in reversed(roles.ROLE_ORDER) if role in names), None)


def set_role(user: User, role: str) -> None:
    """Make `role` the user's only role group (other groups stay); admins are staff, for status pages at /admin/."""
    user.groups.remove(*Group.objects.filter(name__in=roles.ROLE_ORDER))
    user.groups.add(Group.objects.get(name=role))
    if not user.is_superuser and user.is_staff != (role == roles.ADMIN):
        user.is_staff = role == roles.ADMIN
        user.save(update_fields=["is_staff"])


class UserAddForm(UserCreationForm):
    """User name, password twice (Django's password validators) and a role."""

    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=roles.VIEWER, widget=forms.RadioSelect)

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username",)

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["password1"].help_text = password_help()

    def save(self, commit: bool = True) -> User:
        user = super().save(commit=True)
        set_role(user, self.cleaned_data["role"])
        return user


class UserEditForm(forms.Form):
    """Role, active flag and optionally a new password; an admin cannot demote or deactivate themselves."""

    role = forms.ChoiceField(choices=ROLE_CHOICES, widget=forms.RadioSelect)
    is_active = forms.BooleanField(
        label="Active", required=False, help_text="An inactive user cannot log in; their name stays."
    )
    password1 = forms.CharField(
        label="New password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    password2 = forms.CharField(
        label="New password again",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args, user: User, editor: User, **kwargs) -> None:
        self.user, self.editor = user, editor
        kwargs.setdefault("initial", {"role": group_role(user) or roles.role_of(user), "is_active": user.is_active})
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["password1"].help_text = "Leave empty to keep the current password. " + password_help()
        if user.is_superuser:
            self.fields["role"].help_text = "A superuser holds every role, whatever is chosen here."

    def clean_role(self) -> str:
        role = self.cleaned_data["role"]
        if self.user.pk == self.editor.pk and role != roles.ADMIN:
            raise forms.ValidationError("You cannot remove your own admin role; ask another admin to do it.")
        return role

    def clean_is_active(self) -> bool:
        active = self.cleaned_data["is_active"]
        if self.user.pk == self.editor.pk and not active:
            raise forms.ValidationError("You cannot deactivate yourself; ask another admin to do it.")
        return active

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        first, second = data.get("password1"), data.get("password2")
        if (first or second) and first != second:
            self.add_error("password2", "The two passwords differ.")
        elif first:
            try:
                password_validation.validate_password(first, self.user)
            except forms.ValidationError as error:
                self.add_error("password1", error)
        return data

    def save(self) -> User:
        user = self.user
        user.is_active = self.cleaned_data["is_active"]
        if self.cleaned_data["password1"]:
            user.set_password(self.cleaned_data["password1"])
        user.save()
        set_role(user, self.cleaned_data["role"])
        return user
