"""A real PHP-FPM for FastCGI tests: `running_php_fpm(scripts)` starts one on a free 127.0.0.1 port.

It writes php-fpm.conf and the PHP scripts into a temporary directory, runs
`php-fpm8.2 --nodaemonize --force-stderr -n -R --fpm-config CONF` (no system php.ini, pool as root)
with `ping.path = /ping` and `pm.status_path = /status`, waits until the pool answers, and stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import need
from tests.peers.dovecot import free_ports

STARTUP_TIMEOUT = 10.0  # seconds PHP-FPM gets to open its port; it needs a fraction of one
STOP_TIMEOUT = 5.0  # seconds PHP-FPM gets to stop its workers after SIGQUIT before it is killed
BINARIES = ("php-fpm8.2", "php-fpm")  # Debian bookworm's name first


@dataclass(frozen=True)
class PHPFPM:
    port: int
    scripts: Path  # the directory the scripts were written to: SCRIPT_FILENAME is scripts / name
    log: Path  # PHP-FPM's own log (its stderr)

    def script(self, name: str) -> str:
        return str(self.scripts / name)


@contextlib.contextmanager
def running_php_fpm(scripts: Mapping[str, str]) -> Iterator[PHPFPM]:
    """Run PHP-FPM serving `scripts` ({file name: PHP source}) until the block ends."""
    binary = next(
        filter(None, (shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin") for name in BINARIES)), None
    )
    need(binary is not None, "php-fpm is not installed (apt-get install php8.2-fpm)")
    with tempfile.TemporaryDirectory(prefix="php-fpm-") as temp:
        root = Path(temp)
        server = PHPFPM(port=free_ports(1)[0], scripts=root / "www", log=root / "php-fpm.log")
        server.scripts.mkdir()
        for name, source in scripts.items():
            (server.scripts / name).write_text(source)
        config = root / "php-fpm.conf"
        config.write_text(render_config(root, server))
        command = [
            binary,
            "--nodaemonize",
            "--force-stderr",
            "-n",
            "--allow-to-run-as-root",
            "--fpm-config",
            str(config),
        ]
        if os.geteuid() != 0:
            command.remove("--allow-to-run-as-root")
        with server.log.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_listening(process, server)
            yield server
        finally:
            stop(process)


def render_config(root: Path, server: PHPFPM) -> str:
    """Return a php-fpm.conf with one static pool on 127.0.0.1, its ping and status pages on."""
    lines = [
        "[global]",
        f"pid = {root}/php-fpm.pid",
        "error_log = /proc/self/fd/2",  # --force-stderr: the log is the process's stderr, kept in server.log
        "daemonize = no",
        "[portwatch]",
        f"listen = 127.0.0.1:{server.port}",
        "listen.allowed_clients = 127.0.0.1",
        "pm = static",
        "pm.max_children = 2",  # two workers: a probe never waits on a busy one, and few processes on 2 cores
        "ping.path = /ping",
        "ping.response = pong",
        "pm.status_path = /status",
        "catch_workers_output = yes",
        "clear_env = yes",
        "security.limit_extensions = .php",
    ]
    if os.geteuid() == 0:  # a root master needs a pool user; -R lets it be root itself, no system user needed
        lines += ["user = root", "group = root"]
    return "\n".join([*lines, ""])


def wait_until_listening(process: subprocess.Popen, server: PHPFPM) -> None:
    """Return once the port accepts connections; raise with PHP-FPM's log if it exits or takes too long."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"php-fpm did not start listening on {server.port}:\n{server.log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    """Stop PHP-FPM with SIGTERM, which stops its workers at once; kill it as a last resort."""
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
