"""/probe fixtures: a modules file naming the session's test CA, the metrics token, a scrape helper, and Debian's
real blackbox_exporter (`exporter`) reading the same modules, to compare answers with.

`scrape(module, target, **headers)` asks /probe through Django's async test client, so the servers
the test runs on its own event loop keep answering while the view runs its probe in a thread.
`parse(text)` reads an answer with prometheus_client's own text parser.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from django.http import HttpResponse
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import need
from tests.peers.services import free_port, wait_until

TOKEN = "a-test-token-for-metrics"
EXPORTER = shutil.which("prometheus-blackbox-exporter")
START_WAIT = 15.0  # seconds for the exporter to listen

MODULES = """
modules:
  tcp_connect:
    prober: tcp
    timeout: 5s
  tls_connect:
    prober: tcp
    timeout: 5s
    tcp:
      tls: true
      tls_config: {ca_file: "CA_FILE"}
  smtp_starttls:
    prober: tcp
    timeout: 5s
    tcp:
      tls_config: {ca_file: "CA_FILE"}
      query_response:
        - expect: "^220 ([^ ]+) (.+)$"
        - send: "EHLO prober\\r"
        - expect: "^250-STARTTLS"
        - send: "STARTTLS\\r"
        - expect: "^220"
        - starttls: true
        - send: "EHLO prober\\r"
        - expect: "^250-AUTH"
        - send: "QUIT\\r"
  smtp_needs_dsn:
    prober: tcp
    timeout: 5s
    tcp:
      tls_config: {ca_file: "CA_FILE"}
      query_response:
        - expect: "^220"
        - send: "EHLO prober\\r"
        - expect: "^250-DSN"
        - send: "STARTTLS\\r"
        - starttls: true
  banner_expect:
    prober: tcp
    timeout: 5s
    tcp:
      query_response:
        - expect: "^never said$"
  http_2xx:
    prober: http
    timeout: 5s
    http:
      tls_config: {ca_file: "CA_FILE"}
  http_healthy_body:
    prober: http
    timeout: 5s
    http:
      fail_if_body_not_matches_regexp: ["status: (healthy|fine)"]
  http_no_follow:
    prober: http
    timeout: 5s
    http:
      no_follow_redirects: true
      valid_status_codes: [200]
  dns_udp:
    prober: dns
    timeout: 5s
    dns:
      query_name: svc.test
      query_type: A
  icmp:
    prober: icmp
    timeout: 5s
  icmp_df:
    prober: icmp
    icmp:
      dont_fragment: true
  http_api_key:
    prober: http
    http:
      headers: {X-Api-Key: secret}
"""


@pytest.fixture
def modules_file(tmp_path: Path, certs) -> Path:
    path = tmp_path / "blackbox.yml"
    path.write_text(MODULES.replace("CA_FILE", certs.ca_file))
    return path


@pytest.fixture(autouse=True)
def probe_settings(settings, modules_file: Path):
    """Configure /probe as a deployment would: a token, the test modules, no allow-list, no own services."""
    settings.PORTWATCH_METRICS_TOKEN = TOKEN
    settings.PORTWATCH_METRICS_BASIC_AUTH = None
    settings.PORTWATCH_METRICS_PUBLIC = False
    settings.PORTWATCH_PROBE_MODULES = str(modules_file)
    settings.PORTWATCH_PROBE_ALLOW = []
    settings.PORTWATCH_PROBE_ALLOW_OWN_SERVICES = False
    settings.REDIS_URL = None
    return settings


Scrape = Callable[..., Awaitable[HttpResponse]]


@pytest.fixture
def scrape() -> Scrape:
    client = AsyncClient()

    async def ask(module: str, target: str, *, token: str | None = TOKEN, **headers: str) -> HttpResponse:
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        return await client.get("/probe", {"module": module, "target": target}, headers=headers)

    return ask


def parse(response: HttpResponse) -> dict:
    """Return {name: family} from a 200 answer, read by prometheus_client's parser."""
    assert response.status_code == 200, response.content
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def value(families: dict, name: str, **labels: str) -> float:
    """Return the value of the one sample of `name` with these labels."""
    samples = [sample for sample in families[name].samples if all(sample.labels.get(k) == v for k, v in labels.items())]
    assert len(samples) == 1, (name, labels, families[name].samples)
    return samples[0].value


class Processes:
    """Child processes started by the test, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, command: list[str], log: Path, **options) -> subprocess.Popen:
        with log.open("wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, **options)
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.started):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def processes() -> Iterator[Processes]:
    children = Processes()
    try:
        yield children
    finally:
        children.stop()


@pytest.fixture
def exporter(modules_file: Path) -> Iterator[str]:
    """Run prometheus-blackbox-exporter on a free loopback port with the test's modules; yield its address."""
    need(EXPORTER is not None, "prometheus-blackbox-exporter is not installed (apt-get install it, as .ci/run does)")
    port = free_port()
    log = open(modules_file.parent / "blackbox.log", "wb")  # noqa: SIM115 - the child holds it
    command = [EXPORTER, f"--config.file={modules_file}", f"--web.listen-address=127.0.0.1:{port}"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        wait_until(lambda: _accepts(port) or process.poll() is not None, timeout=START_WAIT, what="the exporter")
        assert process.poll() is None, (modules_file.parent / "blackbox.log").read_text()
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
