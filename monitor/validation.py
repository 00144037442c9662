"""Validators and normalisers for Service fields, raising ValidationError with a sentence saying what is allowed.

Exposes `normalise_host`, `normalise_tags`, `validate_port`, `validate_interval`, `validate_timeout`
and the bounds they enforce; `monitor/models.py` attaches them to fields.
"""

from __future__ import annotations

import ipaddress
import re

import idna
from django.core.exceptions import ValidationError

MIN_PORT, MAX_PORT = 1, 65535
MIN_INTERVAL = 5  # seconds; a probe every 5 s is already more than any service needs
MAX_HOST_LENGTH = 253  # characters of a DNS name in ASCII form, without the root dot (RFC 1035)
MAX_LABEL_LENGTH = 63
MAX_TAG_LENGTH = 40

# Besides ".", IDNA (UTS #46) treats these as label separators: ideographic and full-width full stops.
LABEL_SEPARATORS = re.compile("[.\u3002\uff0e\uff61]")
# Letters, digits, hyphens, and underscores: blackbox_exporter and real networks (docker compose
# service names such as `mail_server`) accept them, though RFC 952 host names do not.
ASCII_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
TAG = re.compile(r"[a-z0-9][a-z0-9_.-]*")

HOST_ALLOWED = "a DNS name, an IPv4 address or an IPv6 address"


def normalise_host(value: str) -> str:
    """Return the host in the form probes use: a lowercase ASCII DNS name (IDN as xn--), or a canonical IP."""
    text = value.strip()
    if not text:
        raise _host_error("it is empty", value)
    if "://" in text or "/" in text:
        raise _host_error(f"{text!r} looks like a URL; enter only the host name and choose the protocol", value)
    if any(char.isspace() for char in text):
        raise _host_error(f"{text!r} contains a space", value)
    if ":" in text or text.startswith("["):
        return _ipv6(text, value)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return _dns_name(text, value)


def _ipv6(text: str, value: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text.removeprefix("[").removesuffix("]")))
    except ValueError:
        raise _host_error(f"{text!r} is not a valid IPv6 address", value) from None


def _dns_name(text: str, value: str) -> str:
    labels = LABEL_SEPARATORS.split(text.removesuffix("."))  # the root dot adds nothing for a probe
    ascii_labels = [_label(label, value) for label in labels]
    name = ".".join(ascii_labels)
    if len(name) > MAX_HOST_LENGTH:
        raise _host_error(
            f"the name is {len(name)} characters long; the most a DNS name can have is {MAX_HOST_LENGTH}", value
        )
    if ascii_labels[-1].isdigit():
        raise _host_error(f"{text!r} is neither an IPv4 address (four numbers 0-255) nor a DNS name", value)
    return name


def _label(label: str, value: str) -> str:
    if not label:
        raise _host_error(f"{value.strip()!r} has an empty label (two dots in a row, or a leading dot)", value)
    if label.isascii():
        ascii_label = label.lower()
        if not ASCII_LABEL.fullmatch(ascii_label):
            raise _host_error(
                f"the label {label!r} may hold only letters, digits, hyphens and underscores, "
                "and must not start or end with a hyphen",
                value,
            )
        if ascii_label.startswith("xn--"):
            _check_a_label(ascii_label, value)
    else:
        try:
            ascii_label = idna.encode(label, uts46=True).decode("ascii")
        except idna.IDNAError as error:
            raise _host_error(f"the label {label!r} is not a valid internationalised name ({error})", value) from None
    if len(ascii_label) > MAX_LABEL_LENGTH:
        raise _host_error(
            f"the label {ascii_label[:20]!r}... is {len(ascii_label)} characters long; the most is {MAX_LABEL_LENGTH}",
            value,
        )
    return ascii_label


def _check_a_label(label: str, value: str) -> None:
    try:
        idna.decode(label)
    except idna.IDNAError as error:
        raise _host_error(f"the label {label!r} is not a valid internationalised name ({error})", value) from None


def _host_error(problem: str, value: str) -> ValidationError:
    return ValidationError(f"Host must be {HOST_ALLOWED}: {problem}.", code="invalid_host", params={"value": value})


def normalise_tags(value: str, *, what: str = "Tags") -> str:
    """Return tags (or locations) as one comma-separated string: lowercase, in first-seen order, without duplicates."""
    tags: list[str] = []
    for raw in re.split(r"[,\s]+", value.strip().lower()):
        if raw and raw not in tags:
            if not TAG.fullmatch(raw) or len(raw) > MAX_TAG_LENGTH:
                raise ValidationError(
                    f"{what} are separated by commas or spaces; each may hold letters, digits, '-', '_' and '.', "
                    f"start with a letter or digit and have at most {MAX_TAG_LENGTH} characters, not {raw!r}.",
                    code="invalid_tag",
                )
            tags.append(raw)
    return ",".join(tags)


def validate_port(value: int | None) -> None:
    if value is not None and not MIN_PORT <= value <= MAX_PORT:
        raise ValidationError(
            f"Port must be between {MIN_PORT} and {MAX_PORT}, or empty for the protocol's standard port, not {value}.",
            code="invalid_port",
        )


def validate_interval(value: int) -> None:
    if value < MIN_INTERVAL:
        raise ValidationError(
            f"Interval must be at least {MIN_INTERVAL} seconds, not {value}.", code="interval_too_short"
        )


def validate_timeout(value: float) -> None:
    if not value > 0:
        raise ValidationError(f"Timeout must be more than 0 seconds, not {value:g}.", code="timeout_not_positive")


def parse_days(value: str) -> list[int]:
    """Return the days in "30,14,7,1" as distinct integers, largest first; raise ValueError naming a bad one."""
    days: set[int] = set()
    for part in (value or "").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= 3650:
            raise ValueError(f"Days must be whole numbers from 1 to 3650, comma-separated, not {part!r}.")
        days.add(int(part))
    return sorted(days, reverse=True)
