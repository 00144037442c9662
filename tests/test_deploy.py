"""The production setup of deploy/systemd/: its env.example passes `check --deploy`, and the admin login works
through a TLS-terminating proxy, spoken to over HTTP against a real gunicorn as portwatch-web.service runs it.
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = ROOT / "deploy" / "systemd" / "env.example"
BIN = Path(sys.executable).parent
HOST = "portwatch.example.com"  # env.example's host
BASE_URL = f"https://{HOST}"
PASSWORD = "a-long-admin-password-" + secrets.token_hex(8)
START_WAIT = 20.0  # seconds for gunicorn to listen


def documented_environment(data_dir: Path) -> dict[str, str]:
    """Return env.example's variables as systemd reads them, with its two CHANGE-ME filled in as it says.

    The secret key becomes a real one; the PostgreSQL URL a SQLite file in `data_dir`, which
    PORTWATCH_DATA_DIR points at, as the units set it.
    """
    variables = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            variables[name.strip()] = value.strip()
    placeholders = sorted(name for name, value in variables.items() if "CHANGE-ME" in value)
    assert placeholders == ["DATABASE_URL", "DJANGO_SECRET_KEY"], "a new placeholder: fill it in here too"
    variables["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    variables["DATABASE_URL"] = f"sqlite:///{data_dir / 'portwatch.sqlite3'}"
    return {"PATH": os.environ["PATH"], "PORTWATCH_DATA_DIR": str(data_dir), **variables}


def manage(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


# manage.py check --deploy --------------------------------------------------------------------------


def test_check_deploy_reports_nothing_with_the_documented_environment(tmp_path):
    run = manage(documented_environment(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert (run.returncode, run.stdout.strip()) == (0, "System check identified no issues (0 silenced)."), run.stderr


def test_check_deploy_warns_about_plain_http_in_the_embedded_mode(tmp_path):
    run = manage({"PATH": os.environ["PATH"], "PORTWATCH_DATA_DIR": str(tmp_path)}, "check", "--deploy")
    warned = set(re.findall(r"\(security\.(W\d+)\)", run.stderr))
    assert {"W004", "W008", "W012", "W016"} <= warned  # HSTS, SSL redirect, secure session and CSRF cookies


# The admin login through the proxy ---------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def cookies(self) -> dict[str, str]:
        """Return each Set-Cookie's name and its whole header value (attributes included)."""
        return {value.split("=", 1)[0]: value for value in self.headers.get_all("Set-Cookie") or []}


class Proxy:
    """Speak to gunicorn as the documented nginx does for a browser: Host, X-Forwarded-Proto, X-Forwarded-For."""

    def __init__(self, port: int, *, host: str = HOST, https: bool = True) -> None:
        self.port, self.host, self.https = port, host, https
        self.jar: dict[str, str] = {}

    def request(self, method: str, path: str, *, body: str | None = None, headers: dict | None = None) -> Reply:
        sent = {"Host": self.host, "X-Forwarded-For": "203.0.113.7", **(headers or {})}
        if self.https:
            sent["X-Forwarded-Proto"] = "https"
        if self.jar:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.jar.items())
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, response.headers, response.read().decode("utf-8", "replace"))
        finally:
            connection.close()
        for name, value in reply.cookies().items():
            self.jar[name] = value.split(";", 1)[0].split("=", 1)[1]
        return reply

    def log_in(self, *, origin: str = BASE_URL) -> Reply:
        """Fetch the login page, then post its CSRF token and the admin's credentials from `origin`."""
        page = self.request("GET", "/admin/login/?next=/admin/")
        assert page.status == 200, page.status
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.body).group(1)
        form = {"csrfmiddlewaretoken": token, "username": "admin", "password": PASSWORD, "next": "/admin/"}
        return self.request(
            "POST",
            "/admin/login/?next=/admin/",
            body=urllib.parse.urlencode(form),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": origin,
                "Referer": f"{origin}/admin/login/?next=/admin/",
            },
        )


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Path:
    """Return a data directory with a migrated SQLite database and the user `admin`."""
    data_dir = tmp_path_factory.mktemp("deploy")
    env = documented_environment(data_dir)
    for command in (["migrate", "--noinput"], ["createsuperuser", "--noinput", "--username", "admin"]):
        run = manage(
            {**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD, "DJANGO_SUPERUSER_EMAIL": "a@example.com"}, *command
        )
        assert run.returncode == 0, run.stderr
    return data_dir


