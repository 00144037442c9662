"""The version-exposure rules (`monitor.exposure`), on greetings and headers as real servers send them.

Debian 12's own servers where they are installed here (Postfix's default smtpd_banner, vsftpd 3.0.3, Dovecot,
nginx, Apache, MariaDB, telnetd's /etc/issue.net), and the forms other products' manuals document.
"""

from __future__ import annotations

import pytest

from monitor.exposure import MAX_EVIDENCE_CHARS, assess, clean, fix_hints, plaintext_login, products


def heard(text: str, source: str = "banner", protocol: str = "") -> list[tuple[str, str | None]]:
    return [(item.name, item.version) for item in products(text, source, protocol)]


@pytest.mark.parametrize(
    ("banner", "expected"),
    [
        ("220 mx.example.com ESMTP Postfix (Debian/GNU)", [("Postfix", None)]),  # Debian's default smtpd_banner
        ("220 mx.example.com ESMTP Postfix (3.7.11)", [("Postfix", "3.7.11")]),  # with $mail_version
        ("220 mx.example.com ESMTP Postfix 3.7.11", [("Postfix", "3.7.11")]),
        ("220 mx.example.com ESMTP Exim 4.96 Mon, 01 Jan 2024 10:00:00 +0000", [("Exim", "4.96")]),
        (
            "220 mx.example.com ESMTP Sendmail 8.17.1.9/8.17.1.9/Debian-2; Mon, 1 Jan 2024 00:00:00 GMT",
            [("Sendmail", "8.17.1.9")],
        ),
        (
            "220 mail.contoso.com Microsoft ESMTP MAIL Service, Version: 6.0.3790.4675 ready at Mon, 1 Jan 2024",
            [("Microsoft ESMTP MAIL Service", "6.0.3790.4675")],
        ),
        (
            "220 mail.contoso.com Microsoft ESMTP MAIL Service ready at Mon, 1 Jan 2024",
            [("Microsoft ESMTP MAIL Service", None)],
        ),
        ("220 mail.test Python SMTP 1.4.6", [("Python SMTP", "1.4.6")]),  # aiosmtpd
        ("220 mx ESMTP Haraka/2.8.28 ready", [("Haraka", "2.8.28")]),  # a product nobody listed
        ("220 (vsFTPd 3.0.3)", [("vsFTPd", "3.0.3")]),  # Debian's vsftpd without ftpd_banner
        ("220 ProFTPD Server (Debian) [::ffff:127.0.0.1]", [("ProFTPD", None)]),
        ("220 ProFTPD 1.3.5e Server (Debian) [::ffff:10.0.0.1]", [("ProFTPD", "1.3.5e")]),
        ("220---------- Welcome to Pure-FTPd [privsep] [TLS] ----------", [("Pure-FTPd", None)]),
        ("220-FileZilla Server version 0.9.60 beta written by Tim Kosse", [("FileZilla Server", "0.9.60 beta")]),
        (
            "220-FileZilla Server 1.8.0\n220 Please visit https://filezilla-project.org/",
            [("FileZilla Server", "1.8.0")],
        ),
        ("220 Microsoft FTP Service", [("Microsoft FTP Service", None)]),
        ("+OK Dovecot (Debian) ready.", [("Dovecot", None)]),
        (
            "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] "
            "Dovecot (Debian) ready.",
            [("Dovecot", None)],
        ),
        (
            "* OK [CAPABILITY IMAP4rev1 STARTTLS] mail.example.com Cyrus IMAP v3.6.1-Debian-3.6.1-4 server ready",
            [("Cyrus IMAP", "3.6.1-Debian-3.6.1-4")],
        ),
        ("+OK mail.example.com Cyrus POP3 v2.4.17 server ready <1896.1@mail>", [("Cyrus POP3", "2.4.17")]),
        (
            "* OK [CAPABILITY IMAP4rev1 IDLE] Courier-IMAP ready. Copyright 1998-2018 Double Precision, Inc.",
            [("Courier-IMAP", None)],
        ),
        ("* OK The Microsoft Exchange IMAP4 service is ready.", [("Microsoft Exchange IMAP4", None)]),
        ("Debian GNU/Linux 12\r\nhost login: ", [("Debian GNU/Linux", "12")]),  # telnetd with /etc/issue.net
        (
            "Ubuntu 22.04.3 LTS\r\nKernel 6.1.0-18-amd64 on an x86_64\r\nlogin: ",
            [("Ubuntu", "22.04.3"), ("Linux kernel", "6.1.0-18-amd64")],
        ),
        ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", [("OpenSSH", "9.2p1")]),
    ],
)
def test_it_reads_the_software_and_version_of_real_greetings(banner, expected):
    assert heard(banner) == expected


