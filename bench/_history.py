"""The fleet bench/dashboard.py measures pages against: services, their state, incidents and 30 days of history.

Exposes `plan(count, now, seed)` (which service is what: protocol, tags, locations, interval, fate,
certificate, outages), `fill(plans, now, url, say)`, which writes them to PostgreSQL, `status_page()`
(a public page of 50 components) and `moment()`; and `open_database()`, which points Django at a
benchmark's own database, made anew unless a completed fill can be reused. Raw results and the
older rollups go in through COPY in time order, as the daemon writes them; the last 24 hours are
rolled up by the daemon's own writer (`monitor.daemon.rollups.update_rollups`).
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as dt
import functools
import json
import operator
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAY, HOUR = 86400, 3600  # seconds: the filler counts in epoch seconds, which is much faster than datetimes
HISTORY_DAYS = 30
PROTOCOLS = (("smtp", 30), ("imap", 15), ("pop3", 5), ("http", 35), ("dns", 5), ("tcp", 10))
PREFIX = {"smtp": "mail", "imap": "imap", "pop3": "pop", "http": "web", "dns": "dns", "tcp": "tcp"}
TLS_MODES = {
    "smtp": (("starttls", 60), ("implicit", 15), ("none", 25)),
    "imap": (("implicit", 70), ("starttls", 20), ("none", 10)),
    "pop3": (("implicit", 60), ("starttls", 20), ("none", 20)),
    "http": (("implicit", 80), ("none", 20)),
    "dns": (("none", 1),),
    "tcp": (("implicit", 30), ("none", 70)),
}
TCP_PORTS = (22, 5432, 6379, 3306, 8883)  # TCP has no standard port: each service names one
LOCATIONS = ("eu-west", "us-east")  # the services probed from two places; the rest use the default one
TWO_LOCATIONS, SLOW, PAUSED, NEW = 0.10, 0.15, 0.015, 0.005  # shares of services
WARNING, DOWN, MISSED = 0.01, 0.02, 0.0005  # warning: of services; down: of (service, location); missed: of slots
CLOSED_INCIDENTS = 0.03  # per service over the 30 days: 300 at 10,000 services
PHASES = ("resolve", "connect", "tls", "processing", "transfer", "total")
FAILURES = {  # failure kind -> reason, as the probes word them; {host} and {port} filled in
    "timeout": "timed out after 10 s waiting for the greeting",
    "refused": "connection refused by {address}:{port}",
    "dns_resolution": "{host} does not resolve: NXDOMAIN",
    "server_rejected": "554 5.7.1 {host} service unavailable",
    "http_status": "HTTP 503 Service Unavailable, expected 2xx",
    "tls_expired": "certificate expired 3.2 days ago (CN={host})",
}
BANNERS = {
    "smtp": "220 {host} ESMTP Postfix (Debian/GNU)",
    "imap": "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.",
    "pop3": "+OK Dovecot (Debian) ready.",
    "tcp": "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
}
RAW_COLUMNS = (
    "service_id, location, scheduled_at, started_at, status, failure, reason, resolve, connect, tls, processing, "
    "transfer, total, address, tls_version, tls_days_left, tls_fingerprint, banner"
)
ROLLUP_COLUMNS = "service_id, location, start, count, up_count, unknown_count, latency"


@dataclasses.dataclass
class Pair:
    """One (service, location): where its slots fall, how fast it answers, and its outages [start, end or None)."""

    location: str
    offset: int  # seconds into the interval of its slots
    phases: tuple[float, ...]  # typical resolve, connect, tls, processing, transfer
    outages: list[tuple[int, int | None, str]] = dataclasses.field(default_factory=list)  # start, end, failure


@dataclasses.dataclass
class Plan:
    """One service as the filler will write it; `fate` is ok, warning, paused or new (never probed yet)."""

    index: int
    name: str
    host: str
    port: int | None
    protocol: str
    tls_mode: str
    tags: str
    interval: int
    fate: str
    days_left: float | None  # of its certificate, now; None without TLS
    paused_at: int | None
    pairs: list[Pair]
    options: dict = dataclasses.field(default_factory=dict)
    id: int = 0

    @property
    def locations(self) -> str:
        return ",".join(pair.location for pair in self.pairs) if len(self.pairs) > 1 else ""

    @property
    def port_number(self) -> int:
        from monitor.probes import standard_port

        return self.port or standard_port(self.protocol, self.tls_mode) or 0

    @property
    def address(self) -> str:
        return f"198.51.100.{self.index % 254 + 1}"

    def failure_reason(self, failure: str, port: int) -> str:
        return FAILURES[failure].format(host=self.host, address=self.address, port=port)


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([key for key, _ in weighted], [weight for _, weight in weighted])[0]


def plan(count: int, now: int, seed: int = 7) -> list[Plan]:
    """Return `count` services: a realistic mix of protocols, tags, locations, intervals and fates, with outages."""
    rng = random.Random(seed)
    plans = [_service(rng, index, now) for index in range(count)]
    active = [(p, pair) for p in plans if p.fate in ("ok", "warning") for pair in p.pairs]
    for p, pair in rng.sample(active, max(1, round(len(active) * DOWN))):
        start = now - int(300 * (36 * 12) ** rng.random())  # log-uniform: 5 minutes to 36 hours ago
        pair.outages.append((start, None, _failure(rng, p)))
    for _ in range(max(1, round(count * CLOSED_INCIDENTS))):
        p, pair = rng.choice(active)
        start = now - rng.randrange(HOUR, HISTORY_DAYS * DAY)
        end = min(start + int(120 * 180 ** rng.random()), now - 600)  # 2 minutes to 6 hours
        if all(end < a or (b is not None and start > b) for a, b, _ in pair.outages):
            pair.outages.append((start, end, _failure(rng, p)))
    for p in plans:
        for pair in p.pairs:
            pair.outages.sort()
    return plans


def _service(rng: random.Random, index: int, now: int) -> Plan:
    protocol = _pick(rng, PROTOCOLS)
    tls_mode = _pick(rng, TLS_MODES[protocol])
    region = rng.choice(("eu", "us"))
    host = f"{PREFIX[protocol]}{index}.{region}.example.net"
    role = {"smtp": "mail", "imap": "mail", "pop3": "mail", "http": "web", "dns": "dns", "tcp": "internal"}[protocol]
    tags = [role, rng.choices(("prod", "staging"), (7, 3))[0], region]
    if rng.random() < 0.2:
        tags.append(rng.choice(("customer", "edge", "billing", "legacy")))
    draw = rng.random()
    fate = "paused" if draw < PAUSED else "new" if draw < PAUSED + NEW else "ok"
    if fate == "ok" and tls_mode != "none" and rng.random() < WARNING / 0.6:  # about 60 % speak TLS
        fate = "warning"
    days_left = None
    if tls_mode != "none":
        days_left = rng.uniform(1, 13.5) if fate == "warning" else rng.uniform(15, 89)
    locations = LOCATIONS if rng.random() < TWO_LOCATIONS else ("default",)
    interval = 300 if rng.random() < SLOW else 60
    options: dict = {}
    if protocol == "dns":
        options = {"query_name": "example.net", "record_type": rng.choice(("A", "MX", "TXT"))}
    elif protocol == "tcp":
        options = {"read_banner": True}
    elif protocol == "http" and rng.random() < 0.3:
        options = {"path": "/health", "keyword": "ok"}
    pairs = [
        Pair(location, rng.randrange(interval), _phases(rng, protocol, tls_mode, location)) for location in locations
    ]
    return Plan(
        index=index,
        name=f"{PREFIX[protocol]}-{index}",
        host=host,
        port=rng.choice(TCP_PORTS) if protocol == "tcp" else None,
        protocol=protocol,
        tls_mode=tls_mode,
        tags=",".join(dict.fromkeys(tags)),
        interval=interval,
        fate=fate,
        days_left=days_left,
        paused_at=now - rng.randrange(2 * DAY, 10 * DAY) if fate == "paused" else None,
        pairs=pairs,
        options=options,
    )


def _phases(rng: random.Random, protocol: str, tls_mode: str, location: str) -> tuple[float, ...]:
    far = 0.08 if location == "us-east" else 0.0  # the other side of the Atlantic
    connect = rng.uniform(0.002, 0.04) + far
    tls = connect * 2 + rng.uniform(0.005, 0.02) if tls_mode != "none" else 0.0
    processing = {"smtp": 0.15, "imap": 0.02, "pop3": 0.02, "http": 0.08, "dns": 0.0, "tcp": 0.01}[protocol]
    transfer = {"smtp": 0.05, "imap": 0.01, "pop3": 0.01, "http": 0.02, "dns": 0.0, "tcp": 0.0}[protocol]
    if protocol == "dns":
        connect, processing = 0.0, rng.uniform(0.005, 0.05) + far
    return (rng.uniform(0.0005, 0.03), connect, tls, processing * rng.uniform(0.3, 2), transfer * rng.uniform(0.3, 2))


def _failure(rng: random.Random, p: Plan) -> str:
    kinds = ["timeout", "refused", "dns_resolution"]
    kinds += {"smtp": ["server_rejected"], "http": ["http_status", "http_status"]}.get(p.protocol, [])
    if p.tls_mode != "none":
        kinds.append("tls_expired")
    return rng.choice(kinds)


# --- rows ---------------------------------------------------------------------------------------


def stamp(epoch: float) -> str:
    """Return a timestamptz literal for COPY."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def down_at(pair: Pair, moment: int) -> str | None:
    """Return the failure kind when `moment` falls in one of the pair's outages, else None."""
    for start, end, failure in pair.outages:
        if start <= moment and (end is None or moment < end):
            return failure
    return None


