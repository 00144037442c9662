"""Real daemons for the daemon tests: private Redis and PostgreSQL, Celery worker and beat subprocesses, TCP servers.

Exposes `free_port()`, `wait_until()`, `wait_listening()`, `RedisServer`, `PostgresServer`,
`scratch_postgres()`, `Stack` (the environment a test and its subprocesses share: data directory,
database, broker) and
`CeleryProcess`, plus `TcpServers`, banner servers on 127.0.0.1 that log every connection.
Each starts in a context manager or has `stop()`; a test stops everything it started, in
`finally`, even when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT = 20.0  # seconds a daemon may take to accept connections
STOP_TIMEOUT = 15.0  # seconds a process may take to stop after SIGTERM before it is killed


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str) -> Any:
    """Return condition()'s first truthy value, polling; raise TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_listening(port: int, process: subprocess.Popen, log: Path, *, timeout: float = START_TIMEOUT) -> None:
    """Return once something accepts on 127.0.0.1:`port`; raise with `process`'s log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if _accepts(port):
            return
        time.sleep(0.05)
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    raise RuntimeError(f"{process.args[0]} did not listen on 127.0.0.1:{port} within {timeout:g} s:\n{text}")


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
    """Signal the process (SIGKILL: its whole group, started with start_new_session), wait, then SIGKILL the rest.

    SIGTERM goes to the main process only: a Celery worker's warm shutdown lets its pool children
    finish their tasks, and a SIGTERM to the children themselves would cut them short.
    """
    with contextlib.suppress(ProcessLookupError):
        if sig == signal.SIGKILL:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):  # pool children outlive their parent's death
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)


# Redis -----------------------------------------------------------------------------------------


class RedisServer:
    """A private, non-persistent redis-server on a free port, so a test may restart it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [REDIS_SERVER or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir), "--loglevel", "warning"]
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: _accepts(self.port), timeout=START_TIMEOUT, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            _stop_group(self.process, signal.SIGKILL)  # an abrupt stop, as a crash or OOM kill would be
            self.process = None

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# PostgreSQL ------------------------------------------------------------------------------------


def postgres_available() -> bool:
    return (PG_BIN / "initdb").exists() and (os.geteuid() != 0 or shutil.which("runuser") is not None)


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory on a free port, so a test may restart it.

    PostgreSQL refuses to run as root, so as root every command runs as the `postgres` user.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="portwatch-pg-"))
        self.data = self.dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        # fsync off: a test cluster need not survive a power cut, and it makes commits cheap.
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        log = str(self.dir / "postgres.log")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "30", "start")

    def stop(self) -> None:
        # -m fast: connections are cut at once, as a restart by an operator or a crash would.
        with contextlib.suppress(subprocess.SubprocessError):
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def create_database(self, name: str) -> str:
        with _admin_connection(self.url("postgres")) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> PostgresServer:
        try:
            self.init()
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def _admin_connection(url: str):
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        yield conn


