"""`manage.py locations`: each location with its services, live workers and missed slots; unserved ones stand out."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from monitor.daemon import workers


class Command(BaseCommand):
    help = (
        "List the locations services are probed from, with their live workers, probes in flight and slots "
        "missed in the last hour. A location with services and no live worker is UNSERVED: its slots are "
        "recorded as missed. Exits 1 when any location is unserved."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        reports = workers.locations_report()
        if not reports:
            self.stdout.write("No services and no workers yet.")
            return
        columns = ("location", "state", "services", "workers", "in flight", "missed 1h", "last heartbeat")
        self.stdout.write("{:<20} {:<9} {:>8} {:>7} {:>9} {:>9}  {}".format(*columns))
        unserved = []
        for report in reports:
            state = "served" if report.served else ("UNSERVED" if report.services else "idle")
            if state == "UNSERVED":
                unserved.append(report.location)
            seen = f"{report.last_seen:%Y-%m-%d %H:%M:%S} UTC" if report.last_seen else "never"
            self.stdout.write(
                f"{report.location:<20} {state:<9} {report.services:>8} {report.workers:>7} "
                f"{report.in_flight:>9} {report.missed_last_hour:>9}  {seen}"
            )
        if unserved:
            names = ", ".join(unserved)
            self.stderr.write(
                f"No worker serves {names}: start one with `celery -A monitor.celery worker -Q probe.<location>` "
                "(or PORTWATCH_LOCATION=<location>)."
            )
            raise SystemExit(1)
