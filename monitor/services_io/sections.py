"""The file's three sections and the shape of each key: `Kind`, `Section`, `SECTIONS` and `BY_KEY`.

Also the small value helpers that export, planning and the plan's lines share (`show`, `as_list`, ...).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import models

from monitor.models import Channel, MaintenanceWindow, Service

EXAMPLE_TIME = '"17:30"'
EXAMPLE_DATETIME = "'2025-01-04T22:00:00+01:00'"


# Kinds: what a key holds in the file, checked before the model sees it ----------------------------


def _same(value: Any) -> Any:
    return value


def _join(items: list[Any]) -> str:
    return ",".join(map(str, items))


def _split_texts(value: str) -> list[str]:
    return [item for item in (value or "").split(",") if item]


def _split_numbers(value: str) -> list[int]:
    return [int(item) for item in _split_texts(value)]


def _seconds(value: float | None) -> float | int | None:
    """Return 30 rather than 30.0 seconds, as a person writes it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _time(value: str | None) -> dt.time | None:
    return None if value is None else dt.time.fromisoformat(value)


def _hhmm(value: dt.time | None) -> str | None:
    return None if value is None else value.isoformat("seconds" if value.second else "minutes")


def _datetime(value: str | dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    if moment.utcoffset() is None:
        raise ValueError("no offset")
    return moment


@dataclass(frozen=True)
class Kind:
    """One key's shape: the YAML types it takes, how to say so, and how the model holds it.

    `to_model` may raise ValueError (a time of "25:00"); the problem then says `wanted`. Django would
    quietly turn `port: true` into 1 and `enabled: "no"` into False, so types are checked first.
    """

    types: tuple[type, ...]
    wanted: str
    item: type | None = None  # for lists: the type of each item
    item_wanted: str = "a text, such as [mail, production]"
    to_model: Callable[[Any], Any] = _same
    to_file: Callable[[Any], Any] = _same


NONE = type(None)
TEXT = Kind((str,), "a text")
FLAG = Kind((bool,), "true or false")
WHOLE = Kind((int,), "a whole number")
WHOLE_OR_EMPTY = Kind((int, NONE), "a whole number")
MINUTES = Kind((int,), "a whole number of minutes")
MINUTES_OR_EMPTY = Kind((int, NONE), "a whole number of minutes")
SECONDS = Kind((int, float), "a number of seconds", to_file=_seconds)
SECONDS_OR_EMPTY = Kind((int, float, NONE), "a number of seconds", to_file=_seconds)
TAGS = Kind((list,), "a list, such as [mail, production]", str, to_model=_join, to_file=_split_texts)
NAMES = Kind((list,), "a list of names, such as [web, mail]", str, "a name, such as [web, mail]")
NAME_OR_EMPTY = Kind((str, NONE), "a name")
TIME = Kind((str, NONE), f"a time in quotes, such as {EXAMPLE_TIME}", to_model=_time, to_file=_hhmm)
DATETIME = Kind((str, dt.datetime), f"a date and time with an offset, such as {EXAMPLE_DATETIME}", to_model=_datetime)
DATETIME_OR_EMPTY = Kind((str, dt.datetime, NONE), DATETIME.wanted, to_model=_datetime)

SERVICE_KINDS: dict[str, Kind] = {
    "name": TEXT,
    "host": TEXT,
    "port": WHOLE_OR_EMPTY,
    "protocol": TEXT,
    "tls_mode": TEXT,
    "interval": Kind((int,), "a whole number of seconds"),
    "timeout": SECONDS,
    "enabled": FLAG,
    "tags": TAGS,
    "locations": Kind((list,), "a list, such as [default, eu]", str, to_model=_join, to_file=_split_texts),
    "failure_threshold": WHOLE,
    "recovery_threshold": WHOLE,
    "options": Kind((dict,), "a mapping of option names to values, such as {tls_warn_days: 7}"),
    "login_password": TEXT,
    "depends_on": NAMES,
    "alert_quorum": WHOLE,
    "reminder_minutes": MINUTES_OR_EMPTY,
    "degraded_latency": SECONDS_OR_EMPTY,
    "degraded_checks": WHOLE,
    "certificate_warn_days": Kind(
        (list,),
        "a list of days, such as [30, 14, 7]",
        int,
        "a whole number, such as [30, 14, 7]",
        _join,
        _split_numbers,
    ),
}
CHANNEL_KINDS: dict[str, Kind] = {
    "name": TEXT,
    "kind": TEXT,
    "url": TEXT,
    "secret": TEXT,
    "enabled": FLAG,
    "tags": TAGS,
    "services": NAMES,
    "group_window": SECONDS,
    "reminder_minutes": MINUTES_OR_EMPTY,
    "escalate_to": NAME_OR_EMPTY,
    "escalate_after_minutes": MINUTES,
    "schedule_days": Kind(
        (list,), "a list of days, such as [mon, tue]", str, "a day, such as [mon, tue]", _join, _split_texts
    ),
    "schedule_from": TIME,
    "schedule_until": TIME,
    "schedule_timezone": TEXT,
    "timeout": SECONDS,
}
MAINTENANCE_KINDS: dict[str, Kind] = {
    "name": TEXT,
    "services": NAMES,
    "tags": TAGS,
    "starts_at": DATETIME,
    "ends_at": DATETIME,
    "repeat": TEXT,
    "repeat_until": DATETIME_OR_EMPTY,
    "timezone": TEXT,
    "note": TEXT,
    "enabled": FLAG,
}


@dataclass(frozen=True)
class Section:
    """One top-level list of the file and the model its entries become, matched by `name`."""

    key: str  # the top-level key
    model: type[models.Model]
    noun: str  # "service"; "services" is its plural
    plural: str
    kinds: dict[str, Kind]  # the file's keys in the order export writes them
    required: tuple[str, ...]  # on import, and always written on export
    shown: tuple[str, ...]  # also always written, though they have a default: a channel's kind
    references: dict[str, str] = field(default_factory=dict)  # key: the section whose names it holds
    secrets: tuple[str, ...] = ()  # never exported; `<key>_env` names a variable holding one
    required_secrets: tuple[str, ...] = ()  # a new row must be given these
    prefix: str = ""  # before the name in the plan's lines: "channel ops"

    @property
    def keys(self) -> tuple[str, ...]:
        return (*self.kinds, *(f"{secret}_env" for secret in self.secrets))

    def label(self, index: int, name: Any) -> str:
        return f'{self.key}[{index}] "{name}"' if isinstance(name, str) and name else f"{self.key}[{index}]"


SERVICES = Section(
    key="services",
    model=Service,
    noun="service",
    plural="services",
    kinds=SERVICE_KINDS,
    required=("name", "host", "protocol"),
    shown=(),
    references={"depends_on": "services"},
    secrets=("login_password",),
)
CHANNELS = Section(
    key="channels",
    model=Channel,
    noun="channel",
    plural="channels",
    kinds=CHANNEL_KINDS,
    required=("name",),
    shown=("kind",),
    references={"services": "services", "escalate_to": "channels"},
    secrets=("url", "secret"),
    required_secrets=("url",),
    prefix="channel ",
)
MAINTENANCE = Section(
    key="maintenance",
    model=MaintenanceWindow,
    noun="maintenance window",
    plural="maintenance windows",
    kinds=MAINTENANCE_KINDS,
    required=("name", "starts_at", "ends_at"),
    shown=(),
    references={"services": "services"},
    prefix="maintenance window ",
)
SECTIONS = (SERVICES, CHANNELS, MAINTENANCE)
BY_KEY = {section.key: section for section in SECTIONS}


# Values as a person reads them ------------------------------------------------------------------


def row_name(row: models.Model | None) -> str | None:
    return None if row is None else row.name


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def type_name(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "text", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def show(value: Any) -> str:
    return "empty" if value in ("", None) or value == [] else repr(value)
