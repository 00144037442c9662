"""Notification transports, plain Python (no Django): each channel module's `deliver(...)` returns a `Delivery`.

`cut(text, limit)` bounds what a server or a probe said wherever it is quoted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """What one delivery attempt came to; a transport returns it and does not raise for a receiver's failure.

    retryable: worth another attempt later (timeouts, refused or reset connections, 408, 429, 5xx), as
    opposed to a mistake only the channel's owner can fix (a bad URL, a 4xx, a redirect, a certificate).
    """

    ok: bool
    status: int | None  # the HTTP status, or None when no answer came
    error: str  # a sentence a person understands, never holding a secret; empty when ok
    retryable: bool
    elapsed: float  # seconds the attempt took


def cut(text: str, limit: int) -> str:
    """Return `text`, or its first `limit` - 1 characters and an ellipsis when it is longer than `limit`."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
