"""Services as code: read and write the YAML file that `import_services` and `export_services` use.

The file is a mapping of three lists, `services:`, `channels:` and `maintenance:` (a bare list is read
as services, as files from before alerting were). One table-driven engine handles all three: a
`Section` names the model, each key's `Kind` (what the file holds and how the model holds it), the
keys that name other rows (`depends_on`, `services`, `escalate_to`) and the secrets, which are never
exported and are read on import from the file or from an environment variable (`url_env`).

Exposes `export_services()` (YAML text, defaults left out, by name), `plan_import(text)` (parse and
validate the whole file against the database: a `Plan`, or `ServicesFileError` listing every problem
by entry and key), `apply(plan, prune=...)` (write it in one transaction), `Plan.summary()` and
`Plan.check_prune()`. Importing what was exported changes nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, transaction

from monitor.models import Channel, MaintenanceWindow, Service

MAX_FILE_BYTES = 10 * 1024 * 1024  # a file of 10,000 services is about 1 MB; more is a mistake
MAX_ERRORS = 50  # listed at most; a file with more is usually not a services file at all

MAP_TAG, SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
HEADER = "# Portwatch services. Import with `manage.py import_services FILE`; values left out take their defaults.\n"
SECRETS_NOTE = (
    "# Channel secrets (url, secret) are never exported: to import elsewhere, add `url_env: NAME` (read from the\n"
    "# environment) or `url:`. Left out, an existing channel keeps its stored secrets.\n"
)
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


# The plan ---------------------------------------------------------------------------------------


class ServicesFileError(Exception):
    """The file cannot be imported; `errors` holds one line per problem, naming the entry and key."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass
