"""Services as code: read and write the `services:` YAML file that `import_services` and `export_services` use.

Exposes `export_services()` (YAML text of every service, defaults left out, by name),
`plan_import(text)` (parse and validate the whole file against the database: a `Plan`, or
`ServicesFileError` listing every problem by service and field), `apply(plan, prune=...)` (write
it in one transaction), `Plan.summary()` and `Plan.refuse_emptying()`. Importing what was exported
changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from monitor.models import Service

MAX_FILE_BYTES = 10 * 1024 * 1024  # a file of 10,000 services is about 1 MB; more is a mistake
MAX_ERRORS = 50  # listed at most; a file with more is usually not a services file at all

ALWAYS_WRITTEN = ("name", "host", "protocol")
LIST_FIELDS = ("tags", "locations")

# The file's keys in the order export writes them, and what each must hold in YAML, checked before
# the model sees it: Django would quietly turn `port: true` into 1 and `enabled: "no"` into False.
# Tags and locations are lists in the file and comma-separated strings in the model.
TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a text"),
    "host": ((str,), "a text"),
    "port": ((int, type(None)), "a whole number"),
    "protocol": ((str,), "a text"),
    "tls_mode": ((str,), "a text"),
    "interval": ((int,), "a whole number of seconds"),
    "timeout": ((int, float), "a number of seconds"),
    "enabled": ((bool,), "true or false"),
    "tags": ((list,), "a list, such as [mail, production]"),
    "locations": ((list,), "a list, such as [default, eu]"),
    "failure_threshold": ((int,), "a whole number"),
    "recovery_threshold": ((int,), "a whole number"),
    "options": ((dict,), "a mapping of option names to values, such as {tls_warn_days: 7}"),
}
FIELDS = tuple(TYPES)

MAP_TAG, SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
HEADER = "# Portwatch services. Import with `manage.py import_services FILE`; values left out take their defaults.\n"


class ServicesFileError(Exception):
    """The file cannot be imported; `errors` holds one line per problem, naming the service and field."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass
class Change:
    """What importing does to one service: `action` is create, update or unchanged; `fields` what differs."""

    action: str
    service: Service
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name: (old, new)

    def describe(self) -> str:
        if self.action != "update":
            return f"{self.action} {self.service.name}"
        diffs = "; ".join(f"{name}: {_show(old)} -> {_show(new)}" for name, (old, new) in self.fields.items())
        return f"update {self.service.name}: {diffs}"


