"""Per-service summaries: one narrow row per service with what its states add up to, kept with the states.

Exposes `refresh(service_ids)`, which `recording` calls in the transaction that saves states, and
which the migration that brought `ServiceSummary` ran once for every service.

Decisions:

1. **Why a row of its own.** The overview counts the fleet by status and sorts it by status,
   latency, certificate or last check. Computed from the states, each request grouped 11,000
   state rows, wide with their banners, capabilities and certificate JSON (40 ms at 10,000
   services), and a latency sort read every state's JSON. A narrow row per service, indexed on
   what is sorted, makes those a few ms.
2. **Never behind the states.** It is rewritten from the service's states (all its locations,
   not only those in the batch) in the same transaction as they are saved, so a reader sees both
   or neither. That costs one read and one upsert per batch of probes.
3. **Only numbers leave the JSON.** The read takes `last_phases.total` and the certificate's
   `chain_days_left` (else `days_left`) out in SQL, not the whole `details` and `tls`.
4. **Exposure flags are the states' own**, set by the state writer from each location's last measured
   probe (`ServiceState.reveals_version`, `offers_plaintext_login`): two boolean columns more in the
   same read, nothing assessed here. The migrations before them run `write()` with historical models
   that lack them, so it reads and writes them only where the model has them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.db.models import FloatField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce

from monitor.models import ServiceState, ServiceSummary
from monitor.models.history import StateFacts, summarize

FIELDS = ["status", "severity", "since", "reason", "latency", "cert_days", "last_checked_at"]
EXPOSURE_FIELDS = ["reveals_version", "plaintext_login"]  # the summary's; the states' are STATE_FLAGS
STATE_FLAGS = ["reveals_version", "offers_plaintext_login"]


def refresh(service_ids: Iterable[int] | None = None) -> int:
    """Rewrite the summaries of `service_ids` (all when None) from their states; return how many.

    A service without any state gets none.
    """
    states = ServiceState.objects.order_by()
    if service_ids is not None:
        states = states.filter(service_id__in=set(service_ids))
    return write(ServiceSummary, states)


def write(summary_model, states) -> int:
    """Upsert a `summary_model` row per service of the `states` queryset; return how many.

    Takes the models as arguments so that the migration that created the table runs it with its
    historical models.
    """
    flags, fields = (STATE_FLAGS, FIELDS + EXPOSURE_FIELDS) if _has_flags(summary_model) else ([], FIELDS)
    facts: dict[int, list[StateFacts]] = defaultdict(list)
    for service_id, *values in states.annotate(
        total=Cast(KT("last_phases__total"), FloatField()),
        days=Coalesce(Cast(KT("tls__chain_days_left"), FloatField()), Cast(KT("tls__days_left"), FloatField())),
    ).values_list("service_id", "status", "since", "last_reason", "total", "days", "last_checked_at", *flags):
        facts[service_id].append(StateFacts(*values))
    rows = []
    for service_id, found in facts.items():
        summary = summarize(found)
        rows.append(summary_model(service_id=service_id, **{field: summary[field] for field in fields}))
    summary_model.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["service"], update_fields=fields, batch_size=1000
    )
    return len(rows)


def _has_flags(summary_model) -> bool:
    """Return whether `summary_model` (maybe a migration's historical one) has the exposure flags yet."""
    return any(field.name == EXPOSURE_FIELDS[0] for field in summary_model._meta.get_fields())
