"""Roles are Django groups: viewers see, editors also add and change services, admins also manage users and channels.

`ROLES` maps each group to the permissions it holds; the data migration creates the groups, and
`role_of()` names a user's highest role. Superusers hold every role.
"""

from __future__ import annotations

VIEWER, EDITOR, ADMIN = "viewers", "editors", "admins"
ROLE_ORDER = (VIEWER, EDITOR, ADMIN)

# What each role checks for; views test these, never group names, so a custom group works too.
SEE = "monitor.view_service"
EDIT = "monitor.change_service"
MANAGE_USERS = "auth.change_user"
SEE_CHANNELS = "monitor.view_channel"
MANAGE_CHANNELS = "monitor.change_channel"

_VIEW = [
    "monitor.view_service",
    "monitor.view_servicestate",
    "monitor.view_proberesult",
    "monitor.view_incident",
    "monitor.view_hourlyrollup",
    "monitor.view_dailyrollup",
]
_EDIT = ["monitor.add_service", "monitor.change_service", "monitor.delete_service"]
_ADMIN = ["auth.view_user", "auth.add_user", "auth.change_user", "auth.delete_user", "auth.view_group"]
# Status pages are managed in the Django admin, which admins reach as staff (dashboard/admin.py).
_ADMIN += [
    f"dashboard.{verb}_{model}"
    for model in ("statuspage", "statuscomponent")
    for verb in ("view", "add", "change", "delete")
]

# Channels hold secrets and decide who is woken at night: everyone sees them (masked), admins manage them.
_VIEW += ["monitor.view_channel"]
_ADMIN += ["monitor.add_channel", "monitor.change_channel", "monitor.delete_channel"]

ROLES: dict[str, list[str]] = {
    VIEWER: _VIEW,
    EDITOR: _VIEW + _EDIT,
    ADMIN: _VIEW + _EDIT + _ADMIN,
}


def role_of(user) -> str | None:
    """Return the highest role the user holds (by permission), or None."""
    if not user.is_authenticated or not user.is_active:
        return None
    if user.has_perm(MANAGE_USERS) and user.has_perm(EDIT):
        return ADMIN
    if user.has_perm(EDIT):
        return EDITOR
    if user.has_perm(SEE):
        return VIEWER
    return None


def grant(apps, schema_editor=None) -> None:
    """Create the role groups with their permissions (idempotent; used by the data migration)."""
    from django.contrib.auth.management import create_permissions

    for config in apps.get_app_configs():
        config.models_module = True  # make create_permissions run for apps loaded by the migration
        create_permissions(config, verbosity=0, apps=apps)
        config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for code in codes:
            app_label, codename = code.split(".")
            wanted += list(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
        group.permissions.add(*wanted)
