"""Scheduler at scale: N services on a fixed interval, probed by real Celery workers, for several minutes.

Starts local servers, a fresh database, Celery beat and a worker; creates N services; measures for
--minutes after one interval of warm-up, with rollups (beat, every minute) and prune (here, every
minute) running; then prints missed slots, lateness, wrong results, event-loop lag, latency
phases, CPU per probe of Portwatch, PostgreSQL and Redis, and database growth per service-day.
The last line is one JSON object.

`--mix realistic` (the default): each service has a host name of its own under bench.test,
resolved through a private dnsmasq; 5 % are tarpits (accept, then say nothing), 5 % answer after
5 s, the rest answer at once (half TCP banner, half HTTP GET); timeout 10 s. `--mix instant`:
every service is healthy and probes 127.0.0.1 directly, as this benchmark did at first.

    .venv/bin/python bench/scheduler_scale.py                                  # Redis + PostgreSQL, 10,000 services
    .venv/bin/python bench/scheduler_scale.py --mode embedded --services 1000  # SQLite + filesystem broker
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import _fleet

ROOT = Path(__file__).resolve().parents[1]
PG_URL = "postgres://postgres@127.0.0.1:5432/{name}"
DNS_TTL = 30  # seconds: shorter than the interval, so every name is resolved again during the run
PRUNE_FIRST, PRUNE_EVERY = 30.0, 60.0  # seconds into the window of the first prune, and between prunes
SAMPLE_EVERY = 1.0  # seconds between reads of the workers' heartbeats (they beat every 5 s)
STOP_WAIT = 30  # seconds a daemon process gets to stop (workers drain probes in flight for 12 s)
OK, MEASURED = ("up", "warning"), ("up", "warning", "down")
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")
# kombu's filesystem transport says this on every connection to "filesystem://", which has no host by design.
LOG_BENIGN = ("No hostname was supplied. Reverting to default 'localhost'",)


def main() -> None:
    args = parse_args()
    open_files = _fleet.raise_open_files_limit()  # the daemon's processes inherit it
    data_dir = tempfile.mkdtemp(prefix="portwatch-bench-")
    configure(args, data_dir)
    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_fleet.serve, args=(ports,), daemon=True)
    server.start()
    dns: _fleet.Dnsmasq | None = None
    processes: dict[str, subprocess.Popen] = {}
    try:
        specs = _fleet.plan(args.services, args.mix, ports.get(timeout=30))
        if args.mix == "realistic":
            dns = _fleet.Dnsmasq(data_dir, args.dns_ttl).start()
            os.environ["PORTWATCH_DNS_SERVERS"] = dns.address
        create_services(specs, args.interval)
        processes = start_daemon(args, data_dir)
        time.sleep(args.interval)  # warm-up: every service gets its first slot
        if exited(processes):
            sys.exit(
                f"the daemon stopped during the warm-up: {exited(processes)}; logs in {data_dir}:\n" + tail(data_dir)
            )
        slots = max(1, int(args.minutes * 60 // args.interval))
        start = (time.time() // args.interval + 1) * args.interval
        end = start + slots * args.interval
        observed = observe(args, start, end, [p.pid for p in processes.values()], server.pid, dns)
        observed["settled"] = wait_settled(end, max(spec.timeout for spec in specs), args.interval)
        observed["exited"] = exited(processes)
    finally:
        stop(processes, dns, server)
    window = (dt.datetime.fromtimestamp(start, dt.UTC), dt.datetime.fromtimestamp(end, dt.UTC))
    figures = measure(args, window)
    report(args, specs, slots, observed, figures, open_files, dns, data_dir)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("redis-postgres", "embedded"), default="redis-postgres")
    parser.add_argument("--mix", choices=("realistic", "instant"), default="realistic")
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--minutes", type=float, default=5.0, help="measured time, after one interval of warm-up")
    parser.add_argument("--workers", type=int, default=1, help="Celery workers (each with --concurrency processes)")
    parser.add_argument("--concurrency", type=int, help="pool processes per worker (default: the daemon's, 2)")
    parser.add_argument("--batch-size", type=int, help="claims per task (default: the daemon's)")
    parser.add_argument("--max-in-flight", type=int, help="probes at once per process (default: the daemon's)")
    parser.add_argument("--dns-ttl", type=int, default=DNS_TTL, help="TTL of dnsmasq's answers, seconds")
    parser.add_argument("--database", default="portwatch_bench")
    parser.add_argument("--redis-db", type=int, default=9)
    args = parser.parse_args()
    if args.mix == "realistic" and args.interval <= _fleet.REALISTIC_TIMEOUT:
        parser.error(f"--mix realistic needs --interval above its {_fleet.REALISTIC_TIMEOUT:g} s timeout")
    return args


def configure(args: argparse.Namespace, data_dir: str) -> None:
    """Point this process (and the daemon it starts) at a fresh database and broker, then set up Django.

    Daemon settings not given as flags are left to the daemon's defaults (or the environment's).
    """
    os.environ.update(PORTWATCH_DATA_DIR=data_dir, PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="monitor.settings")
    flags = {
        "PORTWATCH_WORKER_CONCURRENCY": args.concurrency,
        "PORTWATCH_BATCH_SIZE": args.batch_size,
        "PORTWATCH_MAX_IN_FLIGHT": args.max_in_flight,
    }
    os.environ.update({name: str(value) for name, value in flags.items() if value is not None})
    os.environ.pop("PORTWATCH_DNS_SERVERS", None)  # set to our dnsmasq in the realistic mix only
    if args.mode == "redis-postgres":
        import psycopg
        import redis

        os.environ["DATABASE_URL"] = PG_URL.format(name=args.database)
        os.environ["REDIS_URL"] = f"redis://127.0.0.1:6379/{args.redis_db}"
        with psycopg.connect(PG_URL.format(name="postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{args.database}"')
        redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    else:
        os.environ.pop("DATABASE_URL", None)
        os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def create_services(specs: list[_fleet.Spec], interval: int) -> None:
    """Create the services (tagged with their kind: healthy, slow or tarpit) and their schedules."""
    from django.core.management import call_command

    from monitor.daemon import scheduling
    from monitor.models import Service

    call_command("migrate", "--noinput", verbosity=0)
    Service.objects.bulk_create(
        Service(
            name=spec.name,
            host=spec.host,
            port=spec.port,
            protocol=spec.protocol,
            options=spec.options,
            interval=interval,
            timeout=spec.timeout,
            tags=spec.kind,
        )
        for spec in specs
    )
    scheduling.sync_schedules()


def start_daemon(args: argparse.Namespace, data_dir: str) -> dict[str, subprocess.Popen]:
    from django.conf import settings

    from monitor.celery import worker_queues

    celery = [sys.executable, "-m", "celery", "-A", "monitor.celery"]
    concurrency = str(settings.PORTWATCH_WORKER_CONCURRENCY)
    worker = [*celery, "worker", "-Q", worker_queues("default"), "-c", concurrency, "--loglevel", "WARNING"]
    commands = {"beat": [*celery, "beat", "--loglevel", "WARNING", "-s", f"{data_dir}/beat-schedule"]}
    commands.update({f"worker{i}": [*worker, "-n", f"bench{i}@%h"] for i in range(args.workers)})
    processes = {}
    for name, command in commands.items():
        with open(f"{data_dir}/{name}.log", "w") as log:
            processes[name] = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    return processes


def exited(processes: dict[str, subprocess.Popen]) -> dict[str, int]:
    """Return {name: exit code} of the daemon's processes that are no longer running."""
    return {name: process.returncode for name, process in processes.items() if process.poll() is not None}


