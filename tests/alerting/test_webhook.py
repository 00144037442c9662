"""The webhook channel against real receivers on 127.0.0.1: signing, statuses, hostile peers, TLS, no leaked secret."""

from __future__ import annotations

import json
import time

from monitor.alerting.channels.webhook import (
    SCHEMA_VERSION,
    deliver,
    sign,
    verify,
)
from tests.alerting.conftest import Reply, drip, flood_body, flood_head, garbage, silent

SECRET = "s3cr3t-signing-key-0123456789"
PAYLOAD = {"schema": SCHEMA_VERSION, "event": "down", "service": {"name": "mail", "id": 7}, "note": "café"}
TIMEOUT = 2.0


def test_it_posts_the_payload_as_the_exact_body(receiver):
    server = receiver()
    delivery = deliver(server.url(), PAYLOAD, secret=SECRET, timeout=TIMEOUT)
    assert delivery.ok, delivery.error
    assert json.loads(server.received[0].body) == PAYLOAD
    assert server.received[0].body == json.dumps(
        PAYLOAD, ensure_ascii=False, separators=(",", ":"), sort_keys=True
    ).encode("utf-8")


def test_its_signature_verifies_at_the_receiver(receiver):
    server = receiver()
    deliver(server.url(), PAYLOAD, secret=SECRET, timeout=TIMEOUT)
    got = server.received[0]
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("Portwatch")
    assert verify(SECRET, got.headers["x-portwatch-timestamp"], got.body, got.headers["x-portwatch-signature"])


def test_it_sends_no_signature_without_a_secret(receiver):
    server = receiver()
    assert deliver(server.url(), PAYLOAD, secret=None, timeout=TIMEOUT).ok
    assert "x-portwatch-signature" not in server.received[0].headers
    assert "x-portwatch-timestamp" in server.received[0].headers


def test_it_sends_the_urls_credentials_as_basic_auth_and_never_shows_them(receiver):
    server = receiver(Reply(401, b"who are you"))
    url = server.url("/hook?token=querysecret").replace("://", "://alice:pa55word@")
    delivery = deliver(url, PAYLOAD, secret=SECRET, timeout=TIMEOUT)
    assert server.received[0].headers["authorization"] == "Basic YWxpY2U6cGE1NXdvcmQ="
    assert server.received[0].path == "/hook?token=querysecret"
    assert not any(word in delivery.error for word in ("alice", "pa55word", "querysecret", SECRET))


def test_a_500_is_retryable_and_quotes_the_answer(receiver):
    server = receiver(Reply(500, b"database\x00 is \x1b[31mdown\n"))
    delivery = deliver(server.url(), PAYLOAD, secret=SECRET, timeout=TIMEOUT)
    assert (delivery.ok, delivery.status, delivery.retryable) == (False, 500, True)
    assert delivery.error.endswith("answered 500 Internal Server Error: database is [31mdown")


def test_a_404_is_not_retryable(receiver):
    delivery = deliver(receiver(Reply(404)).url(), PAYLOAD, secret=SECRET, timeout=TIMEOUT)
    assert (delivery.ok, delivery.status, delivery.retryable) == (False, 404, False)


def test_a_429_and_a_408_are_retryable(receiver):
    assert deliver(receiver(Reply(429)).url(), PAYLOAD, secret=None, timeout=TIMEOUT).retryable
    assert deliver(receiver(Reply(408)).url(), PAYLOAD, secret=None, timeout=TIMEOUT).retryable


def test_a_long_answer_is_cut_to_200_characters_in_the_error(receiver):
    delivery = deliver(receiver(Reply(503, b"x" * 5000)).url(), PAYLOAD, secret=None, timeout=TIMEOUT)
    assert len(delivery.error.partition(": ")[2]) == 200


def test_a_redirect_is_not_followed_and_says_where_it_pointed(receiver):
    target = receiver()
    server = receiver(Reply(302, headers={"Location": target.url("/new?key=hidden")}))
    delivery = deliver(server.url(), PAYLOAD, secret=SECRET, timeout=TIMEOUT)
    assert (delivery.ok, delivery.status, delivery.retryable) == (False, 302, False)
    assert target.received == []
    port = target.url().split(":")[2].split("/")[0]
    assert f"a redirect to http://127.0.0.1:{port}/***" in delivery.error
    assert "hidden" not in delivery.error


def test_a_refused_connection_is_retryable_and_says_refused(refused_url):
    delivery = deliver(refused_url, PAYLOAD, secret=SECRET, timeout=TIMEOUT)
    assert (delivery.ok, delivery.status, delivery.retryable) == (False, None, True)
    assert "refused" in delivery.error


