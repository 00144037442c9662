"""`manage.py runmonitor` end to end: the web site, worker and dispatcher it starts, and how it stops them.

Each test runs the real command as a subprocess in a temporary data directory (SQLite, and the
filesystem broker or a private Redis), probes a real banner server on 127.0.0.1, and checks by PID
that no child outlives it. Everything a test starts is stopped in `finally`, even on failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.peers.services import REDIS_SERVER, ROOT, RedisServer, Stack, TcpServers, free_port, wait_until

pytestmark = [pytest.mark.celery, pytest.mark.timeout(120)]

START_TIMEOUT = 40.0  # seconds from start to the site answering (migrate, worker start) on a busy 2-core machine
STOP_TIMEOUT = 15.0  # runmonitor gives its children 10 s, then kills them


class Monitor:
    """A `manage.py runmonitor` subprocess in its own session, logging to a file in the data directory."""

    def __init__(self, stack: Stack, port: int) -> None:
        self.port = port
        self.log = stack.data_dir / "runmonitor.log"
        self.seen: set[int] = set()
        command = [sys.executable, "manage.py", "runmonitor", "--host", "127.0.0.1", "--port", str(port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=stack.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def site_status(self) -> int | None:
        """Return the HTTP status of the login page, or None while nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/admin/login/", timeout=5) as response:
                return response.status
        except OSError:
            return None

    def wait_until_up(self) -> None:
        """Wait until the site answers and the worker is ready (its pool processes started)."""

        def up() -> bool:
            return self.process.poll() is not None or (" ready." in self.output() and self.site_status() is not None)

        wait_until(up, timeout=START_TIMEOUT, what="the site and the worker")
        assert self.process.poll() is None, f"runmonitor exited early:\n{self.output()[-4000:]}"

    def tree(self) -> set[int]:
        """Return the PIDs of every process runmonitor started, and theirs (Celery's pool processes)."""
        pids = descendants(self.process.pid)
        self.seen |= pids  # for kill_everything(): an orphan is no longer below runmonitor
        return pids

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Send `sig` and return the exit status; raise if runmonitor is still running after STOP_TIMEOUT."""
        self.process.send_signal(sig)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def kill_everything(self) -> None:
        """Last-resort cleanup: SIGKILL runmonitor and every process below it."""
        for pid in [*alive(self.seen | self.tree()), self.process.pid]:
            with contextlib.suppress(OSError):  # gone meanwhile
                # Only ours: a PID seen earlier may have been reused by another process since.
                if pid == self.process.pid or any(part in name_of(pid) for part in ("monitor.celery", "runserver")):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT)


def descendants(root: int) -> set[int]:
    """Return the PIDs below `root` in the process tree, read from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name in parentheses may hold spaces; the parent PID is the second field after it.
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    """Return those of `pids` that still run (a zombie waiting to be reaped has finished)."""
    running = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                running.add(pid)
    return running


def name_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@contextlib.contextmanager
def running_monitor(stack: Stack) -> Iterator[Monitor]:
    monitor = Monitor(stack, free_port())
    try:
        yield monitor
    except BaseException:
        print(f"--- runmonitor output ---\n{monitor.output()[-6000:]}")  # pytest shows it with the failure
        raise
    finally:
        monitor.kill_everything()


def import_services(stack: Stack, text: str) -> str:
    path = stack.data_dir / "services.yaml"
    path.write_text(textwrap.dedent(text))
    done = subprocess.run(
        [sys.executable, "manage.py", "import_services", str(path)],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("broker", ["filesystem", pytest.param("redis", marks=pytest.mark.redis)])
def test_it_probes_serves_the_site_and_stops_every_child_on_ctrl_c(broker, tmp_path):
    with contextlib.ExitStack() as cleanup:
        redis_url = None
        if broker == "redis":
            need(REDIS_SERVER is not None, "redis-server is not installed")
            redis_url = cleanup.enter_context(RedisServer(tmp_path)).url
        stack = Stack(tmp_path, None, redis_url)
        stack.migrate()
        servers = cleanup.enter_context(TcpServers(1))
        created = import_services(
            stack,
            f"""\
            services:
              - name: banner
                host: 127.0.0.1
                port: {servers.ports[0]}
                protocol: tcp
                interval: 5
                timeout: 2
                options: {{read_banner: true}}
            """,
        )
        assert created.endswith("1 created, 0 updated, 0 unchanged\n")
        monitor = cleanup.enter_context(running_monitor(stack))
        monitor.wait_until_up()
        assert monitor.site_status() == 200
        wait_until(lambda: stack.results(measured_only=True), timeout=40, what="a probe result for the banner service")
        assert servers.connections[servers.ports[0]], "the banner server was never connected to"
        children = monitor.tree()
        assert any("runserver" in name_of(pid) for pid in children)
        assert sum("celery" in name_of(pid) for pid in children) >= 2  # the worker and its pool
        assert monitor.stop(signal.SIGINT) == 0
        assert alive(children) == set()
        output = monitor.output()
        assert "Created superuser 'admin' with password: " in output
        assert f"open http://127.0.0.1:{monitor.port}/ and sign in as 'admin'" in output
        assert output.rstrip().endswith("Portwatch stopped.")


def test_sigterm_stops_every_child_and_exits_0(tmp_path):
    with running_monitor(Stack(tmp_path)) as monitor:
        monitor.wait_until_up()
        children = monitor.tree()
        assert len(children) >= 3  # web server, worker, pool processes
        assert monitor.stop(signal.SIGTERM) == 0
        assert alive(children) == set()


def test_a_child_that_dies_stops_the_others_and_fails_naming_it(tmp_path):
    with running_monitor(Stack(tmp_path)) as monitor:
        monitor.wait_until_up()
        children = monitor.tree()
        worker = next(pid for pid in children if os.getpgid(pid) == pid and "celery" in name_of(pid))
        os.kill(worker, signal.SIGKILL)
        assert monitor.process.wait(timeout=STOP_TIMEOUT) == 1
        assert alive(children) == set()  # the web server, and the dead worker's orphaned pool
        assert "The Celery worker exited unexpectedly with status -9; the others were stopped." in monitor.output()


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "manage.py", "runmonitor", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=Stack(tmp_path).env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"CommandError: Cannot serve on 127.0.0.1:{port} (Address already in use); "
        "choose another with --port or PORTWATCH_PORT."
    )
    assert done.stdout == ""  # not migrated, no user created, no child started
