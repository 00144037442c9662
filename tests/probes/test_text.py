"""`text.printable()`, the one sanitiser for server text, and `Session.set_banner()`, which applies it to banners."""

from __future__ import annotations

import pytest

from monitor.probes import Status, Target, run_probe
from monitor.probes.protocols import smtp, tcp
from monitor.probes.session import MAX_BANNER_CHARS
from monitor.probes.text import SCAN_FACTOR, printable
from tests.peers.smtp_server import LineServer

TIMEOUT = 5.0


@pytest.mark.parametrize(
    ("hostile", "shown"),
    [
        ("invoice\u202egpj.exe", "invoice gpj.exe"),  # RTL override: would read "invoiceexe.jpg"
        ("invoice\u2066x\u2069", "invoice x"),  # the isolates of the same Trojan Source family
        ("admin\u200b", "admin"),  # zero-width space: looks like "admin", is another name
        ("a\u200db\ufeffc\u00add", "a b c d"),  # zero-width joiner, BOM, soft hyphen: format characters all
        ("NUL\x00here", "NUL here"),
        ("\x1b[2J\x1b[31mred", "[2J [31mred"),  # ESC goes, so the rest is harmless text
        ("C1\x9b2Jcsi\x85next", "C1 2Jcsi next"),  # the one-byte CSI and NEL of C1
        ("DEL\x7f", "DEL"),
        ("bell\x07\x07\x07ringing", "bell ringing"),  # a run becomes one replacement
        ("sur\ud800rogate", "sur rogate"),
        ("private\ue000use", "private use"),
        ("un\u0378assigned", "un assigned"),
    ],
)
def test_it_replaces_every_category_c_character(hostile, shown):
    assert printable(hostile) == shown


def test_it_marks_or_drops_what_it_replaces_as_asked():
    assert (printable("a\x1bb", replacement="?"), printable("a\x1bb", replacement="")) == ("a?b", "ab")


def test_a_line_break_can_never_forge_a_second_line():
    forged = "GET / 200\r\n2026-01-01 admin logged in\u2028and\u2029more\x0bvt\x0cff"

    assert printable(forged) == "GET / 200 2026-01-01 admin logged in and more vt ff"


def test_whitespace_of_any_kind_becomes_single_spaces_and_the_ends_are_stripped():
    assert printable("\t  ready \u00a0\u3000 to\r\n\r\n   serve  \x00") == "ready to serve"


def test_line_breaks_are_kept_as_newlines_when_asked_and_blank_lines_dropped():
    greeting = "220-mail.example.com\r\n\r\n220-\x1b[5mno\tspam\x85220 ready\u2028"

    assert printable(greeting, keep_newlines=True) == "220-mail.example.com\n220- [5mno spam\n220 ready"


def test_bytes_are_decoded_as_utf8_and_invalid_bytes_show_as_replacement_characters():
    assert printable(b"caf\xc3\xa9 \xff\xfe\x00ok") == "caf\u00e9 \ufffd\ufffd ok"


def test_text_past_the_limit_is_cut_to_end_in_an_ellipsis_within_it():
    assert printable("x" * 30, limit=10) == "xxxxxxx..."
    assert printable("x" * 10, limit=10) == "x" * 10


def test_the_limit_counts_what_is_shown_not_what_was_sent():
    # 20 NULs become one space: the text fits once cleaned, and nothing is cut.
    assert printable("a" + "\x00" * 20 + "b", limit=10) == "a b"


def test_a_flood_is_looked_at_only_up_to_a_multiple_of_the_limit():
    # The visible text comes after SCAN_FACTOR * limit controls: the work stops before it, and says it cut.
    flood = "\x00" * (10 * SCAN_FACTOR) + "hidden"

    assert printable(flood, limit=10) == "..."
    assert printable(flood.encode(), limit=10) == "..."


def test_bytes_cut_in_the_middle_of_a_character_still_end_in_an_ellipsis():
    # 4 * SCAN_FACTOR * limit bytes are decoded: 160 bytes of three-byte euro signs end in a piece of one.
    assert printable("\u20ac".encode() * 100, limit=10) == "\u20ac" * 7 + "..."


def test_a_limit_too_small_for_the_ellipsis_is_a_programming_error():
    with pytest.raises(ValueError, match="limit must be more than 3 characters, not 3"):
        printable("text", limit=3)


async def test_a_banner_keeps_its_lines_and_loses_every_other_control_character():
    greeting = b"220-mail.example.com \xe2\x80\xaeESMTP\r\n220 ready\x1b]0;owned\x07\r\n"
    answers = {b"EHLO": b"250 ok\r\n", b"QUIT": b"221 bye\r\n"}
    async with LineServer(greeting, lambda line: answers.get(line.split(b" ")[0])) as server:
        result = await run_probe("smtp", Target("127.0.0.1", server.port), smtp.Options(), timeout=TIMEOUT)

    assert result.status is Status.UP, result.reason
    assert result.banner == "220 mail.example.com ESMTP\n220 ready ]0;owned"


async def test_a_banner_is_cut_to_the_session_limit():
    async with LineServer(b"SSH-2.0-" + b"A" * 2000 + b"\r\n") as server:
        options = tcp.Options.from_mapping({"read_banner": True})
        result = await run_probe("tcp", Target("127.0.0.1", server.port), options, timeout=TIMEOUT)

    assert result.status is Status.UP, result.reason
    assert result.banner.startswith("SSH-2.0-AAA")
    assert result.banner.endswith("A...")
    assert len(result.banner) == MAX_BANNER_CHARS


async def test_what_a_server_lists_in_details_is_sanitised_too():
    answers = {b"EHLO": b"250-mail.example.com\r\n250 SIZE 1000\x1b[8m\r\n", b"QUIT": b"221 bye\r\n"}
    async with LineServer(b"220 ready\r\n", lambda line: answers.get(line.split(b" ")[0])) as server:
        result = await run_probe("smtp", Target("127.0.0.1", server.port), smtp.Options(), timeout=TIMEOUT)

    assert result.status is Status.UP, result.reason
    assert result.details["extensions"] == {"SIZE": "1000 [8m"}


async def test_the_line_a_tcp_probe_matched_is_sanitised():
    async with LineServer("+PONG\x1b[2J\u202e\r\n".encode()) as server:
        options = tcp.Options.from_mapping({"expect": "PONG"})
        result = await run_probe("tcp", Target("127.0.0.1", server.port), options, timeout=TIMEOUT)

    assert result.status is Status.UP, result.reason
    assert result.details["matched"] == "+PONG [2J"