def test_a_silent_receiver_ends_within_the_deadline(raw_peer):
    started = time.monotonic()
    delivery = deliver(raw_peer(silent).url(), PAYLOAD, secret=SECRET, timeout=1.0)
    assert time.monotonic() - started < 1.0 + 0.5
    assert delivery.elapsed < 1.0 + 0.5
    assert (delivery.ok, delivery.retryable) == (False, True)
    assert "no answer" in delivery.error and "within 1 s" in delivery.error


def test_a_receiver_answering_garbage_fails_at_once_and_says_so(raw_peer):
    delivery = deliver(raw_peer(garbage).url(), PAYLOAD, secret=SECRET, timeout=1.0)
    assert delivery.elapsed < 0.5
    assert (delivery.ok, delivery.status) == (False, None)
    assert "did not answer with valid HTTP" in delivery.error


def test_a_receiver_dripping_its_answer_ends_within_the_one_deadline(raw_peer):
    delivery = deliver(raw_peer(drip).url(), PAYLOAD, secret=SECRET, timeout=1.0)
    assert delivery.elapsed < 1.5  # a fresh timeout per read would wait 0.2 s a byte, 34 bytes
    assert (delivery.ok, delivery.retryable) == (False, True)
    assert "no answer" in delivery.error


def test_a_receiver_flooding_headers_ends_within_the_deadline(raw_peer):
    delivery = deliver(raw_peer(flood_head).url(), PAYLOAD, secret=SECRET, timeout=1.0)
    assert delivery.elapsed < 1.5
    assert not delivery.ok
    assert "did not answer with valid HTTP" in delivery.error


def test_a_receiver_flooding_its_body_ends_within_the_deadline(raw_peer):
    delivery = deliver(raw_peer(flood_body).url(), PAYLOAD, secret=SECRET, timeout=2.0)
    assert delivery.elapsed < 1.0  # it stopped after MAX_RESPONSE_BODY bytes, not at the deadline
    assert (delivery.status, delivery.retryable) == (500, True)
    assert len(delivery.error.partition(": ")[2]) == 200  # control bytes turned to spaces, cut to 200


def test_https_with_the_ca_file_delivers(receiver, certs):
    server = receiver(tls=certs.good)
    delivery = deliver(server.url(), PAYLOAD, secret=SECRET, timeout=TIMEOUT, ca_file=certs.ca_file)
    assert delivery.ok, delivery.error
    assert json.loads(server.received[0].body) == PAYLOAD


def test_https_without_the_ca_file_fails_on_the_certificate(receiver, certs):
    delivery = deliver(receiver(tls=certs.good).url(), PAYLOAD, secret=SECRET, timeout=TIMEOUT)
    assert (delivery.ok, delivery.retryable) == (False, False)
    assert "certificate" in delivery.error


def test_a_bad_url_is_not_retryable():
    for url in ("ftp://example.com/hook", "hooks.example.com/x", "http:///nohost", "http://h:99999/"):
        delivery = deliver(url, PAYLOAD, secret=SECRET, timeout=TIMEOUT)
        assert (delivery.ok, delivery.retryable) == (False, False), url
        assert delivery.error.startswith("the webhook URL"), url


def test_no_error_sentence_holds_the_secret(receiver, raw_peer, refused_url, certs):
    urls = [
        receiver(Reply(403)).url(),
        raw_peer(silent).url(),
        refused_url,
        receiver(tls=certs.good).url(),
        "http://127.0.0.1:99999/hook",
    ]
    errors = [deliver(url, PAYLOAD, secret=SECRET, timeout=0.5).error for url in urls]
    assert all(errors) and not any(SECRET in error for error in errors)


def test_an_answer_echoing_the_secret_or_credentials_is_masked_in_the_error(receiver):
    echo = f"signed with {SECRET}, Authorization: Basic YWxpY2U6cGE1NXdvcmQ=, user alice pa55word q=querysecret"
    server = receiver(Reply(400, echo.encode()))
    url = server.url("/hook?token=querysecret").replace("://", "://alice:pa55word@")
    error = deliver(url, PAYLOAD, secret=SECRET, timeout=TIMEOUT).error
    assert "answered 400 Bad Request: signed with ***" in error
    assert not any(word in error for word in (SECRET, "YWxpY2U6cGE1NXdvcmQ=", "alice", "pa55word", "querysecret"))


def test_verify_refuses_a_tampered_body_a_wrong_secret_and_a_stale_timestamp():
    body, now = b'{"a":1}', 1_800_000_000
    signature = sign(SECRET, str(now), body)
    assert verify(SECRET, now, body, signature, now=now)
    assert not verify(SECRET, now, b'{"a":2}', signature, now=now)
    assert not verify("another secret", now, body, signature, now=now)
    assert not verify(SECRET, now, body, signature, now=now + 301)
    assert verify(SECRET, now, body, signature, now=now + 300)
    assert not verify(SECRET, "soon", body, signature, now=now)
