"""Prometheus's protobuf exposition (`io.prometheus.client.MetricFamily`, length-delimited), written by hand.

Exposes `family(name, help, kind, metrics) -> bytes`, one delimited MetricFamily of metrics made by
`gauge()`, `counter()` or `histogram()` from `labels()`, and `CONTENT_TYPE`. Plain Python: no Django, no
protobuf library (the messages are few and fixed: a schema compiler would be the larger part).

Why: the text format repeats a series' labels on every line, so a classic histogram's 14 lines per
(service, phase) are most of /metrics at 10,000 services (docs/performance.md); a protobuf Histogram
carries its labels once. Prometheus asks for this format when its `scrape_protocols` list it
(2.49 and later) or native histograms are on (2.40 to 2.48).

Decisions:
- Only what /metrics writes: gauges, counters and classic histograms; no timestamps, exemplars or
  native buckets. A histogram's +Inf bucket is implicit (its count), as Go's client writes it.
- Each message is built inside out as bytes, so a caller may keep a metric's bytes (labels included)
  and join many of them into a family without encoding them again.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
KINDS = {"counter": 0, "gauge": 1, "summary": 2, "untyped": 3, "histogram": 4}  # MetricType

_VARINT, _FIXED64, _BYTES = 0, 1, 2  # wire types
_DOUBLE = struct.Struct("<d")


def varint(value: int) -> bytes:
    """Return `value` (>= 0) as a protobuf varint: seven bits a byte, low bits first."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def _bytes(number: int, data: bytes) -> bytes:
    return _key(number, _BYTES) + varint(len(data)) + data


def _double(number: int, value: float) -> bytes:
    return _key(number, _FIXED64) + _DOUBLE.pack(value)


def _uint(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + varint(value)


def labels(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Return a metric's labels (Metric.label, repeated LabelPair{name, value}), in the order given."""
    return b"".join(_bytes(1, _bytes(1, name.encode()) + _bytes(2, value.encode())) for name, value in pairs)


def gauge(label_bytes: bytes, value: float) -> bytes:
    """Return one gauge sample as a MetricFamily.metric entry (Metric{label, gauge{value}})."""
    return _bytes(4, label_bytes + _bytes(2, _double(1, value)))


def counter(label_bytes: bytes, value: float) -> bytes:
    """Return one counter sample as a MetricFamily.metric entry (Metric{label, counter{value}})."""
    return _bytes(4, label_bytes + _bytes(3, _double(1, value)))


def histogram(
    label_bytes: bytes, bounds: Sequence[float], cumulative: Sequence[int], count: int, total: float
) -> bytes:
    """Return one classic histogram as a MetricFamily.metric entry: a bucket per finite bound, +Inf implied."""
    buckets = b"".join(
        _bytes(3, _uint(1, int(n)) + _double(2, bound)) for bound, n in zip(bounds, cumulative, strict=True)
    )
    return _bytes(4, label_bytes + _bytes(7, _uint(1, int(count)) + _double(2, float(total)) + buckets))


def family(name: str, documentation: str, kind: str, metrics: Iterable[bytes]) -> bytes:
    """Return a length-delimited MetricFamily{name, help, type, metric...} of `metrics` (gauge(), counter(), ...)."""
    body = _bytes(1, name.encode()) + _bytes(2, documentation.encode()) + _uint(3, KINDS[kind]) + b"".join(metrics)
    return varint(len(body)) + body
