"""Everything a public status page shows, read in a fixed number of queries: `read(page, now) -> PageStatus`.

Exposes `read()`, `overall_of()` and the values `read()` returns: `PageStatus`,
`Overall`, `Section`, `Component`, `Day`, `Bar`, `PublicIncident`, `Step`.

Decisions:

1. **Days are UTC days**, as the rollups are: `DAYS` (90) of them, oldest first, the last one today so
   far. A day comes from its `DailyRollup`; today, and yesterday until its `DailyRollup` is written,
   from that day's `HourlyRollup` rows plus the raw results after the newest hourly rollup, read at
   most `RAW_LIMIT` back (the rollup task runs every minute, so that is about the last hour).
2. **Downtime minutes** of a day = down slots x the service's interval / 60, capped at 1440. Unknown
   slots (missed, crashed prober) measured nothing: they are "not measured" minutes, neither up nor
   down, and a day's uptime is up / (up + down). A day nothing measured is a gap ("no data").
3. **One row per component, the worst of its parts.** A tag component (every service with the tag)
   and a service probed from several locations are shown as one row: the worst current status, per
   day the most down minutes and the lowest uptime of any (service, location), and the lowest 90-day
   uptime. Two services down 10 minutes each at different times show 10 minutes, not 20: the bar
   says how long the worst-hit part was down. One row rather than one per service, because the public
   sees the component the owner named, not the list of services behind it.
4. **Private unless the page opts in**: hosts and locations only with `show_hosts`, reasons only with
   `show_reasons`. Otherwise they are None here, so no template or JSON can leak them.
5. **Overall indicator** (Statuspage's values): every component down is `critical` "Major outage",
   some down `major` "Partial outage", any warning `minor` "Degraded performance", paused components
   (monitoring stopped) `maintenance`; unknown never raises it: not measured is not an outage.
6. **Cost**: seven queries whatever the number of components, services and days: components,
   services, states, the newest hourly rollup, the history (`statuspage_sql`: the worst of each
   component's parts per day, taken in SQL, one row per component and day), incidents and their
   status changes. A page covering 10,000 services still takes seconds to read (1.1 million rollup
   and raw rows), so no visitor waits for it: the beat task `portwatch.refresh_status_pages`
   (`dashboard/tasks.py`) re-reads every page each `REFRESH_SECONDS` into the cache, and visitors
   get `cached_read()`. The cache keeps a page `CACHE_SECONDS`, so with beat stopped a visitor
   reads it again at most that often; an edited page is read afresh at once.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property

from django.core.cache import cache
from django.db.models import Case, IntegerField, Max, Q, Value, When
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from dashboard.models import StatusComponent, StatusPage
from dashboard.severity import rank
from dashboard.statuspage_sql import DayRow, component_days
from dashboard.templatetags.portwatch import percent, span
from monitor.models import HourlyRollup, Incident, Service, ServiceState, StatusChange
from monitor.stats import DAY, HOUR, OK_STATUSES, UNKNOWN, floor

DAYS = 90
DAY_MINUTES = 1440
WARNING_SHARE = 0.01  # a day down for less than 1 % of it is amber, more is red
RAW_LIMIT = 2 * HOUR  # raw results are never read further back than this
REFRESH_SECONDS = 30  # how often beat re-reads every page: what visitors see is at most this old
CACHE_SECONDS = 90  # how long a read stays usable: beat's next refresh lands well before it expires
MAX_INCIDENTS = 50  # a flapping service must not make the page endless
BAR_STEP, BAR_WIDTH, BAR_HEIGHT = 5, 3, 34  # the day bars' SVG geometry, in viewBox units
BAR_RECT = (  # x, fill, tooltip
    f'<rect x="{{}}" y="0" width="{BAR_WIDTH}" height="{BAR_HEIGHT}" rx="1" class="fill-{{}}">'
    "<title>{}</title></rect>"
)


@dataclass(frozen=True)
class Day:
    """One day of a component: minutes down and not measured, and uptime over the measured slots (None: no data)."""

    date: dt.date
    down_minutes: float | None = None
    uptime: float | None = None
    unmeasured_minutes: float = 0.0

    @property
    def fill(self) -> str:
        """Return the bar's CSS fill: gap, up, warning (< 1 % of the day down) or down."""
        if self.uptime is None:
            return "gap"
        if not self.down_minutes:
            return "up"
        return "warning" if self.down_minutes < WARNING_SHARE * DAY_MINUTES else "down"

    @property
    def tooltip(self) -> str:
        """Return e.g. "12 Nov 2026: 14 min down, 99.02 % up, 5 min not measured", or "12 Nov 2026: no data"."""
        date = f"{self.date.day} {self.date:%b %Y}"
        unmeasured = f"{_minutes(self.unmeasured_minutes)} not measured" if self.unmeasured_minutes else ""
        if self.uptime is None:
            return f"{date}: no data" + (f" ({unmeasured})" if unmeasured else "")
        parts = [f"{_minutes(self.down_minutes or 0.0)} down", f"{percent(self.uptime)} up"]
        return f"{date}: {', '.join([*parts, unmeasured] if unmeasured else parts)}"


