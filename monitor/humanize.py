"""Durations as people read them: `span(seconds)`, shared by the dashboard and alert messages."""

from __future__ import annotations


def span(seconds: float) -> str:
    """Return a short human duration: 45 s, 12 min, 3 h 5 min, 4 d 2 h."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
