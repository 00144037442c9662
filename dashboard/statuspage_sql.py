"""The status page's day history in one SQL query: the worst of each component's parts per UTC day.

Exposes `component_days(page_id, ...) -> {component id: ({date: DayRow}, uptime_90d)}`; the arithmetic
is `dashboard/statuspage.py`'s docstring, 1-3, done in the database so one row per (component, day)
comes back instead of one per (service, location, day): 328,000 daily rollups made the page take 15 s.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from django.db import connection

from dashboard.models import StatusComponent
from monitor.models import DailyRollup, HourlyRollup, ProbeResult, Service
from monitor.stats import OK_STATUSES, UNKNOWN

DAY_MINUTES = 1440
# From this many services on, the rollups and raw results are scanned by time alone and joined to the
# members after: probing the indexes once per service for 9,855 services touched 7.5 GB of buffers
# and took 6-9 s on the benchmark, the scan by time 2 s. PostgreSQL cannot tell from the members CTE
# (it guesses 51 rows), so the caller, who knows the count, chooses.
SCAN_BY_TIME = 1000
MEMBERS_ONLY = " AND service_id IN (SELECT service_id FROM members)"
COMPONENT, SERVICE = StatusComponent._meta.db_table, Service._meta.db_table
DAILY, HOURLY, RAW = DailyRollup._meta.db_table, HourlyRollup._meta.db_table, ProbeResult._meta.db_table


class DayRow(NamedTuple):
    """A component's day: its parts' most down and not-measured minutes and lowest uptime (None: none measured)."""

    down_minutes: float | None
    uptime: float | None
    unmeasured_minutes: float


# 1. members: (component, service) pairs; a tag matches whole tags only ("mail" is not "mailweb"),
#    and '_' in a tag is a LIKE wildcard, so it is escaped.
# 2. recent: yesterday's and today's hourly rollups and the raw results after them, keyed by their UTC day.
# 3. pair_days: a count per (service, location, day); a written daily rollup wins over the recent rows.
# 4. scored: each pair's day as down minutes and uptime, and its window total for the 90-day uptime.
# 5. One row per (component, day): the worst of its pairs, capped at a whole day.
# `members_only` limits the scans to the members' rows, or is empty for a page of many services (see SCAN_BY_TIME).
TEMPLATE = f"""
WITH members AS (
    SELECT c.id AS component_id, s.id AS service_id
    FROM {COMPONENT} c JOIN {SERVICE} s ON s.id = c.service_id
    WHERE c.page_id = %(page)s
    UNION ALL
    SELECT c.id, s.id
    FROM {COMPONENT} c JOIN {SERVICE} s
        ON (',' || s.tags || ',') LIKE '%%,' || REPLACE(c.tag, '_', '!_') || ',%%' ESCAPE '!'
    WHERE c.page_id = %(page)s AND c.service_id IS NULL AND c.tag <> ''
),
recent AS (
    SELECT service_id, location, CASE WHEN start >= %(today)s THEN %(today)s ELSE %(yesterday)s END AS day,
        count AS n, up_count AS up, unknown_count AS unknown
    FROM {HOURLY}
    WHERE start >= %(yesterday)s{{members_only}}
    UNION ALL
    SELECT service_id, location, CASE WHEN started_at >= %(today)s THEN %(today)s ELSE %(yesterday)s END,
        1, CASE WHEN status IN (%(ok)s, %(warning)s) THEN 1 ELSE 0 END, CASE WHEN status = %(unknown)s THEN 1 ELSE 0 END
    FROM {RAW}
    WHERE started_at >= %(raw_since)s AND started_at < %(now)s{{members_only}}
),
pair_days AS (
    SELECT service_id, location, start AS day, count AS n, up_count AS up, unknown_count AS unknown
    FROM {DAILY}
    WHERE start >= %(start)s AND start < %(today)s{{members_only}}
    UNION ALL
    SELECT summed.* FROM (
        SELECT service_id, location, day, SUM(n) AS n, SUM(up) AS up, SUM(unknown) AS unknown
        FROM recent GROUP BY service_id, location, day
    ) summed
    WHERE NOT EXISTS (
        SELECT 1 FROM {DAILY} d
        WHERE d.service_id = summed.service_id AND d.location = summed.location
            AND d.start = summed.day AND d.start < %(today)s
    )
),
scored AS (
    SELECT p.service_id, p.day,
        CASE WHEN p.n > p.unknown THEN (p.n - p.up - p.unknown) * (CAST(s.interval AS DOUBLE PRECISION) / 60) END
            AS down,
        CASE WHEN p.n > p.unknown THEN CAST(p.up AS DOUBLE PRECISION) / (p.n - p.unknown) END AS uptime,
        p.unknown * (CAST(s.interval AS DOUBLE PRECISION) / 60) AS unmeasured,
        SUM(p.n) OVER pair AS total, SUM(p.up) OVER pair AS total_up, SUM(p.unknown) OVER pair AS total_unknown
    FROM pair_days p JOIN {SERVICE} s ON s.id = p.service_id
    WINDOW pair AS (PARTITION BY p.service_id, p.location)
)
SELECT m.component_id, sc.day,
    MAX(CASE WHEN sc.down > {DAY_MINUTES} THEN {DAY_MINUTES} ELSE sc.down END),
    MIN(sc.uptime),
    MAX(CASE WHEN sc.unmeasured > {DAY_MINUTES} THEN {DAY_MINUTES} ELSE sc.unmeasured END),
    MIN(CASE WHEN sc.total > sc.total_unknown
        THEN CAST(sc.total_up AS DOUBLE PRECISION) / (sc.total - sc.total_unknown) END)
