"""Prometheus for Portwatch: `/probe`, blackbox_exporter's multi-target endpoint, and `/metrics`.

Exposes nothing itself. `modules.py` and `query_response.py` map blackbox YAML modules onto the
engine's protocols and options, `probe.py` runs one `/probe` request through the engine behind
`guard.py`'s rules, `blackbox.py` turns its `Result` into blackbox's series plus Portwatch's own,
`exposition.py` renders a (service, location)'s /metrics series from its state with the same
`blackbox.samples()` (the state writer stores them), `collector.py` writes /metrics from those renderings,
and `auth.py` and `views.py` are the thin Django layer. `protobuf.py` writes Prometheus's protobuf
exposition (tested against a real Prometheus); /metrics does not serve it yet.

Decisions:
- Nothing but collector.py and the two families it adds (maintenance.py: services in a maintenance window;
  alerting.py: channels' health and the notifier's last run) reads the database. /probe's parts (modules,
  query_response, probe, guard, blackbox) and protobuf.py are plain Python, like the engine, and are
  tested without Django.
- /probe's parts are modules of their own, so the /metrics collector joined without touching them;
  the credentials in auth.py are for both.
"""
