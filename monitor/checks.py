"""Django system checks for Portwatch's configuration; each has a stable id (portwatch.E001, ...) and a hint."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import Error, register


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