@dataclass
class Plan:
    """Every change an import makes, validated and not yet written; `absent` are services not in the file."""

    changes: list[Change]
    absent: list[Service]

    def count(self, action: str) -> int:
        return sum(change.action == action for change in self.changes)

    def refuse_emptying(self, *, allow_empty: bool) -> None:
        """Raise ServicesFileError when pruning would delete every service because the file lists none.

        An empty `services:` is what a file with every entry commented out, or a bad template, reads
        as; pruning with it would wipe every service and its history without a word.
        """
        if self.changes or not self.absent or allow_empty:
            return
        count = len(self.absent)
        raise ServicesFileError(
            [
                f"The file lists no services, so --prune would delete every service in the database "
                f"({count} service{'' if count == 1 else 's'}); add --allow-empty to do that."
            ]
        )

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
    """Return the services (default: all) as a `services:` YAML document, by name, without default values."""
    # Sorted here, not by the database: PostgreSQL's collation and SQLite's byte order disagree.
    chosen = sorted(Service.objects.all() if services is None else services, key=lambda service: service.name)
    entries = [_entry(service) for service in chosen]
    body = yaml.dump({"services": entries}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


class _Inline(dict):
    """A mapping written on one line: `options: {tls_warn_days: 7}`."""


class _InlineList(list):
    """A list written on one line: `tags: [mail, eu]`."""


class _Dumper(yaml.SafeDumper):
    """Write entries as blocks, one key a line, and their lists and options on one line each."""


_Dumper.add_representer(_Inline, lambda dumper, data: dumper.represent_mapping(MAP_TAG, data, flow_style=True))
_Dumper.add_representer(_InlineList, lambda dumper, data: dumper.represent_sequence(SEQ_TAG, data, flow_style=True))


def _entry(service: Service) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for name in FIELDS:
        value = _file_value(service, name)
        if name in ALWAYS_WRITTEN or value != _default(name):
            entry[name] = _inline(value)
    return entry


def _inline(value: Any) -> Any:
    return _Inline(value) if isinstance(value, dict) else _InlineList(value) if isinstance(value, list) else value


def _file_value(service: Service, name: str) -> Any:
    """Return a model field as the file holds it: lists for tags and locations, 30 rather than 30.0 seconds."""
    value = getattr(service, name)
    if name in LIST_FIELDS:
        return [item for item in value.split(",") if item]
    if name == "timeout" and float(value).is_integer():
        return int(value)
    return value


def _default(name: str) -> Any:
    """Return the value a key left out of an entry takes: the model field's default, as the file holds it."""
    model_field = Service._meta.get_field(name)
    value = model_field.get_default() if model_field.has_default() else None
    return [item for item in (value or "").split(",") if item] if name in LIST_FIELDS else value


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


def parse(text: str) -> list[Any]:
    """Return the `services` list of a YAML document; raise ServicesFileError for bad YAML or a bad shape."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ServicesFileError([f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB."])
    try:
        document = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        raise ServicesFileError([_yaml_error(error)]) from None
    except yaml.YAMLError as error:
        raise ServicesFileError([f"Not valid YAML: {error}"]) from None
    if not isinstance(document, dict):
        found = "empty" if document is None else f"a {_type_name(document)}"
        raise ServicesFileError([f"The file must be a mapping with a `services:` list, but it is {found}."])
    unknown = [str(key) for key in document if key != "services"]
    if unknown:
        raise ServicesFileError([f"Unknown top-level key {', '.join(map(repr, unknown))}: only `services:` is read."])
    if "services" not in document:
        raise ServicesFileError(["The file has no `services:` list."])
    services = document["services"]
    if services is None:  # `services:` with every entry commented out
        return []
    if not isinstance(services, list):
        raise ServicesFileError([f"`services:` must be a list of services, not a {_type_name(services)}."])
    return services


def _yaml_error(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = " ".join(part for part in (error.context, error.problem) if part)
    return f"Not valid YAML: {where}{problem}."


# Import: validate and plan ----------------------------------------------------------------------


def plan_import(text: str) -> Plan:
    """Parse the file and validate every entry against the database; return the Plan or raise ServicesFileError.

    1. Check the file's shape, then each entry's keys and value types.
    2. Load the service of that name (or start a new one), set every field (left out: the default).
    3. `full_clean()` it, which normalises as the admin does, and compare with what is stored.
    Nothing is written here, so a file with one bad entry changes nothing.
    """
    entries = parse(text)
    errors: list[str] = []
    changes: list[Change] = []
    first_index: dict[str, int] = {}
    existing = {service.name: service for service in Service.objects.filter(name__in=_names(entries))}
    for index, entry in enumerate(entries):
        problems, change = _plan_entry(index, entry, existing, first_index)
        errors += problems
        if change is not None:
            changes.append(change)
    if errors:
        more = len(errors) - MAX_ERRORS
        raise ServicesFileError(errors[:MAX_ERRORS] + ([f"... and {more} more problems."] if more > 0 else []))
    absent = list(Service.objects.exclude(name__in=first_index).order_by("name"))
    return Plan(changes, absent)


def _names(entries: list[Any]) -> list[str]:
    return [entry["name"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("name"), str)]


def _plan_entry(
    index: int, entry: Any, existing: dict[str, Service], first_index: dict[str, int]
) -> tuple[list[str], Change | None]:
    label = f"services[{index}]"
    if not isinstance(entry, dict):
        return [f"{label}: each service must be a mapping of keys and values, not a {_type_name(entry)}."], None
    name = entry.get("name")
    if isinstance(name, str) and name:
        label = f'{label} "{name}"'
    problems = _shape_problems(entry)
    if isinstance(name, str) and name in first_index:
        problems.append(f"name: {name!r} is also the name of services[{first_index[name]}]; names must be unique.")
    elif isinstance(name, str):
        first_index[name] = index
    if problems:
        return [f"{label}: {problem}" for problem in problems], None
    service = existing.get(name) or Service()
    before = {key: getattr(service, key) for key in FIELDS} if service.pk else None
    for key in FIELDS:
        value = entry.get(key, _default(key))
        setattr(service, key, ",".join(map(str, value)) if key in LIST_FIELDS else value)
    try:
        service.full_clean()
    except ValidationError as error:
        return [f"{label}: {line}" for line in _validation_lines(error)], None
    return [], _change(service, before)


def _shape_problems(entry: dict[Any, Any]) -> list[str]:
    """Return what is wrong with an entry's keys and value types, before the model sees it."""
    allowed = ", ".join(FIELDS)
    problems = [f"unknown key {key!r}; the keys are {allowed}." for key in entry if key not in TYPES]
    problems += [f"{key} is required." for key in ALWAYS_WRITTEN if key not in entry]
    for key, value in entry.items():
        if key not in TYPES:
            continue
        types, wanted = TYPES[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            problems.append(f"{key}: must be {wanted}, not {_show(value)}.")
        elif key in LIST_FIELDS and not all(isinstance(item, str) for item in value):
            problems.append(f"{key}: each item must be a text, such as [mail, production], not {_show(value)}.")
    return problems


def _validation_lines(error: ValidationError) -> list[str]:
    lines = []
    for key, messages in error.message_dict.items():
        prefix = "" if key == NON_FIELD_ERRORS else f"{key}: "
        lines += [prefix + message for message in messages]
    return lines


def _change(service: Service, before: dict[str, Any] | None) -> Change:
    if before is None:
        return Change("create", service)
    fields = {key: (before[key], getattr(service, key)) for key in FIELDS if before[key] != getattr(service, key)}
    return Change("update" if fields else "unchanged", service, fields)


# Import: write ----------------------------------------------------------------------------------


def apply(plan: Plan, *, prune: bool = False, allow_empty: bool = False) -> None:
    """Write the plan in one transaction: create and update services, and with `prune` delete the absent ones.

    Unchanged services are not saved, so their `updated` time stays as it was. Pruning with a file
    that lists no services raises ServicesFileError unless `allow_empty`.
    """
    if prune:
        plan.refuse_emptying(allow_empty=allow_empty)
    with transaction.atomic():
        for change in plan.changes:
            if change.action != "unchanged":
                change.service.save()
        if prune and plan.absent:
            Service.objects.filter(pk__in=[service.pk for service in plan.absent]).delete()


def _type_name(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "text", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    return "empty" if value in ("", None) else repr(value)
