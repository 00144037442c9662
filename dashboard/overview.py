"""What the Overview page reads: the fleet's counts by status, one filtered and sorted page of services, its rows.

Exposes `Filters` (parsed from the query string), `summary()` (whole fleet, one query),
`services(filters)` (a queryset: filtering, sorting and counting happen in SQL), `matching(filters)`
(the same, unsorted: what to count), `rows(services, now)` (the page's states, uptimes and
sparklines, a fixed number of queries), `page_size()`, `STATUSES`, `SORTS` and `DEFAULT_SORT`.

Decisions:

1. **One status per service.** A service probed from several locations has one ServiceState per
   location; its status is the worst of them (down > warning > unknown > up > paused), so it is
   paused only when every location is. A service with no state yet is unknown (paused when
   disabled). SQL ranks the states with a `Case` and takes their `Max`: grouped over the state
   table for the summary and the status filter (~7 ms at 10,000 services on PostgreSQL), and as
   a correlated subquery for the `worst` annotation, which PostgreSQL evaluates for the page's
   rows only unless the page is sorted by status.
2. **The other sort keys**, added only when sorting on them: latency is the slowest location's
   last total, the certificate the fewest days left of any location's chain, the last check the
   newest. Those three are aggregates over the states joined once and grouped by service (one
   scan of the state table and a hash join; `worst` then comes from the same join), where a
   correlated subquery per service was evaluated for all 10,000; "since" stays a subquery. Paused
   locations (removed ones keep their old state) count for neither latency nor certificate.
   `rows()` computes the same values in Python for the page alone. Sorting by name (the default)
   is the cheapest: the unique index on name.
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
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.fields.json import KT, KeyTextTransform
from django.db.models.functions import Cast, Coalesce, ExtractHour

from dashboard.severity import RANK, RANKED, rank
from dashboard.templatetags.portwatch import ms
from monitor.models import DEFAULT_LOCATION, HourlyRollup, Service, ServiceState
from monitor.probes import PROTOCOLS
from monitor.readers import WINDOWS, Uptime, uptimes
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
STATE_FIELDS = ("service_id", "location", "status", "since", "last_checked_at", "last_reason", "last_phases", "tls")


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
    sort: str = DEFAULT_SORT

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        def text(name: str) -> str:
            return (query.get(name) or "").strip()[:MAX_FILTER_LENGTH]

        status, protocol, sort = text("status"), text("protocol"), text("sort")
        return cls(
            status=status if status in RANK else "",
            protocol=protocol if protocol in PROTOCOLS else "",
            tag=text("tag").lower(),  # tags and locations are stored lowercase
            location=text("location").lower(),
            q=text("q"),
            sort=sort if sort.removeprefix("-") in SORTS else DEFAULT_SORT,
        )

    @property
    def default_sort(self) -> bool:
        return self.sort == DEFAULT_SORT

    @property
    def active(self) -> bool:
        """Return whether anything narrows the list (sorting does not)."""
        return bool(self.status or self.protocol or self.tag or self.location or self.q)


# --- SQL: per-service values from the ServiceState rows ------------------------------------------


def _rank(prefix: str = "") -> Case:
    return Case(
        *(When(**{f"{prefix}status": status}, then=Value(rank)) for status, rank in RANK.items()),
        default=Value(RANK["unknown"]),
        output_field=IntegerField(),
    )


def _of_service(aggregate, *, active_only: bool = False) -> Subquery:
    """Return `aggregate` over the outer service's states as a correlated subquery."""
    states = ServiceState.objects.filter(service_id=OuterRef("pk")).order_by()
    if active_only:
        states = states.exclude(status=PAUSED)
    return Subquery(states.values("service_id").annotate(value=aggregate).values("value"))


def _worst(*, joined: bool = False) -> Coalesce:
    """Return the service's worst rank: a correlated subquery, or over the joined states when the query groups them."""
    no_state = Case(When(enabled=True, then=Value(RANK["unknown"])), default=Value(RANK[PAUSED]))
    worst = Max(_rank("states__")) if joined else _of_service(Max(_rank()))
    return Coalesce(worst, no_state, output_field=IntegerField())


def _number(field_name: str, key: str) -> Cast:
    """Return the JSON field's `key` as a float (NULL when absent); `field_name` may go through a relation."""
    return Cast(KeyTextTransform(key, field_name), FloatField())


def _since() -> Coalesce:
    """When the worst location entered its status (the earliest, on a tie); a service without states: created."""
    worst_first = (
        ServiceState.objects.filter(service_id=OuterRef("pk")).annotate(rank=_rank()).order_by("-rank", "since")
    )
    return Coalesce(Subquery(worst_first.values("since")[:1]), F("created"))


# The sort keys read over the states joined once and grouped by service: PostgreSQL scans the
# state table once and hash-joins it, where a correlated subquery ran an index probe per service
# (10,000). Measured on a loaded machine the gain is small (the page query ~70 ms either way):
# most of it is reading the 21 MB state table, whose `details` and `tls` are stored inline.
# Each is an aggregate over the `states` relation; paused locations (removed ones keep their old
# state) count for neither latency nor certificate.
ACTIVE = ~Q(states__status=PAUSED)
JOINED_SORTS = {
    "latency": lambda: Max(_number("states__last_phases", "total"), filter=ACTIVE),
    "cert": lambda: Min(
        Coalesce(_number("states__tls", "chain_days_left"), _number("states__tls", "days_left")), filter=ACTIVE
    ),
    "last_check": lambda: Max("states__last_checked_at"),
}


