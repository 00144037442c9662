"""Probe options: typed, frozen, validated from plain mappings, with errors that name the field.

`ConnectionOptions` holds what every protocol that reaches a host shares, and `TLSOptions` adds
the certificate checks of protocols that can speak TLS; each protocol module extends one of them
with an `Options` dataclass of its own. `Options.from_mapping(raw)` is the one way in,
used alike by the Service model, the `probe` command and tests.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import ipaddress
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Self

IP_FAMILIES = ("any", "ipv4", "ipv6")


class OptionsError(ValueError):
    """An option has a value the probe cannot use; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclasses.dataclass(frozen=True)
class ConnectionOptions:
    """What every protocol that reaches a host shares: how its name is resolved."""

    ip_family: str = "any"
    # Resolve the host through this DNS server ("ip" or "ip:port") instead of the system resolver.
    resolver: str | None = None

    def __post_init__(self) -> None:
        if self.ip_family not in IP_FAMILIES:
            raise OptionsError("ip_family", f"must be one of {', '.join(IP_FAMILIES)}, not {self.ip_family!r}")
        if self.resolver is not None:
            parse_host_port(self.resolver, default_port=53, field="resolver")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> Self:
        """Return options built from `raw`, coercing strings from forms and URLs to each field's type."""
        raw = dict(raw or {})
        hints = _hints(cls)
        known = hints.keys()
        unknown = sorted(set(raw) - known)
        if unknown:
            raise OptionsError(unknown[0], f"unknown option; known options are {', '.join(sorted(known))}")
        values = {name: _coerce(name, value, hints[name]) for name, value in raw.items()}
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """Return the options that differ from their defaults, as plain data."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}


@dataclasses.dataclass(frozen=True)
class TLSOptions(ConnectionOptions):
    """The options of a protocol that can speak TLS: how the certificate is checked."""

    tls_server_name: str | None = None  # SNI and the name verified; the host when empty
    tls_ca_file: str | None = None  # PEM bundle to trust instead of the system's
    tls_verify: bool = True
    tls_warn_days: int = 14  # a certificate closer to expiry than this gives `warning`

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.tls_warn_days <= 3650:
            raise OptionsError("tls_warn_days", f"must be between 0 and 3650 days, not {self.tls_warn_days}")


@dataclasses.dataclass(frozen=True)
class LoginOptions(ConnectionOptions):
    """The options of a protocol that can log in: the account, and whether plaintext may carry it.

    The password never comes from stored options: the Service model keeps it encrypted and hands it
    in when it builds the options, so `to_mapping()` leaves it out and `repr()` never shows it.
    """

    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    # Send the password over a connection without TLS; off unless the service says so.
    allow_plaintext_login: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.password is not None and not self.username:
            raise OptionsError("username", "is required when a password is set")
        for name in ("username", "password"):
            value = getattr(self, name)
            if value is not None and any(char in value for char in "\r\n\0"):
                raise OptionsError(name, "must not contain line breaks or NUL characters")

    def to_mapping(self) -> dict[str, Any]:
        """Return the options that differ from their defaults, without the password."""
        return {key: value for key, value in super().to_mapping().items() if key != "password"}

    @property
    def logs_in(self) -> bool:
        return bool(self.username)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Return the fields' types of an Options class; resolving them costs ~50 µs, and workers parse every job's."""
    return {
        name: hint
        for name, hint in typing.get_type_hints(cls).items()
        if name in {f.name for f in dataclasses.fields(cls)}
    }


def payload(send: str) -> bytes:
    """Return the bytes the `send` option stands for; raise OptionsError naming `send` if it has none.

    Escapes name bytes: \\xNN and \\u00NN are one byte each, so \\u20ac has no byte to stand for
    (the character written as it is goes out as UTF-8). Checked when options are parsed, so a
    service that cannot be probed is refused when saved instead of crashing every probe.
    """
    try:
        text = codecs.decode(send, "unicode_escape")
    except UnicodeDecodeError as error:
        raise OptionsError("send", f"has a broken escape sequence: {error.reason}") from None
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as error:
        char = error.object[error.start]
        message = (
            f"escapes must stand for bytes, \\x00 to \\xff, and U+{ord(char):04X} ({char}) is not one;"
            " write the character itself to send it as UTF-8"
        )
        raise OptionsError("send", message) from None


def check_pattern(field: str, pattern: str | None) -> None:
    """Raise OptionsError naming `field` unless `pattern` is None or a valid regular expression."""
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as error:
        raise OptionsError(field, f"is not a valid regular expression: {error}") from None


def parse_host_port(text: str, *, default_port: int, field: str) -> tuple[str, int]:
    """Return (ip, port) from "ip", "ip:port", "[v6]:port" or "v6"; raise OptionsError otherwise."""
    match = re.fullmatch(r"\[(?P<v6>[^\]]+)\](?::(?P<port6>\d+))?|(?P<host>[^:]+)(?::(?P<port>\d+))?", text.strip())
    host, port = (None, None) if match is None else (match["v6"] or match["host"], match["port6"] or match["port"])
    if host is None:
        try:
            host = str(ipaddress.IPv6Address(text.strip()))
        except ValueError:
            raise OptionsError(field, f"must be an IP address with an optional port, not {text!r}") from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise OptionsError(field, f"must be an IP address with an optional port, not {text!r}") from None
    number = int(port) if port else default_port
    if not 1 <= number <= 65535:
        raise OptionsError(field, f"port must be between 1 and 65535, not {number}")
    return host, number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        if value is None or value == "":
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise OptionsError(name, f"must be true or false, not {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
        raise OptionsError(name, f"must be a whole number, not {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise OptionsError(name, f"must be a number, not {value!r}") from None
    if hint is str:
        if isinstance(value, str):
            return value
        raise OptionsError(name, f"must be text, not {value!r}")
    raise TypeError(f"option {name} has a type the parser does not know: {hint!r}")
