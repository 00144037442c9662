"""What the Overview page reads: the fleet's counts by status, one filtered and sorted page of services, its rows.

Exposes `Filters` (parsed from the query string), `summary()` (whole fleet, one query),
`services(filters)` (a queryset: filtering, sorting and counting happen in SQL), `matching(filters)`
(the same, unsorted: what to count), `rows(services, now)` (the page's statuses, uptimes and
sparklines, a fixed number of queries), `broken_channels(now)` (for the banner), `page_size()`, `STATUSES`,
`SORTS` and `DEFAULT_SORT`; `exposure_counts()` (services revealing a version or a plaintext login, for the
page's line under the summary; `Filters.exposure` lists them).

Decisions:

1. **One status per service.** A service probed from several locations has one ServiceState per
   location; its status is the worst of them (down > warning > unknown > up > paused), so it is
   paused only when every location is. A service with no state yet is unknown (paused when
   disabled). The state writer keeps that worst status, and the other per-service values a row
   shows and sorts on, in `ServiceSummary` (see its docstring for each value's definition).
2. **Counting, filtering and sorting read the summaries**: one narrow row per service, indexed on
   each sort key, joined to the services; the exposure counts and filter read its flags. Grouping
   the wide state table by service for every request took ~40 ms at 10,000 services, and sorting
   by latency read every state's JSON. Sorting by name (the default) is the cheapest: the unique
   index on name.
3. **Uptime comes from the snapshots refreshed every ten minutes** (`readers.recent_uptimes()`), with the moment they
   were taken, which the page shows; summing rollups for a page's 50 services took ~70 ms.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import (
    Case,
    Count,
    F,
    FloatField,
    IntegerField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, ExtractHour

from dashboard.severity import RANK, RANKED
from dashboard.templatetags.portwatch import ms
from monitor import exposure_report
from monitor.alerting.health import channel_health
from monitor.alerting.maintenance import in_maintenance
from monitor.models import (
    DEFAULT_LOCATION,
    Channel,
    HourlyRollup,
    MaintenanceWindow,
    Service,
    ServiceState,
    ServiceSummary,
)
from monitor.probes import PROTOCOLS
from monitor.readers import WINDOWS, Uptime, recent_uptimes
from monitor.stats import DAY, HOUR, floor

STATUSES = ("up", "warning", "down", "unknown", "paused")  # the order the summary and the filter list them
PAUSED = "paused"

SORTS = ("name", "status", "since", "latency", "last_check", "cert")
DEFAULT_SORT = "name"  # the cheapest: the worst status is then read for the page only
PAGE_SIZE = 50  # rows per page; PORTWATCH_OVERVIEW_PAGE_SIZE overrides it (tests use a small page)
CERT_WARN_DAYS = 14  # a certificate expiring sooner is highlighted
SPARK_WIDTH, SPARK_HEIGHT = 120, 24  # the sparkline's viewBox
MAX_FILTER_LENGTH = 100  # longer free text cannot match a name (100) and only costs a slower LIKE

# Only what a row shows: Service.options can be large and is not needed here, nor the states'
# `details` (banners, capabilities) that `current_states()` would load.
ROW_FIELDS = ("id", "name", "host", "port", "protocol", "tls_mode", "enabled", "tags", "locations", "created")
SUMMARY_FIELDS = tuple(
    f"summary__{name}" for name in ("status", "severity", "since", "reason", "latency", "cert_days", "last_checked_at")
)


def page_size() -> int:
    return int(getattr(settings, "PORTWATCH_OVERVIEW_PAGE_SIZE", PAGE_SIZE))


@dataclass(frozen=True)
class Filters:
    """What the visitor asked for: status, protocol, tag, location, free text and sort; unknown values are dropped."""

    status: str = ""
    protocol: str = ""
    tag: str = ""
    location: str = ""
    q: str = ""
    exposure: str = ""  # "version" or "plaintext": services whose last probes revealed a version, or a plaintext login
    sort: str = DEFAULT_SORT

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        def text(name: str) -> str:
            return (query.get(name) or "").strip()[:MAX_FILTER_LENGTH]

        status, protocol, sort, exposure = text("status"), text("protocol"), text("sort"), text("exposure")
        return cls(
            status=status if status in RANK else "",
            protocol=protocol if protocol in PROTOCOLS else "",
            tag=text("tag").lower(),  # tags and locations are stored lowercase
            location=text("location").lower(),
            q=text("q"),
            exposure=exposure if exposure in exposure_report.KINDS else "",
            sort=sort if sort.removeprefix("-") in SORTS else DEFAULT_SORT,
        )

    @property
    def default_sort(self) -> bool:
        return self.sort == DEFAULT_SORT

    @property
    def active(self) -> bool:
        """Return whether anything narrows the list (sorting does not)."""
        return bool(self.status or self.protocol or self.tag or self.location or self.q or self.exposure)


# --- SQL: per-service values from the ServiceSummary rows ----------------------------------------


def _worst() -> Coalesce:
    """Return the service's worst rank: its summary's; without states yet, unknown (paused if disabled)."""
    no_state = Case(When(enabled=True, then=Value(RANK["unknown"])), default=Value(RANK[PAUSED]))
    return Coalesce(F("summary__severity"), no_state, output_field=IntegerField())


# Sort keys read from the summary (one narrow row per service, indexed on each); a service without
# the value (no TLS, never checked) sorts last either way.
SUMMARY_SORTS = {
    "latency": lambda: F("summary__latency"),
    "cert": lambda: F("summary__cert_days"),
    "last_check": lambda: F("summary__last_checked_at"),
    "since": lambda: Coalesce(F("summary__since"), F("created")),
}


def _listed(name: str, value: str) -> Q:
    """Match `value` as one item of a comma-separated field, not as a substring of another item."""
    return (
        Q(**{name: value})
        | Q(**{f"{name}__startswith": f"{value},"})
        | Q(**{f"{name}__endswith": f",{value}"})
        | Q(**{f"{name}__contains": f",{value},"})
    )


def _with_status(status: str) -> Q:
    """Match services whose worst status is `status`: their summary's, or none yet when unknown or paused."""
    matched = Q(summary__status=status)
    if status in ("unknown", PAUSED):  # a service without any state yet is unknown, or paused when disabled
        matched |= Q(summary__isnull=True, enabled=status != PAUSED)
    return matched