# --- the measured window -----------------------------------------------------------------------


def observe(
    args: argparse.Namespace, start: float, end: float, daemon: list[int], server: int, dns: _fleet.Dnsmasq | None
) -> dict:
    """Sleep through the window [start, end) reading CPU at both ends, heartbeats all along, and prune every minute."""
    others_before = other_transactions(args.mode)  # the script's own queries stay outside the CPU readings
    time.sleep(max(0.0, start - time.time()))
    before = cpu_snapshot(args.mode, daemon, server, dns)
    queries_before = dns.queries() if dns else None
    heartbeats = HeartbeatSampler(start).begin()
    pruner = Pruner(start, end).begin()
    time.sleep(max(0.0, end - time.time()))
    after = cpu_snapshot(args.mode, daemon, server, dns)
    queries_after = dns.queries() if dns else None
    others = None if others_before is None else other_transactions(args.mode) - others_before
    pruner.finish()
    heartbeats.finish()
    cpu = {group: after[group] - before[group] for group in before}
    cpu["prune"] = pruner.cpu  # prune ran in this process, in a thread of its own: count that thread only
    cpu["portwatch"] += pruner.cpu
    dns_queries = None if queries_before is None or queries_after is None else queries_after - queries_before
    return {
        "cpu": cpu,
        "beats": heartbeats.beats(end),
        "prunes": pruner.runs,
        "dns_queries": dns_queries,
        "pg_other_transactions": others,
    }


