"""The worker's Celery task: decode a StepCall, check it is still wanted, run it, report it.

``zfleet.step`` is thin: :func:`execute` does the work with its collaborators passed in (a
:class:`HostRuntime`), so it runs the same under Celery, in a test, or in the embedded demo.

Before acting it checks, in order: that this attempt is still the step's current one (a message
redelivered long after a retry is dropped), that the step did not already succeed (then it only
reports again), and that no other copy of the step is running on this host (a short lease kept
alive while the step runs). Every outcome becomes a StepEvent on the events stream; nothing
escapes as an exception into Celery, which would only retry blindly.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import redis
import structlog
from celery import Celery

from coordinator import keys
from coordinator.events import publish
from coordinator.jobstore import JobStore
from protocol.errors import MessageError, TransferCancelled, ZfleetError
from protocol.log import bind_context, clear_context
from protocol.messages import InventoryReport, StepCall, StepEvent, StepState, from_dict
from protocol.version import zfleet_version
from workers.celery_app import NOOP_TASK, STEP_TASK, connect_signals, make_app
from workers.metrics import observe_step, observe_transfer
from workers.steps import Result, StepContext, is_retryable, run_step
from workers.zfs.base import ZfsBackend

log = structlog.get_logger(__name__)

HEARTBEAT_EVERY: Final = 2.0
HEARTBEAT_TTL: Final = 10  # seconds without a beat before the coordinator calls a worker gone
RUNNING_TTL: Final = 30  # the per-step run lease; renewed while the step runs
DONE_TTL: Final = 7 * 86400
CANCEL_POLL: Final = 1.0


@dataclass
class HostRuntime:
    """Everything a host's steps need: its backend, Redis, and its data plane."""

    host: str
    backend: ZfsBackend
    client: redis.Redis[bytes]
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    stream_address: tuple[str, int] | None = None
    push: Callable[..., Any] | None = None
    open_store: Callable[[Mapping[str, Any]], Any] | None = None
    started: float = field(default_factory=time.time)
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None

    # -- heartbeat ---------------------------------------------------------------------------
    def beat_once(self) -> None:
        key = keys.worker(self.host)
        fields: dict[str | bytes, bytes | float | int | str] = {
            "instance": self.instance, "started": repr(self.started), "beat": repr(time.time()),
            "version": zfleet_version(),
        }  # fmt: skip
        if self.stream_address is not None:
            fields["stream"] = f"{self.stream_address[0]}:{self.stream_address[1]}"
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, HEARTBEAT_TTL)
        pipe.execute()

    def start_heartbeat(self) -> None:
        self.beat_once()

        def loop() -> None:
            while not self._stop.wait(HEARTBEAT_EVERY):
                try:
                    self.beat_once()
                except redis.RedisError as exc:
                    log.warning("worker.heartbeat_failed", error=str(exc))

        self._beat = threading.Thread(target=loop, name="zfleet-heartbeat", daemon=True)
        self._beat.start()

    def stop(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(5)
        with contextlib.suppress(redis.RedisError):
            self.client.delete(keys.worker(self.host))

    # -- what steps may use --------------------------------------------------------------------
    def peer_address(self, host: str) -> tuple[str, int]:
        raw = self.client.hget(keys.worker(host), "stream")
        if raw is None:
            from protocol.errors import TransferInterrupted

            raise TransferInterrupted(f"worker {host} is not running (no heartbeat)")
        text = raw.decode()
        addr, _, port = text.rpartition(":")
        return addr, int(port)


def _emit(rt: HostRuntime, call: StepCall, state: StepState, **kw: Any) -> None:
    publish(rt.client, StepEvent(job_id=call.job_id, step_id=call.step_id, attempt=call.attempt,
                                 host=rt.host, state=state, at=time.time(), **kw))  # fmt: skip


def _current(rt: HostRuntime, call: StepCall) -> bool:
    """Is this attempt still the one the coordinator waits for?"""
    raw = rt.client.hget(keys.job(call.job_id), f"step:{call.step_id}")
    if raw is None:
        return False
    step = json.loads(raw)
    wanted = step.get("status") in ("submitted", "running")
    return bool(wanted and step.get("attempt") == call.attempt)


class _RunLease:
    """Held while the step runs here, renewed in the background; lost on SIGKILL by expiry."""

    def __init__(self, rt: HostRuntime, call: StepCall) -> None:
        self.rt, self.key = rt, keys.running(call.job_id, call.step_id)
        self.token = f"{rt.instance}:{call.attempt}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait: float = RUNNING_TTL * 2) -> bool:
        """Take the lease; a holder that is an earlier instance of this host's worker is dead
        (one worker per host), so its lease is taken over; our own other thread is waited for."""
        deadline = time.monotonic() + wait
        while not self.rt.client.set(self.key, self.token, nx=True, ex=RUNNING_TTL):
            holder = (self.rt.client.get(self.key) or b"").decode()
            if holder.split(":", 1)[0] != self.rt.instance:
                self.rt.client.set(self.key, self.token, ex=RUNNING_TTL)
                log.info("step.lease_taken_over", previous=holder)
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)

        def renew() -> None:
            while not self._stop.wait(RUNNING_TTL / 3):
                with contextlib.suppress(redis.RedisError):
                    self.rt.client.expire(self.key, RUNNING_TTL)

        self._thread = threading.Thread(target=renew, name="zfleet-run-lease", daemon=True)
        self._thread.start()
        return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self.rt.client.get(self.key) == self.token.encode():
            self.rt.client.delete(self.key)