@pytest.fixture(scope="module")
def serve(database) -> Iterator[Callable[..., int]]:
    """Return `serve(*options, **changes)`: the port of a gunicorn run as the unit runs it, plus `options`,
    with env.example changed by `changes` (None removes a variable). One server per set, stopped after the module.
    """
    servers: dict[tuple, tuple[subprocess.Popen, int]] = {}

    def start(*options: str, **changes: str | None) -> int:
        key = (options, tuple(sorted(changes.items())))
        if key not in servers:
            env = documented_environment(database)
            env = {name: value for name, value in {**env, **changes}.items() if value is not None}
            servers[key] = gunicorn(env, database / f"gunicorn-{len(servers)}.log", options)
        return servers[key][1]

    try:
        yield start
    finally:
        for process, _ in servers.values():
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def gunicorn(env: dict[str, str], log: Path, options: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
    """Start gunicorn with portwatch-web.service's options (one worker) on a free port; wait until it listens."""
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    command = [str(BIN / "gunicorn"), "monitor.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    command += ["--timeout", "30", "--no-control-socket", *options]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    pytest.fail(f"gunicorn did not listen on 127.0.0.1:{port}:\n{log.read_text()}")


def test_admin_login_works_behind_a_tls_terminating_proxy(serve):
    proxy = Proxy(serve())
    login = proxy.log_in()
    assert (login.status, login.headers["Location"]) == (302, "/admin/")
    index = proxy.request("GET", "/admin/")
    assert (index.status, 'id="logout-form"' in index.body) == (200, True)


def test_the_session_cookie_travels_over_https_only(serve):
    session = Proxy(serve()).log_in().cookies()["sessionid"]
    assert "Secure" in [attribute.strip() for attribute in session.split(";")]


def test_a_login_posted_from_another_origin_is_refused(serve):
    assert Proxy(serve()).log_in(origin="https://elsewhere.example.net").status == 403


def test_https_responses_ask_browsers_to_stay_on_https(serve):
    page = Proxy(serve()).request("GET", "/admin/login/")
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


def test_a_request_the_proxy_did_not_mark_as_https_is_redirected_to_https(serve):
    page = Proxy(serve(), https=False).request("GET", "/admin/login/")
    assert (page.status, page.headers["Location"]) == (301, f"{BASE_URL}/admin/login/")


@pytest.mark.parametrize(("base_url", "status"), [(f"{BASE_URL}:8443", 302), (None, 403)])
def test_only_the_base_url_as_trusted_origin_lets_a_login_through_a_proxy_that_drops_the_port(serve, base_url, status):
    # nginx's $host has no port, so Django sees https://portwatch.example.com while the browser
    # posts from https://portwatch.example.com:8443: only CSRF_TRUSTED_ORIGINS can match them.
    proxy = Proxy(serve(PORTWATCH_BASE_URL=base_url))
    assert proxy.log_in(origin=f"{BASE_URL}:8443").status == status


@pytest.mark.parametrize(("behind_proxy", "status"), [("true", 200), ("false", 301)])
def test_behind_proxy_makes_django_believe_the_proxy_when_gunicorn_does_not(serve, behind_proxy, status):
    # gunicorn believes X-Forwarded-Proto only from --forwarded-allow-ips (default: 127.0.0.1, where
    # the documented proxy is); here it believes no one, so only PORTWATCH_BEHIND_PROXY can say https.
    port = serve("--forwarded-allow-ips", "192.0.2.1", PORTWATCH_BEHIND_PROXY=behind_proxy)
    assert Proxy(port).request("GET", "/admin/login/").status == status
