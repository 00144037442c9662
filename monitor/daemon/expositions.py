"""Each state's /metrics series, rendered and stored in the transaction that writes the state.

Exposes `write(states, services, tls_modes=, banners=)`, which `recording` calls with the states it saved,
each one's service's (protocol, host) and TLS mode, and the banners its batch heard; and `pair_state(state,
banner)`, the plain values a `ServiceState` is rendered from.

Decisions:
1. **Why stored.** A scrape of 10,000 services rendered ~1.3 million samples from the states in 5.8 s;
   rendered here, a pair costs ~0.1 ms more per probe recorded and a scrape only joins texts (see
   `monitor.metrics.collector`).
2. **Never behind the state.** Written in the state's transaction, with the key of what it was rendered
   with; a scrape renders live any pair whose key is not the one it expects, so a text is never used
   for something it was not rendered for.
3. **One upsert per batch**, into a table of its own: the state row is read by every page, the text is
   2 to 25 KB.
4. **Exposure evidence.** The version-exposure series need the service's TLS mode and the banner of the
   result the state's last measured probe stored; `recording` passes those it has (the batch's own
   results), and what a caller does not pass is read here, one query each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.conf import settings

from monitor.metrics import exposition
from monitor.models import ServiceState, StateExposition


def pair_state(state: ServiceState, banner: str = "") -> exposition.PairState:
    return exposition.PairState(
        status=state.status,
        failure=state.last_failure,
        checked_at=state.last_checked_at,
        address=state.last_address,
        incident_open=state.open_incident_id is not None,
        successes=state.consecutive_successes,
        last_status=state.last_status,
        last_phases=state.last_phases or {},
        tls=state.tls,
        details=state.details or {},
        counters=state.counters or {},
        banner=banner,
    )


def write(
    states: Iterable[ServiceState],
    services: Mapping[int, tuple[str, str]],
    model: type = StateExposition,
    *,
    tls_modes: Mapping[int, str] | None = None,
    banners: Mapping[int, str] | None = None,
) -> int:
    """Upsert the rendered series of `states`; `services` maps each one's service id to (protocol, host).

    `tls_modes` maps service ids to their TLS mode, `banners` state ids to the banner of the result their
    last measured probe stored; what is missing is read. Takes the model as an argument so that the
    migration that created the table runs it with its historical models.
    """
    phases = tuple(settings.PORTWATCH_METRICS_HISTOGRAM_PHASES)
    states = list(states)
    tls_modes = _tls_modes(states, tls_modes or {}, model)
    banners = _banners(states, banners or {}, model)
    rows = []
    for state in states:
        protocol, host = services[state.service_id]
        tls_mode = tls_modes.get(state.service_id, "none")
        text = exposition.render(protocol, host, phases, pair_state(state, banners.get(state.pk, "")), tls_mode)
        key = exposition.key(protocol, host, phases, tls_mode)
        rows.append(model(state_id=state.pk, key=key, text=text.encode()))
    model.objects.bulk_create(rows, update_conflicts=True, unique_fields=["state"], update_fields=["key", "text"])
    return len(rows)


def _tls_modes(states: list[ServiceState], given: Mapping[int, str], model: type) -> Mapping[int, str]:
    """Return {service id: TLS mode} of the states' services: `given`, and the rest read."""
    missing = {state.service_id for state in states} - given.keys()
    if not missing:
        return given
    services = model._meta.apps.get_model("monitor", "Service").objects.filter(id__in=missing)
    return {**given, **dict(services.values_list("id", "tls_mode"))}


def _banners(states: list[ServiceState], given: Mapping[int, str], model: type) -> Mapping[int, str]:
    """Return {state id: banner of the result its last measured probe stored}: `given`, and the rest read.

    A state paused or never measured needs none: its series say nothing of what was heard. The result is
    found by its start, as `exposure_report.heard_banner()` finds it: the last result may be a missed slot.
    """
    missing = [
        state
        for state in states
        if state.pk not in given and state.last_checked_at is not None and state.status != "paused"
    ]
    if not missing:
        return given
    results = model._meta.apps.get_model("monitor", "ProbeResult").objects.filter(
        service_id__in={state.service_id for state in missing},
        started_at__in={state.last_checked_at for state in missing},
    )
    heard = {}
    for service_id, location, started_at, banner in results.values_list(
        "service_id", "location", "started_at", "banner"
    ):
        heard.setdefault((service_id, location, started_at), banner)
    found = {state.pk: heard.get((state.service_id, state.location, state.last_checked_at), "") for state in missing}
    return {**given, **found}
