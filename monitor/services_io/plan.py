"""What an import will do: `Plan` (its `Change`s, `check_prune()`, `summary()`) and `ServicesFileError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import models

from monitor.services_io.sections import SECTIONS, Section, as_list, show


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
            f"{key} changed" if key in self.section.secrets else f"{key}: {show(old)} -> {show(new)}"
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
                for target in as_list(change.links.get(key)):
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