@dataclass(frozen=True)
class Bar:
    x: int
    day: Day


@dataclass(frozen=True)
class Component:
    name: str
    group: str
    status: str
    uptime_90d: float | None
    days: tuple[Day, ...]

    @property
    def bars(self) -> list[Bar]:
        return [Bar(index * BAR_STEP, day) for index, day in enumerate(self.days)]

    @cached_property
    def bars_svg(self) -> SafeString:
        """Return the day bars as SVG <rect>s with a <title> tooltip each, escaped.

        Built here rather than in a `{% for %}` loop: 50 components x 90 bars through the template
        engine took 170 ms of a 190 ms page. `cached_read()` builds it before caching, so a cached
        page is rendered without escaping 4,500 tooltips again.
        """
        return format_html_join("", BAR_RECT, ((bar.x, bar.day.fill, bar.day.tooltip) for bar in self.bars))


@dataclass(frozen=True)
class Section:
    """Components shown together: under `name`, or without a heading when it is empty."""

    name: str
    components: list[Component]


@dataclass(frozen=True)
class Step:
    at: dt.datetime
    old_status: str
    new_status: str
    reason: str | None  # only with show_reasons


@dataclass(frozen=True)
class PublicIncident:
    components: tuple[str, ...]
    started_at: dt.datetime
    ended_at: dt.datetime | None
    now: dt.datetime
    steps: tuple[Step, ...]
    cause: str | None = None  # only with show_reasons
    end_reason: str | None = None  # only with show_reasons
    host: str | None = None  # only with show_hosts
    location: str | None = None  # only with show_hosts

    @property
    def name(self) -> str:
        return f"{', '.join(self.components)} outage"

    @property
    def ongoing(self) -> bool:
        return self.ended_at is None

    @property
    def duration(self) -> dt.timedelta:
        return (self.ended_at or self.now) - self.started_at


@dataclass(frozen=True)
class Overall:
    indicator: str  # none, minor, major, critical, maintenance (Statuspage's API)
    description: str
    status: str  # the status badge that shows it: up, warning, down, paused, unknown


@dataclass(frozen=True)
class PageStatus:
    page: StatusPage
    overall: Overall
    sections: tuple[Section, ...]
    incidents: tuple[PublicIncident, ...]
    generated_at: dt.datetime

    @property
    def components(self) -> list[Component]:
        return [component for section in self.sections for component in section.components]


def cached_read(page: StatusPage) -> PageStatus:
    """Return what `refresh()` last stored for `page`, reading it now only when nothing is stored.

    Its visitors, and the status region's refresh in each open browser, all see the same thing.
    """
    return cache.get(_cache_key(page)) or refresh(page)