def services(filters: Filters) -> QuerySet[Service]:
    """Return the services matching `filters` in their order, each annotated with `worst` (a rank)."""
    return _sorted(matching(filters), filters.sort)


def matching(filters: Filters) -> QuerySet[Service]:
    """Return the services matching `filters`, unsorted and without annotations: what to count them on."""
    found = Service.objects.only(*ROW_FIELDS)
    if filters.status:
        found = found.filter(_with_status(filters.status))
    if filters.protocol:
        found = found.filter(protocol=filters.protocol)
    if filters.tag:
        found = found.filter(_listed("tags", filters.tag))
    if filters.location:
        where = _listed("locations", filters.location)
        found = found.filter(where | Q(locations="") if filters.location == DEFAULT_LOCATION else where)
    if filters.q:
        found = found.filter(Q(name__icontains=filters.q) | Q(host__icontains=filters.q))
    if filters.exposure:  # the flags the state writer keeps in the summaries: a join, no query of its own
        found = found.filter(**{f"summary__{exposure_report.SUMMARY_FLAGS[filters.exposure]}": True})
    return found


def _sorted(found: QuerySet[Service], sort: str) -> QuerySet[Service]:
    """Return `found` annotated with `worst` and ordered by `sort` (then by name)."""
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    found = found.select_related("summary").only(*ROW_FIELDS, *SUMMARY_FIELDS).annotate(worst=_worst())
    if key == "name":
        return found.order_by(F("name").desc() if descending else F("name").asc())
    if key == "status":  # "status" lists the worst first
        return found.order_by(F("worst").asc() if descending else F("worst").desc(), "name")
    expression = SUMMARY_SORTS[key]()
    ordered = expression.desc(nulls_last=True) if descending else expression.asc(nulls_last=True)
    return found.order_by(ordered, "name")


def exposure_counts() -> dict[str, int]:
    """Return {"version": services revealing a version, "plaintext": services offering plaintext login}.

    One query on the summaries' flags, which the state writer keeps: no state is assessed here.
    """
    return exposure_report.counts()


