"""What a protocol module declares about itself, so nothing outside the module repeats it.

Every module in `monitor/probes/protocols/` ends with `PROTOCOL = Protocol(...)`. The registry
(`monitor.probes.protocols.REGISTRY`) finds them; the model's choices, the `probe` command's URL
schemes and flags, the dashboard's forms, standard ports and the list of failure kinds all read it.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from monitor.probes.options import ConnectionOptions, OptionsError
from monitor.probes.result import Result

Transport = Literal["stream", "datagram", "icmp"]
TLS_MODE_NAMES = ("none", "starttls", "implicit")


@dataclass(frozen=True)
class Scheme:
    """A URL scheme: `smtps://host` is smtp with implicit TLS on port 465."""

    name: str
    tls_mode: str = "none"
    port: int | None = None  # the standard port; None when a URL must name one (tcp://, udp://)


@dataclass(frozen=True)
class Flag:
    """A `probe` command flag that sets one option, e.g. `--keyword TEXT` sets http's `keyword`."""

    name: str  # "--keyword"
    option: str  # the option it sets
    help: str
    metavar: str | None = None
    value: Any = None  # for a switch (no argument): the value it sets, e.g. False for --no-follow

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--").replace("-", "_")

    @property
    def is_switch(self) -> bool:
        return self.value is not None


UrlOptions = Callable[[urllib.parse.SplitResult], dict[str, Any]]
Prober = Callable[..., Awaitable[Result]]


def no_url_options(parts: urllib.parse.SplitResult) -> dict[str, Any]:
    """Return no options: the URL names only host and port; refuse a path or query, which would be ignored."""
    if parts.path not in ("", "/") or parts.query:
        raise OptionsError("url", f"{parts.scheme} URLs take no path or query")
    return {}


def login_url_options(parts: urllib.parse.SplitResult) -> dict[str, Any]:
    """Return the username a URL names (ftp://alice@host); refuse a password in it, a path or a query.

    The password is given apart (the service's encrypted field, or the command's --password-env): one in a
    URL ends up in shell history, logs and exported files.
    """
    if parts.password is not None:
        raise OptionsError("url", "a password in a URL ends up in shell history and logs; give it apart from the URL")
    options = no_url_options(parts)
    return {"username": urllib.parse.unquote(parts.username)} if parts.username else options


@dataclass(frozen=True)
class Protocol:
    """One protocol's facts: its key, how it is reached, its options, and its prober."""

    key: str  # stored in Service.protocol: lower case, at most 16 characters
    label: str  # what people call it: "SMTP", "PHP-FPM (FastCGI)"
    summary: str  # one line: what a probe of it checks
    options: type[ConnectionOptions]
    probe: Prober  # async probe(target, options, *, deadline) -> Result
    schemes: tuple[Scheme, ...]
    tls_modes: tuple[str, ...] = ("none",)
    transport: Transport = "stream"  # how it is spoken: converse() on a Connection, or datagram.converse()
    url_options: UrlOptions = no_url_options  # options a URL's path and query give
    flags: tuple[Flag, ...] = ()  # command flags of this protocol's own options
    # Failure kinds only this protocol reports, with when; the shared ones are `result.Failure`.
    failures: Mapping[str, str] = field(default_factory=dict)
    needs_port: bool = True  # False only where the protocol has no port (icmp)
    # The blackbox_exporter prober whose families its /metrics series carry ("tcp", "http", "dns", "icmp"), so
    # dashboards built for blackbox read them; None: only the families every probe has.
    blackbox_prober: str | None = None
    # What a person reads of `Result.details` on the service page, after the banner: (details key, heading)
    # pairs, in the order shown. Only keys the module itself puts in details; those written for machines or the
    # version audit (http's hops, server_software where the banner already says it) and values new on every
    # probe (mysql's connection_id) stay out. Headings name the unit where a number has one: "RTT min (s)".
    shown: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not (self.key.isascii() and self.key.islower() and len(self.key) <= 16):
            raise ValueError(f"protocol key {self.key!r} must be lower-case ASCII of at most 16 characters")
        unknown = set(self.tls_modes) - set(TLS_MODE_NAMES)
        if unknown or not self.tls_modes:
            raise ValueError(f"{self.key}: TLS modes must be among {TLS_MODE_NAMES}, not {sorted(unknown)}")
        if not self.schemes:
            raise ValueError(f"{self.key}: a protocol needs at least one URL scheme")
        for scheme in self.schemes:
            if scheme.tls_mode not in self.tls_modes:
                raise ValueError(f"{self.key}: scheme {scheme.name} uses TLS mode {scheme.tls_mode}, not declared")
        keys = [key for key, _ in self.shown]
        if len(set(keys)) != len(keys) or not all(key and heading for key, heading in self.shown):
            raise ValueError(f"{self.key}: shown must pair each details key once with a heading")

    @property
    def uses_tls(self) -> bool:
        """Return whether the protocol can speak TLS (its options then have the certificate checks)."""
        return self.tls_modes != ("none",)

    def standard_port(self, tls_mode: str) -> int | None:
        """Return the port this protocol listens on by convention in `tls_mode`, if there is one.

        STARTTLS runs on the plaintext port (SMTP 25, POP3 110, IMAP 143); mail clients submit on
        587, which the `submission` scheme names.
        """
        if tls_mode == "starttls":
            return self.standard_port("none")
        return next((s.port for s in self.schemes if s.tls_mode == tls_mode and s.port), None)

    def parse_options(self, raw: Mapping[str, Any] | None) -> ConnectionOptions:
        return self.options.from_mapping(raw)
