"""The email channel: send a text and HTML message through Django's SMTP settings. Exposes `deliver`.

The one channel module that imports Django: the issue asks for email "through Django's mail settings"
(EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS/SSL, DEFAULT_FROM_EMAIL), and
Django's SMTP backend already reads them all. So `monitor.alerting.channels` never imports this module, and
tests/alerting/test_isolation.py exempts it. The backend is named here, not taken from EMAIL_BACKEND: a
notifier must really send (a console or locmem backend would mark every notification sent), and only
SMTP's errors can be classed. `Delivery.status` holds the SMTP reply code when the server refused.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Sequence

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from monitor.alerting.channels import Delivery, cut

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
ERROR_EXCERPT = 200  # characters of the server's reply put in the error sentence


def deliver(recipients: Sequence[str], subject: str, text: str, html: str, *, timeout: float) -> Delivery:
    """Send one multipart (text, then HTML) message to `recipients`; return how it went.

    1. Open an SMTP connection with `timeout` on each socket operation (connect, every reply).
    2. Send with EmailMultiAlternatives, from DEFAULT_FROM_EMAIL.
    3. Class a failure: refused or timed-out connections and 4xx replies are retryable, 5xx are not.
    """
    started = time.monotonic()
    where = f"{settings.EMAIL_HOST}:{settings.EMAIL_PORT}"
    if not recipients:
        return Delivery(False, None, "the email channel has no recipients", False, 0.0)
    connection = get_connection(SMTP_BACKEND, fail_silently=False, timeout=timeout)
    message = EmailMultiAlternatives(subject, text, to=list(recipients), connection=connection)
    message.attach_alternative(html, "text/html")
    try:
        message.send()
    except Exception as error:  # every SMTP and socket error becomes a Delivery
        status, sentence, retryable = _classed(error, where, timeout)
        return Delivery(False, status, _scrubbed(sentence), retryable, time.monotonic() - started)
    return Delivery(True, None, "", False, time.monotonic() - started)


def _classed(error: Exception, where: str, timeout: float) -> tuple[int | None, str, bool]:
    """Return (SMTP code, sentence, retryable) for what `send()` raised; a programming error is re-raised."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        # Every recipient was refused (smtplib raises only then): retry only if none was refused for good.
        codes = {code for code, _ in error.recipients.values()}
        worst = max(codes)
        said = "; ".join(f"{rcpt}: {code} {_reply(reply)}" for rcpt, (code, reply) in error.recipients.items())
        return worst, f"{where} refused the recipients ({said})", all(400 <= code < 500 for code in codes)
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return error.smtp_code, f"{where} refused the login: {error.smtp_code} {_reply(error.smtp_error)}", False
    if isinstance(error, smtplib.SMTPResponseException):  # sender refused, data refused, connect refused...
        code = error.smtp_code
        return code, f"{where} answered {code} {_reply(error.smtp_error)}", 400 <= code < 500 or code < 0
    if isinstance(error, smtplib.SMTPServerDisconnected) and isinstance(error.__context__, TimeoutError):
        error = error.__context__  # smtplib turns a read that timed out into "Connection unexpectedly closed"
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return None, f"{where} closed the connection", True
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return None, f"{where} does not support what the mail settings ask: {error}", False
    if isinstance(error, TimeoutError):
        return None, f"no answer from {where} within {timeout:g} s", True
    if isinstance(error, ssl.SSLCertVerificationError):
        return None, f"the certificate of {where} is not trusted: {error.verify_message}", False
    if isinstance(error, ssl.SSLError):
        return None, f"the TLS handshake with {where} failed: {error.reason or error}", True
    if isinstance(error, ConnectionRefusedError):
        return None, f"the connection to {where} was refused", True
    if isinstance(error, socket.gaierror):
        return None, f"the host name of {where} does not resolve", True
    if isinstance(error, OSError | smtplib.SMTPException):
        return None, f"cannot send through {where}: {error}", True
    raise error


def _reply(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    text = " ".join("".join(char if char.isprintable() else " " for char in text).split())
    return cut(text, ERROR_EXCERPT)


def _scrubbed(sentence: str) -> str:
    """Return `sentence` without the SMTP password, should a server's reply echo it."""
    password = settings.EMAIL_HOST_PASSWORD
    return sentence.replace(password, "***") if password else sentence
