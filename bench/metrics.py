"""/metrics at scale and /probe beside blackbox_exporter: scrape time, size and series; probes per second and CPU.

1. Fills a PostgreSQL database of its own with bench/_history.py's fleet (10,000 services of six protocols,
   two locations for some, down, warning, paused and never probed ones; their states, incidents, schedules
   and worker heartbeats), without raw history: /metrics reads states, snapshots and counters only. Then it
   gives every state the cumulative counters the daemon's writer keeps (checks by outcome, missed slots by
   reason, a latency histogram per phase drawn around the pair's own latency) and every pair an uptime
   snapshot, as `refresh_uptimes` writes them. Before each histogram setting is measured, every state's series
   are rendered and stored as the state writer does with that setting (`store_series()`), and that cost per
   state is printed.
2. Scrapes /metrics in-process with Django's test client, `--scrapes` timed scrapes after `--warmups`, with
   the histogram's six phases and with "total" only, plain and gzipped: p50 and p95 of the time to the last
   byte, the size, and the series.
3. Scrapes /metrics again through gunicorn (3 sync workers, as deploy/systemd runs it) over HTTP on loopback,
   with the "total" histogram, plain and gzipped, as Prometheus would.
4. Runs /probe under that gunicorn and Debian's prometheus-blackbox-exporter
   against the same local HTTP server and TCP port, `--probes` requests each with 8 at a time: probes per
   second and CPU milliseconds per probe of the server's processes (from /proc).

`--runs` repeats 2 to 4 and reports medians. The last line is one JSON object.

    .venv/bin/python bench/metrics.py                                   # fill (~1 minute), then measure
    .venv/bin/python bench/metrics.py --reuse --runs 3                  # measure the database filled before
    .venv/bin/python bench/metrics.py --services 500 --database-url postgres://postgres@127.0.0.1:5432/bench_metrics_small
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import gzip
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import _history

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_metrics"
MARKER = "bench_metrics_fill"  # a Watermark row written when a fill completed
TARGET_MS = 500.0  # p95 per scrape at 10,000 services
TOKEN = "bench-metrics-token"
ALL_PHASES = ["resolve", "connect", "tls", "processing", "transfer", "total"]
CONCURRENCY = 8  # /probe requests in flight at once
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
BLACKBOX_MODULES = "modules:\n  http_2xx: {prober: http, timeout: 5s}\n  tcp_connect: {prober: tcp, timeout: 5s}\n"
TICK = os.sysconf("SC_CLK_TCK")


def main() -> None:
    args = parse_args()
    if configure(args):
        fill(args)
    prepare()
    runs = []
    for run in range(args.runs):
        print(f"run {run + 1} of {args.runs}", flush=True)
        scrapes = measure_scrapes(args)
        probes, served = measure_probes(args)
        runs.append({"scrape": scrapes | served, "probe": probes})
    report(args, runs)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=10, help="timed scrapes per variant, after the warm-ups")
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--probes", type=int, default=2000, help="/probe requests per server and module")
    parser.add_argument("--runs", type=int, default=1, help="measure this many times; the report shows medians")
    parser.add_argument("--reuse", action="store_true", help="keep the database when it holds --services already")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if urllib.parse.urlsplit(args.database_url).path.lstrip("/") == "bench_dashboard":
        parser.error("bench_dashboard belongs to bench/dashboard.py: this benchmark writes to its database")
    return args


# --- the database -------------------------------------------------------------------------------


def configure(args: argparse.Namespace) -> bool:
    """Point Django at the benchmark's database, made anew unless --reuse finds it filled; return whether new."""
    return _history.open_database(
        args.database_url,
        services=args.services,
        reuse=args.reuse,
        marker=MARKER,
        name="metrics",
        PORTWATCH_METRICS_TOKEN=TOKEN,
    )


