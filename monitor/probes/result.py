"""The value a probe returns: `Result`, with its `Status`, `Failure` kind, `Phases` and `TLSFacts`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Status(StrEnum):
    UP = "up"
    WARNING = "warning"
    DOWN = "down"
    UNKNOWN = "unknown"  # nothing was measured: the probe could not run (Nagios' UNKNOWN)


class Failure(StrEnum):
    """Why a probe did not come back `up`; `docs/architecture.md` lists when each one is used."""

    DNS_RESOLUTION = "dns_resolution"  # the host name did not resolve to an address
    REFUSED = "refused"  # the server actively refused the TCP connection
    TIMEOUT = "timeout"  # the deadline passed while waiting for the server
    UNREACHABLE = "unreachable"  # no route to the address, or another socket error
    CONNECTION_CLOSED = "connection_closed"  # the server closed the connection mid-dialogue
    TLS_HANDSHAKE = "tls_handshake"  # the TLS handshake itself failed
    TLS_EXPIRED = "tls_expired"  # the certificate is expired or not yet valid
    TLS_HOSTNAME = "tls_hostname"  # the certificate does not name the server
    TLS_UNTRUSTED = "tls_untrusted"  # the chain does not lead to a trusted CA
    STARTTLS_UNAVAILABLE = "starttls_unavailable"  # STARTTLS asked for but not offered
    PROTOCOL_ERROR = "protocol_error"  # the peer does not speak the protocol
    SERVER_REJECTED = "server_rejected"  # a well-formed negative answer (SMTP 5xx, -ERR, NO/BAD)
    AUTH_FAILED = "auth_failed"  # the server refused the login the service is set up with (its answer is the reason)
    HTTP_STATUS = "http_status"  # HTTP status not among the expected ones
    KEYWORD_MISSING = "keyword_missing"  # expected keyword or pattern not found in the response
    DNS_RCODE = "dns_rcode"  # DNS answer with an unexpected response code
    DNS_ANSWER_MISMATCH = "dns_answer_mismatch"  # DNS answer lacks the expected record
    RESPONSE_TOO_LARGE = "response_too_large"  # a line or body passed its size limit
    CONFIG_ERROR = "config_error"  # the service's stored settings no longer make a probe (status unknown)
    TLS_EXPIRING = "tls_expiring"  # a warning: a certificate of the chain expires within the warning days
    INTERNAL_ERROR = "internal_error"  # the prober itself failed (a bug); nothing was measured (status unknown)
    MISSED = "missed"  # the slot got no probe at all (the daemon records these; status unknown)


@dataclasses.dataclass(frozen=True)
class Phases:
    """Seconds spent in each phase, named as blackbox_exporter names them; a phase that did not run is 0."""

    resolve: float = 0.0
    connect: float = 0.0
    tls: float = 0.0
    processing: float = 0.0  # connection ready until the first byte of the greeting or response
    transfer: float = 0.0  # the rest of the dialogue
    total: float = 0.0

    NAMES = ("resolve", "connect", "tls", "processing", "transfer")


@dataclasses.dataclass(frozen=True)
class TLSFacts:
    """What the TLS handshake showed, recorded whether or not the certificate verified."""

    version: str | None
    cipher: str | None
    server_name: str | None
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: float
    earliest_expiry: dt.datetime  # of every certificate the server sent, as blackbox reports it
    fingerprint_sha256: str
    verified: bool
    verify_error: str | None  # None when verified or when verification was turned off
    # The certificate that expires first in the chain OpenSSL verified (root included), or in the chain
    # the server sent when verification was off or failed. An intermediate that expires before the leaf
    # breaks every client just the same, and a stale cross-signed certificate the server still sends but
    # clients no longer use (what earliest_expiry sees) does not. None when built without a chain.
    chain_expiry: dt.datetime | None = None
    chain_expiry_subject: str | None = None
    chain_expiry_role: str | None = None  # "leaf", "intermediate" or "root"
    serial_number: str | None = None  # the leaf's, in lowercase hex as blackbox_exporter labels it

    @property
    def chain_days_left(self) -> float:
        """Return the days from the handshake until the first certificate of the chain expires."""
        if self.chain_expiry is None:
            return self.days_left
        return self.days_left - (self.not_after - self.chain_expiry).total_seconds() / 86400

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("not_before", "not_after", "earliest_expiry", "chain_expiry"):
            data[key] = None if data[key] is None else data[key].isoformat()
        data["sans"] = list(self.sans)
        data["days_left"] = round(self.days_left, 3)
        data["chain_days_left"] = round(self.chain_days_left, 3)
        return data


@dataclasses.dataclass(frozen=True)
class Result:
    status: Status
    failure: Failure | str | None  # a shared `Failure`, or a kind its protocol declares (`Protocol.failures`)
    reason: str
    phases: Phases
    address: str | None = None  # the IP address that answered
    tls: TLSFacts | None = None
    banner: str = ""
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @property
    def ok(self) -> bool:
        """Return whether the service answered as it should (up or warning)."""
        return self.status in (Status.UP, Status.WARNING)

    @property
    def measured(self) -> bool:
        """Return whether the probe measured the service at all (not unknown)."""
        return self.status is not Status.UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-ready data: status, failure, reason, address, phases, tls, banner, details."""
        return {
            "status": str(self.status),
            "failure": None if self.failure is None else str(self.failure),
            "reason": self.reason,
            "address": self.address,
            "phases": {k: round(v, 6) for k, v in dataclasses.asdict(self.phases).items()},
            "tls": None if self.tls is None else self.tls.to_dict(),
            "banner": self.banner,
            "details": _plain(self.details),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
