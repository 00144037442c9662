"""`manage.py audit`: every service, the software and version its greeting or headers reveal, and plaintext logins.

Exit status: 0, also when something is exposed (an audit is a report, and cron mails what it prints); with
`--fail-on-exposure`, 1 when a service reveals a version or offers login in clear text, for CI and scripts.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from monitor.exposure_report import ServiceExposure, exposures

COLUMNS = ("service", "protocol", "address", "software", "version", "flags")
NOTHING = "-"


class Command(BaseCommand):
    help = (
        "List every service with the software and version its last probe heard (SMTP and FTP 220 lines, POP3 and "
        "IMAP greetings, HTTP Server and X-Powered-By headers, the MySQL handshake, the Telnet banner), flagging "
        "services that reveal a version (VERSION) or offer login without TLS (PLAINTEXT-LOGIN). Exits 0, or with "
        "--fail-on-exposure 1 when any service is flagged."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print a JSON list, one object per service.")
        parser.add_argument(
            "--only-exposed", action="store_true", help="List only services that reveal a version or plaintext login."
        )
        parser.add_argument(
            "--fail-on-exposure", action="store_true", help="Exit 1 when any service reveals a version or login."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        found = exposures()
        listed = [service for service in found if service.exposed] if options["only_exposed"] else found
        if options["json"]:
            self.stdout.write(json.dumps([service.to_dict() for service in listed], indent=2))
        else:
            self._table(listed, total=len(found))
        if options["fail_on_exposure"] and any(service.exposed for service in found):
            raise SystemExit(1)

    def _table(self, listed: list[ServiceExposure], *, total: int) -> None:
        if not listed:
            self.stdout.write("No services exposed." if total else "No services yet.")
            return
        rows = [COLUMNS, *(_row(service) for service in listed)]
        widths = [min(max(len(row[index]) for row in rows), 40) for index in range(len(COLUMNS) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
        exposed = sum(service.exposed for service in listed)
        self.stdout.write(f"\n{exposed} of {len(listed)} listed services exposed.")


def _row(service: ServiceExposure) -> tuple[str, ...]:
    software = service.software
    names = ", ".join(dict.fromkeys(item.name for item in software)) or (NOTHING if service.heard else "not heard yet")
    versions = ", ".join(item.label for item in software if item.version) or NOTHING
    flags = ["VERSION"] if service.reveals_version else []
    if service.plaintext_login:
        flags += ["PLAINTEXT-LOGIN", f"({service.plaintext_why})"]
    return (service.name, service.protocol, service.address, names, versions, " ".join(flags) or NOTHING)
