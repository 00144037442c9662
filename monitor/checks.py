"""Django system checks for Portwatch's configuration; each has a stable id (portwatch.E001, ...) and a hint."""

from __future__ import annotations

import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import Error, register
from django.http.request import validate_host


@register()
def check_data_dir(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Report portwatch.E001 when DATA_DIR cannot be created or written (SQLite, secret key and broker live there)."""
    data_dir = Path(settings.DATA_DIR)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # Write a file rather than trusting os.access(): root passes os.access on a read-only mount.
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as error:
        return [
            Error(
                f"The data directory {data_dir} is not writable: {error.strerror}.",
                hint="Set PORTWATCH_DATA_DIR to a directory the Portwatch user can write, or fix its permissions.",
                id="portwatch.E001",
            )
        ]
    return []


@register()
def check_base_url_host(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Report portwatch.E002 when PORTWATCH_BASE_URL's host is not in ALLOWED_HOSTS: Django would answer it 400."""
    base_url = getattr(settings, "PORTWATCH_BASE_URL", None)
    if not base_url:
        return []
    host = urllib.parse.urlsplit(base_url).hostname or ""
    if ":" in host:
        host = f"[{host}]"  # ALLOWED_HOSTS writes an IPv6 address in brackets
    if validate_host(host, settings.ALLOWED_HOSTS):
        return []
    return [
        Error(
            f"PORTWATCH_BASE_URL is {base_url}, but its host {host} is not in ALLOWED_HOSTS, "
            "so the site would answer every request there with 400 Bad Request.",
            hint=f"Add {host} to ALLOWED_HOSTS (comma-separated).",
            id="portwatch.E002",
        )
    ]
