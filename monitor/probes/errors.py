"""Typed errors raised inside the engine; `session.py` turns each into a failure kind and reason at one boundary."""

from __future__ import annotations

from monitor.probes.result import Failure, Status


class ProbeError(Exception):
    """The service is not healthy; the message is the sentence a person reads."""

    failure: Failure | str = Failure.PROTOCOL_ERROR  # a protocol's own kinds are declared in its `Protocol`
    status: Status = Status.DOWN


class ConfigError(ProbeError):
    """The probe cannot run here as configured (a file its settings name is missing): nothing was measured."""

    failure = Failure.CONFIG_ERROR
    status = Status.UNKNOWN


class ResolutionError(ProbeError):
    failure = Failure.DNS_RESOLUTION


class ConnectError(ProbeError):
    failure = Failure.UNREACHABLE


class RefusedError(ConnectError):
    failure = Failure.REFUSED


class ProbeTimeout(ProbeError):
    failure = Failure.TIMEOUT


class ConnectTimeout(ProbeTimeout, ConnectError):
    failure = Failure.TIMEOUT


class ConnectionClosed(ProbeError):
    failure = Failure.CONNECTION_CLOSED


class TLSHandshakeError(ProbeError):
    failure = Failure.TLS_HANDSHAKE


class TLSVerifyError(TLSHandshakeError):
    failure = Failure.TLS_UNTRUSTED


class TLSExpiredError(TLSVerifyError):
    failure = Failure.TLS_EXPIRED


class TLSHostnameError(TLSVerifyError):
    failure = Failure.TLS_HOSTNAME


class StartTLSUnavailable(ProbeError):
    failure = Failure.STARTTLS_UNAVAILABLE


class ProtocolError(ProbeError):
    failure = Failure.PROTOCOL_ERROR


class ServerRejected(ProbeError):
    failure = Failure.SERVER_REJECTED


class AuthFailed(ProbeError):
    failure = Failure.AUTH_FAILED


class HTTPStatusError(ProbeError):
    failure = Failure.HTTP_STATUS


class KeywordMissing(ProbeError):
    failure = Failure.KEYWORD_MISSING


class DNSRcodeError(ProbeError):
    failure = Failure.DNS_RCODE


class DNSAnswerMismatch(ProbeError):
    failure = Failure.DNS_ANSWER_MISMATCH


class ResponseTooLarge(ProbeError):
    failure = Failure.RESPONSE_TOO_LARGE
