"""Each state's /metrics series, rendered and stored in the transaction that writes the state.

Exposes `write(states, services)`, which `recording` calls with the states it saved and each one's
service's (protocol, host), and `pair_state(state)`, the plain values a `ServiceState` is rendered from.

Decisions:
1. **Why stored.** A scrape of 10,000 services rendered ~1.3 million samples from the states in 5.8 s;
   rendered here, a pair costs ~0.1 ms more per probe recorded and a scrape only joins texts (see
   `monitor.metrics.collector`).
2. **Never behind the state.** Written in the state's transaction, with the key of what it was rendered
   with; a scrape renders live any pair whose key is not the one it expects, so a text is never used
   for something it was not rendered for.
3. **One upsert per batch**, into a table of its own: the state row is read by every page, the text is
   2 to 25 KB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.conf import settings

from monitor.metrics import exposition
from monitor.models import ServiceState, StateExposition


def pair_state(state: ServiceState) -> exposition.PairState:
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
    )


def write(
    states: Iterable[ServiceState], services: Mapping[int, tuple[str, str]], model: type = StateExposition
) -> int:
    """Upsert the rendered series of `states`; `services` maps each one's service id to (protocol, host).

    Takes the model as an argument so that the migration that created the table runs it with its
    historical model.
    """
    phases = tuple(settings.PORTWATCH_METRICS_HISTOGRAM_PHASES)
    rows = []
    for state in states:
        protocol, host = services[state.service_id]
        text = exposition.render(protocol, host, phases, pair_state(state)).encode()
        rows.append(model(state_id=state.pk, key=exposition.key(protocol, host, phases), text=text))
    model.objects.bulk_create(rows, update_conflicts=True, unique_fields=["state"], update_fields=["key", "text"])
    return len(rows)