def refresh(page: StatusPage) -> PageStatus:
    """Read `page` now and store it for `cached_read()`, bars drawn, for `CACHE_SECONDS`."""
    status = read(page)
    for component in status.components:
        component.bars_svg  # noqa: B018 (built once, cached with the page)
    cache.set(_cache_key(page), status, CACHE_SECONDS)
    return status


def _cache_key(page: StatusPage) -> str:
    return f"statuspage:{page.pk}:{page.updated.timestamp()}"


def read(page: StatusPage, now: dt.datetime | None = None) -> PageStatus:
    """Return everything `page` shows at `now`, in seven queries."""
    now = now or dt.datetime.now(dt.UTC)
    rows = list(page.components.all())
    services = _services(rows)
    members = {row.id: _members(row, services) for row in rows}
    ids = sorted(services)
    statuses = _statuses(ids, services)
    today = now.astimezone(dt.UTC).date()
    dates = [today - dt.timedelta(days=n) for n in range(DAYS - 1, -1, -1)]
    history = _history(page, dates, now, len(ids))
    components = []
    for row in rows:
        status = max((statuses[sid] for sid in members[row.id]), key=rank, default=UNKNOWN)
        components.append(_component(_name(row, services), row.group, status, history.get(row.id, ({}, None)), dates))
    names = defaultdict(list)
    for component, row in zip(components, rows, strict=True):
        for sid in members[row.id]:
            names[sid].append(component.name)
    incidents = _incidents(page, ids, services, names, now)
    overall = overall_of([component.status for component in components])
    return PageStatus(page, overall, tuple(_sections(components)), incidents, now)


def overall_of(statuses: list[str]) -> Overall:
    """Return the page's indicator from its components' statuses (see the module docstring, 5)."""
    found = set(statuses)
    if not found:
        return Overall("none", "No components to show", UNKNOWN)
    if found == {"down"}:
        return Overall("critical", "Major outage", "down")
    if "down" in found:
        return Overall("major", "Partial outage", "down")
    if "warning" in found:
        return Overall("minor", "Degraded performance", "warning")
    if found == {"paused"}:
        return Overall("maintenance", "Under maintenance", "paused")
    if "paused" in found:
        return Overall("maintenance", "Some components under maintenance", "paused")
    if found == {UNKNOWN}:
        return Overall("none", "Status unknown: nothing measured yet", UNKNOWN)
    if UNKNOWN in found:
        return Overall("none", "Some components not measured yet", UNKNOWN)
    return Overall("none", "All systems operational", "up")


# --- Reading ------------------------------------------------------------------------------------


def _services(rows: list[StatusComponent]) -> dict[int, Service]:
    """Return {id: Service} of the services the components name or tag, in one query."""
    condition = Q(id__in=[row.service_id for row in rows if row.service_id])
    for tag in {row.tag for row in rows if row.tag}:
        # Tags are stored "a,b,c": match the whole tag, never a tag it is a prefix of.
        condition |= Q(tags=tag) | Q(tags__startswith=f"{tag},") | Q(tags__endswith=f",{tag}")
        condition |= Q(tags__contains=f",{tag},")
    fields = ("id", "name", "host", "interval", "tags", "locations", "enabled")
    return {service.id: service for service in Service.objects.filter(condition).only(*fields)}


def _members(row: StatusComponent, services: dict[int, Service]) -> list[int]:
    if row.service_id is not None:
        return [row.service_id] if row.service_id in services else []
    return [sid for sid, service in services.items() if row.tag in service.tag_list]


def _name(row: StatusComponent, services: dict[int, Service]) -> str:
    if row.name:
        return row.name
    service = services.get(row.service_id) if row.service_id is not None else None
    return service.name if service is not None else row.tag


def _statuses(ids: list[int], services: dict[int, Service]) -> dict[int, str]:
    """Return each service's current status: the worst of its locations' states; paused when disabled and new."""
    statuses = {sid: UNKNOWN if services[sid].enabled else "paused" for sid in ids}
    seen: set[int] = set()
    for sid, status in ServiceState.objects.filter(service_id__in=ids).values_list("service_id", "status"):
        statuses[sid] = status if sid not in seen else max(statuses[sid], status, key=rank)
        seen.add(sid)
    return statuses