@contextlib.contextmanager
def scratch_postgres(server_url: str, name: str) -> Iterator[str]:
    """Create database `name` on the server of `server_url`; yield its URL; drop it (cutting connections)."""
    base = server_url.rsplit("/", 1)[0]
    with _admin_connection(f"{base}/postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with _admin_connection(f"{base}/postgres") as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The shared environment ------------------------------------------------------------------------


@dataclass
class Row:
    service_id: int
    location: str
    scheduled_at: dt.datetime
    started_at: dt.datetime
    status: str = ""
    failure: str = ""
    reason: str = ""


@dataclass
class Stack:
    """What a test and the Django/Celery subprocesses it starts share: a data directory, a database, a broker.

    Without `database_url` the database is SQLite in the data directory; without `redis_url` the
    broker is the filesystem transport there.
    """

    data_dir: Path
    database_url: str | None = None
    redis_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env |= {"PORTWATCH_DATA_DIR": str(self.data_dir), "DJANGO_SETTINGS_MODULE": "monitor.settings"}
        env |= {"PYTHONUNBUFFERED": "1", **self.extra_env}
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def django(self, code: str, *, timeout: float = 60) -> Any:
        """Run `code` in a fresh Python with Django set up for this stack; return what it printed, as JSON."""
        script = "import django, json\ndjango.setup()\n" + textwrap.dedent(code)
        done = subprocess.run(
            [sys.executable, "-c", script], env=self.env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"django script failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout) if done.stdout.strip() else None

    def migrate(self) -> None:
        self.django("from django.core.management import call_command\ncall_command('migrate', verbosity=0)")

    def create_services(self, specs: Sequence[dict[str, Any]]) -> list[int]:
        """Create services (saving each, so their schedule rows appear as in production); return their ids."""
        return self.django(
            f"""
            from monitor.models import Service
            ids = [Service.objects.create(**spec).id for spec in {list(specs)!r}]
            print(json.dumps(ids))
            """
        )

    def results(self, *, measured_only: bool = False) -> list[Row]:
        """Return every stored probe result (or only measured ones), read with plain SQL: no Django setup here."""
        sql = (
            "SELECT service_id, location, scheduled_at, started_at, status, failure, reason "
            "FROM monitor_proberesult ORDER BY scheduled_at"
        )
        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url, connect_timeout=5) as conn:
                rows = conn.execute(sql).fetchall()
        else:
            with contextlib.closing(sqlite3.connect(self.data_dir / "portwatch.sqlite3", timeout=10)) as conn:
                rows = conn.execute(sql).fetchall()
        found = [Row(sid, loc, _aware(slot), _aware(started), *rest) for sid, loc, slot, started, *rest in rows]
        return [row for row in found if row.status != "unknown"] if measured_only else found


def _aware(value: dt.datetime | str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


# Celery ----------------------------------------------------------------------------------------


class CeleryProcess:
    """A `celery -A monitor.celery worker` or `beat` subprocess in its own process group, logging to a file."""

    def __init__(self, stack: Stack, name: str, arguments: Sequence[str]) -> None:
        self.stack, self.name = stack, name
        self.log = stack.data_dir / f"{name}.log"
        command = [sys.executable, "-m", "celery", "-A", "monitor.celery", *arguments, "--loglevel", "INFO"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, env=stack.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @classmethod
    def worker(cls, stack: Stack, name: str, *, queues: str, concurrency: int = 2, beat: bool = False) -> CeleryProcess:
        arguments = ["worker", "-n", f"{name}@%h", "-Q", queues, "-c", str(concurrency)]
        # No gossip, mingle or heartbeats between workers: the daemon does not use them, and mingle
        # alone adds a second to every start.
        arguments += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        if beat:
            arguments += ["-B", "-s", str(stack.data_dir / f"{name}-beat-schedule")]
        return cls(stack, name, arguments)

    @classmethod
    def beat(cls, stack: Stack, name: str) -> CeleryProcess:
        return cls(stack, name, ["beat", "-s", str(stack.data_dir / f"{name}-schedule")])

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the worker says it is ready to take tasks."""
        wait_until(lambda: " ready." in self.output(), timeout=timeout, what=f"worker {self.name} to be ready")

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group (main process and pool children) at once, as the OOM killer would."""
        _stop_group(self.process, signal.SIGKILL)

    def stop(self) -> None:
        """Stop warmly (SIGTERM: running tasks finish), killing whatever is left after STOP_TIMEOUT."""
        _stop_group(self.process, signal.SIGTERM)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@contextlib.contextmanager
def celery_processes() -> Iterator[list[CeleryProcess]]:
    """Yield a list to put started processes in; stop every one of them on the way out, even on failure."""
    started: list[CeleryProcess] = []
    try:
        yield started
    except BaseException:
        for process in started:  # pytest shows this with the failure
            print(f"--- {process.name} (exit status {process.process.poll()}) ---\n{process.output()}")
        raise
    finally:
        for process in started:
            process.stop()


# TCP servers to probe ---------------------------------------------------------------------------


@dataclass
class Connection:
    accepted_at: dt.datetime
    answered_at: dt.datetime | None = None


class TcpServers:
    """`count` banner servers on 127.0.0.1, one port each, in one event loop thread; each logs its connections.

    A server waits `delay` seconds after accepting, then sends a banner line and closes. `stop(port)` and
    `start(port)` take one down and bring it back on the same port.
    """

    def __init__(self, count: int = 1, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.connections: dict[int, list[Connection]] = {}
        self.ports: list[int] = []
        self._count = count
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []

    def __enter__(self) -> TcpServers:
        self._thread.start()
        for _ in range(self._count):
            server = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
            port = server.sockets[0].getsockname()[1]
            self._servers.append(server)
            self.ports.append(port)
            self.connections[port] = []
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _close(self) -> None:
        """Stop listening and end the connections still held (a tarpit's), so no handler is left pending."""
        for server in self._servers:
            server.close()
        handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def stop(self, port: int) -> None:
        """Stop listening on `port`, as a stopped service would: connections there are refused until `start(port)`."""
        server = self._servers[self.ports.index(port)]
        asyncio.run_coroutine_threadsafe(self._stop_one(server), self._loop).result(timeout=10)

    def start(self, port: int) -> None:
        """Listen on `port` again after `stop(port)`, as the service started again on its port would."""
        started = asyncio.run_coroutine_threadsafe(self._serve(port), self._loop).result(timeout=10)
        self._servers[self.ports.index(port)] = started

    @staticmethod
    async def _stop_one(server: asyncio.Server) -> None:
        server.close()
        await server.wait_closed()

    async def _serve(self, port: int = 0) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        connection = Connection(dt.datetime.now(dt.UTC))
        self.connections[port].append(connection)
        try:
            await asyncio.sleep(self.delay)
            writer.write(b"220 portwatch-test ready\r\n")
            await writer.drain()
            connection.answered_at = dt.datetime.now(dt.UTC)
        except OSError:
            pass  # the prober went away (a killed worker): nothing to answer
        finally:
            writer.close()

    def in_flight(self) -> dict[int, list[Connection]]:
        """Return the connections accepted but not answered yet, by port."""
        return {port: [c for c in conns if c.answered_at is None] for port, conns in self.connections.items()}


@contextlib.contextmanager
def scratch_stack(data_dir: Path, name: str, *, redis_url: str | None = None) -> Iterator[Stack]:
    """Yield a Stack on the database engine this test run uses: a SQLite file, or a scratch PostgreSQL database.

    On PostgreSQL the database `name` is created next to pytest-django's and dropped afterwards;
    subprocesses must see committed data, which pytest-django's per-test transactions hide.
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    if "postgresql" not in database["ENGINE"]:
        yield Stack(data_dir, None, redis_url)
        return
    user, host, port = database.get("USER") or "postgres", database.get("HOST") or "127.0.0.1", database.get("PORT")
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    server = f"postgres://{user}{password}@{host}:{port or 5432}/postgres"
    with scratch_postgres(server, name) as url:
        yield Stack(data_dir, url, redis_url)
