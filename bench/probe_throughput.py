"""Probe throughput: SMTP STARTTLS, HTTP, TCP and TLS banner probes against local servers, concurrency 1 and 100.

Servers run in a child process so that the CPU figures are the prober's alone. Prints a table
of probes per second and CPU milliseconds per probe, then one JSON line of the medians.

    .venv/bin/python bench/probe_throughput.py [--probes 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.probes import PROTOCOLS, Status, Target, run_probe

HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhealthy"


def serve(cert_dir: str, ports: multiprocessing.Queue) -> None:
    """Run an aiosmtpd server with STARTTLS, an HTTP server and TCP banner servers (plain, TLS) until killed."""
    from aiosmtpd.handlers import Sink
    from aiosmtpd.smtp import SMTP

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(f"{cert_dir}/server.pem")

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(HTTP_RESPONSE)
        await writer.drain()
        writer.close()

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        smtp = await loop.create_server(
            lambda: SMTP(Sink(), hostname="bench.test", tls_context=context), "127.0.0.1", 0, backlog=1024
        )
        http_server = await asyncio.start_server(http, "127.0.0.1", 0, backlog=1024)
        tcp_server = await asyncio.start_server(banner, "127.0.0.1", 0, backlog=1024)
        tls_server = await asyncio.start_server(banner, "127.0.0.1", 0, backlog=1024, ssl=context)
        ports.put(
            {
                "smtp": smtp.sockets[0].getsockname()[1],
                "http": http_server.sockets[0].getsockname()[1],
                "tcp": tcp_server.sockets[0].getsockname()[1],
                "tls": tls_server.sockets[0].getsockname()[1],
                "ssl": tls_server.sockets[0].getsockname()[1],  # ssl_floor: the TLS banner server, no Portwatch
            }
        )
        await asyncio.Event().wait()

    asyncio.run(main())


async def run_batch(kind: str, port: int, ca_file: str, count: int, concurrency: int) -> dict:
    protocol, tls, raw = {
        "smtp_starttls": ("smtp", "starttls", {"tls_ca_file": ca_file}),
        "http": ("http", "none", {"keyword": "healthy"}),
        "tcp_banner": ("tcp", "none", {"read_banner": True}),
        "tls_banner": ("tcp", "implicit", {"read_banner": True, "tls_ca_file": ca_file}),
    }[kind]
    options = PROTOCOLS[protocol].options.from_mapping(raw)
    target = Target("127.0.0.1", port, tls)
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one() -> None:
        async with gate:
            result = await run_probe(protocol, target, options, timeout=10)
            if result.status is not Status.UP:
                failures.append(result.reason)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "probes_per_second": count / wall,
        "cpu_ms_per_probe": cpu * 1000 / count,
        "probes_per_cpu_second": count / cpu,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
    }


def ssl_floor(port: int, ca_file: str, count: int) -> dict:
    """Measure the bare stdlib TLS handshake and banner read, without Portwatch: the floor for TLS probes."""
    context = ssl.create_default_context(cafile=ca_file)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1") as sock:
            sock.recv(100)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "probes_per_second": count / wall,
        "cpu_ms_per_probe": cpu * 1000 / count,
        "probes_per_cpu_second": count / cpu,
        "failures": 0,
        "first_failure": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=2000, help="probes per protocol and concurrency (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported (default 3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 100])
    kinds = ["smtp_starttls", "http", "tcp_banner", "tls_banner", "ssl_floor"]
    parser.add_argument("--kinds", nargs="+", default=kinds)
    args = parser.parse_args()

    import trustme

    with tempfile.TemporaryDirectory() as cert_dir:
        ca = trustme.CA()
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(f"{cert_dir}/server.pem")
        ca.cert_pem.write_to_path(f"{cert_dir}/ca.pem")
        ports: multiprocessing.Queue = multiprocessing.Queue()
        server = multiprocessing.Process(target=serve, args=(cert_dir, ports), daemon=True)
        server.start()
        try:
            port_of = ports.get(timeout=30)
            rows = measure(args, port_of, f"{cert_dir}/ca.pem")
        finally:
            server.kill()
    report(rows, args)


def measure(args: argparse.Namespace, port_of: dict, ca_file: str) -> list[dict]:
    rows = []
    for kind in args.kinds:
        port = port_of[kind.split("_")[0]]
        for concurrency in [1] if kind == "ssl_floor" else args.concurrency:
            runs = [
                ssl_floor(port, ca_file, args.probes)
                if kind == "ssl_floor"
                else asyncio.run(run_batch(kind, port, ca_file, args.probes, concurrency))
                for _ in range(args.repeat)
            ]
            row = {"kind": kind, "concurrency": concurrency, "probes": args.probes, "runs": args.repeat}
            for key in ("probes_per_second", "cpu_ms_per_probe", "probes_per_cpu_second"):
                row[key] = round(statistics.median(run[key] for run in runs), 3)
            row["failures"] = sum(run["failures"] for run in runs)
            row["first_failure"] = next((run["first_failure"] for run in runs if run["first_failure"]), None)
            rows.append(row)
    return rows


def report(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"probe throughput, {args.probes} probes per case, median of {args.repeat} runs, pid {os.getpid()}")
    print(f"{'kind':<15}{'concurrency':>12}{'probes/s':>12}{'CPU ms/probe':>14}{'probes/CPU-s':>14}{'failures':>10}")
    for row in rows:
        print(
            f"{row['kind']:<15}{row['concurrency']:>12}{row['probes_per_second']:>12.0f}"
            f"{row['cpu_ms_per_probe']:>14.3f}{row['probes_per_cpu_second']:>14.0f}{row['failures']:>10}"
        )
        if row["first_failure"]:
            print(f"    first failure: {row['first_failure']}")
    print(
        json.dumps(
            {
                f"{r['kind']}_c{r['concurrency']}": {
                    k: r[k] for k in ("probes_per_second", "cpu_ms_per_probe", "probes_per_cpu_second", "failures")
                }
                for r in rows
            }
        )
    )


if __name__ == "__main__":
    main()
