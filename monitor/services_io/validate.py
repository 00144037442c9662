"""Import, second step: `plan_import(text)` validates every entry against the database and returns the Plan."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models

from monitor.models import Channel, Service
from monitor.services_io.parse import parse
from monitor.services_io.plan import Change, Plan, ServicesFileError
from monitor.services_io.sections import (
    BY_KEY,
    CHANNELS,
    SECTIONS,
    Kind,
    Section,
    as_list,
    row_name,
    show,
    type_name,
)

MAX_ERRORS = 50  # listed at most; a file with more is usually not a services file at all


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
        return [f"each {section.noun} must be a mapping of keys and values, not a {type_name(entry)}."]
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
                problem = f"{key}: must be {kind.wanted}, not {show(value)}."
        if problem:
            problems.append(problem)
    for secret in section.secrets:
        variable = entry.get(f"{secret}_env")
        if variable is not None and not isinstance(variable, str):
            problems.append(f"{secret}_env: must be the name of an environment variable, not {show(variable)}.")
        elif secret in entry and variable is not None:
            problems.append(f"give {secret} or {secret}_env, not both.")
    return problems, values


def _type_problem(key: str, kind: Kind, value: Any, *, shown: bool = True) -> str | None:
    """Return what is wrong with the YAML type of `value`; a secret's value is never shown."""
    if (isinstance(value, bool) and bool not in kind.types) or not isinstance(value, kind.types):
        return f"{key}: must be {kind.wanted}, not {show(value)}." if shown else f"{key}: must be {kind.wanted}."
    if kind.item is not None and not all(isinstance(item, kind.item) and not isinstance(item, bool) for item in value):
        return f"{key}: each item must be {kind.item_wanted}, not {show(value)}."
    return None


def _set_secrets(section: Section, row: models.Model, entry: dict[str, Any]) -> list[str]:
    """Set each secret from the file or its environment variable; left out, keep the stored one.

    A new row has nothing stored: without a required secret (a channel's `url`) it is an error.
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
        elif row.pk is None and secret in section.required_secrets:
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
            snapshot[key] = row_name(getattr(row, key))
    return snapshot


def _resolve(planned: list[_Entry], lists: dict[str, list[Any]], errors: list) -> dict[int, dict[str, Any]]:
    """Return each entry's references as rows (by `id(entry)`), from the file first, then the database."""
    wanted: dict[str, set[str]] = {section.key: set() for section in SECTIONS}
    for entry in planned:
        for key, target in entry.section.references.items():
            wanted[target].update(as_list(entry.raw.get(key)))
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
            for name in as_list(entry.raw.get(key)):
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
                graph[entry.row.name] = [row.name for row in as_list(links[id(entry)][key])]
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
        key: sorted(row.name for row in value) if isinstance(value, list) else row_name(value)
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
