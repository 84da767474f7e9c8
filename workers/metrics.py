"""A worker's own Prometheus metrics: what this host's process moved and how it fared.

The fleet-wide view (jobs, lag) comes from ``zfleet metrics`` reading Redis; this module counts
what only the worker process sees as it happens, between the coarse step results: every transfer's
bytes per target, its duration and throughput, outcomes, and errors by class. Call
:func:`observe_transfer` with a data-plane ``TransferReport``, :func:`observe_step` when a step
ends, and :func:`serve` once at start (``metrics_port`` setting; 0 turns it off). The metrics live
in their own registry, so tests and several in-process workers do not collide with the default.
"""

from __future__ import annotations

from typing import Final
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from workers.dataplane.targets import Outcome, TransferReport

log = structlog.get_logger(__name__)

REGISTRY: Final = CollectorRegistry()
# Transfers range from a few KiB (an empty incremental) to hours of terabytes.
_SECONDS_BUCKETS: Final = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

INFO: Final = Gauge("zfleet_worker_info", "This worker's host (value 1).", ["host"],
                    registry=REGISTRY)  # fmt: skip
STREAM_BYTES: Final = Counter(
    "zfleet_worker_transfer_stream_bytes", "Send-stream bytes delivered, by target.",
    ["target"], registry=REGISTRY,
)  # fmt: skip
WIRE_BYTES: Final = Counter(
    "zfleet_worker_transfer_wire_bytes", "Framed, compressed bytes written, by target.",
    ["target"], registry=REGISTRY,
)  # fmt: skip
TRANSFERS: Final = Counter(
    "zfleet_worker_transfers", "Transfer targets by outcome (ok, failed, cancelled).",
    ["outcome"], registry=REGISTRY,
)  # fmt: skip
RESUMED: Final = Counter("zfleet_worker_transfers_resumed",
                         "Targets that resumed from a receive_resume_token.",
                         registry=REGISTRY)  # fmt: skip
SECONDS: Final = Histogram("zfleet_worker_transfer_seconds", "Wall time of a push.",
                           buckets=_SECONDS_BUCKETS, registry=REGISTRY)  # fmt: skip
THROUGHPUT: Final = Gauge(
    "zfleet_worker_last_transfer_throughput_bytes_per_second",
    "Stream bytes per second of the latest push to each target.", ["target"], registry=REGISTRY,
)  # fmt: skip
STEPS: Final = Counter("zfleet_worker_steps", "Steps this worker ran, by kind and final state.",
                       ["kind", "state"], registry=REGISTRY)  # fmt: skip
ERRORS: Final = Counter("zfleet_worker_errors", "Errors by class (protocol.errors names).",
                        ["type"], registry=REGISTRY)  # fmt: skip


def observe_transfer(report: TransferReport) -> None:
    """Count one push: bytes, outcome and throughput per target, its duration, its errors."""
    SECONDS.observe(report.elapsed)
    for t in report.targets:
        STREAM_BYTES.labels(t.target).inc(t.stream_bytes)
        WIRE_BYTES.labels(t.target).inc(t.wire_bytes)
        TRANSFERS.labels(t.outcome.value).inc()
        if t.resumed:
            RESUMED.inc()
        if t.outcome is Outcome.OK and report.elapsed > 0:
            THROUGHPUT.labels(t.target).set(t.stream_bytes / report.elapsed)
        if t.error_type:
            ERRORS.labels(t.error_type).inc()


def observe_step(kind: str, state: str, error: BaseException | None = None) -> None:
    """Count a finished step (``succeeded``, ``failed``, ``retrying``...) and its error class."""
    STEPS.labels(kind, state).inc()
    if error is not None:
        ERRORS.labels(type(error).__name__).inc()


def serve(host: str, port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, int]:
    """Serve this worker's metrics on ``addr:port`` (0 picks one); returns server and port."""
    INFO.labels(host).set(1)
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    bound = int(server.server_address[1])
    log.info("metrics.serving", host=host, addr=addr, port=bound)
    return server, bound
