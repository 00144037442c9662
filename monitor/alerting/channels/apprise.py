"""The apprise channel: one title and body to any of apprise's 100+ services. Exposes `deliver`, `invalid_urls`.

apprise URLs hold their tokens anywhere (`tgram://<bot token>/<chat>`, `discord://<id>/<token>`), so:
apprise's own logger ("apprise") is cut off from ours (it logs request URLs at debug level, and host
parts, which can be tokens, in warnings); the warnings apprise captures for one call go into the error
sentence only with every part of every URL (user, password, host, path segments, query values) replaced
by `***`; URLs are shown through `monitor.masking.masked` (the scheme only).

apprise's notify takes a call deadline, but a plugin blocked in a socket call (sequential dispatch) is
not interrupted by it, so the notify runs in a daemon thread and `deliver` stops waiting at `timeout`:
the thread finishes or fails on its own (each plugin's socket timeouts end it), its outcome dropped.
apprise does not say why a URL failed in a form we can class, so any failure is retryable; a URL apprise
cannot parse is not.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Sequence

import apprise

from monitor.alerting.channels import Delivery, cut
from monitor.masking import MASK, masked

MAX_CAPTURED = 5  # apprise warnings put in one error sentence
ERROR_EXCERPT = 300  # characters of them, in all

# apprise's logger, and urllib3's under the requests its HTTP plugins use: urllib3 logs each request line,
# query and all (`POST /hook?token=...`), at debug level. Nothing else in Portwatch uses urllib3.
QUIETED_LOGGERS = ("apprise", "urllib3")


def quiet_apprise() -> None:
    """Cut apprise's and urllib3's loggers off from ours: their records may quote a URL with its token.

    Done at every parse and delivery, not once at import: logging.config.dictConfig (which Django's setup
    runs) may reset a logger's propagation after this module was imported. apprise's warnings still reach
    us, per call, in the notify result's logs, where they are scrubbed before use.
    """
    for name in QUIETED_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)  # their debug lines (request URLs, payloads) are never built
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())  # not logging's last resort, which prints to stderr


def invalid_urls(urls: Sequence[str]) -> list[int]:
    """Return the 1-based positions of the URLs apprise cannot parse (no plugin, malformed)."""
    quiet_apprise()  # parsing logs each URL, query and all, at debug level
    return [number for number, url in enumerate(urls, 1) if not apprise.Apprise().add(url)]


def deliver(urls: Sequence[str], title: str, body: str, *, timeout: float) -> Delivery:
    """Notify every URL through apprise within `timeout` seconds; return how it went.

    1. Parse the URLs; one apprise cannot parse fails the delivery at once, not retryable.
    2. Notify in a worker thread, capturing apprise's warnings from that thread only.
    3. Success when apprise says every URL was notified; a timeout or a failure is retryable.
    """
    started = time.monotonic()
    bad = invalid_urls(urls)
    if not urls or bad:
        which = ", ".join(f"#{number} ({masked(urls[number - 1])})" for number in bad) or "none given"
        return Delivery(False, None, f"apprise cannot use the URLs: {which}", False, 0.0)
    sender = _Sender(urls, title, body, timeout)
    sender.start()
    sender.join(timeout)
    elapsed = time.monotonic() - started
    targets = ", ".join(masked(url) for url in urls)
    if sender.is_alive() or sender.timed_out:
        return Delivery(False, None, f"apprise did not finish notifying {targets} within {timeout:g} s", True, elapsed)
    if sender.ok:
        return Delivery(True, None, "", False, elapsed)
    said = _scrubbed(" ".join(sender.warnings[:MAX_CAPTURED]), urls)
    said = cut(said, ERROR_EXCERPT)
    return Delivery(False, None, f"apprise could not notify {targets}" + (f": {said}" if said else ""), True, elapsed)


class _Sender(threading.Thread):
    """Run one notify; keep its outcome and the warnings apprise captured for this call."""

    def __init__(self, urls: Sequence[str], title: str, body: str, timeout: float) -> None:
        super().__init__(name="apprise-notify", daemon=True)
        self.urls, self.title, self.body, self.timeout = list(urls), title, body, timeout
        self.ok = self.timed_out = False
        self.warnings: list[str] = []

    def run(self) -> None:
        try:
            notifier = apprise.Apprise()
            notifier.add(self.urls)
            # apprise's own call deadline bounds its thread pool; the join in `deliver` bounds the rest.
            result = notifier.notify(body=self.body, title=self.title, timeout=self.timeout)
            self.ok = bool(result)
            self.timed_out = result.status == apprise.AppriseResultStatus.TIMEOUT
            self.warnings = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
        except Exception as error:  # a plugin's bug must not kill the notifier's loop
            self.warnings = [f"apprise failed: {type(error).__name__}"]  # its message may quote a URL


def _scrubbed(text: str, urls: Sequence[str]) -> str:
    """Return `text` with every part of every URL that could be a token replaced by `***`."""
    hidden: set[str] = set()
    for url in urls:
        scheme, _, rest = url.strip().partition("://")
        parts = urllib.parse.urlsplit(f"{scheme}://{rest}")
        hidden |= {rest, parts.netloc, parts.username or "", parts.password or "", parts.query}
        hidden |= set(re.split(r"[/@:?&=#,]", rest))
        hidden |= {value for _, value in urllib.parse.parse_qsl(parts.query)}
    for value in sorted((v for v in hidden if len(v) >= 3), key=len, reverse=True):
        text = text.replace(value, MASK).replace(urllib.parse.unquote(value), MASK)
    return text
