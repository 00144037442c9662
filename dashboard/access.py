"""Who may do what: view decorators by role, and a rate limit for actions that make the server connect out.

`viewer_required`, `editor_required` and `admin_required` send anonymous users to the login page and
answer 403 to signed-in users without the role. `allow()` counts an action per user in the cache
(shared by every web process when it is Redis or files), so "check now" and "test" cannot be used
to make Portwatch scan a network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from dashboard import roles

# Probes a user may start by hand ("check now" and "test" together) per window.
MANUAL_PROBES_PER_WINDOW = 10
MANUAL_PROBE_WINDOW = 60  # seconds


def _requiring(permission: str) -> Callable:
    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        @login_required
        def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.has_perm(permission):
                raise PermissionDenied(f"your role does not allow this ({permission})")
            return view(request, *args, **kwargs)

        return checked

    return decorator


viewer_required = _requiring(roles.SEE)
editor_required = _requiring(roles.EDIT)
admin_required = _requiring(roles.MANAGE_USERS)


def allow(request: HttpRequest, action: str = "manual-probe", *, now: float | None = None) -> bool:
    """Count one `action` by the request's user; return False when the user is over the limit for the last window.

    A sliding window, estimated from two fixed ones: the last window's count weighs by how much of it the
    sliding window still covers. Fixed windows alone let a user make twice the limit across a boundary
    (ten actions at 59 s, ten more at 61 s), and let a test's eleventh request straddle into a fresh window.
    """
    now = time.time() if now is None else now
    window, into = divmod(now, MANUAL_PROBE_WINDOW)
    prefix = f"portwatch:rate:{action}:{request.user.pk}:"
    key = f"{prefix}{int(window)}"
    cache.add(key, 0, timeout=MANUAL_PROBE_WINDOW * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=MANUAL_PROBE_WINDOW * 2)
        count = 1
    before = cache.get(f"{prefix}{int(window) - 1}", 0)
    return before * (1 - into / MANUAL_PROBE_WINDOW) + count <= MANUAL_PROBES_PER_WINDOW
