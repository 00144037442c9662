"""`manage.py export_services [FILE]`: write every service, channel and maintenance window as YAML for import_services.

Channel secrets are never written; see monitor/services_io/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from monitor import services_io
from monitor.models import Service


class Command(BaseCommand):
    help = (
        "Write every service, channel and maintenance window to FILE (default: standard output) as YAML, by "
        "name, leaving out default values and channel secrets. Importing the file into the same database "
        "changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="where to write; standard output when left out or -")

    def handle(self, *args: Any, file: str | None, **options: Any) -> None:
        text = services_io.export_services()
        if file in (None, "-"):
            self.stdout.write(text, ending="")
            return
        try:
            Path(file).write_text(text, encoding="utf-8")
        except OSError as error:
            raise CommandError(f"Cannot write {file}: {error}") from None
        self.stderr.write(f"Exported {Service.objects.count()} services to {file}.")
