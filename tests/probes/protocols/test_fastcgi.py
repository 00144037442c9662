"""The FastCGI prober against a real PHP-FPM (ping, scripts, missing script) and fake servers that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import urllib.parse
from collections.abc import AsyncIterator, Iterator

import pytest

from monitor.probes import OptionsError, Status, Target, run_probe
from monitor.probes.protocols import fastcgi
from tests.peers import hostile
from tests.peers.hostile import HostileServer
from tests.peers.php_fpm import PHPFPM, running_php_fpm
from tests.peers.smtp_server import LineServer

TIMEOUT = 5.0
SILENCE_TIMEOUT = 1.0  # for servers that never answer: the probe must give up at its deadline
STATUS_FORMS = "must be status codes, classes like 2xx or ranges like 200-299, separated by commas"
FLOOD_LIMIT = 8 * 1024 * 1024  # bytes a flooding fake sends at most, far more than the prober reads

SCRIPTS = {
    "ok.php": "<?php echo 'status: healthy';",
    "down.php": "<?php http_response_code(503); echo 'maintenance';",
    "logs.php": "<?php error_log('disk almost full'); echo 'ok';",
    "echo.php": "<?php echo $_SERVER['REQUEST_METHOD'], ' ', $_SERVER['SCRIPT_NAME'], ' ', $_SERVER['QUERY_STRING'];",
}


@pytest.fixture(scope="module")
def fpm() -> Iterator[PHPFPM]:
    with running_php_fpm(SCRIPTS) as server:
        yield server


async def probe(port: int, timeout: float = TIMEOUT, **raw):
    options = fastcgi.Options.from_mapping(raw)
    return await run_probe("fastcgi", Target("127.0.0.1", port), options, timeout=timeout)


def record(kind: int, content: bytes, *, version: int = 1, request_id: int = 1, padding: int = 0) -> bytes:
    return struct.pack("!BBHHBx", version, kind, request_id, len(content), padding) + content + b"\0" * padding


def end_request(protocol_status: int = 0, app_status: int = 0) -> bytes:
    return record(fastcgi.END_REQUEST, struct.pack("!IB3x", app_status, protocol_status))


def stdout(text: bytes) -> bytes:
    return record(fastcgi.STDOUT, text) + record(fastcgi.STDOUT, b"")


@contextlib.asynccontextmanager
async def fake(answer: bytes, *, flood: bytes = b"", hang_up: bool = True) -> AsyncIterator[int]:
    """Serve FastCGI badly: after the request's empty STDIN record, send `answer`, then repeat `flood`.

    Then hang up, or with `hang_up=False` keep the connection open until the client closes it.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(record(fastcgi.STDIN, b""))
            writer.write(answer)
            sent = 0
            while flood and sent < FLOOD_LIMIT:
                writer.write(flood)
                await writer.drain()
                sent += len(flood)
            await writer.drain()
            if not hang_up:
                await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.mark.peers
async def test_it_gets_pong_from_php_fpms_ping_path(fpm):
    result = await probe(fpm.port)

    assert result.status is Status.UP, result.reason
    assert result.banner == "Status: 200 OK"
    assert result.details["body_bytes"] == len(b"pong")
    assert result.details["content_type"] == "text/plain;charset=UTF-8"
    assert result.details["server_software"].startswith("PHP/8.")
    assert (result.details["app_status"], result.details["protocol_status"]) == (0, 0)


@pytest.mark.peers
async def test_it_reads_the_status_page_with_its_query(fpm):
    result = await probe(fpm.port, path="/status?json", expect='"pool":"portwatch"')

    assert result.status is Status.UP, result.reason
    assert result.details["content_type"] == "application/json"


@pytest.mark.peers
async def test_it_does_not_find_pong_where_ping_is_not_configured(fpm):
    result = await probe(fpm.port, path="/healthz")

    assert (result.status, str(result.failure)) == (Status.DOWN, "http_status")
    assert result.reason == "FastCGI status 404 Not Found, expected 200"