def fill(args: argparse.Namespace) -> None:
    """Write the fleet, its states, schedules and heartbeats (bench/_history.py), then counters and snapshots."""
    from django.db import connection

    from monitor.models import Watermark

    started = time.monotonic()
    now = _history.now_epoch()

    def say(what: str) -> None:
        print(f"  {time.monotonic() - started:6.0f} s  {what}", flush=True)

    print(f"filling {args.database_url} with {args.services:,} services (states and counters, no raw history)")
    plans = _history.plan(args.services, now, args.seed)
    _history._services(plans, now)
    incidents = _history._incidents(plans)
    _history._states(plans, incidents, now)
    _history._schedules(plans, now)
    say("services, incidents, states, schedules")
    fill_counters(plans, args.seed)
    say("counters")
    fill_snapshots(plans, now)
    Watermark.objects.create(name=MARKER, moment=_history.moment(now))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    say("uptime snapshots, VACUUM ANALYZE")


def fill_counters(plans: list[_history.Plan], seed: int) -> None:
    """Give each state the counters of 40 days of slots: checks, missed by reason, and the latency histogram."""
    from django.db import connection

    from monitor.models import ServiceState
    from monitor.stats import LATENCY_BUCKETS, MISSED_REASONS

    rng = random.Random(seed)
    ids = dict(((s, loc), pk) for pk, s, loc in ServiceState.objects.values_list("id", "service_id", "location"))
    rows = []
    for p in plans:
        if p.fate == "new":
            continue
        for pair in p.pairs:
            slots = 40 * 86400 // p.interval
            missed = int(slots * rng.uniform(0.0, 0.002))
            down = int(slots * (0.01 if pair.outages else rng.uniform(0.0, 0.001)))
            warning = slots - missed - down if p.fate == "warning" else 0
            up = slots - missed - down - warning
            checks = {"up": up, "warning": warning, "down": down, "missed": missed, "error": rng.randrange(3)}
            reasons = {key: 0 for key, _ in MISSED_REASONS}
            for _ in range(missed):
                key = rng.choice(("lost", "unserved", "dispatcher_late", "worker_late"))
                reasons[key] += 1
            good = up + warning
            net = list(pair.phases)
            typical = dict(zip(_history.PHASES, [*net, sum(net)], strict=True))
            latency = {}
            for phase, seconds in typical.items():
                draws = sorted(seconds * rng.lognormvariate(0, 0.35) for _ in range(64))
                share = [bisect.bisect_right(draws, bound) / len(draws) for bound in LATENCY_BUCKETS]
                latency[phase] = {"buckets": [int(good * s) for s in share], "count": good, "sum": seconds * good}
            counters = {"checks": checks, "latency": latency, "missed": {k: n for k, n in reasons.items() if n}}
            rows.append((json.dumps(counters), ids[p.id, pair.location]))
    with connection.cursor() as cursor:
        cursor.executemany("UPDATE monitor_servicestate SET counters = %s WHERE id = %s", rows)


def fill_snapshots(plans: list[_history.Plan], now: int) -> None:
    """Write every pair's uptime snapshot, as `refresh_uptimes` would from the (absent) rollups."""
    from monitor.models import UptimeSnapshot

    moment = _history.moment(now)
    snapshots = []
    for p in plans:
        per_day = 86400 // p.interval if p.fate != "new" else 0  # refresh() writes zeros for a pair never probed
        for pair in p.pairs:
            down = per_day // 50 if pair.outages else 0
            counts = {}
            for name, days in (("day", 1), ("week", 7), ("month", 30)):
                up, unknown = max(0, days * per_day - down), 1 if per_day else 0
                counts |= {f"{name}_up": up, f"{name}_down": down, f"{name}_unknown": unknown}
            snapshots.append(UptimeSnapshot(service_id=p.id, location=pair.location, computed_at=moment, **counts))
    UptimeSnapshot.objects.bulk_create(snapshots, batch_size=2000)