FROM scored sc JOIN members m ON m.service_id = sc.service_id
GROUP BY m.component_id, sc.day
"""
QUERIES = {
    False: TEMPLATE.replace("{members_only}", MEMBERS_ONLY),
    True: TEMPLATE.replace("{members_only}", ""),
}


def component_days(
    page_id: int,
    *,
    start: dt.datetime,
    yesterday: dt.datetime,
    today: dt.datetime,
    raw_since: dt.datetime,
    now: dt.datetime,
    services: int,
) -> dict[int, tuple[dict[dt.date, DayRow], float | None]]:
    """Return {component id: ({date: DayRow}, lowest 90-day uptime of its parts)}, in one query.

    Days from `start` to before `today` come from daily rollups; yesterday (until its daily rollup
    is written) and today from hourly rollups and the raw results from `raw_since` to `now`.
    `services` (how many the page covers) chooses how the rows are found, never which.
    """
    moments = {"start": start, "yesterday": yesterday, "today": today, "raw_since": raw_since, "now": now}
    params = {name: connection.ops.adapt_datetimefield_value(value) for name, value in moments.items()}
    params |= {"page": page_id, "ok": OK_STATUSES[0], "warning": OK_STATUSES[1], "unknown": UNKNOWN}
    result: dict[int, tuple[dict[dt.date, DayRow], float | None]] = {}
    with connection.cursor() as cursor:
        cursor.execute(QUERIES[services >= SCAN_BY_TIME], params)
        for component_id, day, down, uptime, unmeasured, uptime_90d in cursor.fetchall():
            days, lowest = result.get(component_id, ({}, None))
            days[_date(day)] = DayRow(down, uptime, float(unmeasured or 0.0))
            if uptime_90d is not None and (lowest is None or uptime_90d < lowest):
                lowest = uptime_90d
            result[component_id] = (days, lowest)
    return result


def _date(value: dt.datetime | str) -> dt.date:
    """Return the UTC date of a day's start: a datetime on PostgreSQL, text ("2026-11-09 00:00:00") on SQLite."""
    if isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    return value.astimezone(dt.UTC).date()
