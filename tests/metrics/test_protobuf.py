"""Prometheus's protobuf exposition as `monitor.metrics.protobuf` writes it, read by a real Prometheus server.

Debian's prometheus (2.42) asks for protobuf once native histograms are on (`--enable-feature`); the test
checks it asked, and that the gauge, counter and classic histogram it stored are the ones encoded.
"""

from __future__ import annotations

import http.server
import math
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from monitor.metrics import protobuf
from tests.conftest import need
from tests.metrics.conftest import Processes
from tests.metrics.test_prometheus_server import eventually
from tests.peers.services import free_port, wait_listening

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CUMULATIVE = (0, 1, 3, 10, 40, 90, 99, 100, 100, 100, 100)


def answer() -> bytes:
    web = protobuf.labels([("service", "web"), ("host", "127.0.0.1"), ("note", 'say "hi"\nü')])
    dns = protobuf.labels([("service", "dns"), ("host", "127.0.0.1"), ("note", "")])
    return b"".join(
        [
            protobuf.family("pw_test_up", "1 when up", "gauge", [protobuf.gauge(web, 1), protobuf.gauge(dns, 0)]),
            protobuf.family("pw_test_checks_total", "Checks", "counter", [protobuf.counter(web, 123456789)]),
            protobuf.family(
                "pw_test_seconds",
                "Latency",
                "histogram",
                [protobuf.histogram(web, BOUNDS, CUMULATIVE, count=105, total=21.5)],
            ),
            protobuf.family("pw_test_ratio", "NaN is a value too", "gauge", [protobuf.gauge(dns, math.nan)]),
        ]
    )


class Exporter(http.server.BaseHTTPRequestHandler):
    accepted: list[str] = []

    def do_GET(self) -> None:
        Exporter.accepted.append(self.headers.get("Accept", ""))
        body = answer()
        self.send_response(200)
        self.send_header("Content-Type", protobuf.CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[int]:
    Exporter.accepted = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_varints_are_seven_bits_a_byte_low_first():
    assert [protobuf.varint(n) for n in (0, 1, 127, 128, 300, 2**32)] == [
        b"\x00",
        b"\x01",
        b"\x7f",
        b"\x80\x01",
        b"\xac\x02",
        b"\x80\x80\x80\x80\x10",
    ]


def test_a_real_prometheus_reads_every_kind_as_encoded(exporter, processes: Processes, tmp_path: Path):
    prometheus = shutil.which("prometheus")
    need(prometheus is not None, "prometheus is not installed (Debian's prometheus package)")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [{"job_name": "pb", "static_configs": [{"targets": [f"127.0.0.1:{exporter}"]}]}],
            }
        )
    )
    api = free_port()
    command = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{api}",
        "--enable-feature=native-histograms",
    ]
    prom = processes.start(command, tmp_path / "prometheus.log")
    wait_listening(api, prom, tmp_path / "prometheus.log")

    up = eventually(api, "pw_test_up", lambda seen: len(seen) == 2, "the gauge")
    checks = eventually(api, "pw_test_checks_total", lambda seen: "web" in seen, "the counter")
    below = eventually(api, 'pw_test_seconds_bucket{le="0.1"}', lambda seen: "web" in seen, "a bucket")
    everything = eventually(api, 'pw_test_seconds_bucket{le="+Inf"}', lambda seen: "web" in seen, "+Inf")
    count = eventually(api, "pw_test_seconds_count", lambda seen: "web" in seen, "the count")
    total = eventually(api, "pw_test_seconds_sum", lambda seen: "web" in seen, "the sum")
    ratio = eventually(api, "pw_test_ratio", lambda seen: "dns" in seen, "a NaN")
    labels = eventually(api, 'count by (note) (pw_test_up{service="web"})', lambda seen: True, "labels")
    note = next(iter(labels), None)  # the series' note label, read back through count by (note)
    assert any("application/vnd.google.protobuf" in accept for accept in Exporter.accepted), Exporter.accepted
    assert (up, checks, below, everything, count, total) == (
        {"web": 1.0, "dns": 0.0},
        {"web": 123456789.0},
        {"web": 40.0},
        {"web": 105.0},
        {"web": 105.0},
        {"web": 21.5},
    )
    assert math.isnan(ratio["dns"]) and note == ""  # count by (note) has no service label: keyed ""
