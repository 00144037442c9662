"""blackbox query_response scripts: plain send/expect, STARTTLS dialogues recognised, and what is refused."""

from __future__ import annotations

import pytest

from monitor.metrics.query_response import ModuleError, map_steps, recorded, unmet
from monitor.probes import Failure, Phases, Result, Status
from monitor.probes.protocols import tcp

WHERE = "module 'm': tcp.query_response"
SMTP = [
    {"expect": "^220"},
    {"send": "EHLO prober\r"},
    {"expect": "^250-STARTTLS"},
    {"send": "STARTTLS\r"},
    {"expect": "^220"},
    {"starttls": True},
    {"send": "EHLO prober\r"},
    {"expect": "^250-AUTH"},
    {"send": "QUIT\r"},
]


def refusal(steps, tls: bool = False) -> str:
    with pytest.raises(ModuleError) as caught:
        map_steps(steps, WHERE, tls=tls)
    return str(caught.value)


def smtp_result(**details) -> Result:
    return Result(Status.UP, None, "ok", Phases(), banner="220 mail.test ESMTP", details=details)


def test_blackboxs_smtp_starttls_example_becomes_smtp_with_starttls():
    script = map_steps(SMTP, WHERE, tls=False)

    assert (script.protocol, script.tls_mode, script.options) == ("smtp", "starttls", {"ehlo_name": "prober"})
    assert [(expect.reply, expect.pattern) for expect in script.expects] == [
        ("greeting", "^220"),
        ("capabilities", "^250-STARTTLS"),
        ("capabilities_after_tls", "^250-AUTH"),
    ]


def test_pop3_and_imap_upgrades_are_recognised():
    pop3 = map_steps(
        [{"expect": r"^\+OK"}, {"send": "STLS"}, {"expect": r"^\+OK"}, {"starttls": True}], WHERE, tls=False
    )
    imap = map_steps([{"send": "a1 STARTTLS"}, {"expect": "^a1 OK"}, {"starttls": True}], WHERE, tls=False)
    assert (pop3.protocol, imap.protocol) == ("pop3", "imap")


def test_an_expect_is_checked_against_the_extensions_the_probe_recorded():
    script = map_steps(SMTP, WHERE, tls=False)
    # The last extension is the reply's last line, "250 HELP": a STARTTLS there would not match ^250-STARTTLS.
    with_auth = smtp_result(extensions={"STARTTLS": "", "HELP": ""}, extensions_after_tls={"AUTH": "PLAIN", "HELP": ""})
    without = smtp_result(extensions={"STARTTLS": "", "HELP": ""}, extensions_after_tls={"HELP": ""})

    assert unmet(with_auth, "smtp", script.expects) is with_auth
    failed = unmet(without, "smtp", script.expects)
    assert (failed.status, failed.failure) == (Status.DOWN, Failure.KEYWORD_MISSING)
    assert failed.reason == f"{WHERE}[7].expect: no line matching /^250-AUTH/ in the capabilities after TLS"


def test_smtp_extensions_are_rebuilt_as_the_reply_lines():
    script = map_steps(SMTP, WHERE, tls=False)
    result = smtp_result(extensions={"SIZE": "10", "STARTTLS": ""})
    assert recorded(result, "smtp", script.expects[1]) == ["250-SIZE 10", "250 STARTTLS"]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"send": "MAIL FROM:<a@b>"}, {"send": "STARTTLS"}, {"starttls": True}],
            f"{WHERE}[0].send: 'MAIL FROM:<a@b>' is not part of Portwatch's SMTP dialogue (EHLO, STARTTLS, EHLO, QUIT)",
        ),
        (
            [{"send": "STARTTLS"}, {"expect": "^220 2.0.0 Ready"}, {"starttls": True}],
            f"{WHERE}[1].expect: Portwatch keeps only the status of the reply to STARTTLS, 220, which /^220 2.0.0 ",
        ),
        (
            [{"send": "AUTH TLS"}, {"starttls": True}],
            f"{WHERE}[1].starttls: follows 'AUTH TLS'; Portwatch recognises the upgrades of SMTP (STARTTLS)",
        ),
        ([{"expect": "PING :([^ ]+)", "send": "PONG ${1}"}], f"{WHERE}[0].send: Portwatch does not fill in parts"),
        ([{"send": "a"}, {"send": "b"}], f"{WHERE}: Portwatch's tcp probe reads a banner, sends one line and expects"),
        ([{"expect": "x", "labels": []}], f"{WHERE}[0].labels: Portwatch cannot map this option"),
        ([{"expect": "(unclosed"}], f"{WHERE}[0].expect: '(unclosed' is not a regular expression Portwatch can use"),
        ([{"send": "STARTTLS"}, {"starttls": True}], f"{WHERE}: starttls cannot follow tls: true"),
    ],
)
def test_scripts_portwatch_would_not_run_the_same_are_refused(steps, message):
    tls = message.endswith("tls: true")
    assert refusal(steps, tls=tls).startswith(message)


def test_a_banner_then_a_line_reads_the_banner_and_checks_it():
    script = map_steps([{"expect": "^SSH-2.0-"}, {"send": "SSH-2.0-check"}], WHERE, tls=False)

    assert script.options == {"read_banner": True, "send": "SSH-2.0-check\\x0a"}
    assert tcp.payload(script.options["send"]) == b"SSH-2.0-check\n"  # blackbox ends every send with \n
    assert unmet(Result(Status.UP, None, "ok", Phases(), banner="HTTP/1.0 400"), "tcp", script.expects).status is (
        Status.DOWN
    )
