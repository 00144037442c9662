"""A real vsftpd for FTP tests: `running_vsftpd(leaf, implicit=...)` starts one on a free 127.0.0.1 port.

It writes a vsftpd.conf into a temporary directory (chroot dirs and log inside it) and runs
`vsftpd CONF` in the foreground in a process group of its own, so stopping it also stops the
session processes it forked. Logins are anonymous only: vsftpd's `secure_email_list` makes
`ANONYMOUS_PASSWORD` the one password it accepts, so a wrong one is a real "530 Login incorrect."
from vsftpd's own check, with no system user to create and no PAM stack (whose failure delay and
/etc/ftpusers rules differ between hosts) in the way. With `leaf=None`, TLS is off and not offered.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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

ANONYMOUS_PASSWORD = "portwatch@example.test"  # the only password vsftpd accepts for `anonymous`
STARTUP_TIMEOUT = 10.0  # seconds vsftpd gets to open its port; it needs a few milliseconds
STOP_TIMEOUT = 5.0  # seconds vsftpd gets to exit on SIGTERM before it is killed


@dataclass(frozen=True)
class Vsftpd:
    port: int
    log: Path


@contextlib.contextmanager
def running_vsftpd(leaf: trustme.LeafCert | None, *, implicit: bool = False) -> Iterator[Vsftpd]:
    """Run vsftpd with `leaf` as its certificate (explicit FTPS, or implicit with `implicit`) until the block ends."""
    binary = shutil.which("vsftpd", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")
    need(binary is not None, "vsftpd is not installed (apt-get install vsftpd)")
    need(os.geteuid() == 0, "vsftpd tests run as root: vsftpd chroots and drops to its own user")
    with tempfile.TemporaryDirectory(prefix="vsftpd-") as temp:
        root = Path(temp)
        root.chmod(0o755)
        server = Vsftpd(port=free_ports(1)[0], log=root / "vsftpd.log")
        config = root / "vsftpd.conf"
        config.write_text(render_config(root, server, leaf, implicit=implicit))
        process = subprocess.Popen(
            [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_until_listening(process, server, greets=not implicit)
            yield server
        finally:
            stop(process)


def render_config(root: Path, server: Vsftpd, leaf: trustme.LeafCert | None, *, implicit: bool) -> str:
    """Return a vsftpd.conf that keeps everything under `root` and listens on 127.0.0.1 only."""
    for name in ("empty", "anon"):
        (root / name).mkdir(mode=0o755)  # owned by root, not writable by the session user: vsftpd insists
    (root / "emails").write_text(f"{ANONYMOUS_PASSWORD}\n")
    settings = {
        "listen": "YES",
        "listen_ipv6": "NO",
        "listen_address": "127.0.0.1",
        "listen_port": server.port,
        "background": "NO",
        "secure_chroot_dir": root / "empty",
        "anonymous_enable": "YES",
        "anon_root": root / "anon",
        "secure_email_list_enable": "YES",
        "email_password_file": root / "emails",
        "local_enable": "NO",
        "write_enable": "NO",
        "delay_failed_login": 0,
        # Containers often forbid the namespaces and seccomp filter vsftpd sets up per session ("500 OOPS").
        "isolate": "NO",
        "isolate_network": "NO",
        "seccomp_sandbox": "NO",
        "xferlog_enable": "YES",
        "vsftpd_log_file": server.log,
        "log_ftp_protocol": "YES",
    }
    if leaf is not None:
        cert, key = root / "cert.pem", root / "key.pem"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        settings |= {
            "ssl_enable": "YES",
            "implicit_ssl": "YES" if implicit else "NO",
            "rsa_cert_file": cert,
            "rsa_private_key_file": key,
            "allow_anon_ssl": "YES",
            "ssl_ciphers": "HIGH",  # vsftpd 3.0.3 defaults to DES-CBC3-SHA, which OpenSSL 3 clients refuse
        }
    return "".join(f"{name}={value}\n" for name, value in settings.items())


def wait_until_listening(process: subprocess.Popen, server: Vsftpd, *, greets: bool) -> None:
    """Return once the port accepts (and, without implicit TLS, greets); raise with vsftpd's log if it fails."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not answers(server.port, greets=greets):
        if process.poll() is not None or time.monotonic() > deadline:
            log = server.log.read_text() if server.log.exists() else "(no log)"
            raise RuntimeError(f"vsftpd did not start listening on {server.port}:\n{log}")
        time.sleep(0.05)


def answers(port: int, *, greets: bool) -> bool:
    """Return whether `port` accepts a connection and, if `greets`, sends a 220 greeting."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            return not greets or sock.recv(512).startswith(b"220")
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    """Stop vsftpd and the session processes it forked (its process group); kill them as a last resort."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
