"""Redis restarts while a step runs: the worker survives, the step's outcome arrives, the next
step runs. A real `zfleet worker` and coordinator, a real redis-server persisted as deployed
(append-only file) that is SIGKILLed and started again on the same data.

Celery 5.7 alone dies here (app/celeryloop.py says why); `zfleet worker` starts it again and
the step's report waits for Redis (workers/tasks.py ``_patiently``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator import engine
from coordinator.engine import Job, StepPlan, add_steps
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from protocol.steps import HookArgs, SnapshotArgs
from tests.conftest import need
from tests.services.fleet import Fleet, running_fleet
from tests.services.redis import PersistentRedis, persistent_redis, redis_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def server() -> Iterator[PersistentRedis]:
    binary = redis_binary()
    need(binary is not None, "redis-server")
    assert binary is not None
    with persistent_redis(binary) as s:
        yield s


@pytest.fixture
def fleet(tmp_path: Path, server: PersistentRedis) -> Iterator[Fleet]:
    with running_fleet(tmp_path, server, ("alpha",), "") as f:
        f.backend("alpha").create_pool("tank")
        f.start_worker("alpha")
        f.start_coordinator()
        yield f


def one_step(store: JobStore, job_id: str, plan: StepPlan) -> Job:
    job = Job(id=job_id, name="adhoc-test", kind="sync", created=time.time())
    add_steps(job, [plan])
    store.create(job)
    return job


def test_a_redis_restart_mid_step_loses_neither_the_worker_nor_the_step(
    fleet: Fleet, server: PersistentRedis
) -> None:
    store = JobStore(fleet.client())
    job = one_step(store, "slow-hook", StepPlan(id="hook", host="alpha",
                                                args=HookArgs(argv=("sleep", "3"))))  # fmt: skip
    deadline = time.monotonic() + 30
    while store.load(job.id).steps["hook"].status != engine.RUNNING:
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.05)
    server.kill()
    time.sleep(0.5)
    server.start()

    done = wait_job(JobStore(fleet.client()), job.id, timeout=90)
    assert done.status == engine.JOB_SUCCEEDED, f"{done.error}\n{fleet.logs()}"
    assert fleet.workers["alpha"].poll() is None, fleet.logs()  # the same process, still up
    # and it takes new work
    snap = StepPlan(id="snap", host="alpha", args=SnapshotArgs(names=("tank@after",)))
    nxt = one_step(store, "after-restart", snap)
    assert wait_job(store, nxt.id, timeout=60).status == engine.JOB_SUCCEEDED, fleet.logs()
    assert fleet.backend("alpha").exists("tank@after")