@pytest.mark.peers
async def test_it_runs_a_script_and_checks_its_body(fpm):
    healthy = await probe(fpm.port, path="/ok.php", script_filename=fpm.script("ok.php"), expect="healthy")
    missing = await probe(fpm.port, path="/ok.php", script_filename=fpm.script("ok.php"), expect="all good")

    assert healthy.status is Status.UP, healthy.reason
    assert healthy.details["body_bytes"] == len("status: healthy")
    assert (missing.status, str(missing.failure)) == (Status.DOWN, "keyword_missing")
    assert missing.reason == "'all good' not found in the response body (15 bytes)"


@pytest.mark.peers
async def test_a_script_needs_no_pong(fpm):
    result = await probe(fpm.port, path="/ok.php", script_filename=fpm.script("ok.php"))

    assert result.status is Status.UP, result.reason


@pytest.mark.peers
async def test_it_sends_the_method_script_name_and_query(fpm):
    result = await probe(
        fpm.port, path="/echo.php?check=1", script_filename=fpm.script("echo.php"), expect="GET /echo.php check=1"
    )

    assert result.status is Status.UP, result.reason


@pytest.mark.peers
async def test_it_reports_a_script_status_outside_the_expected_ones(fpm):
    down = await probe(fpm.port, path="/down.php", script_filename=fpm.script("down.php"))
    expected = await probe(fpm.port, path="/down.php", script_filename=fpm.script("down.php"), expect_status="5xx")

    assert (down.status, str(down.failure)) == (Status.DOWN, "http_status")
    assert down.reason == "FastCGI status 503 Service Unavailable, expected 200"
    assert down.banner == "Status: 503 Service Unavailable"
    assert expected.status is Status.UP, expected.reason


@pytest.mark.peers
async def test_it_reports_a_missing_script_with_php_fpms_stderr(fpm):
    result = await probe(fpm.port, path="/gone.php", script_filename=fpm.script("gone.php"))

    assert (result.status, str(result.failure)) == (Status.DOWN, "http_status")
    assert result.reason == "FastCGI status 404 Not Found, expected 200"
    assert result.details["stderr"] == "Primary script unknown"


@pytest.mark.peers
async def test_it_keeps_what_a_script_logs_to_stderr(fpm):
    result = await probe(fpm.port, path="/logs.php", script_filename=fpm.script("logs.php"))

    assert result.status is Status.UP, result.reason
    assert result.details["stderr"] == "PHP message: disk almost full"


async def test_it_reports_an_overloaded_server_as_rejected():
    async with fake(end_request(protocol_status=2)) as port:
        result = await probe(port)

    assert (result.status, str(result.failure)) == (Status.DOWN, "server_rejected")
    assert result.reason == "FastCGI server refused the request: overloaded"


async def test_it_reports_a_server_that_does_not_know_the_responder_role():
    async with fake(end_request(protocol_status=3)) as port:
        result = await probe(port)

    assert (str(result.failure), result.reason) == (
        "server_rejected",
        "FastCGI server refused the request: does not know the responder role",
    )


async def test_it_strips_control_characters_from_stderr_and_headers():
    answer = record(fastcgi.STDERR, b"bad\x1b[31m\r\nthing\x00") + stdout(
        b"X-Powered-By: Evil\x07/1.0\r\nContent-Type: text/plain\r\n\r\npong"
    )
    async with fake(answer + end_request()) as port:
        result = await probe(port)

    assert result.status is Status.UP, result.reason
    assert result.details["stderr"] == "bad [31m thing"
    assert result.details["server_software"] == "Evil /1.0"


async def test_it_skips_record_padding():
    answer = record(fastcgi.STDOUT, b"Content-Type: text/plain\r\n\r\npong", padding=7) + record(fastcgi.STDOUT, b"")
    async with fake(answer + end_request()) as port:
        result = await probe(port)

    assert result.status is Status.UP, result.reason


