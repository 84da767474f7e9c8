"""The job engine on a real redis-server: DAG progress, retries, restarts, lease, locks, cancel.

The worker here is scripted (it answers submitted steps by publishing StepEvents the way
workers/tasks.py does), because the unit under test is the coordinator; the whole fleet with
real worker processes is tests/integration/test_fleet_sync.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bus import keys
from bus.events import EventConsumer, publish
from coordinator import engine
from coordinator.engine import Job, RetryPolicy, add_steps
from coordinator.jobstore import JobStore
from coordinator.lease import LeaderLease
from coordinator.runner import Coordinator
from protocol.errors import LeaseLost
from protocol.messages import StepCall, StepEvent, StepState
from protocol.steps import args_from_bytes
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.unit.dagfakes import plan_step

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=3, backoff_base=0.05, backoff_max=0.2)


class ScriptedWorker:
    """Collects submitted calls; the test decides how each attempt ends."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.client = client
        self.calls: list[StepCall] = []

    def submit(self, host: str, call: StepCall) -> None:
        assert host == call.host
        self.calls.append(call)

    def answer(self, call: StepCall, state: StepState, **kw: object) -> None:
        publish(self.client, StepEvent(job_id=call.job_id, step_id=call.step_id,
                                       attempt=call.attempt, host=call.host, state=state,
                                       **kw))  # type: ignore[arg-type]  # fmt: skip

    def pending(self, answered: set[tuple[str, str, int]]) -> list[StepCall]:
        return [c for c in self.calls if (c.job_id, c.step_id, c.attempt) not in answered]


def pending_events(client: redis.Redis[bytes]) -> int:
    """Entries read by some coordinator and not yet acknowledged."""
    reply = client.execute_command("XPENDING", keys.EVENTS, keys.EVENTS_GROUP)
    return int(reply["pending"] if isinstance(reply, dict) else reply[0])


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis[bytes]]:  # noqa: F811
    c = redis_server.client()
    yield c
    c.close()


def chain_job(job_id: str = "J1", writes: tuple[str, ...] = ()) -> Job:
    job = Job(id=job_id, name="j", created=time.time())
    add_steps(job, [
        plan_step("a", "hold", "alpha", writes=writes),
        plan_step("b", "transfer", "alpha", deps=("a",)),
        plan_step("c", "transfer", "beta", deps=("a",)),
        plan_step("d", "prune", "beta", deps=("b",)),
        plan_step("r", "release", "alpha", deps=("b", "c"), always=True),
    ])  # fmt: skip
    return job


def coordinator(client: redis.Redis[bytes], worker: ScriptedWorker, **kw: object) -> Coordinator:
    c = Coordinator(client, worker.submit, policy=FAST, block_ms=50, lease_ttl_ms=1000,
                    **kw)  # type: ignore[arg-type]  # fmt: skip
    assert c.lease.acquire()
    return c


def drive(c: Coordinator, w: ScriptedWorker, outcome: dict[str, list[StepState]],
          job_id: str, limit: float = 20.0) -> Job:  # fmt: skip
    """Tick and answer calls (per step, a list of outcomes by attempt) until the job is done."""
    answered: set[tuple[str, str, int]] = set()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        c.tick()
        for call in w.pending(answered):
            answered.add((call.job_id, call.step_id, call.attempt))
            states = outcome.get(call.step_id, [StepState.SUCCEEDED])
            state = states[min(call.attempt, len(states)) - 1]
            w.answer(call, StepState.STARTED)
            w.answer(call, state, retryable=state is StepState.FAILED,
                     error_message="boom" if state is StepState.FAILED else None,
                     result={"bytes": 10} if state is StepState.SUCCEEDED else {})  # fmt: skip
        job = c.store.load(job_id)
        if job.done:
            return job
    raise AssertionError(f"job {job_id} did not finish: {engine.counts(c.store.load(job_id))}")


def test_job_runs_in_dependency_order_with_retries(client: redis.Redis[bytes]) -> None:
    w = ScriptedWorker(client)
    c = coordinator(client, w)
    c.store.create(chain_job())
    job = drive(c, w, {"b": [StepState.FAILED, StepState.SUCCEEDED]}, "J1")
    assert job.status == engine.JOB_SUCCEEDED
    order = [(x.step_id, x.attempt) for x in w.calls]
    assert order.index(("a", 1)) < order.index(("b", 1)) < order.index(("b", 2))
    assert order.index(("b", 2)) < order.index(("d", 1))
    assert job.steps["b"].attempt == 2 and job.steps["d"].result == {"bytes": 10}
    assert "J1" not in c.store.active_ids()
    # every event was acknowledged: nothing left pending for a successor
    assert pending_events(client) == 0


