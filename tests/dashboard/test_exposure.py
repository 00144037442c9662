"""Version exposure on the service page and the overview, from rows the daemon's writer recorded from real probes."""

from __future__ import annotations

import asyncio

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from monitor.probes import Result, Target, parse_options, run_probe
from tests.dashboard.test_detail import element, page
from tests.metrics.test_exposure import greeted
from tests.peers.smtp_server import LineServer
from tests.test_audit_command import MISSED, mail_service, make, recorded, web_result

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

HOSTILE = "<script>alert(1)</script> Exim 4.96 <img src=x onerror=alert(2)>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt; Exim 4.96 &lt;img src=x onerror=alert(2)&gt;"


def overview(client, **query) -> str:
    response = client.get("/", query)
    assert response.status_code == 200
    return response.content.decode()


def listed(html: str) -> set[str]:
    """Return the names of the services the overview's rows link to."""
    rows = element(html, "rows") if 'id="rows"' in html else html
    return {name for name in ("mail", "web", "shop", "idle", "pop") if f">{name}</a>" in rows}


def hostile_smtp_result() -> Result:
    """Probe a real SMTP dialogue whose greeting carries markup, with the engine."""

    def answer(line: bytes) -> bytes | None:
        return b"250 mx\r\n" if line.startswith(b"EHLO") else b"221 bye\r\n" if line == b"QUIT" else None

    async def run() -> Result:
        async with LineServer(f"220 {HOSTILE}\r\n".encode(), answer) as server:
            target = Target("127.0.0.1", server.port, "none")
            return await run_probe("smtp", target, parse_options("smtp", {}), timeout=3.0)

    return asyncio.run(run())


def test_the_service_page_shows_the_version_the_flags_and_how_to_fix_them(viewer):
    mail = mail_service()
    card = element(page(viewer, mail), "exposure")
    assert "Reveals its version" in card and "Offers plaintext login" in card
    assert "AUTH LOGIN PLAIN is offered without TLS" in card
    assert "<td>Python SMTP</td>" in card and '<td class="mono">1.4.' in card
    assert "<code>220 mail.test Python SMTP 1.4." in card
    hints = element(card, "exposure-hints")
    assert "aiosmtpd: pass ident= to SMTP()" in hints and "Offer AUTH only after STARTTLS" in hints


def test_a_name_without_a_version_is_shown_as_such_with_no_hint(viewer):
    web = make("web", "http", 443, "implicit")
    recorded(web, web_result("Apache/2.4.62 (Debian)"), web_result("nginx"))
    card = element(page(viewer, web), "exposure")
    assert "Names its software, not its version" in card and "not revealed" in card and "Server header" in card
    assert 'id="exposure-hints"' not in card


def test_each_header_product_gets_its_row_and_hint(viewer):
    web = make("web", "http", 443, "implicit")
    recorded(web, web_result("nginx/1.22.1", "PHP/8.2.7"))
    card = element(page(viewer, web), "exposure")
    assert "X-Powered-By header" in card and '<td class="mono">8.2.7</td>' in card
    assert "server_tokens off" in card and "expose_php = Off" in card


def test_a_service_nothing_was_heard_from_says_so(viewer):
    idle = make("idle", "tcp", 7)
    recorded(idle, MISSED)
    assert "Nothing heard yet" in element(page(viewer, idle), "exposure")


def test_a_hostile_greeting_is_escaped_in_the_exposure_card(viewer):
    result = hostile_smtp_result()
    assert result.ok, result.reason
    mail = make("hostile", "smtp", 25)
    recorded(mail, result)
    html = page(viewer, mail)
    card = element(html, "exposure")
    assert "<td>Exim</td>" in card and f"<code>220 {ESCAPED}</code>" in card
    assert "<script>alert" not in html and "<img src=x" not in html


def test_the_overview_counts_exposed_services_and_links_to_them(viewer):
    mail_service()
    recorded(make("web", "http", 443, "implicit"), web_result("nginx"))
    recorded(make("shop", "http", 443, "implicit"), web_result("Apache/2.4.62 (Debian)"))
    summary = element(overview(viewer), "exposure-summary")
    assert '<a href="/?exposure=version">' in summary and "2 services reveal a version" in summary
    assert '<a href="/?exposure=plaintext">' in summary and "1 service offers plaintext login" in summary


def test_the_overview_lists_only_the_exposed_services_when_asked(viewer):
    mail_service()
    recorded(make("web", "http", 443, "implicit"), web_result("nginx"))
    recorded(make("shop", "http", 443, "implicit"), web_result("Apache/2.4.62 (Debian)"))
    assert listed(overview(viewer)) == {"mail", "web", "shop"}
    assert listed(overview(viewer, exposure="version")) == {"mail", "shop"}
    assert listed(overview(viewer, exposure="plaintext")) == {"mail"}
    assert listed(overview(viewer, exposure="plaintext", fragment="rows")) == {"mail"}  # the live refresh too
    assert listed(overview(viewer, exposure="bogus")) == {"mail", "web", "shop"}  # an unknown value is dropped


def page_queries(client, **query) -> list[str]:
    """Return the SQL of every query one overview request took."""
    with CaptureQueriesContext(connection) as queries:
        overview(client, **query)
    return [query["sql"] for query in queries.captured_queries]


def test_the_overview_counts_and_filters_exposure_in_sql_on_the_stored_flags(viewer):
    mail_service()
    recorded(make("web", "http", 443, "implicit"), web_result("nginx"))
    recorded(make("shop", "http", 443, "implicit"), web_result("Apache/2.4.62 (Debian)"))
    whole = page_queries(viewer)
    # 16 before the flags were stored too (the counts assessed every state in one query of their own, now one
    # aggregate on the summaries); the filter took two queries more than a status filter, and now none.
    assert len(whole) == 16
    assert len(page_queries(viewer, exposure="version")) == len(page_queries(viewer, status="up")) == 16
    assert len(page_queries(viewer, exposure="plaintext", fragment="rows")) == len(
        page_queries(viewer, status="up", fragment="rows")
    )
    filtered = page_queries(viewer, exposure="plaintext")
    assert not [sql for sql in whole + filtered if "banner" in sql or '"details"' in sql]  # no evidence read
    assert any('"monitor_servicesummary"."plaintext_login"' in sql for sql in filtered)


def test_a_changed_tls_mode_is_reassessed_when_the_service_is_saved(viewer):
    # The state writer assessed the last probe with the TLS mode of then; the overview must not wait for the
    # next probe to stop counting a POP3 service whose login no longer crosses in clear text.
    pop = make("pop", "pop3", 110)
    recorded(pop, greeted("+OK Dovecot ready."))
    assert listed(overview(viewer, exposure="plaintext")) == {"pop"}

    pop = type(pop).objects.get(pk=pop.pk)
    pop.tls_mode, pop.port = "implicit", 995
    pop.save()

    assert listed(overview(viewer, exposure="plaintext")) == set()
    assert not pop.states.get().offers_plaintext_login
    pop.tls_mode, pop.port = "none", 110
    pop.save()
    assert listed(overview(viewer, exposure="plaintext")) == {"pop"}
