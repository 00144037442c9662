"""The services bench/scheduler_scale.py probes, the DNS server that names them, and CPU accounting from /proc.

Exposes `plan()` (which service is healthy, slow or a tarpit, on which port), `serve()` (the local
servers, run in a child process), `Dnsmasq` (a private dnsmasq answering *.bench.test with
127.0.0.1), `raise_open_files_limit()`, `tree_cpu()` and `roots_named()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DOMAIN = "bench.test"
SLOW_SECONDS = 5.0  # a slow server waits this long before it answers
TARPIT_HOLD = 120.0  # a tarpit lets go of a connection its client never closes after this long
REALISTIC_TIMEOUT = 10.0  # every service's timeout in the realistic mix: slow ones fit, tarpits time out
INSTANT_TIMEOUT = 5.0
SHARE = 20  # of every 20 pairs of services, one pair is a tarpit and one pair is slow: 5 % each
BANNER = b"220 bench ready\r\n"
HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
DNSMASQ = "/usr/sbin/dnsmasq"
DNSMASQ_START_ATTEMPTS = 10


@dataclass(frozen=True)
class Spec:
    """One service to create: `kind` is healthy, slow or tarpit, stored as the service's tag."""

    name: str
    host: str
    port: int
    protocol: str
    options: dict
    timeout: float
    kind: str


def plan(count: int, mix: str, ports: dict[str, int]) -> list[Spec]:
    """Return `count` services: half TCP banner, half HTTP; in the realistic mix 5 % slow and 5 % tarpits.

    Services go in pairs (HTTP, TCP) of one kind, so slow and tarpit services use both protocols.
    Realistic services are named svc-NNNNN.bench.test, each its own name, so each is resolved;
    instant ones probe 127.0.0.1 directly, as the benchmark did before it had a DNS server.
    """
    specs = []
    for i in range(count):
        protocol = "tcp" if i % 2 else "http"
        kind = "healthy"
        if mix == "realistic":
            kind = {0: "tarpit", SHARE // 2: "slow"}.get((i // 2) % SHARE, "healthy")
        if kind == "tarpit":
            port = ports["tarpit"]
        else:
            port = ports[("slow_" if kind == "slow" else "") + ("banner" if protocol == "tcp" else "http")]
        specs.append(
            Spec(
                name=f"bench-{i:05d}",
                host=f"svc-{i:05d}.{DOMAIN}" if mix == "realistic" else "127.0.0.1",
                port=port,
                protocol=protocol,
                options={"read_banner": True} if protocol == "tcp" else {},
                timeout=REALISTIC_TIMEOUT if mix == "realistic" else INSTANT_TIMEOUT,
                kind=kind,
            )
        )
    return specs


# --- the servers -------------------------------------------------------------------------------


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's open-files limit to its hard limit (children inherit it); return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def serve(ports: multiprocessing.Queue) -> None:
    """Run the healthy, slow and tarpit servers on 127.0.0.1 until killed; put their ports on `ports`.

    Each accepted connection holds a file descriptor until the probe hangs up (a tarpit's for the
    probe's whole timeout), so the open-files limit goes up to the hard limit first.
    """
    raise_open_files_limit()
    quiet = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)

    def banner(delay: float):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(*quiet):
                await asyncio.sleep(delay)
                writer.write(BANNER)
                await writer.drain()
            writer.close()

        return handle

    def http(delay: float):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(*quiet):
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(delay)
                writer.write(HTTP_OK)
                await writer.drain()
            writer.close()

        return handle

    async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Read and drop whatever comes (an HTTP request), say nothing, until the client gives up.
        with contextlib.suppress(*quiet, TimeoutError):
            async with asyncio.timeout(TARPIT_HOLD):
                while await reader.read(65536):
                    pass
        writer.close()

    async def main() -> None:
        handlers = {
            "banner": banner(0.0),
            "http": http(0.0),
            "slow_banner": banner(SLOW_SECONDS),
            "slow_http": http(SLOW_SECONDS),
            "tarpit": tarpit,
        }
        servers = {name: await asyncio.start_server(h, "127.0.0.1", 0, backlog=4096) for name, h in handlers.items()}
        ports.put({name: server.sockets[0].getsockname()[1] for name, server in servers.items()})
        await asyncio.Event().wait()

    asyncio.run(main())