def context_for(rt: HostRuntime, call: StepCall) -> StepContext:
    """The StepContext for one call: Redis-backed cancel, inventory, progress and delivery."""
    store = JobStore(rt.client)
    done_key = keys.done(call.job_id, call.step_id)
    last_check = [0.0, False]

    def cancelled() -> bool:
        now = time.monotonic()
        if now - float(last_check[0]) >= CANCEL_POLL:
            last_check[0] = now
            last_check[1] = store.cancel_requested(call.job_id)
        return bool(last_check[1])

    def save_inventory(report: InventoryReport) -> None:
        store.put_inventory(report, call.job_id)

    def delivered(target: str) -> bool:
        return bool(rt.client.hexists(done_key + ":targets", target))

    def mark_delivered(target: str) -> None:
        rt.client.hset(done_key + ":targets", target, call.attempt)
        rt.client.expire(done_key + ":targets", DONE_TTL)

    def progress(target: str, done: int, total: int | None) -> None:
        rt.client.hset(keys.progress(call.job_id), f"{call.step_id}|{target}",
                       json.dumps({"done": done, "total": total, "at": time.time()}))  # fmt: skip
        rt.client.expire(keys.progress(call.job_id), DONE_TTL)

    return StepContext(
        host=rt.host, backend=rt.backend, job_id=call.job_id, step_id=call.step_id,
        attempt=call.attempt, cancelled=cancelled, save_inventory=save_inventory,
        peer_address=rt.peer_address, delivered=delivered, mark_delivered=mark_delivered,
        progress=progress, push=_push_with_cancel(rt.push, cancelled), open_store=rt.open_store,
    )  # fmt: skip


def _push_with_cancel(
    push: Callable[..., Any] | None, cancelled: Callable[[], bool]
) -> Callable[..., Any] | None:
    """Wrap push_transfer so a cancel request sets its cancel event (checked every second)."""
    if push is None:
        return None

    def wrapped(*args: Any, **kw: Any) -> Any:
        stop = threading.Event()
        done = threading.Event()

        def watch() -> None:
            while not done.wait(CANCEL_POLL):
                if cancelled():
                    stop.set()
                    return

        watcher = threading.Thread(target=watch, name="zfleet-cancel-watch", daemon=True)
        watcher.start()
        try:
            report = push(*args, cancel=stop, **kw)
        finally:
            done.set()
            watcher.join(2)
        observe_transfer(report)
        return report

    return wrapped


