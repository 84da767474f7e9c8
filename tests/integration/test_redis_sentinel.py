"""The broker survives the loss of its Redis master: Redis Sentinel, for real, on loopback.

A master, a replica and three sentinels (tests/services/sentinel.py); every zfleet process is
given only the ``sentinel://`` URL. A sync job completes; the master is SIGKILLed; once the
sentinels have promoted the replica, a sync job submitted then completes too, with the same worker
and coordinator processes (Celery's sentinel transport and redis-py's Sentinel client find the new
master by themselves), and the replica on beta has the new snapshot.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from coordinator import engine
from coordinator.engine import Job
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from tests.services.fleet import Fleet, running_fleet
from tests.services.sentinel import SentinelSet, sentinel_set  # noqa: F401  (fixture)
from workers.zfs.base import ObjType

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]  # ~30 s idle

JOB = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""


def sync(fleet: Fleet, timeout: float = 120) -> Job:
    out = fleet.cli("sync", "img", "--config", str(fleet.config), "--json", timeout=90)
    assert out.returncode == 0, out.stderr
    job = wait_job(JobStore(fleet.client()), json.loads(out.stdout)["id"], timeout=timeout)
    assert job.status == engine.JOB_SUCCEEDED, f"{job.error}: {engine.counts(job)}\n{fleet.logs()}"
    return job


def snapshots(fleet: Fleet, host: str, dataset: str) -> set[int]:
    return {o.guid for o in fleet.backend(host).list(dataset) if o.type is ObjType.SNAPSHOT}


def test_a_job_submitted_after_the_master_died_completes(
    tmp_path: Path, sentinel_set: SentinelSet  # noqa: F811
) -> None:
    with running_fleet(tmp_path, sentinel_set.server(), ("alpha", "beta"), JOB) as fleet:
        alpha = fleet.backend("alpha")
        alpha.create_pool("tank")
        alpha.create("tank/img")
        data = Path(alpha.mountpoint("tank/img") or "")
        (data / "one").write_bytes(os.urandom(64 * 1024))
        fleet.backend("beta").create_pool("bk")
        for host in ("alpha", "beta"):
            fleet.start_worker(host)
        fleet.start_coordinator()
        sync(fleet)
        assert sentinel_set.master_address() == ("127.0.0.1", sentinel_set.master_port)

        sentinel_set.kill_master()
        started = time.monotonic()
        sentinel_set.wait_promoted()
        promoted_after = time.monotonic() - started
        (data / "two").write_bytes(os.urandom(64 * 1024))
        time.sleep(1.1)  # a new snapshot name (one-second resolution)
        sync(fleet)
        # the same processes carried on: none of them exited across the failover
        assert fleet.coordinator is not None and fleet.coordinator.poll() is None, fleet.logs()
        assert all(w.poll() is None for w in fleet.workers.values()), fleet.logs()
        assert snapshots(fleet, "alpha", "tank/img") == snapshots(fleet, "beta", "bk/img")
        assert len(snapshots(fleet, "beta", "bk/img")) == 2
        print(f"sentinels promoted the replica {promoted_after:.1f} s after the master died")