def raw_rows(p: Plan, pair: Pair, start: int, end: int, now: int, rng: random.Random) -> list[tuple[int, str]]:
    """Return (slot, COPY line) of the pair's raw results for its slots in [start, end), as the daemon stores them.

    Built from string pieces, not datetimes: 14 million rows at 10,000 services.
    """
    head = f"{p.id}\t{pair.location}\t"
    tls_v = "TLSv1.3" if p.days_left is not None else ""
    fingerprint = f"{p.index:064x}" if p.days_left is not None else ""
    banner = BANNERS.get(p.protocol, "").format(host=p.host)
    up_tail = f"\t{p.address}\t{tls_v}\t%s\t{fingerprint}\t{banner}\n"
    status = "warning" if p.fate == "warning" else "up"
    up_reason = f"certificate expires in {p.days_left:.1f} days" if p.fate == "warning" else "ok"
    resolve, connect, tls, processing, transfer = pair.phases
    random_ = rng.random
    rows = []
    for slot in range(start + (pair.offset - start) % p.interval, end, p.interval):
        prefix = _minute(slot - slot % 60)
        late = int(random_() * 400)  # ms between the slot and the probe's start
        times = f"{prefix}{slot % 60:02d}+00\t{prefix}{slot % 60:02d}.{late:03d}+00\t"
        failure = down_at(pair, slot) if pair.outages else None
        if failure is not None:
            total = 10.0 if failure == "timeout" else connect + resolve
            reason = p.failure_reason(failure, p.port_number)
            line = f"{head}{times}down\t{failure}\t{reason}\t{resolve:.6f}\t{connect:.6f}\t0\t0\t0\t{total:.6f}"
            line += f"\t{p.address}\t\t\\N\t\t\n"
        elif random_() < MISSED:
            reason = f"not probed: no worker is serving location {pair.location!r}"
            line = f"{head}{times}unknown\tmissed\t{reason}\t0\t0\t0\t0\t0\t0\t\t\t\\N\t\t\n"
        else:
            net, server = 0.7 + 0.6 * random_(), 0.5 + random_()
            if random_() < 0.01:
                net *= 6  # a slow moment
            r, c, t, s, x = resolve * net, connect * net, tls * net, processing * server, transfer * server
            days = "\\N" if p.days_left is None else f"{p.days_left + (now - slot) / DAY:.3f}"
            line = (
                f"{head}{times}{status}\t\t{up_reason}\t{r:.6f}\t{c:.6f}\t{t:.6f}\t{s:.6f}\t{x:.6f}\t"
                f"{r + c + t + s + x:.6f}" + up_tail % days
            )
        rows.append((slot * 1000 + late, line))
    return rows


