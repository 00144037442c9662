"""The protocols of issue 10 against real local servers, concurrency 1 and 100, and a mixed fleet with dead targets.

FTP (vsftpd), MySQL (MariaDB), TFTP (tftpd-hpa), FastCGI (PHP-FPM), telnet (telnetd) run as the test fixtures
start them; UDP echo, NetBIOS and DHCP servers are the tests' Python peers; ICMP is the kernel's own echo. All
servers run in a child process, so the CPU figures are the prober's alone. Prints a table of probes per second,
CPU milliseconds per probe and latency, then the mixed-fleet table, then one JSON line of the medians.

    .venv/bin/python bench/protocols.py [--probes 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _fleet import raise_open_files_limit

from monitor.probes import PROTOCOLS, Result, Status, Target, run_probe
from tests.peers.mariadb import PASSWORD, USER
from tests.peers.telnetd import MAX_CLIENTS as TELNET_CLIENTS_PER_SERVER
from tests.peers.vsftpd import ANONYMOUS_PASSWORD

TFTP_FILE = "boot-64k.img"
TFTP_SIZE = 64 * 1024  # the tftp probe's default max_bytes: it reads all 128 blocks, then stops the transfer
NETBIOS_NAMES = [("FILESERVER", 0x20, False), ("FILESERVER", 0x00, False), ("WORKGROUP", 0x00, True)]
NETBIOS_MAC = "52:54:00:12:34:56"
SLOW_SECONDS = 0.5  # a slow fleet target answers after this long, well inside the fleet's timeout
BATCH_TIMEOUT = 10.0  # each probe's timeout in the throughput cases; every one must come back up
# vsftpd (Debian's build) lets 50 sessions per client address in, then answers 421; at concurrency 100
# the FTP probes are spread over this many servers so that the figures are the prober's, not the limit's.
VSFTPD_SERVERS = 4


@dataclass(frozen=True)
class Case:
    """One row of the throughput table: a protocol, its TLS mode and options, and the server it probes."""

    label: str  # what one probe does, in words
    protocol: str
    server: str  # key of the port in the child's answer
    tls: str = "none"
    options: dict = field(default_factory=dict)
    share: float = 1.0  # of --probes, for probes slow by design (telnet waits for login, icmp pings 3 times)
    check: tuple[str, object] | None = None  # a detail every result must show, else it counts as a failure


def cases(ca_file: str) -> dict[str, Case]:
    anonymous = {"username": "anonymous", "password": ANONYMOUS_PASSWORD, "tls_ca_file": ca_file}
    return {
        "ftp_plain": Case("FTP: greeting, FEAT, QUIT", "ftp", "vsftpd"),
        "ftp_auth_tls": Case("FTP: + AUTH TLS, FEAT, anonymous login", "ftp", "vsftpd", "starttls", anonymous),
        "mysql_greeting": Case("MySQL: greeting only", "mysql", "mariadb"),
        "mysql_tls_login": Case(
            "MySQL: TLS upgrade + login + COM_QUIT",
            "mysql",
            "mariadb",
            "starttls",
            {"username": USER, "password": PASSWORD, "tls_ca_file": ca_file},
        ),
        "tftp_64k": Case(
            "TFTP: read 64 KiB (128 blocks)",
            "tftp",
            "tftpd",
            options={"filename": TFTP_FILE},
            check=("bytes_read", TFTP_SIZE),
        ),
        "fastcgi_ping": Case("FastCGI: PHP-FPM ping", "fastcgi", "php_fpm"),
        "telnet": Case("telnet: greeting up to login:", "telnet", "telnet", share=0.2),
        "udp_echo": Case("UDP: echo, reply matched", "udp", "udp_echo", options={"send": "ping", "expect": "^ping$"}),
        "icmp_raw": Case("ICMP: 3 echoes 0.2 s apart, raw socket", "icmp", "icmp", share=0.05, check=("socket", "raw")),
        "icmp_dgram": Case("ICMP: the same, unprivileged", "icmp", "icmp", share=0.05, check=("socket", "dgram")),
        "netbios": Case("NetBIOS: node status", "netbios", "netbios", options={"expect_name": "FILESERVER"}),
        "dhcp_inform": Case("DHCP: INFORM, ACK", "dhcp", "dhcp"),
    }


# --- the servers, in a child process -------------------------------------------------------------------


class Echo(asyncio.DatagramProtocol):
    """Send every datagram back, after `delay` seconds; with `silent`, never answer (a dead UDP service)."""

    def __init__(self, *, delay: float = 0.0, silent: bool = False) -> None:
        self.delay, self.silent = delay, silent

    def connection_made(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, sender: tuple) -> None:
        if self.silent:
            return
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, self.transport.sendto, data, sender)
        else:
            self.transport.sendto(data, sender)


async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never speak, until the prober gives up and hangs up."""
    with contextlib.suppress(OSError):
        await reader.read()
    writer.close()


