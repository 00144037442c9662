"""/metrics' `portwatch_maintenance` family: 1 for each (service, location) a maintenance window holds now.

Exposes `NAME`, `HELP` and `family(now) -> str` (HELP, TYPE and the samples), which the collector writes after
the per-service histogram. Alert rules can then skip what is expected to be down:
`probe_success == 0 unless on(service, location) portwatch_maintenance`.

Decisions:
- The labels are those of every per-service family (service, protocol, host, port, location, instance, as
  collector.py writes them), for each pair a scrape writes: the service's locations, and those it still has
  a state at. `and`/`unless` then match without `on()`.
- Only services in maintenance are written, and only they are read beyond `in_maintenance()`: a few rows,
  not the fleet. The family is written with its HELP and TYPE even when empty, so it is always declared.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from monitor.alerting.maintenance import in_maintenance
from monitor.metrics.exposition import escape, escape_help
from monitor.models import Service, ServiceState
from monitor.models.service import DEFAULT_LOCATION
from monitor.probes import standard_port

NAME = "portwatch_maintenance"
HELP = "1 while a maintenance window holds the service's new alerts; absent otherwise"


def family(now: dt.datetime) -> str:
    """Return the family's text: HELP, TYPE, then a sample for each pair of each service in maintenance now."""
    lines = [f"# HELP {NAME} {escape_help(HELP)}\n# TYPE {NAME} gauge\n"]
    held = in_maintenance(now)
    if not held:
        return lines[0]
    located: dict[int, set[str]] = defaultdict(set)
    for service_id, location in ServiceState.objects.filter(service_id__in=held).values_list("service_id", "location"):
        located[service_id].add(location)
    services = Service.objects.filter(pk__in=held).values_list(
        "pk", "name", "protocol", "host", "port", "tls_mode", "locations"
    )
    for service_id, name, protocol, host, port, tls_mode, locations in services:
        port = port or standard_port(protocol, tls_mode) or 0
        instance = escape(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        labels = f'service="{escape(name)}",protocol="{protocol}",host="{escape(host)}",port="{port}"'
        configured = [location for location in locations.split(",") if location] or [DEFAULT_LOCATION]
        for location in sorted({*configured, *located[service_id]}):
            lines.append(f'{NAME}{{{labels},location="{escape(location)}",instance="{instance}"}} 1\n')
    return "".join(lines)
