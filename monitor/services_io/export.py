"""Export: `export_services()` writes services, channels and maintenance windows as YAML, defaults left out."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from typing import Any

import yaml
from django.db import models

from monitor.models import Channel, MaintenanceWindow, Service
from monitor.services_io.sections import CHANNELS, MAINTENANCE, SERVICES, Section, row_name

MAP_TAG, SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
HEADER = "# Portwatch services. Import with `manage.py import_services FILE`; values left out take their defaults.\n"
SECRETS_NOTE = (
    "# Secrets (a channel's url and secret, a service's login_password) are never exported: to import elsewhere,\n"
    "# add `url_env: NAME` (read from the environment) or `url:`. Left out, an existing row keeps its stored ones.\n"
)


def export_services(services: Iterable[Service] | None = None) -> str:
    """Return the services (default: all), channels and maintenance windows as YAML, by name, without defaults.

    `channels:` and `maintenance:` are written only when there are some, so a database without
    them exports the same file as before they existed (and a --prune import of it leaves them alone).
    """
    chosen = Service.objects.prefetch_related("depends_on") if services is None else services
    document: dict[str, Any] = {"services": _entries(SERVICES, chosen)}
    channels = _entries(CHANNELS, Channel.objects.select_related("escalate_to").prefetch_related("services"))
    windows = _entries(MAINTENANCE, MaintenanceWindow.objects.prefetch_related("services"))
    if channels:
        document["channels"] = channels
    if windows:
        document["maintenance"] = windows
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + (SECRETS_NOTE if channels else "") + body


class _Inline(dict):
    """A mapping written on one line: `options: {tls_warn_days: 7}`."""


class _InlineList(list):
    """A list written on one line: `tags: [mail, eu]`."""


class _Dumper(yaml.SafeDumper):
    """Write entries as blocks, one key a line, and their lists and options on one line each."""


_Dumper.add_representer(_Inline, lambda dumper, data: dumper.represent_mapping(MAP_TAG, data, flow_style=True))
_Dumper.add_representer(_InlineList, lambda dumper, data: dumper.represent_sequence(SEQ_TAG, data, flow_style=True))


def _entries(section: Section, rows: Iterable[models.Model]) -> list[dict[str, Any]]:
    # Sorted here, not by the database: PostgreSQL's collation and SQLite's byte order disagree.
    return [_entry(section, row) for row in sorted(rows, key=lambda row: (row.name, row.pk))]


def _entry(section: Section, row: models.Model) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for key in section.kinds:
        if key in section.secrets:
            continue
        value = _file_value(section, row, key)
        if key in section.required or key in section.shown or value != _default(section, key):
            entry[key] = _inline(value)
    return entry


def _inline(value: Any) -> Any:
    return _Inline(value) if isinstance(value, dict) else _InlineList(value) if isinstance(value, list) else value


def _file_value(section: Section, row: models.Model, key: str) -> Any:
    """Return a model field as the file holds it: names for references, lists for tags, 30 rather than 30.0."""
    value = getattr(row, key)
    if key in section.references:
        return sorted(other.name for other in value.all()) if isinstance(value, models.Manager) else row_name(value)
    if isinstance(value, dt.datetime):  # in the window's own zone, as a person planned it
        return value.astimezone(_zone(getattr(row, "timezone", "UTC"))).isoformat()
    return section.kinds[key].to_file(value)


def _default(section: Section, key: str) -> Any:
    """Return the value a key left out of an entry takes, as the file holds it."""
    model_field = section.model._meta.get_field(key)
    if model_field.many_to_many:
        return []
    value = model_field.get_default()  # "" for a text field without one
    return None if value is None else section.kinds[key].to_file(value)


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC
