"""`manage.py runmonitor`: the embedded all-in-one that `make run` calls: site, worker and dispatcher in one command.

Migrates, makes sure an admin exists, starts `runserver` and a Celery worker with embedded beat as
child processes, prints where to sign in, and supervises them: Ctrl-C or SIGTERM stops every child
and exits 0; a child that dies on its own stops the others and exits 1, naming it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from monitor.celery import worker_queues

STOP_TIMEOUT = 10.0  # seconds children get to stop after SIGTERM before they are killed
POLL_INTERVAL = 0.2  # seconds between looks at the children
READY_TIMEOUT = 60.0  # seconds to wait for the site to answer before saying where it is anyway
PR_SET_PDEATHSIG = 1  # prctl(2): signal the child gets when its parent dies


@dataclass
class Child:
    """A supervised child process in its own process group, so a terminal's Ctrl-C reaches only the supervisor."""

    name: str
    process: subprocess.Popen

    def running(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        # The main process only: a Celery worker's warm shutdown stops its own pool processes.
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole group: pool processes would outlive their parent's death."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


class Command(BaseCommand):
    help = (
        "Run Portwatch on one machine: migrate, create the admin user if there is none, then serve the site "
        "and run a Celery worker with the dispatcher (beat). Ctrl-C stops everything."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("PORTWATCH_HOST", "127.0.0.1"), help="default 127.0.0.1")
        parser.add_argument("--port", type=int, help="default 8000, or PORTWATCH_PORT from the environment")
        parser.add_argument(
            "--loglevel",
            default="INFO",
            help="the Celery worker's log level (default INFO; WARNING is quieter)",
        )

    def handle(self, *args: Any, host: str, port: int | None, loglevel: str, **options: Any) -> None:
        port = port or _env_port()
        _check_port_free(host, port)
        call_command("migrate", interactive=False, verbosity=options["verbosity"])
        call_command("ensureadmin", stdout=self.stdout, stderr=self.stderr)
        connections.close_all()  # children open their own; a SQLite handle must not be shared across processes
        stopping = _trap_signals()
        children = self._start(host, port, loglevel)
        try:
            died = self._supervise(children, host, port, stopping)
        finally:
            _stop(children, stopping)
        if died is not None:
            raise CommandError(
                f"The {died.name} exited unexpectedly with status {died.process.returncode}; the others were stopped."
            )
        self.stdout.write("Portwatch stopped.")

    def _start(self, host: str, port: int, loglevel: str) -> list[Child]:
        manage = str(settings.BASE_DIR / "manage.py")
        web = [sys.executable, manage, "runserver", "--noreload", "--insecure", f"{_url_host(host)}:{port}"]
        worker = [sys.executable, "-m", "celery", "-A", "monitor.celery", "worker", "-B"]
        worker += ["-Q", worker_queues(settings.PORTWATCH_LOCATION), "-c", str(settings.PORTWATCH_WORKER_CONCURRENCY)]
        worker += ["-n", "portwatch-embedded@%h", "-s", settings.CELERY_BEAT_SCHEDULE_FILENAME, "--loglevel", loglevel]
        # One worker and no peers: gossip, mingle and heartbeats would only add traffic and a second to the start.
        worker += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        children = []
        try:
            for name, command in (("web server", web), ("Celery worker", worker)):
                children.append(Child(name, _spawn(command)))
                self.stdout.write(f"Started the {name} (pid {children[-1].process.pid}).")
        except OSError as error:
            _stop(children, [0])
            raise CommandError(f"Cannot start the {name}: {error}") from None
        return children

    def _supervise(self, children: list[Child], host: str, port: int, stopping: list[int]) -> Child | None:
        """Wait until a stop signal (return None) or a child's death (return that child); say when the site is up."""
        announced, started = False, time.monotonic()
        while not stopping[0]:
            for child in children:
                if not child.running():
                    return child
            if not announced and (_answers(host, port) or time.monotonic() - started > READY_TIMEOUT):
                self._announce(host, port)
                announced = True
            time.sleep(POLL_INTERVAL)
        self.stdout.write("Stopping Portwatch ...")
        return None

    def _announce(self, host: str, port: int) -> None:
        users = get_user_model()
        admin = users.objects.filter(is_superuser=True).order_by("pk").first()
        connections.close_all()
        name = admin.get_username() if admin else "admin"
        url = f"http://{_url_host(_reachable(host))}:{port}/"
        self.stdout.write(
            self.style.SUCCESS(f"\nPortwatch is running: open {url} and sign in as {name!r}.")
            + "\nIts password was printed once, when the user was created (above, on a first run); "
            f"`.venv/bin/python manage.py changepassword {name}` sets a new one. Ctrl-C stops Portwatch.\n"
        )


def _env_port() -> int:
    text = os.environ.get("PORTWATCH_PORT", "8000")
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"PORTWATCH_PORT must be a port number, not {text!r}.") from None


def _check_port_free(host: str, port: int) -> None:
    """Fail before migrating or starting anything when the site's port is taken or invalid."""
    if not 1 <= port <= 65535:
        raise CommandError(f"The port must be between 1 and 65535, not {port}.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            raise CommandError(
                f"Cannot serve on {host}:{port} ({error.strerror}); choose another with --port or PORTWATCH_PORT."
            ) from None


def _trap_signals() -> list[int]:
    """Count SIGINT, SIGTERM and SIGHUP in a list the loops read: one asks for a clean stop, two for a kill."""
    received = [0]

    def handler(signum: int, frame: Any) -> None:
        received[0] += 1

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)
    return received


def _spawn(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "monitor.settings", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, cwd=settings.BASE_DIR, env=env, stdin=subprocess.DEVNULL, preexec_fn=_child_setup(os.getpid())
    )


def _child_setup(parent: int):
    """Return the pre-exec hook: a process group of its own, and SIGTERM when runmonitor dies (Linux).

    Without the death signal, a `kill -9` of runmonitor would leave a worker running that keeps
    probing and holds the SQLite database.
    """
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def setup() -> None:
        os.setpgid(0, 0)
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return setup


def _stop(children: list[Child], stopping: list[int]) -> None:
    """SIGTERM every running child, wait up to STOP_TIMEOUT (a second stop signal cuts it short), then SIGKILL."""
    for child in children:
        if child.running():
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    first = stopping[0]
    while any(child.running() for child in children):
        if time.monotonic() > deadline or stopping[0] > max(first, 1):
            break
        time.sleep(POLL_INTERVAL / 2)
    for child in children:
        child.kill()  # also the group's leftovers after a clean exit
        child.process.wait()


def _answers(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((_reachable(host).strip("[]"), port)) == 0


def _reachable(host: str) -> str:
    """Return an address to connect to: a wildcard listener is reached on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