def prepare() -> None:
    """Make the data look current: fresh snapshots, live workers, a dispatcher that just ran."""
    import datetime as dt

    from django.db import connection
    from django.db.models import CharField, F, Value
    from django.db.models.functions import Cast, Concat

    from monitor.models import ServiceState, UptimeSnapshot, Watermark, WorkerHeartbeat
    from monitor.tasks import DISPATCHED

    now = dt.datetime.now(dt.UTC)
    have = set(UptimeSnapshot.objects.values_list("service_id", "location"))
    missing = [pair for pair in ServiceState.objects.values_list("service_id", "location") if pair not in have]
    UptimeSnapshot.objects.bulk_create(  # pairs never probed: refresh() writes them too, with zeros
        [UptimeSnapshot(service_id=service_id, location=location, computed_at=now) for service_id, location in missing]
    )
    UptimeSnapshot.objects.update(computed_at=now)  # younger than SNAPSHOT_MAX_AGE: read, not recomputed
    # The address the last probe reached, as the writer stores it (bench/_history.py leaves it empty).
    ServiceState.objects.filter(last_checked_at__isnull=False, last_address="").update(
        last_address=Concat(Value("198.51.100."), Cast(F("service_id") % 254 + 1, CharField()))
    )
    WorkerHeartbeat.objects.update(last_seen=now)
    Watermark.objects.update_or_create(name=DISPATCHED, defaults={"moment": now})
    # Counters as the writer stores them now (it rewrites them with every probe): compressed with the
    # column's method (lz4 since migration 0006), not with whatever the fill or an older version used.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE monitor_servicestate SET counters = counters || '{}'::jsonb "
            "WHERE pg_column_compression(counters) IS DISTINCT FROM "
            "(SELECT CASE WHEN attcompression = 'l' THEN 'lz4' ELSE 'pglz' END FROM pg_attribute "
            "WHERE attrelid = 'monitor_servicestate'::regclass AND attname = 'counters')"
        )


# --- /metrics -----------------------------------------------------------------------------------


def measure_scrapes(args: argparse.Namespace) -> dict[str, dict]:
    """Return {variant: {p50_ms, p95_ms, bytes, series}} for all phases and total only, plain and gzipped."""
    from django.conf import settings
    from django.test import Client

    client = Client(HTTP_HOST="localhost")  # ALLOWED_HOSTS has no "testserver"
    found = {}
    for phases in ("all", "total"):
        store_series(ALL_PHASES if phases == "all" else ["total"])
        for encoding in ("plain", "gzip"):
            headers = {"Authorization": f"Bearer {TOKEN}"}
            if encoding == "gzip":
                headers["Accept-Encoding"] = "gzip"
            times, body = [], b""
            for index in range(args.warmups + args.scrapes):
                started = time.perf_counter()
                response = client.get("/metrics", headers=headers)
                body = b"".join(response.streaming_content)
                took = (time.perf_counter() - started) * 1000
                if index >= args.warmups:
                    times.append(took)
            text = gzip.decompress(body) if encoding == "gzip" else body
            series = sum(1 for line in text.split(b"\n") if line and not line.startswith(b"#"))
            name = f"{phases}/{encoding}"
            found[name] = {
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(_p95(times), 1),
                "bytes": len(body),
                "series": series,
            }
            print(
                f"  /metrics {name:<14} p50 {found[name]['p50_ms']:7.1f} ms  p95 {found[name]['p95_ms']:7.1f} ms",
                flush=True,
            )
    settings.PORTWATCH_METRICS_HISTOGRAM_PHASES = ALL_PHASES
    return found


