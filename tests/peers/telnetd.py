"""A real telnetd for telnet tests: `running_telnetd()` serves it on a free 127.0.0.1 port.

Debian's telnetd (inetutils-telnetd) has no listening mode: inetd accepts the connection and runs
one telnetd per client with the socket as its stdin, stdout and stderr. The fixture plays inetd
itself (a thread accepts and spawns `telnetd`), which needs no inetd.conf, no service name in
/etc/services and no system-wide daemon. telnetd allocates a pty and runs /bin/login, so it
needs root. Each telnetd runs in a session of its own and is stopped with its group at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator

from tests.conftest import need

ACCEPT_POLL = 0.1  # seconds between checks whether the fixture is stopping
STOP_TIMEOUT = 3.0  # seconds a telnetd gets to exit after SIGTERM before it is killed
MAX_CLIENTS = 50  # connections served before the fixture stops accepting, so no test can spawn without end


@contextlib.contextmanager
def running_telnetd(*arguments: str) -> Iterator[int]:
    """Yield a port on 127.0.0.1 where each connection gets its own `telnetd *arguments`."""
    binary = shutil.which("telnetd", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")
    need(binary is not None, "telnetd is not installed (apt-get install inetutils-telnetd)")
    need(os.geteuid() == 0, "telnetd tests run as root: telnetd allocates a pty and runs login")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(ACCEPT_POLL)
    stopping = threading.Event()
    children: list[subprocess.Popen] = []
    thread = threading.Thread(target=_serve, args=(listener, [binary, *arguments], stopping, children), daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        thread.join()
        listener.close()
        for child in children:
            _stop(child)


def _serve(listener: socket.socket, command: list[str], stopping: threading.Event, children: list) -> None:
    """Accept connections and hand each to a new telnetd, as inetd's `nowait` services do."""
    while not stopping.is_set() and len(children) < MAX_CLIENTS:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        with conn:
            conn.setblocking(True)
            children.append(
                subprocess.Popen(command, stdin=conn, stdout=conn, stderr=conn, start_new_session=True, close_fds=True)
            )


def _stop(child: subprocess.Popen) -> None:
    """Stop a telnetd and what it started in its session (login on the pty gets a hangup when it goes)."""
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