def summary() -> dict[str, int]:
    """Return {status: number of services} over the whole fleet, in one query on narrow rows.

    Each service's status is its summary's, or for one without any state yet unknown (paused when
    disabled): the services left-joined to their summaries and grouped.
    """
    no_state = Case(When(enabled=True, then=Value("unknown")), default=Value(PAUSED))
    counted = dict(
        Service.objects.order_by()
        .annotate(status=Coalesce(F("summary__status"), no_state))
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    return {status: counted.get(status, 0) for status in STATUSES}


# --- The page: states, uptimes and sparklines of its services only --------------------------------


@dataclass(frozen=True)
class Spark:
    """A sparkline's polyline points (in a SPARK_WIDTH x SPARK_HEIGHT box) and what it shows, in words."""

    points: str
    title: str


@dataclass
class Row:
    service: Service
    status: str
    address: str  # host:port
    since: dt.datetime | None = None
    reason: str = ""  # the worst location's last reason, when it is not up
    locations: list[tuple[str, str]] = field(default_factory=list)  # (location, status)
    latency: float | None = None  # seconds
    spark: Spark | None = None
    uptimes: list[Uptime] = field(default_factory=list)  # over WINDOWS: 24 h, 7 d, 30 d
    uptimes_as_of: dt.datetime | None = None  # when they were computed: snapshots are up to a few minutes old
    cert_days: float | None = None
    last_checked_at: dt.datetime | None = None
    maintenance: tuple[MaintenanceWindow, dt.datetime] | None = None  # the window holding it, and its end

    @property
    def cert_soon(self) -> bool:
        return self.cert_days is not None and self.cert_days < CERT_WARN_DAYS

    @property
    def missed(self) -> int:
        """Return the slots of the last 24 h that measured nothing."""
        return self.uptimes[0].unknown if self.uptimes else 0


def rows(page: Sequence[Service], now: dt.datetime) -> list[Row]:
    """Return the rows of the page's services (from `services()`): four to seven queries whatever their number."""
    if not page:
        return []
    ids = [service.id for service in page]
    statuses: dict[int, dict[str, str]] = defaultdict(dict)
    for service_id, location, status in ServiceState.objects.filter(service_id__in=ids).values_list(
        "service_id", "location", "status"
    ):
        statuses[service_id][location] = status
    pairs = [(service.id, location) for service in page for location in service.location_list]
    counted, as_of = recent_uptimes(pairs, now)
    sparks = _sparks(ids, now)
    held = in_maintenance(now, among=ids)
    result = []
    for service in page:
        row = _row(service, statuses[service.id], sparks.get(service.id))
        row.maintenance = held.get(service.id)
        row.uptimes_as_of = as_of
        row.uptimes = [
            sum(
                (counted.get((service.id, location), {}).get(window, Uptime()) for location in service.location_list),
                Uptime(),
            )
            for window in WINDOWS
        ]
        result.append(row)
    return result


def _row(service: Service, statuses: dict[str, str], spark: Spark | None) -> Row:
    """Return a service's row from its summary (`ServiceSummary`) and its locations' statuses."""
    row = Row(service, RANKED[service.worst], _address(service), spark=spark)
    default = "unknown" if service.enabled else PAUSED
    row.locations = [(location, statuses.get(location, default)) for location in service.location_list]
    summary = _summary_of(service)
    if summary is None:
        row.since = service.created
        return row
    row.since, row.reason, row.last_checked_at = summary.since, summary.reason, summary.last_checked_at
    row.latency, row.cert_days = summary.latency, summary.cert_days
    return row


def _summary_of(service: Service) -> ServiceSummary | None:
    try:
        return service.summary
    except ServiceSummary.DoesNotExist:  # no state yet
        return None


def _address(service: Service) -> str:
    host = f"[{service.host}]" if ":" in service.host else service.host
    try:
        return f"{host}:{service.effective_port()}"
    except ValueError:  # no port and no standard one: validation prevents it, old rows may not
        return host


def _sparks(ids: list[int], now: dt.datetime) -> dict[int, Spark]:
    """Return each service's 24 h sparkline: hourly average total latency, over its locations (one query).

    The 24 hours are consecutive, so the UTC hour of day names each one: reading it as an integer
    instead of the `start` timestamp halves the time this takes (psycopg parses ~10 us per timestamp).
    """
    first = floor(now - DAY, HOUR) + HOUR
    hourly: dict[int, dict[int, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for service_id, hour, up, avg in (
        HourlyRollup.objects.filter(service_id__in=ids, start__gte=first, up_count__gt=0)
        .annotate(hour=ExtractHour("start", tzinfo=dt.UTC), avg=Cast(KT("latency__total__avg"), FloatField()))
        .values_list("service_id", "hour", "up_count", "avg")
    ):
        if avg is not None:
            hourly[service_id][(hour - first.hour) % 24].append((up, avg))
    return {service_id: _spark(hours) for service_id, hours in hourly.items()}


def _spark(hours: dict[int, list[tuple[int, float]]]) -> Spark:
    """Return a sparkline over 24 hourly slots; each hour's locations weighted by their good probes."""
    values = {slot: sum(up * avg for up, avg in parts) / sum(up for up, _ in parts) for slot, parts in hours.items()}
    low, high = min(values.values()), max(values.values())
    points = []
    for slot in sorted(values):
        x = 1 + slot * (SPARK_WIDTH - 2) / 23
        share = (values[slot] - low) / (high - low) if high > low else 0.5
        points.append(f"{x:.1f},{SPARK_HEIGHT - 1 - share * (SPARK_HEIGHT - 2):.1f}")
    if len(points) == 1:  # one point draws nothing: make it a short flat line
        x, y = points[0].split(",")
        points.append(f"{float(x) + 3:.1f},{y}")
    title = f"Latency over the last 24 h, hourly average: {ms(low)} to {ms(high)}"
    return Spark(" ".join(points), title)


def broken_channels(now: dt.datetime) -> list[tuple[int, str, str]]:
    """Return (id, name, why) of each enabled channel that is broken: alerts may not be reaching anyone."""
    health = channel_health(now)
    enabled = Channel.objects.filter(enabled=True).order_by("name").values_list("id", "name")  # no secret read
    return [(pk, name, health[pk].why) for pk, name in enabled if pk in health and health[pk].broken]