def store_series(phases: list[str]) -> None:
    """Render and store every state's series as the state writer does under these histogram phases.

    What one interval of probing leaves behind with that setting (`monitor.daemon.expositions`). Prints
    the cost per state of rendering alone and of rendering and storing, which every recorded probe pays.
    """
    from django.conf import settings
    from django.db import transaction

    from monitor.daemon import expositions
    from monitor.metrics import exposition
    from monitor.models import Service, ServiceState

    settings.PORTWATCH_METRICS_HISTOGRAM_PHASES = phases
    targets = {sid: (protocol, host) for sid, protocol, host in Service.objects.values_list("id", "protocol", "host")}
    states = list(ServiceState.objects.order_by("id"))
    started = time.perf_counter()
    for state in states:
        protocol, host = targets[state.service_id]
        exposition.render(protocol, host, phases, expositions.pair_state(state))
    rendering = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(states), 50):  # the size of a worker's batch
        with transaction.atomic():
            expositions.write(states[start : start + 50], targets)
    writing = time.perf_counter() - started
    print(
        f"  stored {len(states):,} states' series ({len(phases)} histogram phase(s)): "
        f"render {rendering / len(states) * 1e6:.0f} us a state, render and store {writing / len(states) * 1e6:.0f} us",
        flush=True,
    )


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


# --- /probe beside blackbox_exporter ------------------------------------------------------------


def measure_probes(args: argparse.Namespace) -> tuple[dict[str, dict], dict[str, dict]]:
    """Return {"<server>/<module>": {per_second, cpu_ms_per_probe}} against one local HTTP server and TCP port,
    and the scrapes of /metrics through the same gunicorn (`scrape_over_http()`)."""
    work = Path(tempfile.mkdtemp(prefix="portwatch-bench-probe-"))
    started: list[subprocess.Popen] = []
    try:
        (work / "index.html").write_text("ok\n")
        target_port = _free_port()
        started.append(
            _start(
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(target_port)],
                work / "target.log",
                cwd=work,
            )
        )
        _wait(target_port)
        portwatch_port, blackbox_port = _free_port(), _free_port()
        gunicorn = [
            str(Path(sys.executable).parent / "gunicorn"),
            "monitor.wsgi:application",
            "--bind",
            f"127.0.0.1:{portwatch_port}",
            "--workers",
            "3",
            "--no-control-socket",
        ]
        # The histogram setting the last scrapes in-process stored the series with (measure_scrapes()).
        served_env = os.environ | {"PORTWATCH_METRICS_HISTOGRAM_PHASES": "total"}
        started.append(_start(gunicorn, work / "gunicorn.log", cwd=ROOT, env=served_env))
        modules = work / "blackbox.yml"
        modules.write_text(
            "modules:\n  http_2xx: {prober: http, timeout: 5s}\n  tcp_connect: {prober: tcp, timeout: 5s}\n"
        )
        blackbox = [BLACKBOX, f"--config.file={modules}", f"--web.listen-address=127.0.0.1:{blackbox_port}"]
        servers = {"portwatch": (started[-1], portwatch_port)}
        if Path(BLACKBOX).exists():
            started.append(_start(blackbox, work / "blackbox.log"))
            servers["blackbox_exporter"] = (started[-1], blackbox_port)
        else:
            print(f"! {BLACKBOX} is not installed: only Portwatch is measured")
        for _, port in servers.values():
            _wait(port)
        served = scrape_over_http(portwatch_port, args)
        targets = {"http_2xx": f"http://127.0.0.1:{target_port}/", "tcp_connect": f"127.0.0.1:{target_port}"}
        found = {}
        for server, (process, port) in servers.items():
            for module, target in targets.items():
                found[f"{server}/{module}"] = _probe_load(process, port, module, target, args.probes)
                line = found[f"{server}/{module}"]
                print(
                    f"  /probe {server + '/' + module:<30} {line['per_second']:7.0f}/s  "
                    f"{line['cpu_ms_per_probe']:5.2f} ms CPU a probe",
                    flush=True,
                )
        return found, served
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(work, ignore_errors=True)


