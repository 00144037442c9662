"""A real Dovecot for POP3 and IMAP tests: `running_dovecot(leaf)` starts one on free 127.0.0.1 ports.

It writes a minimal dovecot.conf into a temporary directory (runtime, state, log and mail all
inside it, a static passdb so no system user is needed), runs `dovecot -F -c CONF`, waits until
every port accepts and greets, and stops it afterwards. With `leaf=None`, TLS is off and not offered.
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

STARTUP_TIMEOUT = 10.0  # seconds Dovecot gets to open its ports; it usually needs well under one
STOP_TIMEOUT = 5.0  # seconds Dovecot gets to stop its children before it is killed; it needs about one
DH_PARAMETERS = Path("/usr/share/dovecot/dh.pem")  # shipped by dovecot-core; DHE ciphers need it


@dataclass(frozen=True)
class Dovecot:
    pop3: int
    imap: int
    pop3s: int | None  # implicit TLS ports; None when TLS is off
    imaps: int | None
    log: Path


@contextlib.contextmanager
def running_dovecot(leaf: trustme.LeafCert | None) -> Iterator[Dovecot]:
    """Run Dovecot with `leaf` as its certificate (or without TLS) until the block ends."""
    binary = shutil.which("dovecot", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")
    need(binary is not None, "dovecot is not installed (apt-get install dovecot-core dovecot-pop3d dovecot-imapd)")
    need(os.geteuid() == 0, "dovecot tests run as root: Dovecot's master switches to its own users")
    with tempfile.TemporaryDirectory(prefix="dovecot-") as temp:
        root = Path(temp)
        root.chmod(0o755)  # login processes run as dovenull and must reach their sockets
        ports = free_ports(4 if leaf else 2)
        server = Dovecot(
            pop3=ports[0],
            imap=ports[1],
            pop3s=ports[2] if leaf else None,
            imaps=ports[3] if leaf else None,
            log=root / "dovecot.log",
        )
        config = root / "dovecot.conf"
        config.write_text(render_config(root, server, leaf))
        process = subprocess.Popen(
            [binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            wait_until_listening(process, server, ports)
            yield server
        finally:
            stop(process)


def render_config(root: Path, server: Dovecot, leaf: trustme.LeafCert | None) -> str:
    """Return a dovecot.conf that keeps everything under `root` and listens on 127.0.0.1 only."""
    for name in ("run", "state", "mail"):
        (root / name).mkdir()
    lines = [
        f"base_dir = {root}/run",
        f"state_dir = {root}/state",
        f"log_path = {server.log}",
        "protocols = pop3 imap",
        "listen = 127.0.0.1",
        "auth_mechanisms = plain",
        # No stats writer: a login process still shaking hands with it at SIGTERM stalls shutdown for 5 s.
        "stats_writer_socket_path =",
        "passdb {\n  driver = static\n  args = password=portwatch\n}",
        f"userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={root}/mail/%u\n}}",
        f"mail_location = maildir:{root}/mail/%u",
        "service pop3-login {",
        f"  inet_listener pop3 {{\n    port = {server.pop3}\n  }}",
        f"  inet_listener pop3s {{\n    port = {server.pop3s or 0}\n    ssl = yes\n  }}",
        "}",
        "service imap-login {",
        f"  inet_listener imap {{\n    port = {server.imap}\n  }}",
        f"  inet_listener imaps {{\n    port = {server.imaps or 0}\n    ssl = yes\n  }}",
        "}",
    ]
    if leaf is None:
        return "\n".join([*lines, "ssl = no", ""])
    cert, key = root / "cert.pem", root / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    lines += ["ssl = yes", f"ssl_cert = <{cert}", f"ssl_key = <{key}"]
    if DH_PARAMETERS.exists():
        lines.append(f"ssl_dh = <{DH_PARAMETERS}")
    return "\n".join([*lines, ""])


def free_ports(count: int) -> list[int]:
    """Return `count` distinct ports that were free a moment ago on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def wait_until_listening(process: subprocess.Popen, server: Dovecot, ports: list[int]) -> None:
    """Return once every port accepts and the plaintext ones greet; raise with Dovecot's log if it fails.

    A greeting, not just an accepted connection, shows the login processes behind the ports are up.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    waiting = list(ports)
    while waiting:
        if process.poll() is not None or time.monotonic() > deadline:
            log = server.log.read_text() if server.log.exists() else "(no log)"
            raise RuntimeError(f"dovecot did not start listening on {waiting}:\n{log}")
        if answers(waiting[0], greets=waiting[0] in (server.pop3, server.imap)):
            waiting.pop(0)
        else:
            time.sleep(0.05)


def answers(port: int, *, greets: bool) -> bool:
    """Return whether `port` accepts a connection and, if `greets`, sends a first line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            return not greets or sock.recv(512).endswith(b"\n")
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    """Stop Dovecot with SIGTERM, which it answers by stopping its children; kill it as a last resort."""
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
