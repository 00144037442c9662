"""Prometheus for Portwatch: `/probe`, blackbox_exporter's multi-target endpoint, and `/metrics`.

Exposes nothing itself. `modules.py` and `query_response.py` map blackbox YAML modules onto the
engine's protocols and options, `probe.py` runs one `/probe` request through the engine behind
`guard.py`'s rules, `blackbox.py` turns its `Result` into blackbox's series plus Portwatch's own,
`collector.py` writes /metrics from the stored states with the same `blackbox.samples()`, and `auth.py`
and `views.py` are the thin Django layer.

Decisions:
- Everything but auth.py, views.py and collector.py (which reads the database) is plain Python, like the
  engine, and is tested without Django.
- /probe's parts are modules of their own, so the /metrics collector joined without touching them;
  the credentials in auth.py are for both.
"""
