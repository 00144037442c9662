"""How bad a status is: the one order every page uses to show the worst of several locations or services.

Exposes `RANKED` (best to worst), `RANK` and `rank()`: `monitor.models.history.SEVERITY`, which the
state writer's per-service summaries use too. Paused (nobody probes it) ranks lowest, so one
disabled part hides nothing; a status this list does not know ranks as unknown.
"""

from __future__ import annotations

from monitor.models.history import SEVERITY as RANKED
from monitor.models.history import severity as rank

RANK = {status: position for position, status in enumerate(RANKED)}

__all__ = ["RANK", "RANKED", "rank"]
