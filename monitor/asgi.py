"""ASGI entry point: `application` for uvicorn, daphne or any ASGI server."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "monitor.settings")

application = get_asgi_application()
