"""Template helpers every page shares: status shown as icon and text, durations, ages, latency, percentages.

Everything here escapes what it is given (names, reasons and greetings come from users and servers).
"""

from __future__ import annotations

import datetime as dt
import math

from django import template
from django.utils import timezone
from django.utils.html import format_html

from monitor.humanize import span

register = template.Library()

DASH = "\u2013"  # what a table shows where there is no value

# Status is never shown by colour alone: every badge carries an icon and a word.
STATUS_LOOK = {
    "up": ("✔", "Up"),
    "warning": ("▲", "Warning"),
    "down": ("✖", "Down"),
    "unknown": ("?", "Unknown"),
    "paused": ("‖", "Paused"),  # not U+23F8: fonts without emoji (Debian's DejaVu) draw an empty box,
}


@register.simple_tag
def status_badge(status: str | None, text: str = "") -> str:
    """Render a status as a coloured pill with an icon and its name (or `text`)."""
    status = status if status in STATUS_LOOK else "unknown"
    icon, label = STATUS_LOOK[status]
    return format_html(
        '<span class="status status-{}"><span class="icon" aria-hidden="true">{}</span> {}</span>',
        status,
        icon,
        text or label,
    )


@register.filter
def status_label(status: str | None) -> str:
    return STATUS_LOOK.get(status or "unknown", STATUS_LOOK["unknown"])[1]


@register.filter
def duration(value: dt.timedelta | float | None) -> str:
    """Render a timedelta (or seconds) as a short duration; empty for None."""
    if value is None:
        return ""
    return span(value.total_seconds() if isinstance(value, dt.timedelta) else value)


@register.filter
def since(moment: dt.datetime | None) -> str:
    """Render how long ago `moment` was, without "ago": "3 h 5 min"."""
    return "" if moment is None else span((timezone.now() - moment).total_seconds())


@register.filter
def ago(moment: dt.datetime | None) -> str:
    """Render "3 min ago" (or "never")."""
    return "never" if moment is None else f"{span((timezone.now() - moment).total_seconds())} ago"


@register.filter
def ms(seconds: float | None) -> str:
    """Render seconds as milliseconds: "12 ms", "0.4 ms", "1.25 s"; a dash for None."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return DASH
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    value = seconds * 1000
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


@register.filter
def percent(ratio: float | None) -> str:
    """Render a ratio as a percentage, never rounding a failure up to 100 %: "99.95 %"; a dash for None."""
    if ratio is None:
        return DASH
    value = ratio * 100
    if value >= 100:
        return "100 %"
    return f"{math.floor(value * 100) / 100:.2f} %"


@register.filter
def days(value: float | None) -> str:
    """Render days left: "45 d", "0.5 d", "expired 3 d ago"; a dash for None."""
    if value is None:
        return DASH
    if value < 0:
        return f"expired {span(-value * 86400)} ago"
    return f"{value:.0f} d" if value >= 2 else f"{value:.1f} d"