async def slow_ftp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greet after SLOW_SECONDS, then answer FEAT and QUIT as a minimal FTP server does."""
    with contextlib.suppress(OSError):
        await asyncio.sleep(SLOW_SECONDS)
        writer.write(b"220 slow bench FTP\r\n")
        while line := await reader.readline():
            verb = line.strip().upper()
            if verb == b"QUIT":
                writer.write(b"221 Goodbye.\r\n")
                break
            writer.write(b"211-Features:\r\n UTF8\r\n211 End\r\n" if verb == b"FEAT" else b"502 Not implemented.\r\n")
        await writer.drain()
    writer.close()


def serve(leaf, telnet_servers: int, ports: multiprocessing.Queue) -> None:
    """Start every server, put {name: port, or the reason it is missing} on `ports`, serve until SIGTERM.

    The daemons are the test fixtures' context managers, entered on one stack, so SIGTERM (not SIGKILL)
    stops them all, with the processes they forked. The telnetd fixture serves MAX_CLIENTS connections
    each, so `telnet_servers` of them are started; several vsftpd too (VSFTPD_SERVERS). The prober
    spreads its probes over their ports (`Ports`).
    """
    from tests.peers.mariadb import running_mariadb
    from tests.peers.php_fpm import running_php_fpm
    from tests.peers.telnetd import running_telnetd
    from tests.peers.tftpd import running_tftpd
    from tests.peers.vsftpd import running_vsftpd

    raise_open_files_limit()
    found: dict = {}
    with contextlib.ExitStack() as stack:

        def start(manager: contextlib.AbstractContextManager) -> object:
            """Return what the fixture yields, or why it could not start (a string)."""
            try:
                return stack.enter_context(manager)
            except BaseException as error:  # pytest's skip from need() is a BaseException: a missing binary
                if isinstance(error, KeyboardInterrupt | SystemExit):
                    raise
                return f"not available: {type(error).__name__}: {error}"

        for name, manager in (
            ("mariadb", running_mariadb(leaf)),
            ("tftpd", running_tftpd({TFTP_FILE: os.urandom(TFTP_SIZE)})),
            ("php_fpm", running_php_fpm({})),
        ):
            server = start(manager)
            found[name] = server if isinstance(server, str) else server.port
        vsftpd = [start(running_vsftpd(leaf)) for _ in range(VSFTPD_SERVERS)]
        found["vsftpd"] = next((why for why in vsftpd if isinstance(why, str)), [server.port for server in vsftpd])
        telnet = [start(running_telnetd()) for _ in range(telnet_servers)]
        found["telnet"] = next((why for why in telnet if isinstance(why, str)), telnet)
        asyncio.run(serve_in_python(found, ports))


async def serve_in_python(found: dict, ports: multiprocessing.Queue) -> None:
    """Run the Python peers (UDP echo, NetBIOS, DHCP, and the fleet's silent, slow and tarpit servers)."""
    from tests.peers.dhcp_server import DHCPServer
    from tests.peers.netbios_server import NetBIOSServer
    from tests.peers.tftpd import free_udp_port

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def udp(**behaviour) -> int:
        transport, _ = await loop.create_datagram_endpoint(lambda: Echo(**behaviour), local_addr=("127.0.0.1", 0))
        return transport.get_extra_info("sockname")[1]

    async def tcp(handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=4096)
        return server.sockets[0].getsockname()[1]

    client_port, relay_port = free_udp_port(), free_udp_port()
    async with (
        NetBIOSServer(NETBIOS_NAMES, NETBIOS_MAC) as netbios,
        DHCPServer(client_port=client_port, relay_port=relay_port) as dhcp,
    ):
        found |= {
            "udp_echo": await udp(),
            "netbios": netbios.port,
            "dhcp": dhcp.port,
            "dhcp_client_port": client_port,
            "udp_silent": await udp(silent=True),
            "udp_slow": await udp(delay=SLOW_SECONDS),
            "tcp_tarpit": await tcp(tarpit),
            "ftp_slow": await tcp(slow_ftp),
        }
        ports.put(found)
        await stop.wait()


# --- the prober, in this process ------------------------------------------------------------------------


class Ports:
    """Hand out several servers' ports in turn; with `uses`, each port at most that many times (telnetd's fixture)."""

    def __init__(self, ports: list[int], *, uses: int | None = None) -> None:
        self.ports, self.uses, self.handed = ports, uses, 0

    def next(self) -> int:
        if self.uses is not None and self.handed >= self.uses * len(self.ports):
            raise RuntimeError("out of telnetd connections: start more telnet servers")
        port = self.ports[self.handed // self.uses if self.uses else self.handed % len(self.ports)]
        self.handed += 1
        return port


def port_for(port_of: dict, server: str) -> int:
    ports = port_of[server]
    return ports.next() if isinstance(ports, Ports) else ports


async def run_batch(case: Case, port_of: dict, count: int, concurrency: int) -> dict:
    protocol = PROTOCOLS[case.protocol]
    raw = dict(case.options)
    if case.protocol == "dhcp":
        raw["client_port"] = port_of["dhcp_client_port"]  # 68 in the field, held by any DHCP client here
    options = protocol.options.from_mapping(raw)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failures: list[str] = []

    async def one() -> None:
        async with gate:
            target = Target("127.0.0.1", port_for(port_of, case.server), case.tls)
            started = time.perf_counter()
            result = await run_probe(case.protocol, target, options, timeout=BATCH_TIMEOUT)
            latencies.append(time.perf_counter() - started)
            if result.status is not Status.UP:
                failures.append(f"{result.failure}: {result.reason}")
            elif case.check and result.details.get(case.check[0]) != case.check[1]:
                failures.append(f"up, but {case.check[0]} is {result.details.get(case.check[0])!r}")

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "probes_per_second": count / wall,
        "cpu_ms_per_probe": cpu * 1000 / count,
        "p50_ms": percentile(latencies, 50) * 1000,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
    }


def percentile(values: list[float], pct: float) -> float:
    """Return the nearest-rank percentile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]


def measure(
    args: argparse.Namespace, port_of: dict, ca_file: str, icmp_namespace: str | None, no_namespace: str = ""
) -> list[dict]:
    """Run every case; icmp_dgram runs in `icmp_namespace`, or is skipped saying `no_namespace`."""
    from tests.probes.protocols.test_icmp import inside

    rows = []
    for kind in args.kinds:
        case = cases(ca_file)[kind]
        if not isinstance(port_of.get(case.server, 0), int | Ports):
            rows.append({"kind": kind, "label": case.label, "skipped": port_of[case.server]})
            continue
        for concurrency in args.concurrency:
            count = max(10, round(args.probes * case.share), min(concurrency, args.probes))

            def batch(case=case, count=count, concurrency=concurrency):
                return run_batch(case, port_of, count, concurrency)

            if kind == "icmp_dgram":
                if icmp_namespace is None:
                    rows.append({"kind": kind, "label": case.label, "skipped": no_namespace})
                    break
                runs = [inside(icmp_namespace, batch) for _ in range(args.repeat)]
            else:
                runs = [asyncio.run(batch()) for _ in range(args.repeat)]
            row = {"kind": kind, "label": case.label, "concurrency": concurrency, "probes": count}
            for key in ("probes_per_second", "cpu_ms_per_probe", "p50_ms"):
                row[key] = round(statistics.median(run[key] for run in runs), 3)
            row["failures"] = sum(run["failures"] for run in runs)
            row["first_failure"] = next((run["first_failure"] for run in runs if run["first_failure"]), None)
            rows.append(row)
    return rows


# --- a mixed fleet: healthy targets beside silent, refusing and slow ones --------------------------------


def fleet(port_of: dict, healthy: int, troubled: int) -> list[tuple[str, str, Target, dict]]:
    """Return (group, protocol, target, raw options) for `healthy` good targets and `troubled` bad or slow ones."""
    good = [
        ("udp", "udp_echo", {"send": "ping", "expect": "^ping$"}),
        ("netbios", "netbios", {}),
        ("ftp", "vsftpd", {}),
        ("mysql", "mariadb", {}),
        ("fastcgi", "php_fpm", {}),
    ]
    bad = [
        ("silent", "udp", port_of["udp_silent"], {"send": "ping"}),  # timeout
        ("silent", "ftp", port_of["tcp_tarpit"], {}),  # accepts, never speaks: timeout
        ("refused", "mysql", port_of["closed_tcp"], {}),  # RST
        ("refused", "netbios", port_of["closed_udp"], {}),  # ICMP port unreachable
        ("slow", "udp", port_of["udp_slow"], {"send": "ping"}),
        ("slow", "ftp", port_of["ftp_slow"], {}),
    ]
    targets = []  # shuffled below, so the healthy probes do not all start first
    for index in range(healthy):
        protocol, server, raw = good[index % len(good)]
        targets.append(("healthy", protocol, Target("127.0.0.1", port_for(port_of, server)), raw))
    for index in range(troubled):
        group, protocol, port, raw = bad[index % len(bad)]
        targets.append((group, protocol, Target("127.0.0.1", port), raw))
    random.Random(troubled).shuffle(targets)
    return targets


async def run_fleet(targets: list, timeout: float) -> dict:
    """Start every probe at once, as the daemon does up to its in-flight limit; return latencies and outcomes."""
    outcomes: dict[str, Counter] = {}
    latencies: dict[str, list[float]] = {}

    async def one(group: str, protocol: str, target: Target, raw: dict) -> None:
        options = PROTOCOLS[protocol].options.from_mapping(raw)
        started = time.perf_counter()
        result: Result = await run_probe(protocol, target, options, timeout=timeout)
        latencies.setdefault(group, []).append(time.perf_counter() - started)
        outcome = "up" if result.status is Status.UP else str(result.failure)
        outcomes.setdefault(group, Counter())[outcome] += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(*target) for target in targets))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    healthy = latencies.get("healthy", [])
    return {
        "wall_s": wall,
        "cpu_ms_per_probe": cpu * 1000 / len(targets),
        "healthy_p50_ms": percentile(healthy, 50) * 1000,
        "healthy_p95_ms": percentile(healthy, 95) * 1000,
        "healthy_max_ms": max(healthy, default=0) * 1000,
        "slow_p50_ms": percentile(latencies.get("slow", []), 50) * 1000,
        "outcomes": {group: dict(counter) for group, counter in sorted(outcomes.items())},
    }


def measure_fleet(args: argparse.Namespace, port_of: dict) -> list[dict]:
    rows = []
    for troubled in args.fleet_troubled:
        targets = fleet(port_of, args.fleet_healthy, troubled)
        runs = [asyncio.run(run_fleet(targets, args.fleet_timeout)) for _ in range(args.repeat)]
        row = {"healthy": args.fleet_healthy, "troubled": troubled, "timeout_s": args.fleet_timeout}
        for key in ("wall_s", "cpu_ms_per_probe", "healthy_p50_ms", "healthy_p95_ms", "healthy_max_ms", "slow_p50_ms"):
            row[key] = round(statistics.median(run[key] for run in runs), 3)
        row["outcomes"] = runs[len(runs) // 2]["outcomes"]  # every run's are listed in `runs`; they should agree
        row["runs_outcomes_equal"] = all(run["outcomes"] == runs[0]["outcomes"] for run in runs)
        rows.append(row)
    return rows


# --- main ------------------------------------------------------------------------------------------------


def closed_port(kind: int) -> int:
    """Return a port nothing listens on (bound a moment ago, then let go): connecting is refused."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=500, help="probes per protocol and concurrency (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported (default 3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--kinds", nargs="+", default=list(cases("").keys()), choices=list(cases("").keys()))
    parser.add_argument("--fleet-healthy", type=int, default=200, help="healthy targets in each fleet run")
    parser.add_argument("--fleet-troubled", type=int, nargs="+", default=[0, 120, 1200], help="silent/refusing/slow")
    parser.add_argument("--fleet-timeout", type=float, default=1.0, help="every fleet probe's timeout (seconds)")
    args = parser.parse_args()

    import pytest
    import trustme

    from tests.probes.protocols.test_icmp import namespace

    raise_open_files_limit()
    telnet_probes = args.repeat * sum(
        max(10, round(args.probes * cases("")["telnet"].share), min(c, args.probes)) for c in args.concurrency
    )
    telnet_servers = math.ceil(telnet_probes / TELNET_CLIENTS_PER_SERVER) if "telnet" in args.kinds else 0
    with tempfile.TemporaryDirectory() as cert_dir, contextlib.ExitStack() as stack:
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        ca.cert_pem.write_to_path(f"{cert_dir}/ca.pem")
        ports: multiprocessing.Queue = multiprocessing.Queue()
        server = multiprocessing.get_context("fork").Process(target=serve, args=(leaf, telnet_servers, ports))
        server.start()
        try:
            port_of = ports.get(timeout=120)
            if isinstance(port_of["telnet"], list):
                port_of["telnet"] = Ports(port_of["telnet"], uses=TELNET_CLIENTS_PER_SERVER)
            if isinstance(port_of["vsftpd"], list):
                port_of["vsftpd"] = Ports(port_of["vsftpd"])
            port_of |= {"icmp": 0, "closed_tcp": closed_port(socket.SOCK_STREAM)}
            port_of["closed_udp"] = closed_port(socket.SOCK_DGRAM)
            icmp_namespace: str | None = None
            no_namespace = ""
            if "icmp_dgram" in args.kinds:
                try:
                    icmp_namespace = stack.enter_context(namespace(unprivileged=True))
                except (Exception, pytest.skip.Exception) as error:  # need(): no root or no `ip`; said in the table
                    no_namespace = f"no network namespace: {error}"
            rows = measure(args, port_of, f"{cert_dir}/ca.pem", icmp_namespace, no_namespace)
            fleet_ready = all(isinstance(port_of[name], int | Ports) for name in ("vsftpd", "mariadb", "php_fpm"))
            fleet_rows = measure_fleet(args, port_of) if args.fleet_troubled and fleet_ready else []
        finally:
            server.terminate()  # SIGTERM: the child leaves its fixtures' blocks, which stop the daemons
            server.join(60)
            if server.is_alive():
                server.kill()
    report(rows, fleet_rows, args)


def report(rows: list[dict], fleet_rows: list[dict], args: argparse.Namespace) -> None:
    print(f"protocols of issue 10, median of {args.repeat} runs, pid {os.getpid()}, {os.cpu_count()} CPUs")
    print(f"{'kind':<17}{'conc.':>6}{'probes':>8}{'probes/s':>10}{'CPU ms/probe':>14}{'p50 ms':>9}{'failures':>10}")
    for row in rows:
        if "skipped" in row:
            print(f"{row['kind']:<17} skipped: {row['skipped']}")
            continue
        print(
            f"{row['kind']:<17}{row['concurrency']:>6}{row['probes']:>8}{row['probes_per_second']:>10.0f}"
            f"{row['cpu_ms_per_probe']:>14.3f}{row['p50_ms']:>9.1f}{row['failures']:>10}"
        )
        if row["first_failure"]:
            print(f"    first failure: {row['first_failure'][:160]}")
    if fleet_rows:
        print(f"\nmixed fleet, every probe started at once, timeout {args.fleet_timeout:g} s")
        print(
            f"{'healthy':>8}{'troubled':>9}{'wall s':>8}{'healthy p50':>12}{'p95':>8}{'max':>8}{'slow p50':>9}"
            f"{'CPU ms/probe':>14}  outcomes"
        )
        for row in fleet_rows:
            outcomes = "; ".join(f"{group} {counts}" for group, counts in row["outcomes"].items())
            print(
                f"{row['healthy']:>8}{row['troubled']:>9}{row['wall_s']:>8.2f}{row['healthy_p50_ms']:>12.1f}"
                f"{row['healthy_p95_ms']:>8.1f}{row['healthy_max_ms']:>8.1f}{row['slow_p50_ms']:>9.1f}"
                f"{row['cpu_ms_per_probe']:>14.3f}  {outcomes}"
            )
    figures = {
        f"{r['kind']}_c{r['concurrency']}": {
            k: r[k] for k in ("probes", "probes_per_second", "cpu_ms_per_probe", "p50_ms", "failures")
        }
        for r in rows
        if "skipped" not in r
    }
    for row in fleet_rows:
        figures[f"fleet_{row['healthy']}_{row['troubled']}"] = {k: v for k, v in row.items() if k != "outcomes"}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
