"""How bad a status is: the one order every page uses to show the worst of several locations or services.

Exposes `RANKED` (best to worst), `RANK` and `rank()`. Paused (nobody probes it) ranks lowest, so
one disabled part hides nothing; a status this list does not know ranks as unknown.
"""

from __future__ import annotations

RANKED = ("paused", "up", "unknown", "warning", "down")
RANK = {status: position for position, status in enumerate(RANKED)}


def rank(status: str) -> int:
    return RANK.get(status, RANK["unknown"])
