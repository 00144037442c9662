"""Alerting at scale: N services go down, then up, within a minute each; every alert must reach every channel once.

1. A fresh PostgreSQL database; N services tagged like a fleet (200 hosts x 50 services, hosts under
   bench.test, never resolved: nothing is probed), failure_threshold 1; two webhook channels (signed,
   `--group-window`) posting to receivers on 127.0.0.1 in a child process, which check each signature
   with `webhook.verify` and log every arrival with its time and its alerts.
2. K notifier processes (`--notifiers`), each calling `notifier.run()` every 5 s of wall-clock time, their
   phases spread over the 5 s, as Celery workers taking beat's `portwatch.notify` would.
3. The N "down" outcomes are recorded through the daemon's own path (`recording.record`, real probe
   `Result`s) in batches once a second over `--spread` seconds, started_at = now; `--hold` seconds after
   the first batch, the N "up" outcomes the same way.
4. Wait until every expected alert arrived at both channels, or a deadline; stop the notifiers.
5. Latency per alert = arrival - its StatusChange's created time (the outcome's started_at), which includes
   the grouping window: p50/p95/p99/max for down and up, per channel; messages; duplicates (an alert_id twice
   on a channel) and missing alerts, which must both be 0 (the exit status says so); CPU of the notifiers
   and of their PostgreSQL backends per 1,000 alerts, and of all of PostgreSQL.

`--runs` repeats 1 to 5 on a fresh database each time and reports medians. The last line is one JSON object.

    .venv/bin/python bench/alerting.py --services 1000 --spread 10 --hold 20   # a quick look
    .venv/bin/python bench/alerting.py --runs 2                                # 10,000 services, ~4 minutes a run
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import datetime as dt
import http.server
import json
import logging
import math
import multiprocessing
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _fleet

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_alerting"
SECRET = "whsec-bench-alerting-0123456789"
CHANNELS = ("hook-a", "hook-b")
HOSTS, PER_HOST = 200, 50  # a fleet: 200 machines of 50 services each
PROTOCOLS = ("tcp", "http", "smtp", "imap", "pop3")
NOTIFY_EVERY = 5.0  # seconds: beat's portwatch.notify period
TARGET_OVER_WINDOW = 5.0  # seconds: the p99 beyond the grouping window
SETTLE_AFTER = 180.0  # seconds after the last up outcome and the window to wait for the last deliveries
STOP_WAIT = 30.0  # seconds a notifier gets to finish its run in progress when told to stop
KINDS = ("down", "up")


def main() -> None:
    args = parse_args()
    if args.notifier is not None:
        return notify_loop(args)
    bench_dir = tempfile.mkdtemp(prefix="portwatch-bench-alerting-")
    ports: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    receivers = multiprocessing.get_context("spawn").Process(
        target=receive, args=(bench_dir, ports), daemon=True, name="bench-receivers"
    )
    receivers.start()  # before Django: the child holds no database connection
    configure(args, bench_dir)
    urls = ports.get(timeout=30)
    runs = []
    try:
        for number in range(args.runs):
            print(f"run {number + 1} of {args.runs}: {args.services:,} services", flush=True)
            runs.append(one_run(args, bench_dir, urls, number, profile=args.profile and number == 0))
    finally:
        receivers.kill()
    if not args.keep_db:
        drop_database(args.database_url)
    report(args, runs, bench_dir)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--spread", type=int, default=60, help="seconds over which the down (and up) outcomes come")
    parser.add_argument("--hold", type=int, default=90, help="seconds from the first down batch to the first up one")
    parser.add_argument("--notifiers", type=int, default=2, help="notifier processes")
    parser.add_argument("--group-window", type=float, default=30.0, help="the channels' grouping window, seconds")
    parser.add_argument("--runs", type=int, default=1, help="repeat on a fresh database; the report shows medians")
    parser.add_argument("--settle", type=float, default=SETTLE_AFTER, help="seconds to wait after the window")
    parser.add_argument("--keep-db", action="store_true", help="leave the last run's database for inspection")
    parser.add_argument("--profile", action="store_true", help="profile the first notifier of the first run")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--notifier", type=int, help=argparse.SUPPRESS)  # internal: run as notifier number N
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    parser.add_argument("--runs-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.notifier is None and args.hold < args.spread:
        parser.error("--hold must be at least --spread: a service's up outcome follows its down one")
    return args


# --- the database -------------------------------------------------------------------------------


def configure(args: argparse.Namespace, bench_dir: str) -> None:
    """Point this process and the notifiers it starts at the benchmark's database, then set up Django."""
    os.environ.update(
        DATABASE_URL=args.database_url,
        DJANGO_SETTINGS_MODULE="monitor.settings",
        PORTWATCH_DATA_DIR=bench_dir,
        PYTHONPATH=str(ROOT),
    )
    os.environ.pop("REDIS_URL", None)  # the notifiers need no broker; the cache falls back to the data dir
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def fresh_database(url: str) -> None:
    """Drop and make the database again, and migrate it."""
    import psycopg
    from django.core.management import call_command
    from django.db import connections

    connections.close_all()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    call_command("migrate", "--noinput", verbosity=0)


