"""SVG badges (status, uptime, latency) for embedding a service's health in READMEs and wikis, without login.

A badge URL carries a signed token instead of the service id, so nobody can walk the ids to list
every service; rotating DJANGO_SECRET_KEY revokes every badge URL. `token_for()` makes a token and
`service_id_from()` reads one back. `badge_for(service, kind)` says what a badge shows (a `Badge`)
and `render()` draws it as SVG, its text width estimated from a per-character table.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass

from django.core import signing
from django.template.loader import render_to_string

from dashboard.severity import rank
from dashboard.templatetags.portwatch import ms, percent
from monitor import readers
from monitor.models import Service
from monitor.readers import Uptime, current_states
from monitor.stats import DAY

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


# --- Rendering ----------------------------------------------------------------------------------

KINDS = ("status", "uptime", "latency")
UPTIME_WINDOW = 30 * DAY
LATENCY_WINDOW = DAY
MAX_LABEL_LENGTH = 40  # characters of a label (?label= or the service's name); longer ones end in "…"
HEIGHT, PADDING = 20, 6  # px; PADDING on each side of a text
FONT_SIZE = 11
# Advance widths in px of Verdana at 11 px, the font shields.io badges use; measured once, so no font
# library is needed at request time. A character not listed counts as DEFAULT_WIDTH (WIDE_WIDTH when
# East Asian wide); combining marks take no room.
DEFAULT_WIDTH, WIDE_WIDTH = 7.0, 11.0
WIDTHS = (
    {" ": 3.87, "!": 4.33, '"': 5.05, "#": 9.0, "$": 6.99, "%": 11.84, "&": 7.99, "'": 2.95, "(": 4.99, ")": 4.99}
    | {"*": 6.99, "+": 9.0, ",": 4.0, "-": 4.99, ".": 4.0, "/": 4.99, ":": 4.99, ";": 4.99, "<": 9.0, "=": 9.0}
    | {">": 9.0, "?": 5.99, "@": 11.0, "[": 4.99, "\\": 4.99, "]": 4.99, "^": 9.0, "_": 6.99, "`": 6.99}
    | {"{": 6.98, "|": 4.99, "}": 6.98, "~": 9.0, "…": 11.0, "µ": 7.0}
    | dict.fromkeys("0123456789", 6.99)
    | dict(
        zip("ABCDEFGHIJKLM", (7.52, 7.54, 7.68, 8.48, 6.96, 6.32, 8.53, 8.27, 4.63, 5.0, 7.62, 6.12, 9.27), strict=True)
    )
    | dict(
        zip(
            "NOPQRSTUVWXYZ",
            (8.23, 8.66, 6.63, 8.66, 7.65, 7.52, 6.78, 8.05, 7.52, 10.88, 7.54, 6.77, 7.54),
            strict=True,
        )
    )
    | dict(
        zip(
            "abcdefghijklm", (6.61, 6.85, 5.73, 6.85, 6.55, 3.87, 6.85, 6.96, 3.02, 3.79, 6.51, 3.02, 10.7), strict=True
        )
    )
    | dict(
        zip("nopqrstuvwxyz", (6.96, 6.68, 6.85, 6.85, 4.69, 5.73, 4.33, 6.96, 6.51, 9.0, 6.51, 6.51, 5.78), strict=True)
    )
)
# The dashboard's own status colours (portwatch.css, light theme): white text on each is readable
# (contrast 4.5:1 or more), which shields' bright green is not; the value's text says it anyway.
COLOURS = {
    "up": "#1a7f37",
    "warning": "#8a5a00",
    "down": "#b42318",
    "unknown": "#4b5563",
    "paused": "#5b4a9e",
    "info": "#2457c5",
}
LABEL_COLOUR = "#555"


@dataclass(frozen=True)
class Badge:
    """What a badge says: the left `label`, the right `value`, and the value's background `colour`."""

    label: str
    value: str
    colour: str


def badge_for(service: Service, kind: str, now: dt.datetime | None = None) -> Badge:
    """Return the `kind` badge of `service` (kind in KINDS), in at most five queries.

    status: the worst current status of its locations; uptime: over the last 30 days, every location
    together; latency: the mean total time of its good probes over the last 24 hours (not the last
    probe's, which jumps), averaged over its locations.
    """
    pairs = [(service.id, location) for location in service.location_list]
    if kind == "status":
        found = [state.status for state in current_states([service.id]).values()]
        status = max(found, key=rank) if found else "unknown" if service.enabled else "paused"
        return Badge(service.name, status, COLOURS[status])
    if kind == "uptime":
        counts = readers.uptimes(pairs, (UPTIME_WINDOW,), now)
        ratio = sum((windows[UPTIME_WINDOW] for windows in counts.values()), Uptime()).uptime
        return Badge("uptime 30d", "no data" if ratio is None else percent(ratio), _uptime_colour(ratio))
    latencies = readers.latency_summaries(pairs, (LATENCY_WINDOW,), now)
    means = [summary["total"]["avg"] for windows in latencies.values() if (summary := windows[LATENCY_WINDOW])]
    if not means:
        return Badge("latency", "no data", COLOURS["unknown"])
    return Badge("latency", ms(sum(means) / len(means)), COLOURS["info"])


def _uptime_colour(ratio: float | None) -> str:
    if ratio is None:
        return COLOURS["unknown"]
    if ratio >= 0.999:
        return COLOURS["up"]
    return COLOURS["warning"] if ratio >= 0.99 else COLOURS["down"]


def clean_label(text: str) -> str:
    """Return `text` fit for a label: control characters dropped, spaces collapsed, at most MAX_LABEL_LENGTH long."""
    text = " ".join("".join(char for char in text if unicodedata.category(char)[0] != "C").split())
    return text if len(text) <= MAX_LABEL_LENGTH else text[: MAX_LABEL_LENGTH - 1] + "…"


def text_width(text: str) -> float:
    """Return the estimated width in px of `text` in Verdana 11 px."""
    return sum(_char_width(char) for char in text)


def _char_width(char: str) -> float:
    if char in WIDTHS:
        return WIDTHS[char]
    if unicodedata.combining(char):
        return 0.0
    return WIDE_WIDTH if unicodedata.east_asian_width(char) in ("W", "F") else DEFAULT_WIDTH


def render(badge: Badge) -> str:
    """Return the badge as a flat SVG (shields.io's look); the template escapes both texts."""
    label, value = clean_label(badge.label), clean_label(badge.value)
    left = round(text_width(label) + 2 * PADDING)
    right = round(text_width(value) + 2 * PADDING)
    # Numbers go in as text: the template would format floats for the active locale ("37,5").
    numbers = {
        "left": left,
        "right": right,
        "width": left + right,
        "height": HEIGHT,
        "font_size": FONT_SIZE,
        "label_x": left / 2,
        "value_x": left + right / 2,
    }
    context = {"label": label, "value": value, "colour": badge.colour, "label_colour": LABEL_COLOUR}
    context |= {name: f"{number:g}" for name, number in numbers.items()}
    return render_to_string("dashboard/badge.svg", context)
