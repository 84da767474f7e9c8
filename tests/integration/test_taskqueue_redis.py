"""Task messages written by bus.taskqueue on a real redis-server: the same bytes Celery would
push, taken, run and acknowledged by a real `zfleet worker` process, many per round trip."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bus import keys, taskqueue
from bus.events import publish
from bus.queues import NOOP_TASK, STEP_TASK, queue_for
from coordinator import engine
from coordinator.engine import Job, StepPlan, add_steps
from coordinator.jobstore import JobStore
from coordinator.runner import Coordinator, QueueSubmitter, wait_job
from protocol.messages import StepCall, StepEvent, StepState, from_dict
from protocol.steps import InventoryArgs, TransferArgs, args_from_bytes
from tests.services.fleet import running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.unit.dagfakes import plan_step
from workers.celery_app import make_app

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis[bytes]]:  # noqa: F811
    c = redis_server.client()
    c.flushdb()
    yield c
    c.close()


def _shape(raw: bytes) -> dict[str, Any]:
    """A stored message with what differs per message (ids, tags, origin, argsrepr) blanked."""
    msg = json.loads(raw)
    tid = msg["headers"]["id"]
    for name in ("id", "root_id", "origin", "argsrepr"):
        msg["headers"][name] = "-" if msg["headers"][name] else msg["headers"][name]
    msg["body"] = json.loads(base64.b64decode(msg["body"]))
    props = msg["properties"]
    assert props["correlation_id"] == tid
    for name in ("correlation_id", "delivery_tag"):
        props[name] = "-"
    return dict(msg)


def test_a_message_is_the_one_celery_would_push(
    client: redis.Redis[bytes], redis_server: RedisServer  # noqa: F811
) -> None:
    args = [{"job_id": "J", "step_id": "s", "attempt": 1, "nested": [1, 2.5, None]}]
    app = make_app(redis_server.url)
    app.send_task(STEP_TASK, args=args, queue=queue_for("h"))
    theirs = client.rpop(queue_for("h"))
    assert theirs is not None
    ours = taskqueue.task_message(STEP_TASK, args, queue_for("h"))
    want = _shape(theirs)
    want["properties"].pop("reply_to")  # results travel as step events, never by Celery
    assert _shape(ours) == want
    # unique delivery tags: the broker acknowledges (acks_late) by tag
    tags = {json.loads(taskqueue.task_message(STEP_TASK, args, "q"))["properties"]["delivery_tag"]
            for _ in range(100)}  # fmt: skip
    assert len(tags) == 100


def test_push_keeps_each_queues_order_in_one_command_per_queue(
    client: redis.Redis[bytes],
) -> None:
    pipe = client.pipeline(transaction=False)
    items = [(f"q{i % 2}", f"m{i}".encode()) for i in range(6)]
    assert taskqueue.push(pipe, items) == 6
    assert len(pipe.command_stack) == 2
    pipe.execute()
    # workers take from the right end: the oldest first
    assert [client.rpop("q0") for _ in range(3)] == [b"m0", b"m2", b"m4"]
    assert [client.rpop("q1") for _ in range(3)] == [b"m1", b"m3", b"m5"]


def test_a_real_worker_runs_and_acknowledges_what_was_pushed(
    tmp_path: Path, redis_server: RedisServer  # noqa: F811
) -> None:
    with running_fleet(tmp_path, redis_server, ("alpha",), "") as fleet:
        fleet.backend("alpha").create_pool("tank")
        fleet.start_worker("alpha")
        client = fleet.client()
        # a task with a result: the worker ran it (Celery's own client reads the result back)
        app = make_app(redis_server.url)
        pipe = client.pipeline(transaction=False)
        tid = "taskqueue-noop-1"
        taskqueue.push(pipe, [(queue_for("alpha"),
                               taskqueue.task_message(NOOP_TASK, [41], queue_for("alpha"),
                                                      task_id=tid))])  # fmt: skip
        pipe.execute()
        assert app.AsyncResult(tid).get(timeout=30) == 41
        # a job's steps through the coordinator's submitter: sent with the transaction that
        # stores them as sent, each run once and its outcome applied
        store = JobStore(client)
        job = Job(id="J", name="j", created=time.time())
        add_steps(job, [StepPlan(f"inv{i}", "alpha", InventoryArgs(roots=("tank",)))
                        for i in range(5)])  # fmt: skip
        store.create(job)
        loop = Coordinator(client, QueueSubmitter(client), block_ms=50)
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,))
        thread.start()
        try:
            done = wait_job(store, "J", timeout=30, poll=0.05)
        finally:
            stop.set()
            thread.join(10)
        assert done.status == engine.JOB_SUCCEEDED, fleet.logs()
        assert all(s.attempt == 1 and s.sent_at for s in done.steps.values())
        # acknowledged late, after the step: nothing left unacked or queued
        deadline = time.monotonic() + 10
        while client.hlen("unacked") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.hlen("unacked") == 0 and client.llen(queue_for("alpha")) == 0
        assert client.exists(keys.worker("alpha"))


def _queued(client: redis.Redis[bytes], host: str) -> list[StepCall]:
    """The step calls waiting in HOST's queue, oldest first."""
    raw = client.lrange(queue_for(host), 0, -1)
    bodies = [json.loads(base64.b64decode(json.loads(m)["body"])) for m in reversed(raw)]
    return [from_dict(b[0][0], StepCall) for b in bodies]