class Change:
    """What importing does to one row: `action` is create, update or unchanged; `fields` what differs.

    `links` holds the rows its references resolve to (a list for many, a row or None for one), set on apply.
    """

    action: str
    obj: models.Model
    section: Section
    label: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name: (old, new); references by name
    links: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Return the line the import prints; a secret that differs shows as "url changed", never its value."""
        name = f"{self.section.prefix}{self.obj.name}"
        if self.action != "update":
            return f"{self.action} {name}"
        diffs = "; ".join(
            f"{key} changed" if key in self.section.secrets else f"{key}: {_show(old)} -> {_show(new)}"
            for key, (old, new) in self.fields.items()
        )
        return f"update {name}: {diffs}"


@dataclass
class Plan:
    """Every change an import makes, validated and not yet written.

    `absent` are rows not in the file, of the sections the file has: only those are pruned.
    """

    changes: list[Change]
    absent: list[tuple[Section, models.Model]]
    listed: dict[str, int]  # section key: how many entries the file has

    def count(self, action: str) -> int:
        return sum(change.action == action for change in self.changes)

    def check_prune(self, *, allow_empty: bool) -> None:
        """Raise ServicesFileError when pruning would do what the file cannot have meant.

        1. A section the file has but lists nothing in would delete every row of it: an empty
           `services:` is what a file with every entry commented out reads as, and pruning with it
           would wipe every service and its history without a word. `allow_empty` accepts that.
        2. An entry naming a row that pruning deletes (a channel for a service left out of the file).
        """
        errors = []
        for section in SECTIONS:
            count = sum(absent_section is section for absent_section, _ in self.absent)
            if self.listed.get(section.key) == 0 and count and not allow_empty:
                noun = section.noun if count == 1 else section.plural
                errors.append(
                    f"The file lists no {section.plural}, so --prune would delete every {section.noun} in the "
                    f"database ({count} {noun}); add --allow-empty to do that."
                )
        deleted = {(section.key, obj.pk) for section, obj in self.absent}
        for change in self.changes:
            for key, target_key in change.section.references.items():
                for target in _as_list(change.links.get(key)):
                    if (target_key, target.pk) in deleted:
                        errors.append(
                            f"{change.label}: {key}: {target.name!r} is not in the file, so --prune would delete it."
                        )
        if errors:
            raise ServicesFileError(errors)

    def summary(self, *, prune: bool) -> str:
        """Return "1 created, 2 updated, 3 unchanged" (and ", N deleted" with prune, or how many were kept)."""
        text = f"{self.count('create')} created, {self.count('update')} updated, {self.count('unchanged')} unchanged"
        if prune:
            return f"{text}, {len(self.absent)} deleted"
        if self.absent:
            return f"{text}; {len(self.absent)} not in the file kept (--prune deletes them)"
        return text


# Export -----------------------------------------------------------------------------------------


def export_services(services: Iterable[Service] | None = None) -> str:
    """Return the services (default: all), channels and maintenance windows as YAML, by name, without defaults.

    `channels:` and `maintenance:` are written only when there are some, so a database without
    them exports the same file as before they existed (and a --prune import of it leaves them alone).
    """
    chosen = Service.objects.prefetch_related("depends_on") if services is None else services
    document: dict[str, Any] = {"services": _entries(SERVICES, chosen)}
    channels = _entries(CHANNELS, Channel.objects.select_related("escalate_to").prefetch_related("services"))
    windows = _entries(MAINTENANCE, MaintenanceWindow.objects.prefetch_related("services"))
    if channels:
        document["channels"] = channels
    if windows:
        document["maintenance"] = windows
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + (SECRETS_NOTE if channels else "") + body


class _Inline(dict):
    """A mapping written on one line: `options: {tls_warn_days: 7}`."""


class _InlineList(list):
    """A list written on one line: `tags: [mail, eu]`."""


class _Dumper(yaml.SafeDumper):
    """Write entries as blocks, one key a line, and their lists and options on one line each."""


_Dumper.add_representer(_Inline, lambda dumper, data: dumper.represent_mapping(MAP_TAG, data, flow_style=True))
_Dumper.add_representer(_InlineList, lambda dumper, data: dumper.represent_sequence(SEQ_TAG, data, flow_style=True))


def _entries(section: Section, rows: Iterable[models.Model]) -> list[dict[str, Any]]:
    # Sorted here, not by the database: PostgreSQL's collation and SQLite's byte order disagree.
    return [_entry(section, row) for row in sorted(rows, key=lambda row: (row.name, row.pk))]


def _entry(section: Section, row: models.Model) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for key in section.kinds:
        if key in section.secrets:
            continue
        value = _file_value(section, row, key)
        if key in section.required or key in section.shown or value != _default(section, key):
            entry[key] = _inline(value)
    return entry


def _inline(value: Any) -> Any:
    return _Inline(value) if isinstance(value, dict) else _InlineList(value) if isinstance(value, list) else value


def _file_value(section: Section, row: models.Model, key: str) -> Any:
    """Return a model field as the file holds it: names for references, lists for tags, 30 rather than 30.0."""
    value = getattr(row, key)
    if key in section.references:
        return sorted(other.name for other in value.all()) if isinstance(value, models.Manager) else _name(value)
    if isinstance(value, dt.datetime):  # in the window's own zone, as a person planned it
        return value.astimezone(_zone(getattr(row, "timezone", "UTC"))).isoformat()
    return section.kinds[key].to_file(value)


def _default(section: Section, key: str) -> Any:
    """Return the value a key left out of an entry takes, as the file holds it."""
    model_field = section.model._meta.get_field(key)
    if model_field.many_to_many:
        return []
    value = model_field.get_default()  # "" for a text field without one
    return None if value is None else section.kinds[key].to_file(value)


# Import: parse ----------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """A safe loader that rejects a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def parse(text: str) -> dict[str, list[Any]]:
    """Return the file's lists by section key; raise ServicesFileError for bad YAML or a bad shape.

    A bare list is the format from before alerting: services only.
    """
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ServicesFileError([f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB."])
    try:
        document = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        raise ServicesFileError([_yaml_error(error)]) from None
    except yaml.YAMLError as error:
        raise ServicesFileError([f"Not valid YAML: {error}"]) from None
    if isinstance(document, list):
        return {"services": document}
    if not isinstance(document, dict):
        found = "empty" if document is None else f"a {_type_name(document)}"
        raise ServicesFileError([f"The file must be a mapping with a `services:` list, but it is {found}."])
    unknown = [str(key) for key in document if key not in BY_KEY]
    if unknown:
        raise ServicesFileError(
            [f"Unknown top-level key {', '.join(map(repr, unknown))}: the keys are {', '.join(BY_KEY)}."]
        )
    if "services" not in document:
        raise ServicesFileError(["The file has no `services:` list."])
    lists: dict[str, list[Any]] = {}
    for key, entries in document.items():
        if entries is None:  # `channels:` with every entry commented out
            entries = []
        if not isinstance(entries, list):
            raise ServicesFileError([f"`{key}:` must be a list of {key}, not a {_type_name(entries)}."])
        lists[key] = entries
    return lists


def _yaml_error(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = " ".join(part for part in (error.context, error.problem) if part)
    return f"Not valid YAML: {where}{problem}."


# Import: validate and plan ----------------------------------------------------------------------


@dataclass
class _Entry:
    """One entry being planned: where it is in the file, the row it becomes, and the row as stored."""

    section: Section
    index: int
    label: str
    raw: dict[str, Any]
    row: models.Model
    before: dict[str, Any] | None  # None for a new row


def plan_import(text: str) -> Plan:
    """Parse the file and validate every entry against the database; return the Plan or raise ServicesFileError.

    1. Check the file's shape, then each entry's keys and value types, and read its secrets.
    2. Load the row of that name (or start a new one), set every field (left out: the default).
    3. `full_clean()` it, which normalises as the admin does.
    4. Resolve references by name, in the file first and then the database, and refuse loops.
    5. Compare with what is stored. Nothing is written here, so a file with one bad entry changes nothing.
    """
    lists = parse(text)
    errors: list[tuple[int, int, str]] = []  # (section, index, line): reported in file order
    planned: list[_Entry] = []
    for order, section in enumerate(SECTIONS):
        for index, problem in _plan_section(section, lists.get(section.key), planned):
            errors.append((order, index, problem))
    links = _resolve(planned, lists, errors)
    _find_loops(planned, links, errors)
    if errors:
        lines = [line for _, _, line in sorted(errors, key=lambda error: error[:2])]
        more = len(lines) - MAX_ERRORS
        raise ServicesFileError(lines[:MAX_ERRORS] + ([f"... and {more} more problems."] if more > 0 else []))
    changes = [_change(entry, links[id(entry)]) for entry in planned]
    absent = []
    for section in SECTIONS:
        if section.key in lists:
            listed = {entry.row.pk for entry in planned if entry.section is section and entry.row.pk}
            absent += [(section, row) for row in section.model.objects.exclude(pk__in=listed).order_by("name", "pk")]
    return Plan(changes, absent, {key: len(entries) for key, entries in lists.items()})


def _plan_section(section: Section, entries: list[Any] | None, planned: list[_Entry]) -> list[tuple[int, str]]:
    """Plan each entry of one section into `planned`; return its problems as (index, line)."""
    problems: list[tuple[int, str]] = []
    if entries is None:
        return problems
    names = [entry["name"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("name"), str)]
    existing: dict[str, list[models.Model]] = {}
    for row in section.model.objects.filter(name__in=names):
        existing.setdefault(row.name, []).append(row)
    first_index: dict[str, int] = {}
    for index, entry in enumerate(entries):
        label = section.label(index, entry.get("name") if isinstance(entry, dict) else None)
        lines = _plan_entry(section, index, label, entry, existing, first_index, planned)
        problems += [(index, f"{label}: {line}") for line in lines]
    return problems


def _plan_entry(
    section: Section,
    index: int,
    label: str,
    entry: Any,
    existing: dict[str, list[models.Model]],
    first_index: dict[str, int],
    planned: list[_Entry],
) -> list[str]:
    if not isinstance(entry, dict):
        return [f"each {section.noun} must be a mapping of keys and values, not a {_type_name(entry)}."]
    name = entry.get("name")
    problems, values = _shape(section, entry)
    if isinstance(name, str) and name in first_index:
        problems.append(f"name: {name!r} is also the name of {section.key}[{first_index[name]}]; names must be unique.")
    elif isinstance(name, str):
        first_index[name] = index
        if len(existing.get(name, ())) > 1:
            problems.append(f"name: {len(existing[name])} {section.plural} in the database are named {name!r}.")
    if problems:
        return problems
    stored = existing.get(name)
    row = stored[0] if stored else section.model()
    before = _snapshot(section, row) if row.pk else None
    for key, value in values.items():
        setattr(row, key, value)
    problems = _set_secrets(section, row, entry)
    if section is CHANNELS:
        row.escalate_to = None  # checked by name across the file in _find_loops: the model walks stored rows only
    if problems:
        return problems
    try:
        row.full_clean()
    except ValidationError as error:
        return _validation_lines(error)
    planned.append(_Entry(section, index, label, entry, row, before))
    return []


def _shape(section: Section, entry: dict[Any, Any]) -> tuple[list[str], dict[str, Any]]:
    """Return what is wrong with an entry's keys and values, and the model values of its plain fields.

    A key left out takes the model's default; references and secrets are left to their own steps.
    """
    allowed = ", ".join(section.keys)
    problems = [f"unknown key {key!r}; the keys are {allowed}." for key in entry if key not in section.keys]
    problems += [f"{key} is required." for key in section.required if key not in entry]
    values: dict[str, Any] = {}
    for key, kind in section.kinds.items():
        if key in section.references or key in section.secrets:
            value = entry.get(key)
            if key in entry and (problem := _type_problem(key, kind, value, shown=key not in section.secrets)):
                problems.append(problem)
            continue
        model_field = section.model._meta.get_field(key)
        if key not in entry:
            values[key] = model_field.get_default()  # "" for a text field without one
            continue
        value = entry[key]
        problem = _type_problem(key, kind, value)
        if problem is None:
            try:
                values[key] = kind.to_model(value)
            except ValueError:
                problem = f"{key}: must be {kind.wanted}, not {_show(value)}."
        if problem:
            problems.append(problem)
    for secret in section.secrets:
        variable = entry.get(f"{secret}_env")
        if variable is not None and not isinstance(variable, str):
            problems.append(f"{secret}_env: must be the name of an environment variable, not {_show(variable)}.")
        elif secret in entry and variable is not None:
            problems.append(f"give {secret} or {secret}_env, not both.")
    return problems, values


def _type_problem(key: str, kind: Kind, value: Any, *, shown: bool = True) -> str | None:
    """Return what is wrong with the YAML type of `value`; a secret's value is never shown."""
    if (isinstance(value, bool) and bool not in kind.types) or not isinstance(value, kind.types):
        return f"{key}: must be {kind.wanted}, not {_show(value)}." if shown else f"{key}: must be {kind.wanted}."
    if kind.item is not None and not all(isinstance(item, kind.item) and not isinstance(item, bool) for item in value):
        return f"{key}: each item must be {kind.item_wanted}, not {_show(value)}."
    return None


def _set_secrets(section: Section, row: models.Model, entry: dict[str, Any]) -> list[str]:
    """Set each secret from the file or its environment variable; left out, keep the stored one.

    A new row has nothing stored: without `url` it is an error, other secrets take their default.
    """
    problems = []
    for secret in section.secrets:
        variable = entry.get(f"{secret}_env")
        if variable is not None:
            if variable not in os.environ:
                problems.append(f"{secret}_env: the environment variable {variable!r} is not set.")
                continue
            setattr(row, secret, os.environ[variable])
        elif secret in entry:
            setattr(row, secret, entry[secret])
        elif row.pk is None and not section.model._meta.get_field(secret).has_default():
            problems.append(f"{secret} is required for a new {section.noun}: give {secret} or {secret}_env.")
    return problems


def _snapshot(section: Section, row: models.Model) -> dict[str, Any]:
    """Return the stored values of a row's plain fields and secrets, and its references by name."""
    snapshot = {}
    for key in section.kinds:
        if key not in section.references:
            snapshot[key] = getattr(row, key)
        elif section.model._meta.get_field(key).many_to_many:
            snapshot[key] = sorted(other.name for other in getattr(row, key).all())
        else:
            snapshot[key] = _name(getattr(row, key))
    return snapshot


def _resolve(planned: list[_Entry], lists: dict[str, list[Any]], errors: list) -> dict[int, dict[str, Any]]:
    """Return each entry's references as rows (by `id(entry)`), from the file first, then the database."""
    wanted: dict[str, set[str]] = {section.key: set() for section in SECTIONS}
    for entry in planned:
        for key, target in entry.section.references.items():
            wanted[target].update(_as_list(entry.raw.get(key)))
    rows: dict[str, dict[str, models.Model]] = {}
    in_file: dict[str, set[str]] = {}
    for section in SECTIONS:
        rows[section.key] = {row.name: row for row in section.model.objects.filter(name__in=wanted[section.key])}
        rows[section.key].update({entry.row.name: entry.row for entry in planned if entry.section is section})
        in_file[section.key] = {
            item["name"]
            for item in lists.get(section.key, [])
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        }
    order = {section.key: number for number, section in enumerate(SECTIONS)}
    links: dict[int, dict[str, Any]] = {}
    for entry in planned:
        links[id(entry)] = {}
        for key, target in entry.section.references.items():
            found = []
            for name in _as_list(entry.raw.get(key)):
                if name in rows[target]:
                    found.append(rows[target][name])
                elif name not in in_file[target]:  # an entry with problems of its own is not unknown
                    noun = BY_KEY[target].noun
                    line = f"{entry.label}: {key}: no {noun} named {name!r} in the file or the database."
                    errors.append((order[entry.section.key], entry.index, line))
            many = entry.section.model._meta.get_field(key).many_to_many
            links[id(entry)][key] = found if many else (found[0] if found else None)
    return links


def _find_loops(planned: list[_Entry], links: dict[int, dict[str, Any]], errors: list) -> None:
    """Report every entry on a loop of dependencies or escalations, across the file and what is stored.

    A loop would hold a service's alerts behind itself forever, or escalate round and round.
    """
    depends: dict[str, list[str]] = {}
    for source, target in Service.depends_on.through.objects.values_list("from_service__name", "to_service__name"):
        depends.setdefault(source, []).append(target)
    escalates: dict[str, list[str]] = {
        name: [target]
        for name, target in Channel.objects.filter(escalate_to__isnull=False).values_list("name", "escalate_to__name")
    }
    graphs = {
        ("services", "depends_on"): (depends, "the dependencies loop"),
        ("channels", "escalate_to"): (escalates, "the escalation chain loops"),
    }
    for entry in planned:
        for (section_key, key), (graph, _) in graphs.items():
            if entry.section.key == section_key:
                graph[entry.row.name] = [row.name for row in _as_list(links[id(entry)][key])]
    for entry in planned:
        for (section_key, key), (graph, words) in graphs.items():
            if entry.section.key == section_key and (path := _loop(graph, entry.row.name)):
                order = SECTIONS.index(entry.section)
                errors.append((order, entry.index, f"{entry.label}: {key}: {words}: {' -> '.join(path)}."))


def _loop(graph: dict[str, list[str]], start: str) -> list[str] | None:
    """Return a path from `start` back to itself in `graph`, or None (depth first, each name visited once)."""
    stack, seen = [(start, [start])], set()
    while stack:
        name, path = stack.pop()
        for following in graph.get(name, []):
            if following == start:
                return [*path, start]
            if following not in seen:
                seen.add(following)
                stack.append((following, [*path, following]))
    return None


def _change(entry: _Entry, links: dict[str, Any]) -> Change:
    change = Change("create", entry.row, entry.section, entry.label, links=links)
    if entry.before is None:
        return change
    after = {key: getattr(entry.row, key) for key in entry.before if key not in entry.section.references}
    after |= {
        key: sorted(row.name for row in value) if isinstance(value, list) else _name(value)
        for key, value in links.items()
    }
    change.fields = {key: (old, after[key]) for key, old in entry.before.items() if old != after[key]}
    change.action = "update" if change.fields else "unchanged"
    return change


def _validation_lines(error: ValidationError) -> list[str]:
    lines = []
    for key, messages in error.message_dict.items():
        prefix = "" if key == NON_FIELD_ERRORS else f"{key}: "
        lines += [prefix + message for message in messages]
    return lines


# Import: write ----------------------------------------------------------------------------------


def apply(plan: Plan, *, prune: bool = False, allow_empty: bool = False) -> None:
    """Write the plan in one transaction: create and update rows, set references, and with `prune` delete.

    Services are saved first and channels along their escalation chain, so that every row a
    reference names exists when it is set. Unchanged rows are not saved, so their `updated` time
    stays as it was. Pruning raises ServicesFileError as `Plan.check_prune` says unless `allow_empty`.
    """
    if prune:
        plan.check_prune(allow_empty=allow_empty)
    changed = [change for change in plan.changes if change.action != "unchanged"]
    with transaction.atomic():
        for section in SECTIONS:
            ordered = sorted((c for c in changed if c.section is section), key=lambda c: _chain_length(c.obj, changed))
            for change in ordered:
                for key, value in change.links.items():
                    if not isinstance(value, list):
                        setattr(change.obj, key, value)
                change.obj.save()
            for change in ordered:
                for key, value in change.links.items():
                    if isinstance(value, list):
                        getattr(change.obj, key).set(value)
        if prune:
            for section in reversed(SECTIONS):
                gone = [row.pk for absent_section, row in plan.absent if absent_section is section]
                section.model.objects.filter(pk__in=gone).delete()


def _chain_length(row: models.Model, changed: list[Change]) -> int:
    """Return how many rows being written a channel escalates through, so that their targets are saved first."""
    pending = {id(change.obj): change for change in changed if change.section is CHANNELS}
    length, change = 0, pending.get(id(row))
    while change is not None and (target := change.links.get("escalate_to")) is not None:
        change, length = pending.get(id(target)), length + 1
    return length


# Helpers ----------------------------------------------------------------------------------------


def _name(row: models.Model | None) -> str | None:
    return None if row is None else row.name


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _type_name(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "text", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    return "empty" if value in ("", None) or value == [] else repr(value)