@pytest.mark.parametrize(
    "banner",
    [
        "220 mail.example.com ESMTP",
        "220 smtp.example.com ESMTP ready",
        "* OK IMAP4rev1 server ready",  # a protocol's name and revision is no product
        "+OK POP3 server ready <1234.5678@mail.example.com>",
        "220 ftp.example.com FTP server ready 127.0.0.1",
    ],
)
def test_a_greeting_naming_no_product_reveals_nothing(banner):
    assert heard(banner) == []


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        ("server_header", "nginx/1.22.1", [("nginx", "1.22.1")]),  # Debian 12's nginx without server_tokens off
        ("server_header", "nginx", [("nginx", None)]),
        ("server_header", "Apache/2.4.62 (Debian)", [("Apache", "2.4.62")]),
        ("server_header", "Apache", [("Apache", None)]),  # ServerTokens Prod
        (
            "server_header",
            "Apache/2.4.41 (Ubuntu) OpenSSL/1.1.1f mod_wsgi/4.6.8 Python/3.8",
            [("Apache", "2.4.41"), ("OpenSSL", "1.1.1f"), ("mod_wsgi", "4.6.8"), ("Python", "3.8")],
        ),
        ("server_header", "Microsoft-IIS/10.0", [("Microsoft-IIS", "10.0")]),
        ("server_header", "BaseHTTP/0.6 Python/3.11.2", [("BaseHTTP", "0.6"), ("Python", "3.11.2")]),
        ("server_header", "Google Frontend", [("Google Frontend", None)]),
        ("powered_by", "PHP/8.2.7", [("PHP", "8.2.7")]),
        ("powered_by", "ASP.NET", [("ASP.NET", None)]),
        ("powered_by", "Express", [("Express", None)]),
        ("server_software", "PHP/8.2.36", [("PHP", "8.2.36")]),  # php-fpm's X-Powered-By through FastCGI
    ],
)
def test_it_reads_products_from_http_headers(source, value, expected):
    assert heard(value, source) == expected


@pytest.mark.parametrize(
    ("raw", "expected", "distro"),
    [
        ("5.5.5-10.11.6-MariaDB-0+deb12u1", ("MariaDB", "10.11.6"), "Debian"),  # Debian 12's MariaDB handshake
        ("10.11.19-MariaDB-0+deb12u1", ("MariaDB", "10.11.19"), "Debian"),
        ("11.4.2-MariaDB", ("MariaDB", "11.4.2"), None),
        ("8.0.36-0ubuntu0.22.04.1", ("MySQL", "8.0.36"), "Ubuntu"),
        ("8.4.0", ("MySQL", "8.4.0"), None),
    ],
)
def test_it_reads_the_server_of_a_mysql_handshake(raw, expected, distro):
    [found] = products(raw, "server_software", "mysql")
    assert ((found.name, found.version), found.distro) == (expected, distro)


def test_a_distribution_suffix_is_kept_apart_from_the_version():
    [found] = products("Apache/2.4.62 (Debian)", "server_header")
    assert (found.version, found.distro) == ("2.4.62", "Debian")


def test_a_name_alone_reveals_the_software_but_not_its_version():
    finding = assess("pop3", "implicit", "+OK Dovecot (Debian) ready.", {})
    assert (finding.reveals_software, finding.reveals_version, finding.exposed) == (True, False, False)


def test_a_version_in_any_header_makes_the_service_exposed():
    finding = assess("http", "implicit", "", {"server_header": "nginx", "powered_by": "PHP/8.2.7"})
    assert (finding.name, finding.version, finding.reveals_version, finding.exposed) == ("nginx", "8.2.7", True, True)


def test_a_refused_connection_reveals_nothing_even_for_telnet():
    finding = assess("telnet", "none", "", {}, reached=False)
    assert (finding.heard, finding.plaintext_login, finding.software) == (False, False, ())