def cpu_snapshot(mode: str, daemon: list[int], server: int, dns: _fleet.Dnsmasq | None) -> dict[str, float]:
    """Return the CPU seconds so far of each group of processes (see _fleet.tree_cpu for what is counted)."""
    snapshot = {"portwatch": sum(_fleet.tree_cpu(pid) for pid in daemon), "servers": _fleet.tree_cpu(server)}
    if mode == "redis-postgres":  # the machine's servers: every PostgreSQL and Redis process counts
        snapshot["postgresql"] = sum(_fleet.tree_cpu(pid) for pid in _fleet.roots_named("postgres"))
        snapshot["redis"] = sum(_fleet.tree_cpu(pid) for pid in _fleet.roots_named("redis-server"))
    if dns is not None:
        snapshot["dnsmasq"] = _fleet.tree_cpu(dns.process.pid)
    return snapshot


def other_transactions(mode: str) -> int | None:
    """Return the transactions PostgreSQL has counted in databases other than the bench's (None when embedded).

    PostgreSQL's CPU is that of all its processes: any other database's work in the window counts
    too (a test suite on the shared machine, say); a difference of this between the window's ends says so.
    """
    if mode == "embedded":
        return None
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database "
            "WHERE datname IS DISTINCT FROM current_database()"
        )
        return int(cursor.fetchone()[0])


class HeartbeatSampler(threading.Thread):
    """Read the workers' heartbeats every SAMPLE_EVERY seconds, keeping each beat (its loop lag and jobs held)."""

    def __init__(self, since: float) -> None:
        super().__init__(name="bench-heartbeats", daemon=True)
        self.since = dt.datetime.fromtimestamp(since, dt.UTC)
        self.seen: dict[tuple[str, dt.datetime], tuple[float, int]] = {}
        self.stopping = threading.Event()

    def begin(self) -> HeartbeatSampler:
        self.start()
        return self

    def run(self) -> None:
        from django.db import connection

        from monitor.models import WorkerHeartbeat

        while not self.stopping.wait(SAMPLE_EVERY):
            rows = WorkerHeartbeat.objects.filter(last_seen__gte=self.since)
            for name, seen, lag, in_flight in rows.values_list("name", "last_seen", "loop_lag_ms", "in_flight"):
                self.seen[(name, seen)] = (lag, in_flight)
        connection.close()

    def finish(self) -> None:
        self.stopping.set()
        self.join()

    def beats(self, end: float) -> list[tuple[float, int]]:
        """Return (loop lag ms, jobs held) of each beat sent in the window."""
        until = dt.datetime.fromtimestamp(end, dt.UTC)
        return [value for (_, seen), value in self.seen.items() if seen <= until]


