"""A real Dovecot for POP3 and IMAP tests: `running_dovecot(leaf)` starts one on free 127.0.0.1 ports.

It writes a minimal dovecot.conf into a temporary directory (runtime, state, log and mail all
inside it, a passwd-file passdb so no system user is needed), runs `dovecot -F -c CONF`, waits until
every port accepts and greets, and stops it afterwards. With `leaf=None`, TLS is off and not offered.
`accounts` are users who can log in, each with a maildir holding `messages` messages; `settings`
are extra dovecot.conf lines (e.g. "auth_failure_delay = 2 secs").
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.conftest import need

STARTUP_TIMEOUT = 10.0  # seconds Dovecot gets to open its ports; it usually needs well under one
STOP_TIMEOUT = 5.0  # seconds Dovecot gets to stop its children before it is killed; it needs about one
DH_PARAMETERS = Path("/usr/share/dovecot/dh.pem")  # shipped by dovecot-core; DHE ciphers need it
MAIL_USER, MAIL_GROUP = "nobody", "nogroup"  # the static userdb's owner of every mailbox


@dataclass(frozen=True)
class Account:
    """A user who can log in, and how many messages their INBOX holds."""

    name: str
    password: str
    messages: int = 0

    def message(self, number: int) -> bytes:
        """Return message `number` of this mailbox, with CRLF line ends as POP3 counts its size."""
        lines = [
            "From: sender@example.test",
            f"To: {self.name}@example.test",
            f"Subject: test message {number}",
            "Date: Mon, 1 Jan 2024 00:00:00 +0000",
            f"Message-ID: <{number}.{self.name}@example.test>",
            "",
            f"Body of message {number}.",
            "",
        ]
        return "\r\n".join(lines).encode("ascii")

    @property
    def mailbox_bytes(self) -> int:
        return sum(len(self.message(number)) for number in range(1, self.messages + 1))


@dataclass(frozen=True)
class Dovecot:
    pop3: int
    imap: int
    pop3s: int | None  # implicit TLS ports; None when TLS is off
    imaps: int | None
    log: Path


@contextlib.contextmanager
def running_dovecot(
    leaf: trustme.LeafCert | None, *, accounts: Sequence[Account] = (), settings: Sequence[str] = ()
) -> Iterator[Dovecot]:
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
        config.write_text(render_config(root, server, leaf, settings))
        write_accounts(root, accounts)
        process = subprocess.Popen(
            [binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            wait_until_listening(process, server, ports)
            yield server
        finally:
            stop(process)


def render_config(root: Path, server: Dovecot, leaf: trustme.LeafCert | None, settings: Sequence[str] = ()) -> str:
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
        # No auth penalty: Dovecot delays every login from an IP that failed before by 2 s, doubling to 15 s,
        # so one wrong-password test would slow the logins of every test after it. Without this socket
        # the auth process turns the penalty off; auth_failure_delay, which tests set, still applies.
        "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}",
        f"passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {root}/passwd\n}}",
        f"userdb {{\n  driver = static\n  args = uid={MAIL_USER} gid={MAIL_GROUP} home={root}/mail/%u\n}}",
        f"mail_location = maildir:{root}/mail/%u",
        "service pop3-login {",
        f"  inet_listener pop3 {{\n    port = {server.pop3}\n  }}",
        f"  inet_listener pop3s {{\n    port = {server.pop3s or 0}\n    ssl = yes\n  }}",
        "}",
        "service imap-login {",
        f"  inet_listener imap {{\n    port = {server.imap}\n  }}",
        f"  inet_listener imaps {{\n    port = {server.imaps or 0}\n    ssl = yes\n  }}",
        "}",
        *settings,
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


def write_accounts(root: Path, accounts: Sequence[Account]) -> None:
    """Write the passwd-file and each account's maildir, owned by the user Dovecot reads mail as."""
    (root / "passwd").write_text("".join(f"{account.name}:{{PLAIN}}{account.password}\n" for account in accounts))
    uid, gid = pwd.getpwnam(MAIL_USER).pw_uid, grp.getgrnam(MAIL_GROUP).gr_gid
    for account in accounts:
        maildir = root / "mail" / account.name
        for folder in ("cur", "new", "tmp"):
            (maildir / folder).mkdir(parents=True)
        for number in range(1, account.messages + 1):
            (maildir / "new" / f"1700000000.M{number}P1.portwatch").write_bytes(account.message(number))
        for path in (maildir, *maildir.rglob("*")):
            os.chown(path, uid, gid)


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