@functools.cache
def _minute(epoch: int) -> str:
    return stamp(epoch)[:17]  # "2026-11-28 10:05:"


def raw_chunks(plans: list[Plan], start: int, now: int, rng: random.Random) -> Iterator[list[str]]:
    """Yield the raw results of [start, now) ten minutes at a time, each chunk in start order.

    The daemon records results as probes finish, so a service's rows are spread over the whole
    table; written pair by pair instead, they would sit together and make reading one service's
    history look cheaper than it is.
    """
    probed = [p for p in plans if p.fate != "new"]  # a new service has no result yet
    for chunk in range(start, now, 600):
        rows = [
            row
            for p in probed
            for pair in p.pairs
            for row in raw_rows(p, pair, chunk, min(chunk + 600, now, p.paused_at or now), now, rng)
        ]
        rows.sort(key=operator.itemgetter(0))
        yield [line for _, line in rows]


def latency_variants(pair: Pair, rng: random.Random, count: int = 6) -> list[str]:
    """Return `count` rollup latency JSON texts {phase: {min, avg, max, p95}} around the pair's typical phases."""
    variants = []
    for _ in range(count):
        factor = rng.uniform(0.85, 1.25)
        values = [value * factor for value in pair.phases]
        values.append(sum(values))
        variants.append(
            json.dumps(
                {
                    phase: {"min": v * 0.6, "avg": v, "max": v * 4, "p95": v * 1.9}
                    for phase, v in zip(PHASES, values, strict=True)
                }
            )
        )
    return variants