def test_failure_blocks_descendants_only(client: redis.Redis[bytes]) -> None:
    w = ScriptedWorker(client)
    c = coordinator(client, w)
    c.store.create(chain_job())
    job = drive(c, w, {"b": [StepState.FAILED] * 3}, "J1")
    assert job.status == engine.JOB_FAILED
    status = {s.id: s.status for s in job.steps.values()}
    assert status == {"a": "succeeded", "b": "failed", "c": "succeeded", "d": "blocked",
                      "r": "succeeded"}  # fmt: skip
    assert job.steps["b"].attempt == 3 and job.steps["b"].error == "boom"


def test_a_new_coordinator_finishes_the_job_of_a_killed_one(client: redis.Redis[bytes]) -> None:
    w = ScriptedWorker(client)
    first = coordinator(client, w)
    first.store.create(chain_job())
    first.tick()
    (call_a,) = w.calls
    w.answer(call_a, StepState.SUCCEEDED, result={"held": 1})
    # the first coordinator reads the event, then "dies" before storing it (no XACK, no write),
    # and never releases its lease: exactly what SIGKILL leaves behind
    EventConsumer(client, first.owner).read(block_ms=100)
    assert pending_events(client) == 1
    second = Coordinator(client, w.submit, policy=FAST, block_ms=50, lease_ttl_ms=1000)
    assert not second.lease.acquire()  # the dead one's lease is still there
    time.sleep(1.1)
    assert second.lease.acquire()
    job = drive(second, w, {}, "J1")
    assert job.status == engine.JOB_SUCCEEDED
    assert job.steps["a"].result == {"held": 1}  # the claimed event was applied
    attempts = [(x.step_id, x.attempt) for x in w.calls]
    assert len(attempts) == len(set(attempts)) == 5  # no step sent twice for one attempt


def test_a_stored_but_unsent_submission_is_sent_by_the_next_leader(
    client: redis.Redis[bytes],
) -> None:
    store = JobStore(client)
    job = chain_job()
    engine.mark_submitted(job.steps["a"], time.time())  # stored as submitted, never sent
    store.create(job)
    w = ScriptedWorker(client)
    c = coordinator(client, w)
    c.resend_unsent()
    assert [(x.step_id, x.attempt) for x in w.calls] == [("a", 1)]
    assert drive(c, w, {}, "J1").status == engine.JOB_SUCCEEDED


def test_only_one_leader_and_a_lost_lease_is_noticed(client: redis.Redis[bytes]) -> None:
    one = LeaderLease(client, "one", ttl_ms=500)
    two = LeaderLease(client, "two", ttl_ms=500)
    assert one.acquire() and not two.acquire()
    one.renew()
    time.sleep(0.6)
    assert two.acquire()
    with pytest.raises(LeaseLost, match="two"):
        one.renew()
    two.release()
    assert one.acquire()


def test_two_jobs_never_write_one_dataset_at_once(client: redis.Redis[bytes]) -> None:
    w = ScriptedWorker(client)
    c = coordinator(client, w)
    c.store.create(chain_job("J1", writes=("beta:bk/t",)))
    c.store.create(chain_job("J2", writes=("beta:bk/t",)))
    c.tick()
    first = {x.job_id for x in w.calls}
    assert len(first) == 1  # the other job waits for the lock
    winner = first.pop()
    loser = "J2" if winner == "J1" else "J1"
    drive(c, w, {}, winner)
    job = drive(c, w, {}, loser)
    assert job.status == engine.JOB_SUCCEEDED
    assert client.get(keys.dataset_lock("beta:bk/t")) is None


def test_cancel_stops_new_steps_and_still_releases(client: redis.Redis[bytes]) -> None:
    w = ScriptedWorker(client)
    c = coordinator(client, w)
    c.store.create(chain_job())
    c.tick()
    assert [x.step_id for x in w.calls] == ["a"]
    c.store.request_cancel("J1")
    job = drive(c, w, {}, "J1")
    assert job.status == engine.JOB_CANCELLED
    # a was running and finished; b, c, d never started; r (release holds) still ran
    assert [x.step_id for x in w.calls] == ["a", "r"]
    assert job.steps["b"].status == engine.CANCELLED
    assert job.steps["r"].status == engine.SUCCEEDED


def test_scheduled_job_starts_by_itself(client: redis.Redis[bytes], tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text('[hosts.alpha]\n[hosts.beta]\n[jobs.nightly]\nsource = "alpha:tank/t"\n'
                   'targets = ["beta:bk/t"]\nschedule = "1h"\n')  # fmt: skip
    w = ScriptedWorker(client)
    c = coordinator(client, w, config_path=str(cfg))
    c.tick()
    (job,) = c.store.recent()
    assert job.name == "nightly" and job.options["trigger"] == "schedule"
    c.tick()
    assert len(c.store.recent()) == 1  # not again within the hour, nor while running
    assert {args_from_bytes(x.args).KIND for x in w.calls} == {"inventory"}
