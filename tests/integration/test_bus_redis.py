"""The shared Redis records on a real server: atomic leases, events kept until acknowledged, jobs
that expire, the worker's watchdog and fencing, and a job kind the engine has never heard of."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import redis

from bus import keys, records
from bus.events import EventConsumer, publish
from bus.lease import Cas
from coordinator import engine, jobkinds
from coordinator.engine import Job, Step, StepPlan, add_steps
from coordinator.jobkinds import JobKind
from coordinator.jobstore import JobStore
from coordinator.runner import Coordinator
from protocol.errors import TransferCancelled
from protocol.messages import StepCall, StepEvent, StepState, message
from protocol.steps import HoldArgs, PlanArgs, StepArgs, args_from_bytes, args_to_bytes
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.unit.dagfakes import plan_step
from workers.steps import StepContext, handles
from workers.tasks import HostRuntime, execute
from workers.zfs.sim import SimBackend

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis[bytes]]:  # noqa: F811
    c = redis_server.client()
    c.flushdb()
    yield c
    c.close()


# -- compare-and-set ---------------------------------------------------------------------------


def test_only_the_holder_seen_can_renew_release_or_be_replaced(client: redis.Redis[bytes]) -> None:
    cas = Cas(client)
    assert cas.take("k", "a", 10_000)
    assert not cas.take("k", "b", 10_000)  # held
    assert not cas.renew("k", "b", 10_000) and not cas.release("k", "b")
    assert cas.holder("k") == "a"
    assert cas.swap("k", "a", "b", 10_000)  # a take-over from exactly the holder seen
    assert not cas.swap("k", "a", "c", 10_000)  # a second taker saw "a" too: it loses
    assert cas.holder("k") == "b" and 0 < client.pttl("k") <= 10_000
    assert cas.release("k", "b") and cas.holder("k") is None


def test_concurrent_take_overs_leave_exactly_one_winner(client: redis.Redis[bytes]) -> None:
    Cas(client).take("k", "dead")
    wins: list[str] = []

    def taker(name: str) -> None:
        if Cas(client).swap("k", "dead", name):
            wins.append(name)

    threads = [threading.Thread(target=taker, args=(f"t{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and Cas(client).holder("k") == wins[0]


# -- events --------------------------------------------------------------------------------------


def _event(i: int) -> StepEvent:
    return StepEvent(job_id="J", step_id=f"s{i}", attempt=1, host="h", state=StepState.SUCCEEDED)


def test_events_are_trimmed_only_once_read_and_acknowledged(client: redis.Redis[bytes]) -> None:
    for i in range(50):
        publish(client, _event(i))
    consumer = EventConsumer(client, "c1")
    assert consumer.trim_acknowledged(keep=0) == 0  # no group has read anything yet
    first = consumer.read(block_ms=10, count=30)
    assert len(first) == 30
    # read but not acknowledged: nothing may go
    assert consumer.trim_acknowledged(keep=0) == 0
    consumer.ack([d.entry_id for d in first[:20]])
    removed = consumer.trim_acknowledged(keep=5)
    assert removed == 15  # the 20 acknowledged, less the 5 kept for debugging
    # every unacknowledged and unread event is still there, readable after a restart
    left = {d.event.step_id for d in EventConsumer(client, "c2").claim_pending() if d.event}
    assert left == {f"s{i}" for i in range(20, 30)}
    assert client.xlen(keys.EVENTS) == 5 + 10 + 20


# -- job retention -----------------------------------------------------------------------------


def test_finished_jobs_expire_and_drop_out_of_the_list(client: redis.Redis[bytes]) -> None:
    store = JobStore(client, retention=1)
    job = Job(id="J1", name="j", created=time.time(),
              options={"config": "[hosts.a]\n"})  # fmt: skip
    add_steps(job, [plan_step("a", "hold", "alpha")])
    store.create(job)
    assert "config" not in store.load("J1").options  # kept apart, once per content
    assert store.config_text(store.load("J1")) == "[hosts.a]\n"
    running = store.load("J1")
    assert client.ttl(keys.job("J1")) == -1  # a running job never expires
    engine.finish_step(running.steps["a"], engine.SUCCEEDED, time.time())
    engine.settle(running)
    store.save(running)
    assert 0 < client.ttl(keys.job("J1")) <= 1
    assert [j.id for j in store.recent()] == ["J1"]
    time.sleep(1.2)
    assert store.recent() == [] and client.zcard(keys.JOBS_ALL) == 0


# -- the worker: watchdog and fencing ------------------------------------------------------------


@message("step.test-sleep", version=1, strict=True)
@dataclass(frozen=True)
class SleepArgs(StepArgs):
    KIND: ClassVar[str] = "test-sleep"
    seconds: float
    cooperative: bool = True


@handles(SleepArgs)
def _sleep(ctx: StepContext, args: SleepArgs) -> dict[str, str | int | bool | None]:
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        if args.cooperative and ctx.cancelled():
            raise TransferCancelled("asked to stop")
        time.sleep(0.05)
    return {"slept": True}


def _runtime(client: redis.Redis[bytes], tmp_path: Path) -> HostRuntime:
    return HostRuntime(host="h", backend=SimBackend(tmp_path / "h"), client=client,
                       watchdog_grace=0.5)  # fmt: skip


def _submitted(client: redis.Redis[bytes], args: StepArgs, **call: object) -> StepCall:
    store = JobStore(client)
    job = Job(id="J", name="j", created=time.time())
    add_steps(job, [StepPlan("s", "h", args)])
    engine.mark_submitted(job.steps["s"], time.time())
    store.create(job)
    return StepCall(job_id="J", step_id="s", attempt=1, host="h", args=args_to_bytes(args),
                    **call)  # type: ignore[arg-type]  # fmt: skip


def _events(client: redis.Redis[bytes]) -> list[StepEvent]:
    consumer = EventConsumer(client, "t")
    consumer.ensure_group()
    return [d.event for d in consumer.read(block_ms=10, count=100) if d.event]


def test_a_step_past_its_time_limit_is_stopped(
    client: redis.Redis[bytes], tmp_path: Path
) -> None:
    call = _submitted(client, SleepArgs(seconds=30), time_limit=0.3)
    began = time.monotonic()
    assert execute(_runtime(client, tmp_path), call) == "failed"
    assert time.monotonic() - began < 5
    last = _events(client)[-1]
    assert last.state is StepState.FAILED and last.error_type == "StepTimeLimit"
    assert records.done_result(client, "J", "s") is None


def test_a_step_that_ignores_its_limit_is_abandoned_and_its_late_result_dropped(
    client: redis.Redis[bytes], tmp_path: Path
) -> None:
    call = _submitted(client, SleepArgs(seconds=1.5, cooperative=False), time_limit=0.2)
    assert execute(_runtime(client, tmp_path), call) == "abandoned"
    states = [(e.state, e.error_type) for e in _events(client)]
    assert states == [(StepState.STARTED, None), (StepState.FAILED, "StepTimeLimit")]
    assert records.done_result(client, "J", "s") is None  # the late success counts for nothing


def test_a_step_of_an_older_epoch_is_fenced_off(
    client: redis.Redis[bytes], tmp_path: Path
) -> None:
    client.set(keys.epoch("nightly"), 3)
    call = _submitted(client, SleepArgs(seconds=0), epoch=2, fence="nightly")
    assert execute(_runtime(client, tmp_path), call) == "fenced"
    (event,) = _events(client)
    assert event.state is StepState.FAILED and event.error_type == "Fenced"
    current = _submitted(client, SleepArgs(seconds=0), epoch=3, fence="nightly")
    client.delete(keys.EVENTS)
    assert execute(_runtime(client, tmp_path), current) == "succeeded"


# -- a job kind the engine and runner were never told about ------------------------------------


def _plan_two_holds(store: JobStore, job: Job, step: Step) -> dict[str, str | int | bool | None]:
    add_steps(job, [StepPlan(f"hold-{h}", h, HoldArgs(tag="t", snapshots=()), deps=("plan",))
                    for h in ("alpha", "beta")])  # fmt: skip
    return {"planned": 2}


jobkinds.register(JobKind(name="test-two-holds", local_steps={"plan": _plan_two_holds}))


def test_a_registered_job_kind_runs_on_the_unchanged_engine(client: redis.Redis[bytes]) -> None:
    calls: list[StepCall] = []
    c = Coordinator(client, lambda host, call: calls.append(call), block_ms=20,
                    lease_ttl_ms=1000)  # fmt: skip
    assert c.lease.acquire()
    job = Job(id="K1", name="custom", kind="test-two-holds", created=time.time())
    add_steps(job, [StepPlan("plan", None, PlanArgs())])
    c.store.create(job)
    c.tick()
    assert sorted(call.step_id for call in calls) == ["hold-alpha", "hold-beta"]
    assert all(isinstance(args_from_bytes(call.args), HoldArgs) for call in calls)
    for call in calls:
        for state in (StepState.STARTED, StepState.SUCCEEDED):
            publish(client, StepEvent(job_id="K1", step_id=call.step_id, attempt=call.attempt,
                                      host=call.host, state=state))  # fmt: skip
    for _ in range(5):
        c.tick()
    done = c.store.load("K1")
    assert done.status == engine.JOB_SUCCEEDED
    assert done.steps["plan"].result["planned"] == 2


def test_an_unknown_job_kind_fails_its_job_not_the_coordinator(client: redis.Redis[bytes]) -> None:
    c = Coordinator(client, lambda host, call: None, block_ms=20, lease_ttl_ms=1000)
    assert c.lease.acquire()
    job = Job(id="K2", name="custom", kind="teleport", created=time.time())
    add_steps(job, [StepPlan("plan", None, PlanArgs())])
    c.store.create(job)
    c.tick()
    failed = c.store.load("K2")
    assert failed.status == engine.JOB_FAILED
    assert "unknown job kind 'teleport'" in (failed.steps["plan"].error or "")


# -- Redis lost in the middle of a tick --------------------------------------------------------

_FLAKY: list[int] = []


def _plan_flaky(store: JobStore, job: Job, step: Step) -> dict[str, str | int | bool | None]:
    """A coordinator step that loses Redis the first time it runs (a restart under way)."""
    _FLAKY.append(1)
    if len(_FLAKY) == 1:
        raise redis.ConnectionError("Connection refused (a restart under way)")
    return {"runs": len(_FLAKY)}


jobkinds.register(JobKind(name="test-flaky-plan", local_steps={"plan": _plan_flaky}))


def test_a_tick_that_loses_redis_reads_its_events_again(client: redis.Redis[bytes]) -> None:
    """The events a lost tick had read are read again, and a coordinator step that met the
    error runs again instead of failing its job (found by bench/failover.py --faults)."""
    _FLAKY.clear()
    calls: list[StepCall] = []
    c = Coordinator(client, lambda host, call: calls.append(call), block_ms=20,
                    lease_ttl_ms=2000)  # fmt: skip
    assert c.lease.acquire()
    job = Job(id="K3", name="custom", kind="test-flaky-plan", created=time.time())
    add_steps(job, [StepPlan("hold", "alpha", HoldArgs(tag="t", snapshots=())),
                    StepPlan("plan", None, PlanArgs(), deps=("hold",))])  # fmt: skip
    c.store.create(job)
    c.tick()
    (call,) = calls
    for state in (StepState.STARTED, StepState.SUCCEEDED):
        publish(client, StepEvent(job_id="K3", step_id="hold", attempt=call.attempt,
                                  host="alpha", state=state))  # fmt: skip
    stop = threading.Event()
    loop = threading.Thread(target=c.run, args=(stop,), daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 20
        while not c.store.load("K3").done and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        loop.join(10)
    done = c.store.load("K3")
    assert done.status == engine.JOB_SUCCEEDED, (done.status, done.error)
    assert done.steps["plan"].result["runs"] == 2