# --- DNS ---------------------------------------------------------------------------------------


class Dnsmasq:
    """A dnsmasq of our own on 127.0.0.1: *.bench.test is 127.0.0.1 (A only), every other name is refused.

    No system configuration, hosts file or upstream server, so nothing leaves 127.0.0.0/8.
    `--local` makes AAAA questions get an empty NOERROR answer (without it dnsmasq answers
    REFUSED, and the probes' resolver fails the whole name); answers carry `ttl`.
    """

    def __init__(self, data_dir: str, ttl: int) -> None:
        self.ttl = ttl
        self.log = Path(data_dir) / "dnsmasq.log"
        self.pid_file = Path(data_dir) / "dnsmasq.pid"
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Dnsmasq:
        """Start dnsmasq on a free port and wait until it answers; raise RuntimeError if it never does."""
        for _ in range(DNSMASQ_START_ATTEMPTS):
            self.port = _free_port()
            self.process = subprocess.Popen(
                [
                    DNSMASQ,
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--keep-in-foreground",
                    f"--port={self.port}",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    f"--address=/{DOMAIN}/127.0.0.1",
                    f"--local=/{DOMAIN}/",
                    f"--local-ttl={self.ttl}",
                    f"--pid-file={self.pid_file}",
                    f"--log-facility={self.log}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._answers():
                return self
            self.stop()
        raise RuntimeError(f"dnsmasq did not start; see {self.log}")

    def _answers(self) -> bool:
        import dns.message
        import dns.query

        query = dns.message.make_query(f"svc-ready.{DOMAIN}", "A")
        for _ in range(50):
            if self.process.poll() is not None:
                return False  # the port was taken meanwhile, most likely
            with contextlib.suppress(Exception):
                return bool(dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2).answer)
            time.sleep(0.1)
        return False

    def queries(self) -> int | None:
        """Return the queries dnsmasq has answered since it started (it logs its counters on SIGUSR1)."""
        if self.process is None or self.process.poll() is not None:
            return None
        before = self.log.read_text(errors="replace").count("queries answered locally")
        self.process.send_signal(signal.SIGUSR1)
        for _ in range(20):
            time.sleep(0.1)
            found = re.findall(r"queries answered locally (\d+)", self.log.read_text(errors="replace"))
            if len(found) > before:
                return int(found[-1])
        return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _free_port() -> int:
    """Return a port free on 127.0.0.1 for UDP and TCP at this moment."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


# --- CPU from /proc ----------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Return the fields of /proc/<pid>/stat after the command name (field 3 onwards), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    """Return the live children of every thread of `pid`."""
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(child) for child in (task / "children").read_text().split()]
    return found


def tree_cpu(pid: int) -> float:
    """Return the user+system seconds of `pid`, its reaped children (cutime, cstime) and its live descendants.

    Taken at the start and at the end of a window, the difference counts every process of the tree
    that ran in between, including short-lived ones (PostgreSQL backends, dnsmasq's TCP children)
    that came and went between the two readings: once reaped, a child's CPU is in its parent's
    cutime/cstime, and while alive it is in its own stat. Sampling live processes every second
    instead would lose what a backend used after its last sample.
    """
    fields = _stat(pid)
    if fields is None:
        return 0.0
    total = sum(int(value) for value in fields[11:15]) / CLOCK_TICKS  # utime, stime, cutime, cstime
    return total + sum(tree_cpu(child) for child in _children(pid))


def roots_named(command: str) -> list[int]:
    """Return the processes named `command` whose parent is not, e.g. the postmaster for "postgres"."""
    names: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                text = (entry / "stat").read_text()
                name = text[text.index("(") + 1 : text.rindex(")")]
                names[int(entry.name)] = (name, int(text.rsplit(")", 1)[1].split()[1]))
    return [pid for pid, (name, parent) in names.items() if name == command and names.get(parent, ("",))[0] != command]
