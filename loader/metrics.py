"""Prometheus metrics of the receiver, correct under gunicorn with several worker processes.

Counters and the latency histogram live in prometheus_client's multiprocess mode when
`PROMETHEUS_MULTIPROC_DIR` is set (`serve` sets it to a fresh folder before the workers start):
each worker writes its own values to memory-mapped files there and `/metrics`, answered by any
worker, adds them up. Values that describe the machine rather than the requests (the spool
backlog, whether it is writable, unsigned mode) are read when scraped.

Import this module only after the environment is set: prometheus_client picks its storage when
the metrics are created.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from .spool import backlog, is_writable

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_registry = None if MULTIPROCESS else CollectorRegistry()

ACCEPTED = Counter(
    "flagsmith_webhook_accepted",
    "Identity webhooks verified and stored durably (answered 202).",
    registry=_registry,
)
QUARANTINED = Counter(
    "flagsmith_webhook_quarantined",
    "Authentic deliveries stored in quarantine (answered 202), by reason.",
    ["reason"],
    registry=_registry,
)
REFUSED = Counter(
    "flagsmith_webhook_refused",
    "Deliveries refused and not stored, by reason (forged or unsigned ones among them).",
    ["reason"],
    registry=_registry,
)
STORE_FAILURES = Counter(
    "flagsmith_webhook_store_failures",
    "Authentic deliveries that could not be made durable (answered 503; Flagsmith retries).",
    registry=_registry,
)
CONNECTIONS_CLOSED = Counter(
    "flagsmith_receiver_connections_closed",
    "Connections the receiver closed without an answer, by reason: header_timeout (headers not"
    " complete in time), body_timeout (body slower than the minimum rate), shed (a waiting"
    " connection closed to make room for a new one). Idle keep-alive timeouts are not counted.",
    ["reason"],
    registry=_registry,
)
LATENCY = Histogram(
    "flagsmith_webhook_request_seconds",
    "Time from the request reaching the app to its answer, for webhook posts.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
    registry=_registry,
)


class _StateCollector:
    """Read at scrape time: spool backlog and health, and whether signatures are checked."""

    def __init__(self, spool_dir: Path, unsigned: bool) -> None:
        self.spool_dir = spool_dir
        self.unsigned = unsigned

    def collect(self):
        segments = GaugeMetricFamily(
            "flagsmith_spool_backlog_segments",
            "Spool segments waiting for the loader, by state (open, ready, claimed).",
            labels=["state"],
        )
        size = GaugeMetricFamily(
            "flagsmith_spool_backlog_bytes",
            "Bytes of spool segments waiting for the loader, by state (an open segment counts"
            " the zero-filled space it has reserved, up to 1 MB more than its records).",
            labels=["state"],
        )
        waiting = backlog(self.spool_dir)
        for state in ("open", "ready", "claimed"):
            segments.add_metric([state], waiting[f"{state}_segments"])
            size.add_metric([state], waiting[f"{state}_bytes"])
        yield segments
        yield size
        yield GaugeMetricFamily(
            "flagsmith_spool_writable",
            "1 while a file can be created and flushed in the spool (what /readyz checks).",
            value=1 if is_writable(self.spool_dir) else 0,
        )
        yield GaugeMetricFamily(
            "flagsmith_receiver_unsigned_mode",
            "1 when the receiver runs with --allow-unsigned: deliveries are NOT verified.",
            value=1 if self.unsigned else 0,
        )


def render(spool_dir: Path, unsigned: bool) -> tuple[bytes, str]:
    """The exposition text for /metrics and its content type."""
    registry = CollectorRegistry()
    if MULTIPROCESS:
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (
            ACCEPTED,
            QUARANTINED,
            REFUSED,
            STORE_FAILURES,
            CONNECTIONS_CLOSED,
            LATENCY,
        ):
            registry.register(collector)
    registry.register(_StateCollector(spool_dir, unsigned))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """gunicorn child_exit hook: let the dead worker's live gauges go (counters are kept)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(pid)
