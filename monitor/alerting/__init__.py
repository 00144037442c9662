"""Alerting: who is told about a recorded change, and how; `channels/` holds one transport module per kind."""
