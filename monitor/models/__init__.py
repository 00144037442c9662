"""Portwatch's models: services, their schedule, and what probing them produced."""

from monitor.models.alerting import (
    Alert,
    CertificateWarning,
    Channel,
    DeliveryAttempt,
    MaintenanceWindow,
    Notification,
    Problem,
)
from monitor.models.history import (
    DailyRollup,
    HourlyRollup,
    Incident,
    ProbeResult,
    ServiceState,
    ServiceSummary,
    StateExposition,
    StatusChange,
    UptimeSnapshot,
)
from monitor.models.schedule import Schedule, Watermark, WorkerHeartbeat
from monitor.models.service import (
    DEFAULT_LOCATION,
    HostField,
    LocationsField,
    Service,
    TagsField,
)  # fields: migrations name them here

__all__ = [
    "DEFAULT_LOCATION",
    "Alert",
    "CertificateWarning",
    "Channel",
    "DailyRollup",
    "DeliveryAttempt",
    "HostField",
    "HourlyRollup",
    "Incident",
    "LocationsField",
    "MaintenanceWindow",
    "Notification",
    "ProbeResult",
    "Problem",
    "Schedule",
    "Service",
    "ServiceState",
    "ServiceSummary",
    "StateExposition",
    "StatusChange",
    "TagsField",
    "UptimeSnapshot",
    "Watermark",
    "WorkerHeartbeat",
]
