"""What the service page and the overview show of version exposure: the reader's findings, shaped for templates.

Exposes `Panel`, `panel(service)` (the service page's "Exposure" card, one query plus the service's own) and
`overview_links(counts)` (the overview's counts, each linking to the services it counts). Text from servers is
only ever passed to templates as text: Django escapes it (never `|safe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.urls import reverse

from monitor.exposure import SOURCES, Software, fix_hints
from monitor.exposure_report import KINDS, ServiceExposure, exposures
from monitor.models import Service

KIND_LABELS = {"version": "services reveal a version", "plaintext": "services offer plaintext login"}
ONE_LABELS = {"version": "service reveals a version", "plaintext": "service offers plaintext login"}
FILTER_LABELS = {"version": "Reveals a version", "plaintext": "Offers plaintext login"}


@dataclass(frozen=True)
class Heard:
    """One product as a row of the card: where it was heard, and from which locations."""

    software: Software
    source: str  # "greeting", "Server header", ...
    locations: str


@dataclass(frozen=True)
class Panel:
    exposure: ServiceExposure | None
    heard: list[Heard] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    several: bool = False  # more than one location: rows say where


def panel(service: Service) -> Panel:
    """Return the card of `service`: each product heard (with the evidence), the flags, and how to fix them."""
    found = exposures([service.id])
    if not found or not found[0].locations:
        return Panel(None)
    exposure = found[0]
    where: dict[tuple[str, str | None, str], list[str]] = {}
    first: dict[tuple[str, str | None, str], Software] = {}
    hints: list[str] = []
    for located in exposure.locations:
        for item in located.finding.software:
            key = (item.name, item.version, item.source)
            first.setdefault(key, item)
            where.setdefault(key, []).append(located.location)
        hints += [hint for hint in fix_hints(located.finding, exposure.protocol) if hint not in hints]
    heard = [Heard(item, SOURCES.get(item.source, item.source), ", ".join(where[key])) for key, item in first.items()]
    return Panel(exposure, heard, hints, several=len(exposure.locations) > 1)


def overview_links(counts: dict[str, int]) -> list[tuple[str, str, str, int]]:
    """Return (kind, url, text, count) per kind: "2 services reveal a version", linking to the overview filtered so."""
    base = reverse("overview")
    links = []
    for kind in KINDS:
        n = counts.get(kind, 0)
        text = f"{n:,} {ONE_LABELS[kind]}" if n == 1 else f"{n:,} {KIND_LABELS[kind]}"
        links.append((kind, f"{base}?exposure={kind}", text, n))
    return links
