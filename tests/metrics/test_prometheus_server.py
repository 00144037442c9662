"""A real Prometheus server scrapes a live Portwatch with deploy/prometheus/prometheus.yml adapted to loopback.

Portwatch runs under gunicorn on a SQLite file of its own; a feeder process probes a local HTTP server and a
closed port through the engine every 0.2 s and records each result through the daemon's writer, as workers do.
Prometheus (Debian's `prometheus`) scrapes /metrics and /probe every second; its query API must give
probe_success for both services, and a p99 from the latency histogram that rises when the server slows down.
Without prometheus or gunicorn the test skips, and fails under CI=true.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import need
from tests.peers.services import free_port, wait_listening

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
BIN = Path(sys.executable).parent
TOKEN = "a-token-for-the-prometheus-test"
SLOW = 0.3  # seconds the HTTP server waits once slowed down: the 0.25 .. 0.5 bucket
WAIT = 25.0  # seconds for Prometheus to see what is asked (each scrape is 1 s apart)

FEEDER = """
import asyncio, datetime as dt, sys, time
import django
django.setup()
from monitor.daemon.recording import Outcome, record
from monitor.models import Service
from monitor.probes import Target, parse_options, run_probe

services = list(Service.objects.all())

async def probe_all():
    return await asyncio.gather(*(
        run_probe(s.protocol, Target(s.host, s.port, s.tls_mode), parse_options(s.protocol, s.options), timeout=2.0)
        for s in services
    ))

while True:
    now = dt.datetime.now(dt.UTC)
    results = asyncio.run(probe_all())
    record([Outcome(s.id, "default", now, now, result) for s, result in zip(services, results)])
    print(".", end="", flush=True)
    time.sleep(0.2)
"""

SETUP = """
import django
django.setup()
from monitor.models import Service
Service.objects.create(name="web", host="127.0.0.1", port={web}, protocol="http", failure_threshold=1)
Service.objects.create(name="gone", host="127.0.0.1", port={gone}, protocol="tcp", failure_threshold=1)
"""


class Slowable(http.server.BaseHTTPRequestHandler):
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(Slowable.delay)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def adapted_config(folder: Path, *, portwatch: int, target: str) -> Path:
    """Write prometheus.yml with every address on loopback, a 1 s scrape interval and the token in `folder`."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"portwatch", "portwatch_probe"}, "prometheus.yml has other jobs now: adapt this test"
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (folder / "portwatch.token").write_text(TOKEN + "\n")
    for job in jobs.values():
        job.update(scheme="http", scrape_timeout="1s")
        job["authorization"]["credentials_file"] = str(folder / "portwatch.token")
    jobs["portwatch"]["static_configs"] = [{"targets": [f"127.0.0.1:{portwatch}"]}]
    jobs["portwatch_probe"]["static_configs"] = [{"targets": [target]}]
    (rewrite,) = [
        rule for rule in jobs["portwatch_probe"]["relabel_configs"] if rule.get("target_label") == "__address__"
    ]
    rewrite["replacement"] = f"127.0.0.1:{portwatch}"
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", folder)
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def server() -> Iterator[int]:
    Slowable.delay = 0.0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slowable)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def eventually(port: int, expr: str, accept, what: str) -> dict[str, float]:
    """Return {service: value} of `expr` once `accept` takes it, asking every 0.5 s for up to WAIT seconds."""
    deadline, seen = time.monotonic() + WAIT, {}
    while time.monotonic() < deadline:
        try:
            found = query(port, expr)
        except urllib.error.HTTPError as error:
            if error.code != 503:  # 503: Prometheus listens before its storage is ready; ask again
                raise
            found = []
        seen = {item["metric"].get("service", ""): float(item["value"][1]) for item in found}
        if accept(seen):
            return seen
        time.sleep(0.5)
    pytest.fail(f"Prometheus never gave {what}: {expr} = {seen}")


def test_prometheus_scrapes_portwatch_and_gets_probe_success_and_a_p99_that_follows_the_server(
    tmp_path, server, processes
):
    prometheus = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin:/usr/sbin")
    need(prometheus is not None, "prometheus is not installed (Debian's prometheus package)")
    need((BIN / "gunicorn").exists(), "gunicorn is not installed in the venv")
    env = {
        "PATH": os.environ["PATH"],
        "PORTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portwatch.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "monitor.settings",
        "PORTWATCH_METRICS_TOKEN": TOKEN,
        "PORTWATCH_METRICS_HISTOGRAM_PHASES": "total",
        "PYTHONPATH": str(ROOT),
    }
    (tmp_path / "data").mkdir()
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr
    setup = SETUP.format(web=server, gone=free_port())
    made = subprocess.run([sys.executable, "-c", setup], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr

    web = free_port()
    command = [str(BIN / "gunicorn"), "monitor.wsgi:application", "--bind", f"127.0.0.1:{web}", "--workers", "2"]
    gunicorn = processes.start(command, tmp_path / "gunicorn.log", cwd=ROOT, env=env)
    feeder = processes.start([sys.executable, "-c", FEEDER], tmp_path / "feeder.log", cwd=ROOT, env=env)
    wait_listening(web, gunicorn, tmp_path / "gunicorn.log")

    api = free_port()
    config = adapted_config(tmp_path, portwatch=web, target=f"http://127.0.0.1:{server}/")
    command = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{api}",
    ]
    prom = processes.start(command, tmp_path / "prometheus.log")
    wait_listening(api, prom, tmp_path / "prometheus.log")

    success = eventually(
        api, 'probe_success{job="portwatch"}', lambda seen: seen == {"web": 1, "gone": 0}, "probe_success"
    )
    assert feeder.poll() is None, (tmp_path / "feeder.log").read_text()
    p99 = 'histogram_quantile(0.99, rate(portwatch_probe_duration_seconds_bucket{service="web",phase="total"}[4s]))'
    fast = eventually(api, p99, lambda seen: 0 < seen.get("web", 0) < 0.1, "a p99 of the fast server")
    Slowable.delay = SLOW
    slow = eventually(api, p99, lambda seen: seen.get("web", 0) > 0.25, "a p99 of the slowed server")
    probed = eventually(api, 'probe_success{job="portwatch_probe"}', lambda seen: seen == {"": 1}, "/probe's answer")
    assert (success, fast["web"] < 0.1, 0.25 < slow["web"] <= 0.5, probed) == (
        {"web": 1, "gone": 0},
        True,
        True,
        {"": 1},
    )