class Pruner(threading.Thread):
    """Run the prune task's body once a minute in the window, counting this thread's CPU and each run's wall time."""

    def __init__(self, start: float, end: float) -> None:
        super().__init__(name="bench-prune", daemon=True)
        self.moments = [start + PRUNE_FIRST + PRUNE_EVERY * k for k in range(int((end - start) // PRUNE_EVERY))]
        self.runs: list[dict] = []
        self.cpu = 0.0
        self.stopping = threading.Event()

    def begin(self) -> Pruner:
        self.start()
        return self

    def run(self) -> None:
        from django.db import connection

        from monitor.daemon import retention

        for moment in self.moments:
            if self.stopping.wait(max(0.0, moment - time.time())):
                break
            cpu, wall = time.thread_time(), time.perf_counter()
            deleted = retention.prune()
            self.cpu += time.thread_time() - cpu
            self.runs.append({"seconds": time.perf_counter() - wall, **deleted})
        connection.close()

    def finish(self) -> None:
        self.stopping.set()
        self.join()


def wait_settled(end: float, timeout: float, interval: int) -> bool:
    """Wait until the sweeper has passed every slot of the window (it records those without a result as missed).

    A slot settles late_limit + timeout + SETTLE_GRACE after it; the sweeper runs every SWEEP_EVERY
    seconds. Return False if its watermark did not get there within three sweeps of that.
    """
    from monitor.daemon.scheduling import late_limit
    from monitor.daemon.sweeper import SETTLE_GRACE, SWEEP_EVERY, WATERMARK
    from monitor.models import Watermark

    settle = (late_limit(interval) + SETTLE_GRACE).total_seconds() + timeout
    target = dt.datetime.fromtimestamp(end + settle, dt.UTC)
    deadline = end + settle + 3 * SWEEP_EVERY
    while time.time() < deadline:
        mark = Watermark.objects.filter(name=WATERMARK).values_list("moment", flat=True).first()
        if mark is not None and mark >= target:
            return True
        time.sleep(1.0)
    return False


def stop(processes: dict[str, subprocess.Popen], dns: _fleet.Dnsmasq | None, server: multiprocessing.Process) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
    if dns is not None:
        dns.stop()
    server.kill()


# --- reading the results -----------------------------------------------------------------------


def measure(args: argparse.Namespace, window: tuple[dt.datetime, dt.datetime]) -> dict:
    """Read the results whose slot falls in the window, then time the maintenance that will come to them.

    1. Classify each result by its service's kind (tag) and what it says.
    2. Roll up the measured hours as if they had ended, then their day, then prune them as if a
       retention had passed, timing each (CPU of this process and of PostgreSQL) per row, and
       reading the tables' sizes in between.
    """
    from monitor.models import HourlyRollup, ProbeResult

    start, end = window
    rows = ProbeResult.objects.filter(scheduled_at__gte=start, scheduled_at__lt=end).values_list(
        "service__tags", "status", "failure", "reason", "scheduled_at", "started_at", "resolve", "connect", "processing"
    )
    figures = classify(rows)
    figures["hourly_rollups_by_daemon"] = HourlyRollup.objects.count()
    figures.update(maintenance(args.mode, end))
    return figures


def classify(rows) -> dict:
    """Return counts by kind and outcome, missed slots by reason, and healthy services' lateness and phases."""
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    missed, unknown, false_down = collections.Counter(), collections.Counter(), collections.Counter()
    lateness, phases = [], {"resolve": [], "connect": [], "processing": []}
    for kind, status, failure, reason, slot, started, *timings in rows:
        by_kind[kind][f"{status}/{failure}" if failure else status] += 1
        if failure == "missed":
            missed[_shape(reason)] += 1
        elif status == "unknown":
            unknown[f"{failure}: {_shape(reason)}"] += 1
        if kind != "healthy" or status not in MEASURED:
            continue
        lateness.append((started - slot).total_seconds())
        if status == "down":
            false_down[_shape(reason)] += 1
        elif status in OK:
            for name, value in zip(phases, timings, strict=True):
                phases[name].append(value)
    for values in (lateness, *phases.values()):
        values.sort()
    recorded = sum(sum(counts.values()) for counts in by_kind.values())
    return {
        "recorded": recorded,
        "probes": recorded - sum(missed.values()),
        "by_kind": {kind: dict(counts.most_common()) for kind, counts in sorted(by_kind.items())},
        "missed": dict(missed.most_common()),
        "unknown": dict(unknown.most_common()),
        "false_down": dict(false_down.most_common()),
        "lateness": lateness,
        "phases": phases,
    }


def _shape(reason: str) -> str:
    """Return a reason with its numbers blanked, so reasons that differ only in seconds count together."""
    return re.sub(r"\d+(\.\d+)?", "N", reason)[:160]


def maintenance(mode: str, end: dt.datetime) -> dict:
    """Roll up, roll up the day, and prune the run's results as if their time had come; return CPU per row of each.

    The hourly rollup of a busy hour, the daily one and prune's deletes run once an hour or a day,
    so a window of a few minutes holds one of them or none; their cost per result, measured here,
    is what they add per probe at steady state. PostgreSQL's autovacuum is not included.
    """
    from django.conf import settings
    from django.db.models import Sum

    from monitor.daemon import retention, rollups
    from monitor.models import DailyRollup, HourlyRollup, ProbeResult

    def rolled(model) -> int:
        return model.objects.aggregate(n=Sum("count"))["n"] or 0

    figures = {}
    before = rolled(HourlyRollup)
    cpu, _ = timed(mode, lambda: rollups.update_rollups(now=end + dt.timedelta(hours=2)))
    figures["hourly_rollup"] = (cpu, rolled(HourlyRollup) - before)
    figures["result_row_bytes"], figures["hourly_row_bytes"] = row_bytes(ProbeResult), row_bytes(HourlyRollup)
    before = rolled(DailyRollup)
    cpu, _ = timed(mode, lambda: rollups.update_rollups(now=end + dt.timedelta(days=1, hours=2)))
    figures["daily_rollup"] = (cpu, rolled(DailyRollup) - before)
    figures["daily_row_bytes"] = row_bytes(DailyRollup)
    later = end + dt.timedelta(days=settings.PORTWATCH_RESULT_RETENTION_DAYS + 1, hours=2)
    cpu, deleted = timed(mode, lambda: retention.prune(now=later))
    figures["prune_delete"] = (cpu, deleted["results"])
    return figures


def timed(mode: str, work: Callable[[], object]) -> tuple[float, object]:
    """Run `work`; return the CPU seconds it took in this process and, on PostgreSQL, in the database, and its value."""

    def database() -> float:
        return 0.0 if mode == "embedded" else sum(_fleet.tree_cpu(pid) for pid in _fleet.roots_named("postgres"))

    before = database()
    before += time.process_time()  # read after the /proc scan, so the scan's own CPU is left out
    value = work()
    spent = time.process_time() - before
    return spent + database(), value


def row_bytes(model) -> float | None:
    """Return the table's bytes on disk, indexes included, per row; None where the database cannot tell."""
    from django.db import connection

    table, rows = model._meta.db_table, model.objects.count()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_total_relation_size(%s)", [table])
        else:
            try:
                cursor.execute(
                    "SELECT SUM(pgsize) FROM dbstat WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name = %s)",
                    [table],
                )
            except Exception:  # SQLite built without the dbstat table
                return None
        size = cursor.fetchone()[0] or 0
    return size / rows if rows else None


def percentile(values: list[float], share: float) -> float | None:
    """Return the nearest-rank percentile of sorted values."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(len(values) * share) - 1))]


def tail(data_dir: str, lines: int = 10) -> str:
    """Return the last log lines at WARNING or above, for a run that cannot go on."""
    return "\n".join(log_problems(data_dir)[-lines:])


def log_problems(data_dir: str) -> list[str]:
    """Return the daemon's log lines at WARNING or above (and tracebacks), each prefixed with its log's name."""
    lines = []
    for log in sorted(Path(data_dir).glob("*.log")):
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if LOG_PROBLEM.search(line) and not any(benign in line for benign in LOG_BENIGN):
                lines.append(f"{log.stem}: {line}")
    return lines


# --- the report --------------------------------------------------------------------------------


def report(
    args: argparse.Namespace,
    specs: list[_fleet.Spec],
    slots: int,
    observed: dict,
    figures: dict,
    open_files: tuple[int, int],
    dns: _fleet.Dnsmasq | None,
    data_dir: str,
) -> None:
    """Print the table, then the figures as one JSON object on the last line; keep the logs if anything is off."""
    from django.conf import settings

    seconds, probes = slots * args.interval, figures["probes"]
    kinds = collections.Counter(spec.kind for spec in specs)
    cpu = dict(observed["cpu"])
    cpu["system"] = sum(cpu.get(group, 0.0) for group in ("portwatch", "postgresql", "redis"))
    late, beats, problems = figures["lateness"], observed["beats"], log_problems(data_dir)
    maintenance_ms = {}
    for key in ("hourly_rollup", "daily_rollup", "prune_delete"):
        spent, rows = figures[key]
        maintenance_ms[key] = round(spent * 1000 / rows, 4) if rows > 0 else None

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    def per_probe(group: str) -> float | None:
        return round(cpu[group] * 1000 / probes, 3) if group in cpu and probes else None

    def per_day(row_bytes: float | None, rows_per_day: float) -> int | None:
        return None if row_bytes is None else round(row_bytes * rows_per_day)

    summary = {
        "mode": args.mode,
        "mix": args.mix,
        "services": args.services,
        "healthy": kinds["healthy"],
        "slow": kinds["slow"],
        "tarpit": kinds["tarpit"],
        "interval_s": args.interval,
        "measured_s": seconds,
        "workers": args.workers,
        "concurrency": settings.PORTWATCH_WORKER_CONCURRENCY,
        "batch_size": settings.PORTWATCH_BATCH_SIZE,
        "max_in_flight": settings.PORTWATCH_MAX_IN_FLIGHT,
        "dns_ttl_s": args.dns_ttl if dns else None,
        "dns_queries": observed["dns_queries"],
        "pg_other_transactions": observed["pg_other_transactions"],
        "slots": args.services * slots,
        "slots_without_result": args.services * slots - figures["recorded"],
        "missed_results": sum(figures["missed"].values()),
        "missed_by_reason": figures["missed"],
        "other_unknown_results": figures["unknown"],
        "probes_per_second": round(probes / seconds, 2),
        "lateness_p50_ms": ms(percentile(late, 0.50)),
        "lateness_p99_ms": ms(percentile(late, 0.99)),
        "lateness_max_ms": ms(late[-1] if late else None),
        "false_down": sum(figures["false_down"].values()),
        "false_down_by_reason": figures["false_down"],
        "results_by_kind": figures["by_kind"],
        "loop_lag_max_ms": round(max((lag for lag, _ in beats), default=0.0), 1) if beats else None,
        "heartbeats": len(beats),
        "jobs_held_max": max((held for _, held in beats), default=None),
        **{
            f"{phase}_{name}_ms": ms(percentile(values, share))
            for phase, values in figures["phases"].items()
            for name, share in (("p50", 0.50), ("p99", 0.99))
        },
        **{f"cpu_ms_per_probe_{group}": per_probe(group) for group in ("portwatch", "postgresql", "redis", "system")},
        "cpu_ms_per_probe_prune": per_probe("prune"),
        "cpu_ms_per_probe_dnsmasq": per_probe("dnsmasq"),
        "cpu_ms_per_probe_servers": per_probe("servers"),
        "prune_runs": len(observed["prunes"]),
        "prune_max_s": round(max((run["seconds"] for run in observed["prunes"]), default=0.0), 3),
        "prune_deleted": sum(run["results"] + run["hourly"] for run in observed["prunes"]),
        "hourly_rollups_by_daemon": figures["hourly_rollups_by_daemon"],
        "hourly_rollup_cpu_ms_per_result": maintenance_ms["hourly_rollup"],
        "daily_rollup_cpu_ms_per_result": maintenance_ms["daily_rollup"],
        "prune_cpu_ms_per_result": maintenance_ms["prune_delete"],
        "raw_bytes_per_service_day": per_day(figures["result_row_bytes"], 86400 / args.interval),
        "rollup_bytes_per_service_day": per_day(figures["hourly_row_bytes"], 24),
        "daily_rollup_bytes_per_service_day": per_day(figures["daily_row_bytes"], 1),
        "sweeper_settled": observed["settled"],
        "daemon_exited": observed["exited"],
        "log_problems": len(problems),
        "open_files": open_files[0],
    }
    print_table(summary, cpu, seconds, dns, problems)
    print(f"  (logs in {data_dir})")
    print(json.dumps(summary))
    clean = summary["slots_without_result"] == summary["missed_results"] == summary["false_down"] == 0
    if clean and not problems and summary["sweeper_settled"] and not summary["daemon_exited"]:
        shutil.rmtree(data_dir, ignore_errors=True)


def print_table(summary: dict, cpu: dict[str, float], seconds: int, dns: _fleet.Dnsmasq | None, problems: list) -> None:
    s = summary

    def row(label: str, value: object) -> None:
        print(f"  {label:<40} {value}")

    def lines(label: str, counts: dict) -> None:
        row(label, sum(counts.values()))
        for key, count in counts.items():
            print(f"  {'':<6}{count:>8}  {key}")

    def trio(p50: object, p99: object, top: object = None) -> str:
        return f"{p50} / {p99}" + ("" if top is None else f" / {top}") + " ms"

    print(f"scheduler scale: {s['mode']}, {s['mix']} mix, {s['services']} services every {s['interval_s']} s")
    print(f"  {s['measured_s']} s measured ({s['slots']} slots), after one interval of warm-up")
    if s["mix"] == "realistic":
        print(
            f"  fleet: {s['healthy']} healthy (half TCP banner, half HTTP GET), {s['slow']} slow (answer after "
            f"{_fleet.SLOW_SECONDS:g} s), {s['tarpit']} tarpits (never answer); timeout {_fleet.REALISTIC_TIMEOUT:g} s"
        )
    else:
        print(
            f"  fleet: {s['healthy']} healthy on 127.0.0.1 (half TCP banner, half HTTP GET, no DNS), "
            f"timeout {_fleet.INSTANT_TIMEOUT:g} s"
        )
    if dns is not None:
        print(
            f"  DNS: dnsmasq on {dns.address}, svc-NNNNN.{_fleet.DOMAIN} -> 127.0.0.1, TTL {dns.ttl} s: each name "
            f"is resolved again once its answer expires; {s['dns_queries']} queries answered in the window"
        )
    print(
        f"  daemon: {s['workers']} worker(s) x {s['concurrency']} processes, batches of {s['batch_size']}, "
        f"at most {s['max_in_flight']} probes in flight per process; open files limit {s['open_files']}"
    )
    print()
    row("results recorded / slots", f"{s['slots'] - s['slots_without_result']} / {s['slots']}")
    row("slots with no result at all", s["slots_without_result"])
    lines("results with failure missed", s["missed_by_reason"])
    lines("other unknown results", s["other_unknown_results"])
    row("probes/s", s["probes_per_second"])
    row("healthy lateness p50 / p99 / max", trio(s["lateness_p50_ms"], s["lateness_p99_ms"], s["lateness_max_ms"]))
    lines("false down (healthy services)", s["false_down_by_reason"])
    for kind, counts in s["results_by_kind"].items():
        row(f"{kind} results", ", ".join(f"{key} {count}" for key, count in counts.items()))
        expected = {"healthy": "up", "slow": "up", "tarpit": "down/timeout"}[kind]
        if set(counts) - {expected}:
            print(f"      ! {kind} services should all be {expected}")
    row("event loop lag, max of heartbeats", f"{s['loop_lag_max_ms']} ms ({s['heartbeats']} heartbeats)")
    row("jobs held by a process, max", s["jobs_held_max"])
    for phase in ("resolve", "connect", "processing"):
        row(f"healthy {phase} p50 / p99", trio(s[f"{phase}_p50_ms"], s[f"{phase}_p99_ms"]))
    print()
    print(f"  {'CPU in the window':<40} {'seconds':>8} {'ms/probe':>9} {'% core':>7}")
    for group, label in (
        ("portwatch", "Portwatch (beat, workers, prune)"),
        ("prune", "  of which prune, once a minute"),
        ("postgresql", "PostgreSQL (all its processes)"),
        ("redis", "Redis"),
        (
            "system",
            "system: Portwatch + PostgreSQL + Redis" if s["mode"] == "redis-postgres" else "system (SQLite inside)",
        ),
        ("dnsmasq", "dnsmasq (not in system)"),
        ("servers", "local servers (not in system)"),
    ):
        if group in cpu:
            spent = cpu[group]
            print(f"  {label:<40} {spent:>8.2f} {s[f'cpu_ms_per_probe_{group}']!s:>9} {spent * 100 / seconds:>7.1f}")
    if s["pg_other_transactions"]:
        print(
            f"  ! PostgreSQL ran {s['pg_other_transactions']} transactions in other databases during the window: "
            "its CPU above includes them"
        )
    print()
    row(
        "prune runs in the window",
        f"{s['prune_runs']}, longest {s['prune_max_s']} s, {s['prune_deleted']} rows deleted",
    )
    row("hourly rollup rows made by the daemon", s["hourly_rollups_by_daemon"])
    where = "this process + PostgreSQL" if s["mode"] == "redis-postgres" else "this process, SQLite included"
    print(f"  after the window, CPU per result ({where}), as each comes once per hour or day:")
    row("  hourly rollup", f"{s['hourly_rollup_cpu_ms_per_result']} ms")
    row("  daily rollup", f"{s['daily_rollup_cpu_ms_per_result']} ms")
    row("  prune (deleting results)", f"{s['prune_cpu_ms_per_result']} ms")
    row("bytes per service-day: raw", s["raw_bytes_per_service_day"])
    row(
        "  hourly rollups / daily rollups",
        f"{s['rollup_bytes_per_service_day']} / {s['daily_rollup_bytes_per_service_day']}",
    )
    for name, code in s["daemon_exited"].items():
        print(f"  ! the daemon's {name} stopped during the run (exit code {code})")
    if not s["sweeper_settled"]:
        print("  ! the sweeper did not pass the window's last slots in time: slots without a result may be missed ones")
    row("log lines at WARNING or above", len(problems))
    for line in problems[:10]:
        print(f"      {line[:200]}")


if __name__ == "__main__":
    main()