def _listed(name: str, value: str) -> Q:
    """Match `value` as one item of a comma-separated field, not as a substring of another item."""
    return (
        Q(**{name: value})
        | Q(**{f"{name}__startswith": f"{value},"})
        | Q(**{f"{name}__endswith": f",{value}"})
        | Q(**{f"{name}__contains": f",{value},"})
    )


def _worst_per_service() -> QuerySet:
    """Return the state table grouped by service, with each service's `worst` rank."""
    return ServiceState.objects.order_by().values("service_id").annotate(worst=Max(_rank()))


def _with_status(status: str) -> Q:
    """Match services whose worst status is `status`: a semi-join on the state table grouped by service.

    At 10,000 services this costs a few ms, where filtering on the `worst` subquery evaluated it
    for every service (~35 ms on PostgreSQL), once for the count and again for the page.
    """
    matched = Q(pk__in=_worst_per_service().filter(worst=RANK[status]).values("service_id"))
    if status in ("unknown", PAUSED):  # a service without any state yet is unknown, or paused when disabled
        stateless = ~Q(pk__in=ServiceState.objects.values("service_id")) & Q(enabled=status != PAUSED)
        matched |= stateless
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
    return found


def _sorted(found: QuerySet[Service], sort: str) -> QuerySet[Service]:
    """Return `found` annotated with `worst` and ordered by `sort` (then by name)."""
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    if key in JOINED_SORTS:  # the aggregates join the states and group by service: take `worst` from them too
        found = found.annotate(worst=_worst(joined=True), sort_value=JOINED_SORTS[key]())
        expression = F("sort_value")
    else:
        found = found.annotate(worst=_worst())
        expression = _since() if key == "since" else None
    if key == "name":
        return found.order_by(F("name").desc() if descending else F("name").asc())
    if key == "status":  # "status" lists the worst first
        return found.order_by(F("worst").asc() if descending else F("worst").desc(), "name")
    # Services without the value (no TLS, never checked) come last either way.
    ordered = expression.desc(nulls_last=True) if descending else expression.asc(nulls_last=True)
    return found.order_by(ordered, "name")


def summary() -> dict[str, int]:
    """Return {status: number of services} over the whole fleet, in two queries.

    Grouping the state table by service and then by rank costs ~7 ms at 10,000 services on
    PostgreSQL, where a per-service subquery over the service table cost ~40 ms.
    """
    counted = _worst_per_service().aggregate(
        **{status: Count("service_id", filter=Q(worst=rank)) for status, rank in RANK.items()}
    )
    stateless = Service.objects.order_by().filter(~Q(pk__in=ServiceState.objects.values("service_id")))
    unstated = stateless.aggregate(
        unknown=Count("pk", filter=Q(enabled=True)), paused=Count("pk", filter=Q(enabled=False))
    )
    return {status: counted[status] + unstated.get(status, 0) for status in STATUSES}


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
    cert_days: float | None = None
    last_checked_at: dt.datetime | None = None

    @property
    def cert_soon(self) -> bool:
        return self.cert_days is not None and self.cert_days < CERT_WARN_DAYS

    @property
    def missed(self) -> int:
        """Return the slots of the last 24 h that measured nothing."""
        return self.uptimes[0].unknown if self.uptimes else 0


def rows(page: Sequence[Service], now: dt.datetime) -> list[Row]:
    """Return the rows of the page's services (annotated by `services()`): four to six queries whatever their number."""
    if not page:
        return []
    ids = [service.id for service in page]
    states: dict[int, list[ServiceState]] = defaultdict(list)
    for state in ServiceState.objects.filter(service_id__in=ids).only(*STATE_FIELDS):
        states[state.service_id].append(state)
    pairs = [(service.id, location) for service in page for location in service.location_list]
    counted = uptimes(pairs, WINDOWS, now)
    sparks = _sparks(ids, now)
    result = []
    for service in page:
        row = _row(service, states[service.id], sparks.get(service.id))
        row.uptimes = [
            sum(
                (counted.get((service.id, location), {}).get(window, Uptime()) for location in service.location_list),
                Uptime(),
            )
            for window in WINDOWS
        ]
        result.append(row)
    return result


def _row(service: Service, states: list[ServiceState], spark: Spark | None) -> Row:
    """Return a service's row from its states, computed as the SQL sort keys are."""
    row = Row(service, RANKED[service.worst], _address(service), spark=spark)
    by_location = {state.location: state for state in states}
    default = "unknown" if service.enabled else PAUSED
    row.locations = [
        (location, by_location[location].status if location in by_location else default)
        for location in service.location_list
    ]
    if states:
        worst = min(states, key=lambda state: (-rank(state.status), state.since))
        row.since = worst.since
        row.reason = "" if worst.status in ("up", PAUSED) else worst.last_reason
        checked = [state.last_checked_at for state in states if state.last_checked_at]
        row.last_checked_at = max(checked, default=None)
    else:
        row.since = service.created
    active = [state for state in states if state.status != PAUSED]
    totals = [_float((state.last_phases or {}).get("total")) for state in active]
    row.latency = max((total for total in totals if total is not None), default=None)
    days = [_cert_days(state.tls) for state in active]
    row.cert_days = min((left for left in days if left is not None), default=None)
    return row


def _address(service: Service) -> str:
    host = f"[{service.host}]" if ":" in service.host else service.host
    try:
        return f"{host}:{service.effective_port()}"
    except ValueError:  # no port and no standard one: validation prevents it, old rows may not
        return host


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cert_days(tls: dict | None) -> float | None:
    if not tls:
        return None
    chain = _float(tls.get("chain_days_left"))
    return chain if chain is not None else _float(tls.get("days_left"))


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
