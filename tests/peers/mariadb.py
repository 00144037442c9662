"""A real MariaDB for MySQL tests: `running_mariadb(leaf)` starts one on a free 127.0.0.1 port.

It makes a fresh data directory in a temporary directory with `mariadb-install-db`, runs `mariadbd`
with everything inside it (socket, pid file, error log) and never touches the machine's own server,
waits until the port greets, and stops it afterwards. Accounts are made over the unix socket as root,
who has no TCP account: so a test can leave 127.0.0.1 with no account at all (error 1130).
With `leaf=None`, TLS is off and not offered.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.conftest import need
from tests.peers.dovecot import free_ports

STARTUP_TIMEOUT = 30.0  # seconds mariadbd gets to greet on its port; it needs about one on an idle machine
STOP_TIMEOUT = 20.0  # seconds for a clean shutdown (SIGTERM) before it is killed
CLIENT_TIMEOUT = 30.0  # seconds one `mariadb` client command may take
USER, PASSWORD = "monitor", "portwatch-secret"  # the account tests log in with, from 127.0.0.1
# Small InnoDB files: the defaults write ~110 MB per data directory, this ~20 MB.
SMALL_INNODB = ["--innodb-log-file-size=4M", "--innodb-buffer-pool-size=8M"]


@dataclass(frozen=True)
class MariaDB:
    port: int
    socket: Path
    log: Path
    client: str  # the `mariadb` command-line client

    def sql(self, statements: str) -> str:
        """Run `statements` as root over the unix socket and return what they print (tab-separated, no headers)."""
        done = subprocess.run(
            [*self._client_command("root"), "-e", statements], capture_output=True, text=True, timeout=CLIENT_TIMEOUT
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb failed on {statements!r}: {done.stderr.strip()}")
        return done.stdout.strip()

    def status(self, name: str) -> int:
        """Return a global status counter, e.g. Aborted_clients."""
        return int(self.sql(f"SHOW GLOBAL STATUS LIKE '{name}'").split("\t")[1])

    @contextlib.contextmanager
    def holding(self, count: int, user: str) -> Iterator[None]:
        """Keep `count` sessions of `user` logged in over the unix socket until the block ends.

        Each session has answered a query before the block starts, so all of them count towards
        max_connections; afterwards each client quits and the block waits until the server let them go.
        """
        clients: list[subprocess.Popen] = []
        before = self.status("Threads_connected")  # the asking session included, as it will be afterwards
        try:
            for _ in range(count):
                client = subprocess.Popen(
                    self._client_command(user),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                clients.append(client)
                client.stdin.write("SELECT 'held';\n")
                client.stdin.flush()
                answer = client.stdout.readline().strip()
                if answer != "held":
                    raise RuntimeError(f"session {len(clients)} of {user} was not let in: {answer}")
            yield
        finally:
            for client in clients:
                client.stdin.close()
                client.wait(CLIENT_TIMEOUT)
            self._wait_until_connected(before)

    def _wait_until_connected(self, sessions: int) -> None:
        """Return once at most `sessions` are connected, counting the one that asks."""
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while self.status("Threads_connected") > sessions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sessions still open after {CLIENT_TIMEOUT} s")
            time.sleep(0.05)

    def _client_command(self, user: str) -> list[str]:
        return [self.client, "--no-defaults", f"--socket={self.socket}", f"--user={user}", "--batch", "--unbuffered",
                "--skip-column-names"]  # fmt: skip


@contextlib.contextmanager
def running_mariadb(leaf: trustme.LeafCert | None) -> Iterator[MariaDB]:
    """Run MariaDB with `leaf` as its certificate (or without TLS) until the block ends; USER may log in."""
    path = f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin"
    server, install, client = (shutil.which(name, path=path) for name in ("mariadbd", "mariadb-install-db", "mariadb"))
    need(None not in (server, install, client), "MariaDB is not installed (apt-get install mariadb-server)")
    # mariadbd refuses to run as root unless told to; any other user runs it as itself.
    as_user = ["--user=root"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory(prefix="mariadb-") as temp:
        root = Path(temp)
        data = root / "data"
        installed = subprocess.run(
            [install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
             "--skip-test-db", "--skip-name-resolve", *as_user, *SMALL_INNODB],
            capture_output=True, text=True, timeout=STARTUP_TIMEOUT,
        )  # fmt: skip
        if installed.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{installed.stdout}\n{installed.stderr}")
        database = MariaDB(port=free_ports(1)[0], socket=root / "mysqld.sock", log=root / "error.log", client=client)
        command = [
            server, "--no-defaults", *as_user, f"--datadir={data}", f"--socket={database.socket}",
            f"--port={database.port}", "--bind-address=127.0.0.1", f"--pid-file={root / 'mysqld.pid'}",
            f"--log-error={database.log}", f"--tmpdir={root}", "--skip-name-resolve", *SMALL_INNODB,
            *tls_arguments(root, leaf),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_until_greeting(process, database)
            database.sql(
                # The install's root accounts for 127.0.0.1 and ::1 would make every TCP host known.
                "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1';"
                f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
            )
            yield database
        finally:
            stop(process)


def tls_arguments(root: Path, leaf: trustme.LeafCert | None) -> list[str]:
    """Return the options that make mariadbd offer TLS with `leaf`, after writing its files into `root`."""
    if leaf is None:
        return []
    cert, key = root / "cert.pem", root / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return [f"--ssl-cert={cert}", f"--ssl-key={key}"]


def wait_until_greeting(process: subprocess.Popen, database: MariaDB) -> None:
    """Return once the port sends the first bytes of a greeting; raise with the error log if it never does."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not greets(database.port):
        if process.poll() is not None or time.monotonic() > deadline:
            log = database.log.read_text() if database.log.exists() else "(no log)"
            raise RuntimeError(f"mariadbd did not start listening on {database.port}:\n{log}")
        time.sleep(0.1)


def greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            return len(sock.recv(64)) >= 4
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    """Stop mariadbd with SIGTERM, which shuts it down cleanly; kill it as a last resort."""
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