def execute(rt: HostRuntime, call: StepCall) -> str:
    """Run one step call to an event; returns what happened (for logs and tests)."""
    bind_context(job_id=call.job_id, step_id=call.step_id, attempt=call.attempt, host=rt.host,
                 kind=call.step_kind)  # fmt: skip
    try:
        if call.host != rt.host:
            log.error("step.wrong_host", wanted=call.host)
            return "wrong-host"
        if not _current(rt, call):
            log.info("step.stale")
            return "stale"
        done_key = keys.done(call.job_id, call.step_id)
        prior = rt.client.get(done_key)
        if prior is not None:
            _emit(rt, call, StepState.SUCCEEDED, result=json.loads(prior))
            log.info("step.already_done")
            return "already-done"
        lease = _RunLease(rt, call)
        if not lease.acquire():
            # another of our threads still runs an older attempt: let the coordinator try later
            busy = "an earlier attempt of this step is still running here"
            _emit(rt, call, StepState.FAILED, error_type="DatasetBusy", retryable=True,
                  error_message=busy)  # fmt: skip
            return "busy"
        try:
            prior = rt.client.get(done_key)
            if prior is not None:  # the attempt we waited for finished the work
                _emit(rt, call, StepState.SUCCEEDED, result=json.loads(prior))
                return "already-done"
            _emit(rt, call, StepState.STARTED, result={"worker": rt.instance})
            began = time.monotonic()
            result = _run(rt, call)
            if isinstance(result, str):
                return result
            # how long the work itself took, so coordination overhead can be told apart
            result["run_us"] = int((time.monotonic() - began) * 1e6)
            rt.client.set(done_key, json.dumps(result), ex=DONE_TTL)
            _emit(rt, call, StepState.SUCCEEDED, result=result)
            observe_step(call.step_kind, "succeeded")
            log.info("step.succeeded", **result)
            return "succeeded"
        finally:
            lease.release()
    finally:
        clear_context()


def _run(rt: HostRuntime, call: StepCall) -> Result | str:
    try:
        return run_step(context_for(rt, call), call.step_kind, call.args_json)
    except TransferCancelled as exc:
        _emit(rt, call, StepState.CANCELLED, error_type=type(exc).__name__, error_message=str(exc))
        observe_step(call.step_kind, "cancelled")  # asked for: not an error
        log.info("step.cancelled")
        return "cancelled"
    except ZfleetError as exc:
        retry = is_retryable(exc)
        _emit(rt, call, StepState.FAILED, error_type=type(exc).__name__, error_message=str(exc),
              retryable=retry)  # fmt: skip
        observe_step(call.step_kind, "retrying" if retry else "failed", exc)
        log.warning("step.failed", error=str(exc), error_type=type(exc).__name__, retryable=retry)
        return "failed"
    except Exception as exc:  # a bug: report it as a failure rather than lose the step
        _emit(rt, call, StepState.FAILED, error_type=type(exc).__name__,
              error_message=f"unexpected {type(exc).__name__}: {exc}")  # fmt: skip
        observe_step(call.step_kind, "failed", exc)
        log.exception("step.crashed")
        return "failed"


def make_worker_app(rt: HostRuntime, redis_url: str) -> Celery:
    """The Celery app of one host's worker, with the step and no-op tasks bound to ``rt``."""
    app = make_app(redis_url)
    connect_signals()

    @app.task(name=STEP_TASK, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def step(payload: dict[str, Any]) -> str:
        try:
            call = from_dict(payload, StepCall)
        except MessageError as exc:
            log.error("step.unreadable", error=str(exc))
            return "unreadable"
        return execute(rt, call)

    # keeps its result: bench/coordination.py times raw round trips with it
    @app.task(name=NOOP_TASK, acks_late=True, ignore_result=False)  # type: ignore[untyped-decorator]
    def noop(x: int = 0) -> int:
        return x

    return app


def store_opener(
    passphrase: str | None, s3: Mapping[str, Any] | None = None
) -> Callable[[Mapping[str, Any]], Any]:
    """Opens (once per location: unlocking costs a key derivation) the repositories of the
    fleet config's stores, described as ``{name, url, endpoint}``."""
    lock = threading.Lock()
    opened: dict[str, Any] = {}

    def open_store(desc: Mapping[str, Any]) -> Any:
        from protocol.errors import ConfigError
        from workers.cloud.repo import Repository, Secret
        from workers.cloud.targets import open_target

        url = str(desc["url"])
        with lock:
            if url not in opened:
                if passphrase is None:
                    raise ConfigError("this worker needs ZFLEET_PASSPHRASE to open object stores")
                extra = dict(s3 or {})
                if desc.get("endpoint"):
                    extra["endpoint_url"] = desc["endpoint"]
                target = open_target(url, **extra) if url.startswith("s3://") else open_target(url)
                opened[url] = Repository.open(target, Secret(passphrase=passphrase))
            return opened[url]

    return open_store
