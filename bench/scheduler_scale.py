"""Scheduler at scale: N services on a fixed interval, probed by real Celery workers, for several minutes.

Starts local servers, a fresh database, Celery beat and a worker; creates N services probing the
local servers; measures for --minutes after one interval of warm-up; then reads the results table
and prints probes per second, p50/p99 lateness (actual start minus slot), missed checks, CPU per
probe and database growth per service-day, raw and rolled up. The last line is one JSON object.

    .venv/bin/python bench/scheduler_scale.py                                  # Redis + PostgreSQL, 10,000 services
    .venv/bin/python bench/scheduler_scale.py --mode embedded --services 1000  # SQLite + filesystem broker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_URL = "postgres://postgres@127.0.0.1:5432/{name}"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def serve(ports: multiprocessing.Queue) -> None:
    """Run a TCP banner server and an HTTP server on 127.0.0.1 until killed."""

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 bench ready\r\n")
        await writer.drain()
        writer.close()

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        tcp = await asyncio.start_server(banner, "127.0.0.1", 0, backlog=4096)
        web = await asyncio.start_server(http, "127.0.0.1", 0, backlog=4096)
        ports.put((tcp.sockets[0].getsockname()[1], web.sockets[0].getsockname()[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


def configure(args: argparse.Namespace, data_dir: str) -> None:
    """Point this process (and the daemon it starts) at a fresh database and broker, then set up Django."""
    os.environ.update(
        PORTWATCH_DATA_DIR=data_dir,
        PYTHONPATH=str(ROOT),
        PORTWATCH_WORKER_CONCURRENCY=str(args.concurrency),
        PORTWATCH_BATCH_SIZE=str(args.batch_size),
        DJANGO_SETTINGS_MODULE="monitor.settings",
    )
    if args.mode == "redis-postgres":
        import psycopg
        import redis

        os.environ["DATABASE_URL"] = PG_URL.format(name=args.database)
        os.environ["REDIS_URL"] = f"redis://127.0.0.1:6379/{args.redis_db}"
        with psycopg.connect(PG_URL.format(name="postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{args.database}"')
        redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def create_services(args: argparse.Namespace, tcp_port: int, http_port: int) -> None:
    """Create N services, half TCP banner and half HTTP, on the local servers, and their schedules."""
    from django.core.management import call_command

    from monitor.daemon import scheduling
    from monitor.models import Service

    call_command("migrate", "--noinput", verbosity=0)
    Service.objects.bulk_create(
        Service(
            name=f"bench-{i:05d}",
            host="127.0.0.1",
            port=tcp_port if i % 2 else http_port,
            protocol="tcp" if i % 2 else "http",
            options={"read_banner": True} if i % 2 else {},
            interval=args.interval,
            timeout=5,
        )
        for i in range(args.services)
    )
    scheduling.sync_schedules()


def start_daemon(args: argparse.Namespace, data_dir: str) -> list[subprocess.Popen]:
    from monitor.celery import worker_queues

    celery = [sys.executable, "-m", "celery", "-A", "monitor.celery"]
    worker = [*celery, "worker", "-Q", worker_queues("default"), "-c", str(args.concurrency), "--loglevel", "WARNING"]
    commands = {"beat": [*celery, "beat", "--loglevel", "WARNING", "-s", f"{data_dir}/beat-schedule"]}
    commands.update({f"worker{i}": [*worker, "-n", f"bench{i}@%h"] for i in range(args.workers)})
    processes = []
    for name, command in commands.items():
        with open(f"{data_dir}/{name}.log", "w") as log:
            processes.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log))
    return processes


def cpu_seconds(pid: int) -> float:
    """Return the user+system CPU of a process and its live children, from /proc."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0.0
    for each in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def measure(window: tuple[dt.datetime, dt.datetime]) -> dict:
    """Read the results whose slot falls in the window, and the tables' sizes after rolling them up."""
    from monitor.daemon import rollups
    from monitor.models import DailyRollup, HourlyRollup, ProbeResult

    start, end = window
    rows = list(
        ProbeResult.objects.filter(scheduled_at__gte=start, scheduled_at__lt=end).values_list(
            "scheduled_at", "started_at", "status"
        )
    )
    rollups.update_rollups(now=end + dt.timedelta(hours=2))  # roll up the measured hours as if they had ended
    return {
        "recorded": len(rows),
        "down": sum(1 for row in rows if row[2] == "down"),
        "lateness": sorted((started - slot).total_seconds() for slot, started, _ in rows),
        "result_row_bytes": row_bytes(ProbeResult),
        "hourly_row_bytes": row_bytes(HourlyRollup),
        "daily_row_bytes": row_bytes(DailyRollup),
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("redis-postgres", "embedded"), default="redis-postgres")
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--minutes", type=float, default=5.0, help="measured time, after one interval of warm-up")
    parser.add_argument("--workers", type=int, default=1, help="Celery workers (each with --concurrency processes)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (default 2, the cores)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--database", default="portwatch_bench")
    parser.add_argument("--redis-db", type=int, default=9)
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="portwatch-bench-")
    configure(args, data_dir)
    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    server.start()
    processes: list[subprocess.Popen] = []
    try:
        create_services(args, *ports.get(timeout=30))
        processes = start_daemon(args, data_dir)
        time.sleep(args.interval)  # warm-up: every service gets its first slot
        slots = max(1, int(args.minutes * 60 // args.interval))
        start = (time.time() // args.interval + 1) * args.interval
        time.sleep(max(0.0, start - time.time()))
        cpu_before = sum(cpu_seconds(p.pid) for p in processes)
        end = start + slots * args.interval
        time.sleep(end - time.time() + 10)  # the last slots' probes finish and are recorded
        cpu = sum(cpu_seconds(p.pid) for p in processes) - cpu_before
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        server.kill()
    window = (dt.datetime.fromtimestamp(start, dt.UTC), dt.datetime.fromtimestamp(end, dt.UTC))
    report(args, measure(window), slots, cpu, data_dir)


def report(args: argparse.Namespace, figures: dict, slots: int, cpu: float, data_dir: str) -> None:
    late, seconds = figures["lateness"], slots * args.interval
    probes_per_day = 86400 / args.interval

    def per_day(row_bytes: float | None, rows_per_day: float) -> int | None:
        return None if row_bytes is None else round(row_bytes * rows_per_day)

    summary = {
        "mode": args.mode,
        "services": args.services,
        "interval_s": args.interval,
        "measured_s": seconds,
        "probes_per_second": round(figures["recorded"] / seconds, 2),
        "lateness_p50_s": percentile(late, 0.50),
        "lateness_p99_s": percentile(late, 0.99),
        "lateness_max_s": late[-1] if late else None,
        "missed_checks": args.services * slots - figures["recorded"],
        "down_results": figures["down"],
        "cpu_ms_per_probe": round(cpu * 1000 / max(1, figures["recorded"]), 3),
        "raw_bytes_per_service_day": per_day(figures["result_row_bytes"], probes_per_day),
        "rollup_bytes_per_service_day": per_day(figures["hourly_row_bytes"], 24),
        "daily_rollup_bytes_per_service_day": per_day(figures["daily_row_bytes"], 1),
    }
    print(f"scheduler scale: {args.mode}, {args.services} services every {args.interval} s, {seconds} s measured")
    print(f"  {args.workers} worker(s) x {args.concurrency} processes, batches of {args.batch_size}")
    for key, value in summary.items():
        print(f"  {key:<36} {round(value, 4) if isinstance(value, float) else value}")
    print(f"  (logs in {data_dir})")
    print(json.dumps(summary))
    if summary["missed_checks"] == 0:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
