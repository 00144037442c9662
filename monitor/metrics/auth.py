"""Who may call /probe and /metrics: a bearer token or basic auth from settings, or anyone if allowed.

Exposes `denied(request) -> HttpResponse | None`: None lets the request through.

Decisions:
- PORTWATCH_METRICS_TOKEN (`Authorization: Bearer ...`) and PORTWATCH_METRICS_BASIC_AUTH ("user:password")
  each let a request in when set; Prometheus's `authorization` and `basic_auth` send one or the other.
- With neither set the endpoints answer 403, unless PORTWATCH_METRICS_PUBLIC=true says they are meant to
  be open: /probe makes the server connect where it is told, so open must be a choice, never a default.
- Secrets are compared with hmac.compare_digest and never logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse

REALM = "Portwatch"
NOT_CONFIGURED = (
    "Forbidden: set PORTWATCH_METRICS_TOKEN or PORTWATCH_METRICS_BASIC_AUTH, "
    "or PORTWATCH_METRICS_PUBLIC=true to serve this without credentials\n"
)
UNAUTHORIZED = "Unauthorized: send the token configured in PORTWATCH_METRICS_TOKEN or PORTWATCH_METRICS_BASIC_AUTH\n"


def denied(request: HttpRequest) -> HttpResponse | None:
    """Return the 401 or 403 answer for a request without the right credentials, or None to let it in."""
    token, basic = settings.PORTWATCH_METRICS_TOKEN, settings.PORTWATCH_METRICS_BASIC_AUTH
    if not token and not basic:
        if settings.PORTWATCH_METRICS_PUBLIC:
            return None
        return HttpResponse(NOT_CONFIGURED, status=403, content_type="text/plain; charset=utf-8")
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    if token and scheme.lower() == "bearer" and _equal(value.strip(), token):
        return None
    if basic and scheme.lower() == "basic" and _equal(_decoded(value.strip()), basic):
        return None
    response = HttpResponse(UNAUTHORIZED, status=401, content_type="text/plain; charset=utf-8")
    response["WWW-Authenticate"] = f'Basic realm="{REALM}"' if basic else f'Bearer realm="{REALM}"'
    return response


def _equal(given: str, secret: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))


def _decoded(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
