"""SVG badges (status, uptime, latency) for embedding a service's health in READMEs and wikis, without login.

A badge URL carries a signed token instead of the service id, so nobody can walk the ids to list
every service; rotating DJANGO_SECRET_KEY revokes every badge URL. `token_for()` makes a token and
`service_id_from()` reads one back.
"""

from __future__ import annotations

from django.core import signing

SALT = "portwatch.badge"


def token_for(service_id: int) -> str:
    """Return the URL-safe token that names `service_id` in its badge URLs."""
    return signing.Signer(salt=SALT).sign(str(service_id)).replace(":", "-")


def service_id_from(token: str) -> int | None:
    """Return the service id a token names, or None when it was not signed by this installation."""
    try:
        return int(signing.Signer(salt=SALT).unsign(token.replace("-", ":", 1)))
    except (signing.BadSignature, ValueError):
        return None
