"""`manage.py import_services FILE.yaml`: create and update services, channels and maintenance windows at once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from monitor import services_io


class Command(BaseCommand):
    help = (
        "Create or update services, channels and maintenance windows from a YAML file with top-level "
        "`services:`, `channels:` and `maintenance:` lists, matched by name. Every entry is validated before "
        "anything is written; one bad entry changes nothing. Rows not in the file are kept unless --prune is "
        "given, which prunes only the lists the file has; a list that is empty prunes nothing unless "
        "--allow-empty is given too."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="the YAML file, or - for standard input")
        parser.add_argument("--prune", action="store_true", help="delete what is not in the file, of the lists it has")
        parser.add_argument(
            "--allow-empty",
            action="store_true",
            help="with --prune, accept an empty list in the file, and so delete every row of that list",
        )
        parser.add_argument("--dry-run", action="store_true", help="show what would change and write nothing")

    def handle(self, *args: Any, file: str, prune: bool, allow_empty: bool, dry_run: bool, **options: Any) -> None:
        try:
            plan = services_io.plan_import(_read(file))
            if prune:  # before the dry run too, so that it shows what the real run does
                plan.check_prune(allow_empty=allow_empty)
        except services_io.ServicesFileError as error:
            raise CommandError(f"{file}: nothing imported.\n{error}") from None
        for change in plan.changes:
            if change.action != "unchanged":
                self.stdout.write(change.describe())
        if prune:
            for section, row in plan.absent:
                self.stdout.write(f"delete {section.prefix}{row.name}")
        if dry_run:
            self.stdout.write(f"Dry run, nothing written: {plan.summary(prune=prune)}")
            return
        services_io.apply(plan, prune=prune, allow_empty=allow_empty)
        self.stdout.write(plan.summary(prune=prune))


def _read(file: str) -> str:
    if file == "-":
        return sys.stdin.read(services_io.MAX_FILE_BYTES + 1)
    try:
        with open(file, encoding="utf-8") as handle:
            return handle.read(services_io.MAX_FILE_BYTES + 1)  # bounded: parse() rejects anything longer
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"Cannot read {Path(file)}: {error}") from None