def test_hostile_text_is_stripped_of_control_characters_and_bounded():
    banner = "220 \x1b[2J\x1b]0;owned\x07<script>alert(1)</script> Exim 4.96\u202e" + "A" * 2000
    [found] = products(banner, "banner")
    assert (found.name, found.version) == ("Exim", "4.96")
    assert "\x1b" not in found.evidence and "\x07" not in found.evidence and "\u202e" not in found.evidence
    assert len(found.evidence) == MAX_EVIDENCE_CHARS


def test_a_hostile_version_is_bounded_too():
    [found] = products("nginx/1." + "9" * 5000, "server_header")
    assert found.name == "nginx" and len(found.version) <= 64


def test_clean_turns_line_breaks_and_tabs_into_single_spaces():
    assert clean("220-a\r\n220\tb\x00c") == "220-a 220 b c"


# Plaintext login -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "tls_mode", "details", "offered"),
    [
        ("telnet", "none", {}, True),
        ("ftp", "none", {}, True),
        ("ftp", "none", {"plaintext_login_offered": False}, False),  # the probe knows better
        ("ftp", "starttls", {}, False),
        ("ftp", "starttls", {"plaintext_login_offered": True}, True),
        ("pop3", "none", {}, True),
        ("pop3", "implicit", {}, False),
        ("imap", "none", {"capabilities": ["IMAP4rev1", "STARTTLS", "LOGINDISABLED"]}, False),
        ("imap", "none", {"capabilities": ["IMAP4rev1", "STARTTLS"]}, True),
        ("imap", "starttls", {"capabilities": ["IMAP4rev1", "STARTTLS", "AUTH=PLAIN"]}, True),
        ("imap", "starttls", {"capabilities": ["IMAP4rev1", "STARTTLS", "LOGINDISABLED"]}, False),
        ("imap", "implicit", {"capabilities": ["IMAP4rev1", "AUTH=PLAIN"]}, False),
        ("smtp", "none", {"extensions": {"SIZE": "10240000", "AUTH": "PLAIN LOGIN"}}, True),
        ("smtp", "starttls", {"extensions": {"STARTTLS": "", "AUTH": "PLAIN"}}, True),  # AUTH before STARTTLS
        ("smtp", "starttls", {"extensions": {"STARTTLS": ""}, "extensions_after_tls": {"AUTH": "PLAIN"}}, False),
        ("smtp", "implicit", {"extensions": {"AUTH": "PLAIN"}}, False),  # that EHLO was inside TLS
        ("http", "none", {}, False),
        ("mysql", "none", {"plaintext_login_offered": "true"}, True),  # as PostgreSQL's ->> gives it back
        ("mysql", "none", {"plaintext_login_offered": 0}, False),  # as SQLite's does
    ],
)
def test_plaintext_login_by_protocol_tls_mode_and_what_the_probe_said(protocol, tls_mode, details, offered):
    assert assess(protocol, tls_mode, "", details).plaintext_login is offered


def test_it_says_why_a_login_is_plaintext():
    offered, why = plaintext_login("smtp", "starttls", {"extensions": {"AUTH": "PLAIN LOGIN"}})
    assert (offered, why) == (True, "AUTH PLAIN LOGIN is offered before STARTTLS")


def test_garbage_details_are_no_evidence():
    finding = assess("smtp", "none", "", {"extensions": ["AUTH"], "server_header": 42, "capabilities": "x"})
    assert (finding.software, finding.plaintext_login) == ((), False)


# How to fix ------------------------------------------------------------------------------------------------


def test_each_product_that_names_its_version_gets_its_own_hint():
    finding = assess("http", "none", "", {"server_header": "nginx/1.22.1", "powered_by": "PHP/8.2.7"})
    assert fix_hints(finding, "http") == [
        "nginx: server_tokens off; in the http block.",
        "PHP: expose_php = Off in php.ini.",
    ]


def test_a_plaintext_login_gets_a_hint_and_a_name_alone_none():
    finding = assess("smtp", "starttls", "220 mx ESMTP Postfix (Debian/GNU)", {"extensions": {"AUTH": "PLAIN"}})
    assert fix_hints(finding, "smtp") == [
        "Offer AUTH only after STARTTLS (Postfix: smtpd_tls_auth_only = yes; Exim: auth_advertise_hosts)."
    ]


def test_an_unknown_product_gets_the_general_hint():
    finding = assess("smtp", "none", "220 mx ESMTP Haraka/2.8.28 ready", {})
    assert fix_hints(finding, "smtp") == ["Change the greeting or header so it names no product or version."]
