"""A worker's metrics endpoint reports what its pushes moved, how fast, and what failed."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from workers import metrics
from workers.dataplane.targets import Outcome, TargetReport, TransferReport


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_push_is_counted_per_target() -> None:
    before_ok = sample("zfleet_worker_transfers_total", outcome="ok")
    before_bytes = sample("zfleet_worker_transfer_stream_bytes_total", target="beta:bk/a")
    before_err = sample("zfleet_worker_errors_total", type="DestinationModified")
    report = TransferReport(
        snapshot="tank/a@s2",
        targets=(
            TargetReport("beta:bk/a", Outcome.OK, wire_bytes=400, stream_bytes=1000),
            TargetReport("gamma:bk/a", Outcome.FAILED, error="modified",
                         error_type="DestinationModified"),
        ),
        elapsed=2.0,
    )  # fmt: skip
    metrics.observe_transfer(report)
    assert sample("zfleet_worker_transfers_total", outcome="ok") == before_ok + 1
    assert sample("zfleet_worker_transfer_stream_bytes_total", target="beta:bk/a") == (
        before_bytes + 1000
    )
    assert sample("zfleet_worker_last_transfer_throughput_bytes_per_second",
                  target="beta:bk/a") == 500  # fmt: skip
    assert sample("zfleet_worker_errors_total", type="DestinationModified") == before_err + 1


def test_the_endpoint_serves_steps_and_errors() -> None:
    metrics.observe_step("prune", "failed", KeyError("x"))
    server, port = metrics.serve("alpha", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for fam in text_string_to_metric_families(text) for s in fam.samples}  # fmt: skip
    assert found[("zfleet_worker_info", (("host", "alpha"),))] == 1
    assert found[("zfleet_worker_steps_total", (("kind", "prune"), ("state", "failed")))] >= 1
    assert found[("zfleet_worker_errors_total", (("type", "KeyError"),))] >= 1
