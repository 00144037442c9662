"""Run Portwatch from a venv holding requirements.txt only, and watch one probe go through a real worker.

Started by `.ci/runtime-check` with that venv's Python; every process it starts (manage.py, the
Celery worker with beat, gunicorn) comes from the same venv, never the dev one.

1. Flush Redis database 13; with --database postgres, create a scratch database.
2. Start a TCP server on 127.0.0.1 that greets every connection with a banner.
3. `manage.py migrate`, then `manage.py import_services` with one TCP service on that server.
4. Start `celery -A monitor.celery worker -B` and wait until a result for the service is `up`.
5. Start gunicorn and fetch the admin login page.
6. Scrape /metrics through it, gzipped as Prometheus asks: the service's probe_success is 1, from the
   series the worker stored with its state.
Always stop what it started, flush Redis and drop the scratch database; on failure print the logs.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import os
import secrets
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent  # this venv: the one holding requirements.txt only
REDIS_URL = "redis://127.0.0.1:6379/13"  # a database no test and no bench uses (bench/ takes 9)
POSTGRES_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
SERVICE = "runtime-check"
BANNER = "220 portwatch runtime check"
PROBE_WAIT = 60.0  # seconds; the service's interval is 5 s, so a healthy worker needs well under 15
WEB_WAIT = 30.0
METRICS_TOKEN = secrets.token_urlsafe(24)
STOP_WAIT = 20.0  # a warm shutdown finishes the running batch, bounded by the probe's 3 s timeout
LOG_TAIL_LINES = 200


class CheckFailed(Exception):
    """The install does not work; the message says which step failed."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="an empty scratch directory")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    # A TERM from CI or Ctrl-C unwinds through the `finally` blocks, which stop the worker.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, frame: sys.exit(128 + number))
    logs: list[Path] = []
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            run_check(args.work, args.database, stack, logs)
    except CheckFailed as error:
        print(f"runtime-check: FAILED: {error}", flush=True)
        for log in logs:
            print_tail(log)
        return 1
    except BaseException:
        for log in logs:
            print_tail(log)
        raise
    print(f"runtime-check: OK in {time.monotonic() - started:.1f} s", flush=True)
    return 0


def run_check(work: Path, database: str, stack: contextlib.ExitStack, logs: list[Path]) -> None:
    say(f"Python {sys.version.split()[0]} from {VENV_BIN.parent}; packages: {installed()}")
    env = environment(work, stack.enter_context(scratch_database(database, work)))
    stack.enter_context(flushed_redis())
    server = stack.enter_context(banner_server())
    say(f"banner server on 127.0.0.1:{server.port}")

    manage(env, work, logs, "migrate", "--noinput")
    services = work / "services.yaml"
    services.write_text(
        "services:\n"
        f"  - {{name: {SERVICE}, host: 127.0.0.1, port: {server.port}, protocol: tcp, interval: 5, timeout: 3,"
        " options: {read_banner: true}}\n"
    )
    say("; ".join(manage(env, work, logs, "import_services", str(services)).splitlines()))

    worker_log = work / "worker.log"
    logs.append(worker_log)
    worker = [str(VENV_BIN / "celery"), "-A", "monitor.celery", "worker", "-B", "-c", "1", "--loglevel", "INFO"]
    say(f"starting {' '.join(worker[1:])}")
    result = wait_for_probe(stack.enter_context(process(worker, env, worker_log)), server)
    say(f"probe result: {result}")

    web_log = work / "gunicorn.log"
    logs.append(web_log)
    port = free_port()
    web = [str(VENV_BIN / "gunicorn"), "monitor.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    web.append("--no-control-socket")  # as portwatch-web.service runs it
    say(f"starting {' '.join(web[1:])}")
    stack.enter_context(process(web, env, web_log))
    say(wait_for_login_page(port))
    say(scrape_metrics(port))


def say(text: str) -> None:
    print(f"runtime-check: {text}", flush=True)


def installed() -> str:
    """Return the versions of the packages a worker and the site lean on, MISSING for any not installed."""
    names = ("Django", "celery", "kombu", "redis", "packaging", "gunicorn", "psycopg")
    return ", ".join(f"{name} {version(name)}" for name in names)


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "MISSING"


def environment(work: Path, database_url: str) -> dict[str, str]:
    """Return the only environment every step sees: a production-like one, nothing from the caller's shell.

    The check's own ORM queries read it too, so it replaces this process's environment.
    """
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(work),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",  # other people work in this tree; leave no .pyc behind
        "PORTWATCH_DATA_DIR": str(work / "data"),
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SETTINGS_MODULE": "monitor.settings",
        "PORTWATCH_METRICS_TOKEN": METRICS_TOKEN,
    }
    os.environ.clear()
    os.environ.update(env)
    return env


