"""Redis killed and started again from its append-only file keeps every job.

Redis runs as compose.yaml runs it (``appendonly yes``, ``appendfsync everysec``). A sync job
finishes; with the coordinator stopped another is submitted; a second later (everysec's window)
Redis is SIGKILLed and started again from the same directory. Both jobs are there, the first
with every step as it ended, and the second completes once a coordinator is back, with the same
worker processes (Celery reconnects on its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from coordinator import engine
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from tests.conftest import need
from tests.services.fleet import running_fleet
from tests.services.redis import RedisServer, free_port, redis_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

JOB = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""


class AofRedis:
    """redis-server with compose.yaml's persistence, on one port and directory across restarts."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--save", "", "--appendonly", "yes", "--appendfsync",
             "everysec"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(redis.ConnectionError), redis.Redis(port=self.port) as c:
                c.ping()
                return
            assert time.monotonic() < deadline, "redis-server did not start (or load its AOF)"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def server(self) -> RedisServer:
        assert self.proc is not None
        return RedisServer(f"redis://127.0.0.1:{self.port}/0", self.port, self.proc, self.directory)


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[AofRedis]:
    binary = redis_binary()
    need(binary is not None and os.access(binary, os.X_OK), "redis-server")
    assert binary is not None
    (tmp_path / "redis").mkdir()
    found = AofRedis(binary, tmp_path / "redis")
    found.start()
    try:
        yield found
    finally:
        found.kill()


def test_redis_killed_and_restarted_from_its_aof_keeps_every_job(
    tmp_path: Path, aof_redis: AofRedis
) -> None:
    with running_fleet(tmp_path / "fleet", aof_redis.server(), ("alpha", "beta"), JOB) as fleet:
        alpha = fleet.backend("alpha")
        alpha.create_pool("tank")
        alpha.create("tank/img")
        Path(alpha.mountpoint("tank/img") or "", "f").write_bytes(os.urandom(64 * 1024))
        fleet.backend("beta").create_pool("bk")
        for host in ("alpha", "beta"):
            fleet.start_worker(host)
        fleet.start_coordinator()

        def submit() -> str:
            out = fleet.cli("sync", "img", "--config", str(fleet.config), "--json")
            assert out.returncode == 0, out.stderr
            return str(json.loads(out.stdout)["id"])

        first_id = submit()
        first = wait_job(JobStore(fleet.client()), first_id, timeout=90)
        assert first.status == engine.JOB_SUCCEEDED, f"{first.error}\n{fleet.logs()}"
        fleet.kill_coordinator()
        time.sleep(1.1)  # another snapshot name
        second_id = submit()
        time.sleep(1.5)  # appendfsync everysec: a write is on disk within a second

        aof_redis.kill()
        aof_redis.start()
        store = JobStore(fleet.client())
        again = store.load(first_id)
        assert again.status == engine.JOB_SUCCEEDED
        assert {s: (st.status, st.attempt) for s, st in again.steps.items()} == {
            s: (st.status, st.attempt) for s, st in first.steps.items()}  # fmt: skip
        assert store.load(second_id).status not in engine.JOB_TERMINAL
        assert {j.id for j in store.recent(10)} >= {first_id, second_id}

        fleet.start_coordinator()
        second = wait_job(store, second_id, timeout=120)
        assert second.status == engine.JOB_SUCCEEDED, f"{second.error}\n{fleet.logs()}"
        assert all(w.poll() is None for w in fleet.workers.values()), fleet.logs()
    snaps = [o for o in fleet.backend("beta").list("bk/img") if "@" in o.name]
    assert len(snaps) == 2, snaps