async def test_it_stops_reading_a_flood_of_full_records():
    big = record(fastcgi.STDOUT, b"x" * fastcgi.MAX_CONTENT, padding=255)
    async with fake(stdout(b"Status: 200\r\n\r\n")[:-8], flood=big) as port:
        result = await probe(port)

    assert (result.status, str(result.failure)) == (Status.DOWN, "response_too_large")
    assert result.reason == (
        "FastCGI response exceeds 1024 KiB and 'pong' not found in the response body"
        f" ({fastcgi.MAX_STDOUT_BYTES - len(b'Status: 200') - 4} bytes)"
    )


async def test_it_reports_a_flood_of_empty_records():
    async with fake(b"", flood=record(fastcgi.STDERR, b"") * 1024) as port:
        result = await probe(port)

    assert (str(result.failure), result.reason) == (
        "response_too_large",
        f"FastCGI answer has more than {fastcgi.MAX_RECORDS} records",
    )


async def test_it_times_out_on_a_record_longer_than_what_is_sent():
    async with fake(
        struct.pack("!BBHHBx", 1, fastcgi.STDOUT, 1, 0xFFFF, 0xFF) + b"Status: 200\r\n", hang_up=False
    ) as port:
        result = await probe(port, timeout=SILENCE_TIMEOUT)

    assert (result.status, str(result.failure)) == (Status.DOWN, "timeout")
    assert result.reason == "timed out waiting for a FastCGI record"


async def test_it_reports_a_record_for_another_request():
    async with fake(record(fastcgi.STDOUT, b"Status: 200\r\n\r\npong", request_id=7)) as port:
        result = await probe(port)

    assert (str(result.failure), result.reason) == ("protocol_error", "FastCGI record for request 7; we sent request 1")


async def test_it_reports_stdout_without_the_end_of_its_headers():
    async with fake(stdout(b"pong") + end_request()) as port:
        result = await probe(port)

    assert (str(result.failure), result.reason) == ("protocol_error", "FastCGI response has no end of headers: pong")


async def test_it_reports_a_server_that_hangs_up_before_end_request():
    async with fake(stdout(b"Content-Type: text/plain\r\n\r\npong")) as port:
        result = await probe(port)

    assert (result.status, str(result.failure)) == (Status.DOWN, "connection_closed")


async def test_it_reports_binary_noise_as_a_protocol_error():
    async with HostileServer(hostile.garbage, "tcp") as server:
        result = await probe(server.port)

    assert (result.status, str(result.failure)) == (Status.DOWN, "protocol_error")
    assert result.reason.startswith("server did not answer with FastCGI: \\x16\\x03\\x01")


async def test_it_reports_another_protocol_on_the_port_as_a_protocol_error():
    async with LineServer(b"220 mail.test ESMTP\r\n") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == ("protocol_error", "server did not answer with FastCGI: 220 mail")


async def test_it_times_out_on_a_silent_server():
    async with HostileServer(hostile.silent, "tcp") as server:
        result = await probe(server.port, timeout=SILENCE_TIMEOUT)

    assert (result.status, str(result.failure)) == (Status.DOWN, "timeout")
    assert result.reason == "timed out waiting for a FastCGI record"


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("fastcgi://php:9000", {}),
        ("fastcgi://php:9000/", {}),
        ("fastcgi://php:9000/ping", {"path": "/ping"}),
        ("fastcgi://php:9000/status?json&full", {"path": "/status?json&full"}),
    ],
)
def test_a_url_names_the_path(url, options):
    assert fastcgi.url_options(urllib.parse.urlsplit(url)) == options


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (
            {"path": "ping"},
            "path",
            "must start with / and be at most 2048 characters without control characters, not 'ping'",
        ),
        (
            {"script_filename": "/srv/a.php\n"},
            "script_filename",
            "must start with / and be at most 2048 characters without control characters, not '/srv/a.php\\n'",
        ),
        (
            {"expect_status": "ok"},
            "expect_status",
            f"{STATUS_FORMS}; 'ok' is not one of these",
        ),
    ],
)
def test_it_rejects_bad_options_naming_the_field(raw, field, message):
    with pytest.raises(OptionsError) as caught:
        fastcgi.Options.from_mapping(raw)

    assert (caught.value.field, caught.value.message) == (field, message)
