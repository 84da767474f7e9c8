"""The coordinator outlives Redis going away: it never exits, and leads again once Redis is back.

A real redis-server (with its AOF) is stopped and started again on the same port, as a restart
or a Sentinel failover looks from a client: once before the coordinator has the lease (a standby,
or a coordinator started first), once for longer than the lease while it leads.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from coordinator.engine import Job, StepPlan, add_steps
from coordinator.runner import Coordinator
from protocol.messages import StepCall
from protocol.steps import HoldArgs
from tests.conftest import need
from tests.services.process import stop_process
from tests.services.redis import free_port, redis_binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class Restartable:
    """redis-server on one port and directory, stopped and started again at will."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--save", "", "--appendonly", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError), self.client() as c:
                c.ping()
                return
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5)
            self.proc = None

    def client(self) -> redis.Redis[bytes]:
        # no retries inside the client: every failure reaches the coordinator at once, which
        # must cope whatever the client's retry policy (redis-py's own only hides short gaps)
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           socket_connect_timeout=1,
                           retry=Retry(NoBackoff(), 0))  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Restartable]:
    binary = redis_binary()
    need(binary is not None and os.access(binary, os.X_OK), "redis-server")
    assert binary is not None
    found = Restartable(binary, tmp_path)
    try:
        yield found
    finally:
        found.stop()


def wait_for(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if check():  # type: ignore[operator]
                return True
        time.sleep(0.1)
    return False


def test_the_coordinator_survives_redis_restarts_and_leads_again(server: Restartable) -> None:
    loop = Coordinator(server.client(), lambda host, call: None, block_ms=50, lease_ttl_ms=1000)
    stop = threading.Event()
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            loop.run(stop)
        except BaseException as exc:  # the test's whole point: nothing gets here
            crashed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()  # Redis is not running yet
    try:
        time.sleep(1.5)
        assert thread.is_alive() and not crashed, crashed
        server.start()
        assert wait_for(lambda: loop.lease.holder() == loop.lease.owner, 15), "never led"

        server.stop()  # longer than the lease: it is lost, and taking it again fails a while
        time.sleep(2.5)
        assert thread.is_alive() and not crashed, crashed
        server.start()
        assert wait_for(lambda: loop.lease.holder() == loop.lease.owner and loop.lease.held, 15)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive() and not crashed, crashed


def test_a_step_sent_before_a_redis_restart_and_never_picked_up_runs_again(
    server: Restartable,
) -> None:
    """A worker pops a task message, then records it as unacknowledged: Redis killed between the
    two loses the message, and no worker ever reports the step. Once the coordinator sees Redis
    restarted, such a step gets a new attempt (found by bench/kills.py, Redis killed mid-job)."""
    server.start()
    calls: list[StepCall] = []
    loop = Coordinator(server.client(), lambda host, call: calls.append(call), block_ms=50,
                       lease_ttl_ms=2000)  # fmt: skip
    job = Job(id="R1", name="j", created=time.time())
    add_steps(job, [StepPlan("hold", "alpha", HoldArgs(tag="t", snapshots=()))])
    loop.store.create(job)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: len(calls) == 1, 15), "never sent"
        time.sleep(1.5)  # the coordinator has read this Redis's run id
        server.stop()  # the message is not popped here: no worker; the step waits all the same
        server.start()
        assert wait_for(lambda: any(c.attempt == 2 for c in calls), 40), calls
    finally:
        stop.set()
        thread.join(15)
    assert [c.attempt for c in calls] == [1, 2]