def drop_database(url: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def create_fleet(count: int, urls: dict[str, str], group_window: float) -> list[int]:
    """Create the services (no schedules: nothing probes them) and the channels; return the services' ids."""
    from monitor.models import Channel, Service

    Service.objects.bulk_create(
        Service(
            name=f"bench-{i:05d}",
            host=f"host-{i // PER_HOST % HOSTS:03d}.bench.test",
            port=10_000 + i % PER_HOST,
            protocol=PROTOCOLS[i % len(PROTOCOLS)],
            failure_threshold=1,
            tags=f"fleet,host-{i // PER_HOST % HOSTS:03d},{PROTOCOLS[i % len(PROTOCOLS)]}",
        )
        for i in range(count)
    )
    for name in CHANNELS:
        Channel.objects.create(
            name=name, url=urls[name], secret=SECRET, tags="fleet", group_window=group_window, timeout=10.0
        )
    return list(Service.objects.order_by("id").values_list("id", flat=True))


# --- the receivers (a child process) -------------------------------------------------------------


def receive(bench_dir: str, ports: multiprocessing.Queue) -> None:
    """Serve one webhook receiver per channel on 127.0.0.1 until killed; put their URLs on `ports`.

    Every POST is answered 204 and logged as one JSON line in <bench_dir>/<channel>.jsonl: its arrival time,
    whether the signature verified, and each alert's id, kind and service id.
    """
    sys.path.insert(0, str(ROOT))
    from monitor.alerting.channels.webhook import verify

    def handler(channel: str) -> type[http.server.BaseHTTPRequestHandler]:
        # Open for the process's life (it is killed, never stopped), line-buffered: each line is on disk at once.
        log, lock = open(Path(bench_dir) / f"{channel}.jsonl", "a", buffering=1), threading.Lock()  # noqa: SIM115

        class Receiver(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrived = time.time()
                signed = verify(
                    SECRET,
                    self.headers.get("X-Portwatch-Timestamp", ""),
                    body,
                    self.headers.get("X-Portwatch-Signature", ""),
                )
                self.send_response(204)
                self.end_headers()
                data = json.loads(body)
                alerts = [[a["alert_id"], a["kind"], (a["service"] or {}).get("id")] for a in data.get("alerts", [])]
                with lock:
                    log.write(json.dumps({"at": arrived, "signed": signed, "alerts": alerts}) + "\n")

            def log_message(self, *args: object) -> None:
                pass  # one line per request on stderr would cost more than the receiving

        return Receiver

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 128
        daemon_threads = True

    urls = {}
    for channel in CHANNELS:
        server = Server(("127.0.0.1", 0), handler(channel))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        urls[channel] = f"http://127.0.0.1:{server.server_address[1]}/{channel}"
    ports.put(urls)
    threading.Event().wait()


def arrivals(bench_dir: str, offsets: dict[str, int]) -> dict[str, list[dict]]:
    """Return each channel's logged deliveries since `offsets` (bytes into its log)."""
    found = {}
    for channel in CHANNELS:
        with open(Path(bench_dir) / f"{channel}.jsonl", "rb") as log:
            log.seek(offsets[channel])
            found[channel] = [json.loads(line) for line in log.read().splitlines() if line.endswith(b"}")]
    return found


# --- the notifiers (processes of this script) -----------------------------------------------------


def notify_loop(args: argparse.Namespace) -> None:
    """Run `notifier.run()` every NOTIFY_EVERY s, at phase N/K of it, until SIGTERM.

    After each run, append a JSON line to --runs-to: the run's seconds, its counts and this process's
    PostgreSQL backend, whose CPU the bench reads from /proc (a run may outlast the bench's patience).
    """
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.db import connection

    from monitor.alerting import notifier

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    phase = NOTIFY_EVERY * args.notifier / args.notifiers
    profiler = cProfile.Profile() if args.profile_to else None
    with open(args.runs_to, "a", buffering=1) as log:
        while not stopping.is_set():
            tick = math.ceil((time.time() - phase) / NOTIFY_EVERY) * NOTIFY_EVERY + phase
            if stopping.wait(max(0.0, tick - time.time())):
                break
            started, counts = time.monotonic(), {}
            if profiler:
                profiler.enable()
            try:
                counts = notifier.run()
            except Exception:  # as a Celery task would: the run fails, logged, and the next one tries again
                logging.exception("notifier run failed")
                counts = {"errors": 1}
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile_to)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend = cursor.fetchone()[0]
            log.write(json.dumps({"seconds": time.monotonic() - started, "counts": counts, "backend": backend}) + "\n")


def start_notifiers(args: argparse.Namespace, bench_dir: str, run: int, profile: bool) -> list[subprocess.Popen]:
    processes = []
    for number in range(args.notifiers):
        command = [sys.executable, __file__, "--notifier", str(number), "--notifiers", str(args.notifiers)]
        command += ["--runs-to", f"{bench_dir}/run{run}-notifier{number}.jsonl"]
        if profile and number == 0:
            command += ["--profile-to", f"{bench_dir}/notifier.prof"]
        with open(f"{bench_dir}/run{run}-notifier{number}.log", "w") as log:
            processes.append(subprocess.Popen(command, cwd=ROOT, stderr=log))
    return processes


def stop_notifiers(processes: list[subprocess.Popen], bench_dir: str, run: int) -> list[dict]:
    """Read each notifier's runs and CPU (its own and its backends'), then stop it; return one dict per notifier."""
    usages = []
    for number, process in enumerate(processes):
        path = Path(f"{bench_dir}/run{run}-notifier{number}.jsonl")
        runs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        backends = {entry["backend"] for entry in runs}
        usages.append(
            {
                "cpu": _fleet.tree_cpu(process.pid),
                "backend_cpu": sum(_fleet.tree_cpu(pid) for pid in backends),
                "runs": [entry["seconds"] for entry in runs],
                "counts": sum((collections.Counter(entry["counts"]) for entry in runs), collections.Counter()),
            }
        )
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()  # a run in progress: its work is not counted, nor needed
            process.wait()
    return usages


# --- one run --------------------------------------------------------------------------------------


def one_run(args: argparse.Namespace, bench_dir: str, urls: dict[str, str], run: int, *, profile: bool) -> dict:
    """Make the fleet, start the notifiers, record the outages and recoveries, wait for the deliveries; measure."""
    from monitor.probes import Failure, Phases, Result, Status

    fresh_database(args.database_url)
    services = create_fleet(args.services, urls, args.group_window)
    offsets = {channel: (Path(bench_dir) / f"{channel}.jsonl").stat().st_size for channel in CHANNELS}
    pg_before = postgres_cpu()
    notifiers = start_notifiers(args, bench_dir, run, profile)
    time.sleep(NOTIFY_EVERY)  # every notifier has set up Django and run once on the empty tables
    down = Result(Status.DOWN, Failure.REFUSED, "connection refused", Phases(total=0.001))
    up = Result(Status.UP, None, "ok", Phases(total=0.001))
    first = math.ceil(time.time())
    started = {"down": record_spread(services, down, first, args.spread)}
    started["up"] = record_spread(services, up, first + args.hold, args.spread)
    deadline = time.time() + args.group_window + args.settle
    expected = len(services) * len(KINDS)
    while time.time() < deadline:
        got = arrivals(bench_dir, offsets)
        if all(len({a[0] for post in got[c] for a in post["alerts"]}) >= expected for c in CHANNELS):
            break
        time.sleep(1.0)
    usages = stop_notifiers(notifiers, bench_dir, run)
    pg_cpu = postgres_cpu() - pg_before
    figures = measure(arrivals(bench_dir, offsets), started, usages, args)
    figures["postgresql_cpu_s"] = round(pg_cpu, 2)
    figures["postgresql_cpu_ms_per_alert_made"] = round(pg_cpu * 1000 / max(1, figures["alerts_made"]), 3)
    if profile:
        figures["profile"] = top_costs(f"{bench_dir}/notifier.prof")
    return figures


def record_spread(services: list[int], result, first: float, spread: int) -> dict[int, float]:
    """Record `result` for every service in `spread` batches, one a second from `first`; return started_at by id."""
    from monitor.daemon.recording import Outcome, record

    started: dict[int, float] = {}
    for second in range(spread):
        time.sleep(max(0.0, first + second - time.time()))
        batch = services[len(services) * second // spread : len(services) * (second + 1) // spread]
        now = dt.datetime.now(dt.UTC)
        record([Outcome(service, "default", now, now, result) for service in batch])
        started.update(dict.fromkeys(batch, now.timestamp()))
    return started


def postgres_cpu() -> float:
    """Return the CPU seconds so far of every PostgreSQL process on the machine (see _fleet.tree_cpu)."""
    return sum(_fleet.tree_cpu(pid) for pid in _fleet.roots_named("postgres"))


def measure(got: dict[str, list[dict]], started: dict[str, dict[int, float]], usages: list[dict], args) -> dict:
    """Return latencies by channel and kind, messages, duplicates, missing, unexpected alerts and CPU."""
    figures: dict = {"channels": {}}
    alerts_made = sum(len(times) for times in started.values())
    for channel, posts in got.items():
        seen: collections.Counter = collections.Counter()
        latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
        received: set[tuple[int, str]] = set()
        unexpected, unsigned, biggest = 0, 0, 0
        for post in posts:
            unsigned += not post["signed"]
            biggest = max(biggest, len(post["alerts"]))
            for alert_id, kind, service in post["alerts"]:
                seen[alert_id] += 1
                if kind not in KINDS or service not in started[kind]:
                    unexpected += 1
                    continue
                if seen[alert_id] == 1:
                    received.add((service, kind))
                    latencies[kind].append(post["at"] - started[kind][service])
        entry = {
            "messages": len(posts),
            "largest_message": biggest,
            "unsigned": unsigned,
            "duplicates": sum(count - 1 for count in seen.values()),
            "delivered": len(received),
            "missing": alerts_made - len(received),
            "unexpected": unexpected,
        }
        for kind, values in latencies.items():
            values.sort()
            for name, share in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
                entry[f"{kind}_{name}_s"] = rounded(percentile(values, share))
            entry[f"{kind}_max_s"] = rounded(values[-1] if values else None)
        figures["channels"][channel] = entry
    runs = sorted(duration for usage in usages for duration in usage["runs"])
    cpu, backend = sum(u["cpu"] for u in usages), sum(u["backend_cpu"] for u in usages)
    counts = sum((u["counts"] for u in usages), collections.Counter())
    made = max(1, counts.get("alerts", 0))  # per alert the notifiers made: at scale not all are delivered
    figures.update(
        {
            "alerts_expected_per_channel": alerts_made,
            "duplicates": sum(entry["duplicates"] for entry in figures["channels"].values()),
            "missing": sum(entry["missing"] for entry in figures["channels"].values()),
            "unsigned": sum(entry["unsigned"] for entry in figures["channels"].values()),
            "notifier_runs": len(runs),
            "notifier_run_p50_s": rounded(percentile(runs, 0.50)),
            "notifier_run_max_s": rounded(runs[-1] if runs else None),
            "notifier_cpu_s": round(cpu, 2),
            "alerts_made": counts.get("alerts", 0),
            "notifier_cpu_s_per_1000_alerts": round(cpu * 1000 / made, 3),
            "notifier_backends_cpu_s": round(backend, 2),
            "notifier_backends_cpu_s_per_1000_alerts": round(backend * 1000 / made, 3),
            "counts": dict(counts),
        }
    )
    figures["notifier_errors"] = figures["counts"].get("errors", 0)
    worst = [e[f"{kind}_p99_s"] for e in figures["channels"].values() for kind in KINDS]
    figures["p99_s"] = max((value for value in worst if value is not None), default=None)
    return figures


def top_costs(path: str, count: int = 15) -> list[str]:
    """Return the profile's costliest functions by own time: 'seconds calls file:line(function)'."""
    stats = pstats.Stats(path)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:count]
    return [f"{tt:8.2f} s {nc:>9} {Path(f).name}:{line}({name})" for (f, line, name), (_, nc, tt, _, _) in rows]


def percentile(values: list[float], share: float) -> float | None:
    """Return the nearest-rank percentile of sorted values."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(len(values) * share) - 1))]


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- the report -----------------------------------------------------------------------------------


def median(values: list) -> float | int | None:
    present = [value for value in values if value is not None]
    return round(statistics.median(present), 3) if present else None


def report(args: argparse.Namespace, runs: list[dict], bench_dir: str) -> None:
    """Print the table of medians over runs, then one JSON object; exit 1 on duplicates, missing or unsigned."""
    summary: dict = {
        "services": args.services,
        "spread_s": args.spread,
        "hold_s": args.hold,
        "notifiers": args.notifiers,
        "group_window_s": args.group_window,
        "runs": len(runs),
        "target_p99_s": args.group_window + TARGET_OVER_WINDOW,
    }
    scalar = [key for key, value in runs[0].items() if isinstance(value, int | float) and not isinstance(value, bool)]
    summary.update({key: median([run[key] for run in runs]) for key in scalar})
    summary["duplicates"] = max(run["duplicates"] for run in runs)  # the worst run: any is a defect
    summary["missing"] = max(run["missing"] for run in runs)
    summary["unsigned"] = max(run["unsigned"] for run in runs)
    summary["channels"] = {
        channel: {key: median([run["channels"][channel][key] for run in runs]) for key in runs[0]["channels"][channel]}
        for channel in CHANNELS
    }
    summary["target_met"] = summary["p99_s"] is not None and summary["p99_s"] <= summary["target_p99_s"]
    summary["per_run_p99_s"] = [run["p99_s"] for run in runs]

    print()
    print(
        f"alerting: {args.services:,} services down over {args.spread} s, up {args.hold} s later; "
        f"{args.notifiers} notifiers every {NOTIFY_EVERY:g} s; 2 webhook channels, window {args.group_window:g} s"
    )
    print(f"  medians of {len(runs)} run(s); latency = arrival - status change (window included), of delivered alerts")
    print()
    print(f"  {'channel':<8} {'kind':<5} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'max s':>7}")
    for channel, entry in summary["channels"].items():
        for kind in KINDS:
            values = [entry[f"{kind}_{name}_s"] for name in ("p50", "p95", "p99", "max")]
            print(f"  {channel:<8} {kind:<5} " + " ".join(f"{value!s:>7}" for value in values))
    print()
    for channel, entry in summary["channels"].items():
        print(
            f"  {channel}: {entry['delivered']} alerts in {entry['messages']} messages "
            f"(largest {entry['largest_message']}), "
            f"duplicates {entry['duplicates']}, missing {entry['missing']}, unexpected {entry['unexpected']}"
        )
    print(f"  badly signed deliveries: {summary['unsigned']}; failed notifier runs: {summary['notifier_errors']}")
    print(
        f"  notifier runs: {summary['notifier_runs']}, p50 {summary['notifier_run_p50_s']} s, "
        f"max {summary['notifier_run_max_s']} s"
    )
    print(
        f"  CPU per 1,000 alerts made ({summary['alerts_made']}): notifiers "
        f"{summary['notifier_cpu_s_per_1000_alerts']} s, their PostgreSQL backends "
        f"{summary['notifier_backends_cpu_s_per_1000_alerts']} s; all of PostgreSQL (recording "
        f"included) {summary['postgresql_cpu_s']} s in the run"
    )
    verdict = "met" if summary["target_met"] else "NOT met"
    print(f"  target p99 <= window + {TARGET_OVER_WINDOW:g} s = {summary['target_p99_s']:g} s: {verdict}")
    if "profile" in runs[0]:
        print("  first notifier of run 1, costliest functions by own time:")
        for line in runs[0]["profile"]:
            print(f"    {line}")
        summary["profile_top"] = runs[0]["profile"][:5]
    print(f"  (notifier logs in {bench_dir})")
    print(json.dumps(summary))
    if summary["duplicates"] or summary["missing"] or summary["unsigned"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
