"""A real Prometheus (Debian's) scrapes `zfleet metrics` and holds the series an operator needs.

Redis holds what a coordinator and its workers would have written: two finished jobs (one with a
transfer that moved bytes, one whose transfer failed on a diverged target), the inventories of a
source host and of two targets (one up to date, one a snapshot behind), and one live worker's
heartbeat. `zfleet metrics` runs as a real process; Prometheus scrapes it every second; the test
asks Prometheus's HTTP API, as a dashboard or an alert rule would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus import keys
from coordinator.engine import JOB_FAILED, JOB_SUCCEEDED, SUCCEEDED, Job, Step
from coordinator.jobstore import JobStore
from protocol.zfs import InventoryReport
from tests.conftest import need_binary
from tests.services.process import stop_process
from tests.services.redis import RedisServer, free_port, redis_server  # noqa: F401  (fixture)
from tests.unit.dagfakes import args_of
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

pytestmark = pytest.mark.integration

FLEET = """
[hosts.alpha]
backend = "sim"
sim_root = "{root}/alpha"
[hosts.beta]
backend = "sim"
sim_root = "{root}/beta"
[hosts.gamma]
backend = "sim"
sim_root = "{root}/gamma"
[jobs.images]
source = "alpha:tank/img"
targets = ["beta:bk/img", "gamma:bk/img"]
"""


XFER = args_of("transfer")


def transfer(step_id: str, status: str, *, moved: int = 0, error: str | None = None) -> Step:
    return Step(id=step_id, kind="transfer", host="alpha", args=XFER, status=status, attempt=1,
                started_at=1000.0, finished_at=1004.0, error_type=error,
                error=f"{error}: target changed" if error else None,
                result={"bytes": moved, "wire_bytes": moved // 2} if moved else {})  # fmt: skip


def populate(server: RedisServer, root: Path) -> dict[str, int]:
    """Two jobs, three hosts' inventories (gamma a snapshot behind), alpha's worker alive."""
    store = JobStore(server.client())
    ok = Job(id="20261128T080000-aaaaaa", name="images", status=JOB_SUCCEEDED, created=1.0,
             steps={"xfer0000": transfer("xfer0000", SUCCEEDED, moved=3_000_000)})  # fmt: skip
    bad = Job(id="20261128T090000-bbbbbb", name="images", status=JOB_FAILED, created=2.0,
              steps={"xfer0000": transfer("xfer0000", "failed", error="DestinationModified")})
    store.create(ok)
    store.save(ok)
    store.create(bad)
    store.save(bad)
    alpha, beta, gamma = (SimBackend(root / h) for h in ("alpha", "beta", "gamma"))
    alpha.create_pool("tank")
    alpha.create("tank/img")
    alpha.snapshot(["tank/img@s1"])
    time.sleep(1.1)  # creation times have one-second resolution: make s2 measurably newer
    alpha.snapshot(["tank/img@s2"])
    for target, upto in ((beta, "s2"), (gamma, "s1")):
        target.create_pool("bk")
        _receive(alpha, target, "tank/img@s1", None)
        if upto == "s2":
            _receive(alpha, target, "tank/img@s2", "tank/img@s1")
    for host, backend in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        objects = tuple(backend.list())
        store.put_inventory(InventoryReport(host=host, taken_at=time.time(), objects=objects))
    server.client().hset(keys.worker("alpha"), mapping={"instance": "test", "started": "1"})
    snaps = {o.short: o.creation for o in alpha.list("tank/img") if "@" in o.name}
    return snaps


def _receive(src: SimBackend, dst: SimBackend, snap: str, base: str | None) -> None:
    stream = src.send(SendSpec(snapshot=snap, from_snap=base))
    sink = dst.receive(ReceiveSpec(target="bk/img"))
    while chunk := stream.read(1 << 16):
        sink.write(chunk)
    stream.close()
    sink.finish()


@pytest.fixture
def metrics_endpoint(redis_server: RedisServer, tmp_path: Path) -> Iterator[int]:  # noqa: F811
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(root=tmp_path))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLEET_")}
    env |= {"ZFLEET_REDIS_URL": redis_server.url, "ZFLEET_LOG_FORMAT": "json"}
    zfleet = str(Path(sys.executable).parent / "zfleet")
    proc = subprocess.Popen([zfleet, "metrics", "--port", str(port), "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        yield port
    finally:
        stop_process(proc, 10)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.fixture
def prometheus(metrics_endpoint: int, tmp_path: Path) -> Iterator[str]:
    binary = need_binary("prometheus")
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "zfleet",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_endpoint}"]}]}],
    }))  # fmt: skip
    proc = subprocess.Popen(
        [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, 15)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_for(base: str, promql: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = query(base, promql)
        except OSError:
            found = []  # Prometheus still starting
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def value(series: list[dict[str, Any]], **labels: str) -> float:
    for s in series:
        if all(s["metric"].get(k) == v for k, v in labels.items()):
            return float(s["value"][1])
    raise AssertionError(f"no series with {labels} in {[s['metric'] for s in series]}")


def test_prometheus_scrapes_jobs_transfers_errors_and_lag(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
    prometheus: str,
) -> None:
    snaps = populate(redis_server, tmp_path)
    up = wait_for(prometheus, 'up{job="zfleet"} == 1')
    assert up, "Prometheus never scraped the zfleet endpoint successfully"
    jobs = wait_for(prometheus, "zfleet_jobs")
    assert value(jobs, status="succeeded") == 1
    assert value(jobs, status="failed") == 1
    errors = wait_for(prometheus, "zfleet_step_errors")
    assert value(errors, kind="transfer", error_type="DestinationModified") == 1
    moved = wait_for(prometheus, "zfleet_transfer_bytes")
    assert value(moved, job_id="20261128T080000-aaaaaa", step="xfer0000") == 3_000_000
    rate = wait_for(prometheus, "zfleet_transfer_throughput_bytes_per_second")
    assert value(rate, job_id="20261128T080000-aaaaaa") == pytest.approx(3_000_000 / 4)
    behind = wait_for(prometheus, "zfleet_replication_snapshots_behind")
    assert value(behind, target="beta:bk/img") == 0
    assert value(behind, target="gamma:bk/img") == 1
    lag = wait_for(prometheus, "zfleet_replication_lag_seconds")
    assert value(lag, target="beta:bk/img") == 0
    assert value(lag, target="gamma:bk/img") == snaps["s2"] - snaps["s1"] > 0
    workers = wait_for(prometheus, "zfleet_worker_up")
    assert value(workers, host="alpha") == 1
    assert value(workers, host="gamma") == 0