@contextlib.contextmanager
def scratch_database(kind: str, work: Path) -> Iterator[str]:
    """Yield a DATABASE_URL: a SQLite file in the work directory, or a fresh PostgreSQL database dropped after."""
    if kind == "sqlite":
        yield f"sqlite:///{work.resolve() / 'portwatch.sqlite3'}"  # four slashes: an absolute path
        return
    import psycopg

    name = f"portwatch_runtime_check_{os.getpid()}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        raise CheckFailed(f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {error}") from None
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
        say(f"scratch PostgreSQL database {name}")
        try:
            yield f"postgres://postgres@127.0.0.1:5432/{name}"
        finally:
            from django.apps import apps
            from django.db import connections

            if apps.ready:  # this process's own connection, from waiting for the result
                connections.close_all()
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def flushed_redis() -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.flushdb()
    except redis.RedisError as error:
        raise CheckFailed(f"Redis at {REDIS_URL} is unreachable: {error}") from None
    say(f"flushed {REDIS_URL}")
    try:
        yield
    finally:
        with contextlib.suppress(redis.RedisError):
            client.flushdb()


class BannerServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    connections = 0

    @property
    def port(self) -> int:
        return self.server_address[1]


class BannerHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1
        with contextlib.suppress(OSError):
            self.request.sendall(BANNER.encode() + b"\r\n")


@contextlib.contextmanager
def banner_server() -> Iterator[BannerServer]:
    server = BannerServer(("127.0.0.1", 0), BannerHandler)
    thread = threading.Thread(target=server.serve_forever, name="banner-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def manage(env: dict[str, str], work: Path, logs: list[Path], *command: str) -> str:
    """Run a manage.py command with this venv's Python; return its output or raise CheckFailed with it."""
    say(f"manage.py {' '.join(command)}")
    try:
        run = subprocess.run(
            [str(VENV_BIN / "python"), "manage.py", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"manage.py {command[0]} took more than 120 s") from None
    if run.returncode != 0:
        log = work / f"manage-{command[0]}.log"
        log.write_text(run.stdout + run.stderr)
        logs.append(log)
        raise CheckFailed(f"manage.py {command[0]} exited with status {run.returncode}")
    return run.stdout


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run `command` in its own process group with output to `log`; stop the whole group on the way out."""
    with log.open("wb") as output:
        child = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield child
    finally:
        stop(child)


def stop(child: subprocess.Popen) -> None:
    """SIGTERM the group (Celery's warm shutdown), then SIGKILL whatever is left after STOP_WAIT."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=STOP_WAIT)
    except subprocess.TimeoutExpired:
        say(f"pid {child.pid} still running after {STOP_WAIT:.0f} s; killing it")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)  # pool children outliving their parent
    child.wait()


def wait_for_probe(worker: subprocess.Popen, server: BannerServer) -> str:
    """Wait for an `up` result of the service; raise CheckFailed when the worker dies or time runs out."""
    import django

    sys.path.insert(0, str(ROOT))  # this script lives in .ci/; the project is one folder up
    django.setup()
    from monitor.models import ProbeResult

    deadline = time.monotonic() + PROBE_WAIT
    while time.monotonic() < deadline:
        result = ProbeResult.objects.filter(service__name=SERVICE, status="up").first()
        if result is not None:
            return (
                f"{result.status} after {result.total * 1000:.1f} ms from location {result.location!r}, "
                f"banner {result.banner!r}; the banner server saw {server.connections} connection(s)"
            )
        if worker.poll() is not None:
            raise CheckFailed(f"the worker exited with status {worker.returncode} before a probe was recorded")
        time.sleep(0.5)
    others = list(ProbeResult.objects.filter(service__name=SERVICE).values_list("status", "reason")[:5])
    raise CheckFailed(
        f"no `up` result for {SERVICE} within {PROBE_WAIT:.0f} s (results so far: {others or 'none'}; "
        f"the banner server saw {server.connections} connection(s))"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_login_page(port: int) -> str:
    deadline = time.monotonic() + WEB_WAIT
    problem = "no answer"
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/admin/login/")
            response = connection.getresponse()
            body = response.read().decode("utf-8", "replace")
        except OSError as error:
            problem = str(error)
            time.sleep(0.3)
            continue
        finally:
            connection.close()
        if response.status == 200 and "csrfmiddlewaretoken" in body:
            return f"gunicorn served /admin/login/: {response.status} with a CSRF token"
        raise CheckFailed(f"gunicorn answered /admin/login/ with {response.status}")
    raise CheckFailed(f"gunicorn did not answer on 127.0.0.1:{port} within {WEB_WAIT:.0f} s: {problem}")


def scrape_metrics(port: int) -> str:
    """Return what /metrics said of the service, fetched gzipped with the token; fail unless probe_success is 1."""
    from monitor.models import StateExposition

    stored = StateExposition.objects.filter(state__service__name=SERVICE).count()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}", "Accept-Encoding": "gzip"}
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise CheckFailed(f"gunicorn answered /metrics with {response.status}: {body[:200]!r}")
    text = gzip.decompress(body).decode() if response.getheader("Content-Encoding") == "gzip" else body.decode()
    lines = [line for line in text.splitlines() if line.startswith(f'probe_success{{service="{SERVICE}"')]
    if not stored or len(lines) != 1 or not lines[0].endswith(" 1"):
        raise CheckFailed(f"/metrics: {stored} stored series, probe_success lines {lines}")
    return f"/metrics ({len(body):,} bytes gzipped, {stored} stored series): {lines[0]}"


def read(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def print_tail(log: Path) -> None:
    lines = read(log).splitlines()
    print(f"----- {log.name} (last {min(len(lines), LOG_TAIL_LINES)} of {len(lines)} lines) -----")
    print("\n".join(lines[-LOG_TAIL_LINES:]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