def rollup_chunks(plans: list[Plan], first: int, last: int, daily: list[str], rng: random.Random):
    """Yield hourly rollup COPY lines of [first, last) hour by hour (every pair, as the daemon writes an hour).

    Daily rollups of each whole day go to `daily`, day by day, as the daemon writes them.
    """
    pairs = [
        (p, pair, f"{p.id}\t{pair.location}\t", latency_variants(pair, rng), HOUR // p.interval)
        for p in plans
        if p.fate != "new"
        for pair in p.pairs
    ]
    days: dict[int, list[int]] = {}
    for hour in range(first, last, HOUR):
        lines, moment = [], stamp(hour)
        for index, (p, pair, head, variants, per_hour) in enumerate(pairs):
            if p.paused_at is not None and hour >= p.paused_at - p.paused_at % HOUR:
                continue
            down = 0
            for start, stop, _ in pair.outages:
                overlap = min(hour + HOUR, stop or last) - max(hour, start)
                if overlap > 0:
                    down += min(per_hour, -(-overlap // p.interval))
            unknown = 1 if rng.random() < 0.003 and down < per_hour else 0
            up = per_hour - down - unknown
            lines.append(f"{head}{moment}\t{per_hour}\t{up}\t{unknown}\t{rng.choice(variants) if up else '{}'}\n")
            day = days.setdefault(index, [0, 0, 0])
            day[0], day[1], day[2] = day[0] + per_hour, day[1] + up, day[2] + unknown
        yield lines
        if (hour + HOUR) % DAY == 0:
            moment = stamp(hour + HOUR - DAY)
            for index, (count, up, unknown) in sorted(days.items()):
                p, pair, head, variants, _ = pairs[index]
                daily.append(f"{head}{moment}\t{count}\t{up}\t{unknown}\t{rng.choice(variants) if up else '{}'}\n")
            days = {}


def now_epoch() -> int:
    return int(time.time())


# --- writing ------------------------------------------------------------------------------------


def last_slot(p: Plan, pair: Pair, before: int) -> int:
    """Return the pair's last slot before `before`."""
    return before - 1 - (before - 1 - pair.offset) % p.interval


def details(p: Plan) -> dict:
    """Return the protocol details the probe of `p` reports, as the state stores them."""
    if p.protocol == "smtp":
        extensions = {"PIPELINING": "", "SIZE": "52428800", "ENHANCEDSTATUSCODES": "", "8BITMIME": "", "DSN": ""}
        if p.tls_mode == "starttls":
            return {"extensions": extensions | {"STARTTLS": ""}, "extensions_after_tls": extensions | {"AUTH": "PLAIN"}}
        return {"extensions": extensions}
    if p.protocol in ("imap", "pop3"):
        capabilities = ["IMAP4rev1", "SASL-IR", "ID", "ENABLE", "IDLE", "LITERAL+"]
        if p.protocol == "pop3":
            capabilities = ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "SASL PLAIN"]
        if p.tls_mode == "starttls":
            return {"capabilities": [*capabilities, "STLS" if p.protocol == "pop3" else "STARTTLS"]} | {
                "capabilities_after_tls": capabilities
            }
        return {"capabilities": capabilities}
    if p.protocol == "http":
        scheme = "https" if p.tls_mode == "implicit" else "http"
        url = f"{scheme}://{p.host}{p.options.get('path', '/')}"
        return {"hops": [{"url": url, "status": 200, "address": p.address}], "body_bytes": 5120 + p.index % 900}
    if p.protocol == "dns":
        record = p.options.get("record_type", "A")
        answer = {"A": "192.0.2.1", "MX": "10 mail.example.net.", "TXT": '"v=spf1 -all"'}[record]
        return {
            "query": f"example.net. {record}",
            "transport": "udp",
            "rcode": "NOERROR",
            "flags": "QR RD RA",
            "answers": [f"example.net. 300 IN {record} {answer}"],
        }
    return {}


def tls_facts(p: Plan, expired: bool, now: int) -> dict | None:
    """Return the state's TLS facts (`TLSFacts.to_dict()`), or None for a service without TLS."""
    from monitor.probes import TLSFacts

    if p.days_left is None:
        return None
    days_left = -3.2 if expired else p.days_left
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    not_after = moment + dt.timedelta(days=days_left)
    return TLSFacts(
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        server_name=p.host,
        subject=f"CN={p.host}",
        issuer="CN=R11,O=Let's Encrypt,C=US" if p.index % 3 else "CN=Example Corp Issuing CA 2",
        sans=(p.host, f"*.{p.host.split('.', 1)[1]}"),
        not_before=not_after - dt.timedelta(days=90),
        not_after=not_after,
        days_left=days_left,
        earliest_expiry=not_after,
        fingerprint_sha256=f"{p.index:064x}",
        verified=not expired,
        verify_error="certificate has expired" if expired else None,
        chain_expiry=not_after,
        chain_expiry_subject=f"CN={p.host}",
        chain_expiry_role="leaf",
    ).to_dict()


def fill(plans: list[Plan], now: int, url: str, say) -> None:
    """Write `plans` with their state, incidents and history; Django must be set up on the database at `url`.

    1. Services (back-dated 40 days, except new ones), incidents and their status changes, through the ORM.
    2. Raw results of the last 24 h, through COPY: one row per slot of each (service, location).
    3. Hourly and daily rollups of the 29 days before, through COPY.
    4. Rollups of the last 24 h by the daemon's writer, from the raw results, as the daemon would.
    5. States pointing at their last result, schedules and worker heartbeats; then VACUUM ANALYZE.
    """
    import psycopg

    raw_start = now - now % HOUR - DAY
    first = raw_start - raw_start % DAY - (HISTORY_DAYS - 1) * DAY
    _services(plans, now)
    incidents = _incidents(plans)
    say(f"services, {len(incidents)} incidents")
    with psycopg.connect(url) as connection:
        connection.execute("SET session_replication_role = replica")  # skip FK triggers: our ids are real
        connection.execute("SET synchronous_commit = off")
        rng = random.Random(11)
        raw = raw_chunks(plans, raw_start, now, rng)
        say(f"{_copy(connection, 'monitor_proberesult', RAW_COLUMNS, raw):,} raw results")
        daily: list[str] = []
        _copy(connection, "monitor_hourlyrollup", ROLLUP_COLUMNS, rollup_chunks(plans, first, raw_start, daily, rng))
        _copy(connection, "monitor_dailyrollup", ROLLUP_COLUMNS, iter([daily]))
        say("rollups of the 29 days before")
    _roll_up(now)
    say("rollups of the last 24 h (the daemon's writer)")
    _states(plans, incidents, now)
    _schedules(plans, now)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    say("states, schedules, VACUUM ANALYZE")


def _copy(connection, table: str, columns: str, chunks: Iterator[list[str]]) -> int:
    """COPY the lines of `chunks` into `table`, committing every ~250,000 rows; return how many.

    The queued writer sends data from a thread of its own, so PostgreSQL takes in one chunk while
    Python formats the next: the two cores work at once.
    """
    from psycopg.copy import QueuedLibpqWriter

    total, chunks = 0, iter(chunks)
    while True:
        written = 0
        with connection.cursor() as cursor:
            sql = f"COPY {table} ({columns}) FROM STDIN"
            with cursor.copy(sql, writer=QueuedLibpqWriter(cursor)) as copy:
                for lines in chunks:
                    copy.write("".join(lines))
                    written += len(lines)
                    if written >= 250_000:
                        break
        connection.commit()
        total += written
        if written < 250_000:
            return total


def _services(plans: list[Plan], now: int) -> None:
    from monitor.models import Service

    created = Service.objects.bulk_create(
        [
            Service(
                name=p.name,
                host=p.host,
                port=p.port,
                protocol=p.protocol,
                tls_mode=p.tls_mode,
                interval=p.interval,
                timeout=10.0,
                enabled=p.fate != "paused",
                tags=p.tags,
                options=p.options,
                locations=p.locations,
            )
            for p in plans
        ],
        batch_size=1000,
    )
    for p, service in zip(plans, created, strict=True):
        p.id = service.id
    old = dt.datetime.fromtimestamp(now - 40 * DAY, dt.UTC)
    Service.objects.exclude(id__in=[p.id for p in plans if p.fate == "new"]).update(created=old)
    recent = dt.datetime.fromtimestamp(now - 600, dt.UTC)
    Service.objects.filter(id__in=[p.id for p in plans if p.fate == "new"]).update(created=recent)


def moment(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _incidents(plans: list[Plan]) -> dict[tuple[int, str, int], int]:
    """Create an incident per outage, with its status changes; return {(service id, location, start): incident id}."""
    from monitor.models import Incident, StatusChange

    keys, rows = [], []
    for p in plans:
        port = p.port_number
        for pair in p.pairs:
            for start, end, failure in pair.outages:
                keys.append((p.id, pair.location, start, end, failure))
                rows.append(
                    Incident(
                        service_id=p.id,
                        location=pair.location,
                        started_at=moment(start),
                        ended_at=None if end is None else moment(end),
                        failure=failure,
                        reason=p.failure_reason(failure, port),
                    )
                )
    saved = Incident.objects.bulk_create(rows, batch_size=1000)
    changes = []
    for (service_id, location, start, end, failure), incident in zip(keys, saved, strict=True):
        down = moment(start + 60)  # the second failed probe confirms it (failure threshold 2)
        changes.append(
            StatusChange(
                service_id=service_id,
                location=location,
                created=down,
                old_status="up",
                new_status="down",
                failure=failure,
                reason=incident.reason,
                incident=incident,
                processed=down + dt.timedelta(seconds=2),
            )
        )
        if end is not None:
            changes.append(
                StatusChange(
                    service_id=service_id,
                    location=location,
                    created=moment(end),
                    old_status="down",
                    new_status="up",
                    reason="ok",
                    incident=incident,
                    processed=moment(end + 2),
                )
            )
    for p in plans:
        if p.paused_at is not None:
            for pair in p.pairs:
                reason = "monitoring stopped: service disabled"
                changes.append(
                    StatusChange(
                        service_id=p.id,
                        location=pair.location,
                        created=moment(p.paused_at),
                        old_status="up",
                        new_status="paused",
                        reason=reason,
                        processed=moment(p.paused_at + 2),
                    )
                )
    StatusChange.objects.bulk_create(changes, batch_size=1000)
    return {key[:3]: incident.id for key, incident in zip(keys, saved, strict=True)}


def _roll_up(now: int) -> None:
    from monitor.daemon.rollups import update_rollups

    while update_rollups(moment(now)):
        pass  # 24 hours a run: the last 24 h take two


def _state(p: Plan, pair: Pair, incidents: dict, now: int):
    from monitor.models import ServiceState

    state = ServiceState(service_id=p.id, location=pair.location, since=moment(now - 600))
    if p.fate == "new":
        return state  # never probed yet: unknown, nothing else
    when = p.paused_at or now
    last = last_slot(p, pair, when)
    failure = down_at(pair, last)
    net = list(pair.phases)
    state.last_phases = dict(zip(PHASES, [*net, sum(net)], strict=True))
    state.last_checked_at = moment(last)
    state.last_scheduled_at = moment(last)
    state.details = details(p)
    state.tls = tls_facts(p, failure == "tls_expired", when)
    opened = pair.outages[-1][0] if failure is not None else None
    recovered = max((end for _, end, _ in pair.outages if end is not None and end <= last), default=now - 40 * DAY)
    streak = opened if opened is not None else recovered
    slots = (last - streak) // p.interval + 1
    if p.fate == "paused":
        state.status, state.since, state.last_status = "paused", moment(p.paused_at), "up"
        return state
    if failure is not None:
        state.status, state.last_status, state.last_failure = "down", "down", failure
        state.last_reason = p.failure_reason(failure, p.port_number)
        state.since = moment(opened + p.interval)
        state.open_incident_id = incidents[(p.id, pair.location, opened)]
        state.consecutive_failures = slots
    else:
        state.status = state.last_status = "warning" if p.fate == "warning" else "up"
        state.since = moment(recovered)
        state.last_failure = "tls_expiring" if p.fate == "warning" else ""
        state.last_reason = f"certificate expires in {p.days_left:.1f} days" if p.fate == "warning" else "ok"
        state.consecutive_successes = slots
    state.streak_since = moment(streak)
    return state


def _states(plans: list[Plan], incidents: dict, now: int) -> None:
    """Create each pair's state, point it at its newest raw result, and write the services' summaries.

    The daemon's state writer keeps `ServiceSummary` with the states; written here in bulk, they get
    theirs from the same function it calls.
    """
    from django.db import connection

    from monitor.daemon import summaries
    from monitor.models import ServiceState

    ServiceState.objects.bulk_create(
        [_state(p, pair, incidents, now) for p in plans for pair in p.pairs], batch_size=1000
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE monitor_servicestate AS s SET last_result_id = ("
            " SELECT r.id FROM monitor_proberesult AS r"
            " WHERE r.service_id = s.service_id AND r.location = s.location"
            " ORDER BY r.started_at DESC LIMIT 1)"
        )
    summaries.refresh()


def _schedules(plans: list[Plan], now: int) -> None:
    """Create the dispatcher's schedule rows of enabled services, and a worker heartbeat per location."""
    from monitor.models import Schedule, WorkerHeartbeat

    Schedule.objects.bulk_create(
        [
            Schedule(
                service_id=p.id,
                location=pair.location,
                due_at=moment(last_slot(p, pair, now) + p.interval),
                claimed_slot=moment(last_slot(p, pair, now)),
                active_since=moment(now - 40 * DAY),
            )
            for p in plans
            if p.fate != "paused"
            for pair in p.pairs
        ],
        batch_size=1000,
    )
    for number, location in enumerate(("default", *LOCATIONS)):
        WorkerHeartbeat.objects.update_or_create(
            name=f"worker-{number}.example.net:{4100 + number}",
            location=location,
            defaults={"started_at": moment(now - DAY), "last_seen": moment(now), "probes": 5_000_000},
        )


STATUS_GROUPS = ("Mail", "Web", "DNS", "Infrastructure")


def status_page(slug: str, tags: bool = True):
    """Return the public status page `slug`, created with 50 components if missing; None without the model yet.

    45 components name a service (spread over up, down and warning ones) and 5 a tag, which covers
    thousands of services at 10,000; without `tags`, 50 name a service.
    """
    from django.apps import apps

    from monitor.models import Service

    try:
        page_model = apps.get_model("dashboard", "StatusPage")
        component_model = apps.get_model("dashboard", "StatusComponent")
    except LookupError:
        return None
    page = page_model.objects.filter(slug=slug).first()
    if page is not None:
        return page
    page = page_model.objects.create(slug=slug, title="Example Corp status", public=True)
    rng = random.Random(3)
    chosen = []
    for status, share in (("up", 39 if tags else 44), ("down", 3), ("warning", 3)):
        ids = list(Service.objects.filter(states__status=status).values_list("id", flat=True).distinct()[:2000])
        chosen += rng.sample(ids, min(share, len(ids)))
    services = Service.objects.in_bulk(chosen)
    components = [
        component_model(
            page=page,
            name=f"{services[service_id].name} ({services[service_id].protocol.upper()})",
            position=position,
            service=services[service_id],
            group=STATUS_GROUPS[position % 4],
        )
        for position, service_id in enumerate(chosen)
    ]
    for offset, tag in enumerate(("mail", "web", "dns", "eu", "prod") if tags else ()):
        components.append(
            component_model(
                page=page, name=f"All {tag}", position=len(chosen) + offset, tag=tag, group=STATUS_GROUPS[offset % 4]
            )
        )
    component_model.objects.bulk_create(components)
    return page


def open_database(url: str, *, services: int, reuse: bool, marker: str, name: str, **environment: str) -> bool:
    """Point Django at the benchmark's database at `url` and migrate it; return whether it was made anew.

    With `reuse`, a database holding a completed fill of `services` services (its Watermark `marker`,
    written last) is kept; otherwise, and after a fill that stopped half-way, it is dropped and made
    again. Django gets a fresh data directory (secret key, cache, the embedded broker's folder) named
    after the benchmark, no REDIS_URL, and `environment` besides. Migrating runs on reuse too: the
    code measured may bring migrations.
    """
    import psycopg

    parts = urllib.parse.urlsplit(url)
    maintenance = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    reusable = reuse and _filled(url, services, marker)
    if not reusable:
        database = parts.path.lstrip("/")
        with psycopg.connect(maintenance, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{database}"')
    data_dir = tempfile.mkdtemp(prefix=f"portwatch-bench-{name}-")
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    os.environ.update(
        DATABASE_URL=url, DJANGO_SETTINGS_MODULE="monitor.settings", PORTWATCH_DATA_DIR=data_dir, **environment
    )
    os.environ.pop("REDIS_URL", None)  # the embedded file broker and cache, in the fresh data dir
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", "--noinput", verbosity=0)
    return not reusable


def _filled(url: str, services: int, marker: str) -> bool:
    """Return whether the database at `url` holds a completed fill of `services` services."""
    import psycopg

    try:
        with psycopg.connect(url) as connection:
            found = connection.execute("SELECT 1 FROM monitor_watermark WHERE name = %s", [marker]).fetchone()
            count = connection.execute("SELECT count(*) FROM monitor_service").fetchone()[0]
    except psycopg.Error:
        return False  # no such database, or not migrated
    return found is not None and count == services