def _history(
    page: StatusPage, dates: list[dt.date], now: dt.datetime, services: int
) -> dict[int, tuple[dict[dt.date, DayRow], float | None]]:
    """Return {component id: ({date: worst day}, lowest 90-day uptime)} over `dates`; two queries (docstring, 1-3)."""
    today = floor(now, DAY)
    latest = HourlyRollup.objects.aggregate(latest=Max("start"))["latest"]
    return component_days(
        page.id,
        start=dt.datetime.combine(dates[0], dt.time(), dt.UTC),
        yesterday=today - DAY,
        today=today,
        raw_since=max(latest + HOUR if latest else now - RAW_LIMIT, now - RAW_LIMIT),
        now=now,
        services=services,
    )


def _incidents(
    page: StatusPage, ids: list[int], services: dict[int, Service], names: dict[int, list[str]], now: dt.datetime
) -> tuple[PublicIncident, ...]:
    """Return the incidents of the last DAYS days, open ones first, then the newest; two queries."""
    recent = Incident.objects.filter(service_id__in=ids).filter(Q(ended_at=None) | Q(ended_at__gte=now - DAYS * DAY))
    ordered = recent.annotate(
        closed=Case(When(ended_at=None, then=Value(0)), default=Value(1), output_field=IntegerField())
    ).order_by("closed", "-started_at", "-id")
    fields = ("id", "service_id", "location", "started_at", "ended_at", "reason", "end_reason")
    rows = list(ordered.values_list(*fields)[:MAX_INCIDENTS])
    steps: dict[int, list[Step]] = defaultdict(list)
    changes = StatusChange.objects.filter(incident__in=ordered.values("id")[:MAX_INCIDENTS]).order_by("created", "id")
    for incident_id, at, old, new, reason in changes.values_list(
        "incident_id", "created", "old_status", "new_status", "reason"
    ):
        # A recovery's "reason" is the server's greeting: a banner, not a cause, so it is never shown.
        shown = page.show_reasons and new not in OK_STATUSES
        steps[incident_id].append(Step(at, old, new, reason if shown else None))
    incidents = []
    for pk, sid, location, started_at, ended_at, reason, end_reason in rows:
        incidents.append(
            PublicIncident(
                components=tuple(dict.fromkeys(names[sid])),
                started_at=started_at,
                ended_at=ended_at,
                now=now,
                steps=tuple(steps[pk]),
                cause=reason if page.show_reasons else None,
                end_reason=(end_reason or None) if page.show_reasons else None,
                host=services[sid].host if page.show_hosts else None,
                location=location if page.show_hosts else None,
            )
        )
    return tuple(incidents)


# --- Arithmetic ---------------------------------------------------------------------------------


def _component(
    name: str, group: str, status: str, history: tuple[dict[dt.date, DayRow], float | None], dates: list[dt.date]
) -> Component:
    rows, uptime_90d = history
    days = []
    for date in dates:
        row = rows.get(date)
        if row is None:
            days.append(Day(date))
        elif row.uptime is None:
            days.append(Day(date, unmeasured_minutes=row.unmeasured_minutes))
        else:
            days.append(Day(date, row.down_minutes, row.uptime, row.unmeasured_minutes))
    return Component(name, group, status, uptime_90d, tuple(days))


def _minutes(minutes: float) -> str:
    return "0 min" if not minutes else span(minutes * 60)


def _sections(components: list[Component]) -> list[Section]:
    """Group components by `group`, in the order each group first appears; ungrouped ones stay where they are."""
    sections: list[Section] = []
    named: dict[str, Section] = {}
    for component in components:
        if not component.group:
            if not sections or sections[-1].name:
                sections.append(Section("", []))
            sections[-1].components.append(component)
        elif component.group in named:
            named[component.group].components.append(component)
        else:
            named[component.group] = Section(component.group, [component])
            sections.append(named[component.group])
    return sections