def test_a_tick_acknowledges_events_and_sends_what_they_made_ready_in_one_transaction(
    client: redis.Redis[bytes],
) -> None:
    store = JobStore(client)
    job = Job(id="J", name="j", created=time.time())
    add_steps(job, [plan_step("a", "hold", "h"),
                    plan_step("b", "transfer", "h", deps=("a",)),
                    plan_step("c", "release", "h", deps=("a",))])  # fmt: skip
    store.create(job)
    c = Coordinator(client, QueueSubmitter(client), block_ms=20, grant_secret=b"k" * 32)
    assert c.lease.acquire()
    c.tick()
    (a,) = _queued(client, "h")
    assert (a.step_id, a.attempt) == ("a", 1)
    assert store.load("J").steps["a"].sent_at is not None  # stored as sent with the push
    publish(client, StepEvent(job_id="J", step_id="a", attempt=1, host="h",
                              state=StepState.SUCCEEDED))  # fmt: skip
    c.tick()
    calls = _queued(client, "h")
    assert [(x.step_id, x.attempt) for x in calls] == [("a", 1), ("b", 1), ("c", 1)]
    # the transfer carries a grant signed for this attempt
    transfer = args_from_bytes(calls[1].args)
    assert isinstance(transfer, TransferArgs) and transfer.targets[0].grant
    saved = store.load("J")
    assert saved.steps["a"].status == engine.SUCCEEDED
    assert all(saved.steps[s].sent_at for s in "bc")
    pending = client.execute_command("XPENDING", keys.EVENTS, keys.EVENTS_GROUP)
    assert (pending["pending"] if isinstance(pending, dict) else pending[0]) == 0


def test_the_next_leader_sends_what_was_stored_but_never_sent(
    client: redis.Redis[bytes],
) -> None:
    store = JobStore(client)
    job = Job(id="J", name="j", created=time.time())
    add_steps(job, [plan_step("a", "hold", "h"), plan_step("b", "hold", "g")])
    for step in job.steps.values():
        engine.mark_submitted(step, time.time())  # an older coordinator stored, then died
    store.create(job)
    c = Coordinator(client, QueueSubmitter(client), block_ms=20)
    assert c.lease.acquire()  # as run() does before it resends
    c.resend_unsent()
    assert [(x.step_id, x.attempt) for x in _queued(client, "h")] == [("a", 1)]
    assert [(x.step_id, x.attempt) for x in _queued(client, "g")] == [("b", 1)]
    assert all(s.sent_at for s in store.load("J").steps.values())


def test_a_fan_out_wider_than_a_tick_goes_out_over_the_next_ticks(
    client: redis.Redis[bytes],
) -> None:
    from coordinator.runner import SUBMIT_PER_TICK

    store = JobStore(client)
    job = Job(id="J", name="j", created=time.time())
    wide = SUBMIT_PER_TICK + 50
    add_steps(job, [plan_step(f"s{i:05d}", "hold", "h") for i in range(wide)])
    store.create(job)
    c = Coordinator(client, QueueSubmitter(client), block_ms=20)
    assert c.lease.acquire()
    c.tick()
    assert client.llen(queue_for("h")) == SUBMIT_PER_TICK
    t = time.monotonic()
    c.tick()  # does not wait block_ms for events: steps were left to send
    assert client.llen(queue_for("h")) == wide
    assert time.monotonic() - t < 5
    ids = {(x.step_id, x.attempt) for x in _queued(client, "h")}
    assert len(ids) == wide and all(a == 1 for _, a in ids)
