"""A real tftpd-hpa for TFTP tests: `running_tftpd(files)` serves a temporary directory on a free 127.0.0.1 port.

It runs `in.tftpd --foreground --address 127.0.0.1:PORT --secure --user root DIR` (--secure chroots
into DIR, which needs root; --user root keeps it from switching to nobody, who could not read the
temporary directory), waits until it answers a read request, and stops it with the transfer
children it forked (its own process group) afterwards.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import need

STARTUP_TIMEOUT = 10.0  # seconds in.tftpd gets to answer; it needs a few milliseconds
STOP_TIMEOUT = 3.0
READY_PROBE = b"\x00\x01portwatch-ready-check\x00octet\x00"  # a read request for a file that is not there


@dataclass(frozen=True)
class Tftpd:
    port: int
    root: Path  # the served directory


@contextlib.contextmanager
def running_tftpd(files: Mapping[str, bytes]) -> Iterator[Tftpd]:
    """Serve `files` (name -> content, readable by all as tftpd-hpa requires) until the block ends."""
    binary = shutil.which("in.tftpd", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")
    need(binary is not None, "in.tftpd is not installed (apt-get install tftpd-hpa)")
    need(os.geteuid() == 0, "tftpd tests run as root: in.tftpd --secure chroots into the served directory")
    with tempfile.TemporaryDirectory(prefix="tftpd-") as temp:
        root = Path(temp)
        root.chmod(0o755)
        for name, content in files.items():
            (root / name).write_bytes(content)
            (root / name).chmod(0o644)
        port = free_udp_port()
        command = [binary, "--foreground", "--address", f"127.0.0.1:{port}", "--secure", "--user", "root", str(root)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            wait_until_answering(process, port)
            yield Tftpd(port, root)
        finally:
            stop(process)


def free_udp_port() -> int:
    """Return a UDP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(process: subprocess.Popen, port: int) -> None:
    """Return once the server answers a read request (with ERROR 1); raise with its stderr if it does not."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline and process.poll() is None:
            try:
                sock.sendto(READY_PROBE, ("127.0.0.1", port))
                if sock.recvfrom(1024)[0][:2] == b"\x00\x05":
                    return
            except OSError:  # not bound yet: ICMP port unreachable, or no answer within the poll
                time.sleep(0.05)
    process.kill()
    _, stderr = process.communicate()
    raise RuntimeError(f"in.tftpd did not answer on 127.0.0.1:{port}: {stderr.decode(errors='replace')}")


def stop(process: subprocess.Popen) -> None:
    """Stop in.tftpd and the transfer children in its process group; kill them as a last resort."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if process.stderr:
        process.stderr.close()