def scrape_over_http(port: int, args: argparse.Namespace) -> dict[str, dict]:
    """Return {variant: {p50_ms, p95_ms, bytes, series}} of /metrics scraped through gunicorn, as Prometheus does.

    The `total` histogram, plain and gzipped: the time to the last byte read by a client on loopback,
    through the web server's worker process (sync, as deploy/systemd runs it), not Django's test client.
    """
    found = {}
    for encoding in ("plain", "gzip"):
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip" if encoding == "gzip" else "identity"}
        times, body = [], b""
        for index in range(args.warmups + args.scrapes):
            started = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                connection.request("GET", "/metrics", headers=headers)
                response = connection.getresponse()
                body = response.read()
            finally:
                connection.close()
            if response.status != 200:
                raise SystemExit(f"/metrics through gunicorn answered {response.status}: {body[:200]!r}")
            if index >= args.warmups:
                times.append((time.perf_counter() - started) * 1000)
        text = gzip.decompress(body) if encoding == "gzip" else body
        name = f"total/{encoding}, gunicorn"
        found[name] = {
            "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(_p95(times), 1),
            "bytes": len(body),
            "series": sum(1 for line in text.split(b"\n") if line and not line.startswith(b"#")),
        }
        print(f"  /metrics {name:<22} p50 {found[name]['p50_ms']:7.1f} ms  p95 {found[name]['p95_ms']:7.1f} ms")
    return found


def _probe_load(process: subprocess.Popen, port: int, module: str, target: str, count: int) -> dict:
    path = "/probe?" + urllib.parse.urlencode({"module": module, "target": target})
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def one(_: int) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            return response.status == 200 and b"probe_success 1" in body
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(CONCURRENCY * 4)))  # warm up: imports, connections, caches
        cpu, started = _cpu_seconds(process.pid), time.perf_counter()
        answers = list(pool.map(one, range(count)))
        took, used = time.perf_counter() - started, _cpu_seconds(process.pid) - cpu
    if not all(answers):
        raise SystemExit(f"/probe on port {port} answered {answers.count(False)} of {count} without success")
    return {"per_second": round(count / took, 1), "cpu_ms_per_probe": round(used / count * 1000, 3)}


def _cpu_seconds(pid: int) -> float:
    """Return the user and system CPU seconds of `pid` and its children (gunicorn's workers) so far."""
    total = 0.0
    for each in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _start(command: list[str], log: Path, **options) -> subprocess.Popen:
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, **options)


def _free_port() -> int:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        return spare.getsockname()[1]


def _wait(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {seconds:g} s")


# --- the report ---------------------------------------------------------------------------------


def report(args: argparse.Namespace, runs: list[dict]) -> None:
    def median(part: str, name: str, key: str) -> float:
        return round(statistics.median(run[part][name][key] for run in runs), 3)

    scrape = {name: {key: median("scrape", name, key) for key in runs[0]["scrape"][name]} for name in runs[0]["scrape"]}
    probe = {name: {key: median("probe", name, key) for key in runs[0]["probe"][name]} for name in runs[0]["probe"]}
    pairs = _pair_count()
    print(
        f"\n/metrics at {args.services:,} services ({pairs:,} pairs), medians of {len(runs)} run(s) "
        f"of {args.scrapes} scrapes; target p95 <= {TARGET_MS:g} ms"
    )
    print(f"{'variant':<24} {'p50 ms':>8} {'p95 ms':>8} {'size':>12} {'series':>10}")
    for name, row in scrape.items():
        size = f"{row['bytes'] / 1e6:.1f} MB"
        print(f"{name:<24} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {size:>12} {int(row['series']):>10,}")
    print(f"\n/probe, {args.probes} requests, {CONCURRENCY} at a time, against a local server")
    print(f"{'server/module':<32} {'probes/s':>9} {'CPU ms/probe':>13}")
    for name, row in probe.items():
        print(f"{name:<32} {row['per_second']:>9.0f} {row['cpu_ms_per_probe']:>13.2f}")
    print(
        json.dumps(
            {
                "services": args.services,
                "pairs": pairs,
                "runs": len(runs),
                "scrapes": args.scrapes,
                "target_ms": TARGET_MS,
                "metrics": scrape,
                "probe": probe,
            }
        )
    )


def _pair_count() -> int:
    from monitor.models import ServiceState

    return ServiceState.objects.count()


if __name__ == "__main__":
    main()
