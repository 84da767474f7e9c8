"""The worker's Celery task: decode a StepCall, check it is still wanted, run it, report it.

``zfleet.step`` is thin: :func:`execute` does the work with its collaborators passed in (a
:class:`HostRuntime`), so it runs the same under Celery, in a test, or in the embedded demo.

Before acting it checks, in order: that the call is for this host and its arguments are a step
message this worker can run; that its fencing epoch is not older than its scope's current one (a
step of a job from before a failover never writes); that this attempt is still the step's current
one (a message redelivered long after a retry is dropped); that the step did not already succeed
(then it only reports again); and that no other copy of the step is running (a run lease, kept
alive while the step runs, taken over atomically from a dead earlier instance of this worker).
Every outcome becomes a StepEvent on the events stream; nothing escapes as an exception into
Celery, which would only retry blindly.

Time limits: Celery's do not apply on the threads pool the worker ships with, so a watchdog of
our own enforces each step's limit: at the limit the step is asked to stop (its cancel check
turns true, a running transfer's send is cut, resumable), and if it has not returned a grace
period later the attempt is reported failed and its late result, if any, is discarded.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import redis
import structlog
from celery import Celery

from bus import keys, records
from bus.events import publish
from bus.lease import Cas
from bus.queues import NOOP_TASK, STEP_TASK
from protocol.errors import MessageError, TransferCancelled, TransferInterrupted, ZfleetError
from protocol.log import bind_context, clear_context
from protocol.messages import StepCall, StepEvent, StepState, from_dict
from protocol.steps import StepArgs, StoreRef, args_from_bytes
from protocol.version import zfleet_version
from protocol.zfs import InventoryReport
from workers.celery_app import HARD_TIME_LIMIT, connect_signals, make_app
from workers.metrics import observe_step, observe_transfer
from workers.steps import Result, StepContext, is_retryable, run_step
from workers.zfs.base import ZfsBackend

log = structlog.get_logger(__name__)

HEARTBEAT_EVERY: Final = 2.0
HEARTBEAT_TTL: Final = records.HEARTBEAT_TTL
RUNNING_TTL: Final = 30  # the per-step run lease; renewed while the step runs
CANCEL_POLL: Final = 1.0
WATCHDOG_GRACE: Final = 60.0  # after the limit, how long a step gets to stop by itself


@dataclass
class HostRuntime:
    """Everything a host's steps need: its backend, Redis, and its data plane."""

    host: str
    backend: ZfsBackend
    client: redis.Redis[bytes]
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    stream_address: tuple[str, int] | None = None
    push: Callable[..., Any] | None = None
    open_store: Callable[[StoreRef], Any] | None = None
    step_time_limit: float = float(HARD_TIME_LIMIT)
    watchdog_grace: float = WATCHDOG_GRACE
    version: str | None = field(default_factory=zfleet_version)
    started: float = field(default_factory=time.time)
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None

    # -- heartbeat ---------------------------------------------------------------------------
    def beat_once(self) -> None:
        records.put_beat(self.client, records.WorkerBeat(
            host=self.host, instance=self.instance, started=self.started, beat=time.time(),
            stream=self.stream_address, version=self.version))  # fmt: skip

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
            records.drop_beat(self.client, self.host)

    # -- what steps may use --------------------------------------------------------------------
    def peer_address(self, host: str) -> tuple[str, int]:
        beat = records.get_beat(self.client, host)
        if beat is None or beat.stream is None:
            raise TransferInterrupted(f"worker {host} is not running (no heartbeat)")
        return beat.stream


REPORT_PATIENCE: Final = 120.0  # seconds a step's report waits for Redis to come back


def _patiently(what: str, fn: Callable[[], None], patience: float = REPORT_PATIENCE) -> None:
    """Run ``fn`` (a write to Redis), again while Redis is unreachable, up to ``patience``
    seconds: a step that did its work while Redis restarted must still say so, or the job would
    wait for an outcome that never comes (the step's worker is alive and still holds it)."""
    deadline = time.monotonic() + patience
    waited = False
    while True:
        try:
            fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            if time.monotonic() >= deadline:
                raise
            if not waited:
                log.warning("step.report_waiting_for_redis", report=what, error=str(exc))
                waited = True
            time.sleep(0.5)
            continue
        if waited:
            log.info("step.report_sent", report=what)
        return


def _emit(rt: HostRuntime, call: StepCall, state: StepState, **kw: Any) -> None:
    event = StepEvent(job_id=call.job_id, step_id=call.step_id, attempt=call.attempt,
                      host=rt.host, state=state, at=time.time(), **kw)  # fmt: skip
    # a repeated event after a lost reply is harmless: the coordinator reads one per attempt
    _patiently(f"event {state.value}", lambda: publish(rt.client, event))


class _RunLease:
    """Held while the step runs here, renewed in the background; lost on SIGKILL by expiry."""

    def __init__(self, rt: HostRuntime, call: StepCall) -> None:
        self.rt, self.key = rt, keys.running(call.job_id, call.step_id)
        self.token = f"{rt.instance}:{call.attempt}"
        self.cas = Cas(rt.client)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait: float = RUNNING_TTL * 2) -> bool:
        """Take the lease; a holder that is an earlier instance of this host's worker is dead
        (one worker per host), so its lease is taken over, atomically from exactly that holder;
        our own other thread is waited for."""
        ttl_ms = RUNNING_TTL * 1000
        deadline = time.monotonic() + wait
        while not self.cas.take(self.key, self.token, ttl_ms):
            holder = self.cas.holder(self.key)
            if holder is not None and holder.split(":", 1)[0] != self.rt.instance:
                if self.cas.swap(self.key, holder, self.token, ttl_ms):
                    log.info("step.lease_taken_over", previous=holder)
                    break
                continue  # it changed under us: look again
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)

        def renew() -> None:
            while not self._stop.wait(RUNNING_TTL / 3):
                try:
                    if not self.cas.renew(self.key, self.token, ttl_ms):
                        log.warning("step.lease_lost", key=self.key)
                        return
                except redis.RedisError:
                    continue

        self._thread = threading.Thread(target=renew, name="zfleet-run-lease", daemon=True)
        self._thread.start()
        return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        with contextlib.suppress(redis.RedisError):
            self.cas.release(self.key, self.token)


class _Watchdog:
    """A step's time limit: ``expired`` turns true at the limit (the step's cancel check reads
    it); ``abandoned`` is set when the step still runs a grace period later."""

    def __init__(self, limit: float, grace: float, on_abandon: Callable[[], None]) -> None:
        self.deadline = time.monotonic() + limit
        self.limit, self.grace = limit, grace
        self.abandoned = threading.Event()
        self._done = threading.Event()
        self._on_abandon = on_abandon
        self._thread = threading.Thread(target=self._watch, name="zfleet-watchdog", daemon=True)
        self._thread.start()

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def _watch(self) -> None:
        if self._done.wait(max(0.0, self.deadline - time.monotonic()) + self.grace):
            return
        self.abandoned.set()
        self._on_abandon()

    def finish(self) -> None:
        self._done.set()


def context_for(rt: HostRuntime, call: StepCall, expired: Callable[[], bool]) -> StepContext:
    """The StepContext for one call: Redis-backed cancel, inventory, progress and delivery."""
    last_check = [0.0, False]

    def cancelled() -> bool:
        if expired():
            return True
        now = time.monotonic()
        if now - float(last_check[0]) >= CANCEL_POLL:
            last_check[0] = now
            last_check[1] = records.cancel_requested(rt.client, call.job_id)
        return bool(last_check[1])

    def save_inventory(report: InventoryReport) -> None:
        records.put_inventory(rt.client, report, call.job_id)

    def delivered(target: str) -> bool:
        return records.delivered(rt.client, call.job_id, call.step_id, target)

    def mark_delivered(target: str) -> None:
        records.mark_delivered(rt.client, call.job_id, call.step_id, target, call.attempt)

    def progress(target: str, done: int, total: int | None) -> None:
        entry = records.Progress(step_id=call.step_id, target=target, done=done, total=total,
                                 at=time.time())  # fmt: skip
        records.put_progress(rt.client, call.job_id, entry)

    return StepContext(
        host=rt.host, backend=rt.backend, job_id=call.job_id, step_id=call.step_id,
        attempt=call.attempt, cancelled=cancelled, save_inventory=save_inventory,
        peer_address=rt.peer_address, delivered=delivered, mark_delivered=mark_delivered,
        progress=progress, push=_push_with_cancel(rt.push, cancelled), open_store=rt.open_store,
        save_record=lambda data: records.put_step_record(rt.client, call.job_id, call.step_id,
                                                         data),
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
    bind_context(job_id=call.job_id, step_id=call.step_id, attempt=call.attempt, host=rt.host)
    try:
        if call.host != rt.host:
            log.error("step.wrong_host", wanted=call.host)
            return "wrong-host"
        try:
            args = args_from_bytes(call.args)
        except MessageError as exc:
            _emit(rt, call, StepState.FAILED, error_type=type(exc).__name__,
                  error_message=str(exc))  # fmt: skip
            log.error("step.unreadable_args", error=str(exc))
            return "unreadable"
        bind_context(kind=args.KIND)
        if call.fence and records.current_epoch(rt.client, call.fence) > call.epoch:
            # a step planned before a failover: never let it write
            msg = f"epoch {call.epoch} of {call.fence!r} is fenced off (a failover happened)"
            _emit(rt, call, StepState.FAILED, error_type="Fenced", error_message=msg)
            log.warning("step.fenced", epoch=call.epoch, fence=call.fence)
            return "fenced"
        if not records.attempt_wanted(rt.client, call.job_id, call.step_id, call.attempt):
            log.info("step.stale")
            return "stale"
        prior = records.done_result(rt.client, call.job_id, call.step_id)
        if prior is not None:
            _emit(rt, call, StepState.SUCCEEDED, result=prior)
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
            prior = records.done_result(rt.client, call.job_id, call.step_id)
            if prior is not None:  # the attempt we waited for finished the work
                _emit(rt, call, StepState.SUCCEEDED, result=prior)
                return "already-done"
            _emit(rt, call, StepState.STARTED, result={"worker": rt.instance})
            return _run_watched(rt, call, args)
        finally:
            lease.release()
    finally:
        clear_context()


def _run_watched(rt: HostRuntime, call: StepCall, args: StepArgs) -> str:
    limit = call.time_limit if call.time_limit > 0 else rt.step_time_limit

    def abandon() -> None:
        msg = f"step ran past its time limit ({limit:g} s) and did not stop"
        _emit(rt, call, StepState.FAILED, error_type="StepTimeLimit", error_message=msg)
        observe_step(args.KIND, "failed")
        log.error("step.abandoned", limit=limit)

    dog = _Watchdog(limit, rt.watchdog_grace, abandon)
    began = time.monotonic()
    try:
        result = _run(rt, call, args, dog)
    finally:
        dog.finish()
    if dog.abandoned.is_set():
        return "abandoned"  # already reported; a late outcome must not overwrite it
    if isinstance(result, str):
        return result
    # how long the work itself took, so coordination overhead can be told apart
    result["run_us"] = int((time.monotonic() - began) * 1e6)
    _patiently("done record", lambda: records.record_done(rt.client, call.job_id, call.step_id,
                                                          result))  # fmt: skip
    _emit(rt, call, StepState.SUCCEEDED, result=result)
    observe_step(args.KIND, "succeeded")
    log.info("step.succeeded", **result)
    return "succeeded"


def _run(rt: HostRuntime, call: StepCall, args: StepArgs, dog: _Watchdog) -> Result | str:
    def expired() -> bool:
        return dog.expired

    try:
        return run_step(context_for(rt, call, expired), args)
    except TransferCancelled as exc:
        if dog.abandoned.is_set():
            return "abandoned"
        if dog.expired:
            msg = f"step stopped at its time limit ({dog.limit:g} s)"
            _emit(rt, call, StepState.FAILED, error_type="StepTimeLimit", error_message=msg)
            observe_step(args.KIND, "failed", exc)
            log.warning("step.time_limit", limit=dog.limit)
            return "failed"
        _emit(rt, call, StepState.CANCELLED, error_type=type(exc).__name__, error_message=str(exc))
        observe_step(args.KIND, "cancelled")  # asked for: not an error
        log.info("step.cancelled")
        return "cancelled"
    except ZfleetError as exc:
        if dog.abandoned.is_set():
            return "abandoned"
        retry = is_retryable(exc)
        _emit(rt, call, StepState.FAILED, error_type=type(exc).__name__, error_message=str(exc),
              retryable=retry)  # fmt: skip
        observe_step(args.KIND, "retrying" if retry else "failed", exc)
        log.warning("step.failed", error=str(exc), error_type=type(exc).__name__, retryable=retry)
        return "failed"
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis went away under the step (a restart): steps are idempotent, so try it again
        if dog.abandoned.is_set():
            return "abandoned"
        _emit(rt, call, StepState.FAILED, error_type="RedisUnavailable", retryable=True,
              error_message=f"Redis was unreachable during the step: {exc}")  # fmt: skip
        observe_step(args.KIND, "retrying")
        log.warning("step.redis_lost", error=str(exc))
        return "failed"
    except Exception as exc:  # a bug: report it as a failure rather than lose the step
        if dog.abandoned.is_set():
            return "abandoned"
        _emit(rt, call, StepState.FAILED, error_type=type(exc).__name__,
              error_message=f"unexpected {type(exc).__name__}: {exc}")  # fmt: skip
        observe_step(args.KIND, "failed", exc)
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
) -> Callable[[StoreRef], Any]:
    """Opens (once per location: unlocking costs a key derivation) the repositories of the
    fleet config's stores, described as ``{name, url, endpoint}``."""
    lock = threading.Lock()
    opened: dict[str, Any] = {}

    def open_store(desc: StoreRef) -> Any:
        from protocol.errors import ConfigError
        from workers.cloud.blobstore import open_blob_store
        from workers.cloud.repo import RepoKey, Repository

        url = desc.url
        with lock:
            if url not in opened:
                if passphrase is None:
                    raise ConfigError("this worker needs ZFLEET_PASSPHRASE to open object stores")
                extra = dict(s3 or {})
                if desc.endpoint:
                    extra["endpoint_url"] = desc.endpoint
                s3_url = url.startswith("s3://")
                target = open_blob_store(url, **extra) if s3_url else open_blob_store(url)
                opened[url] = Repository.open(target, RepoKey(passphrase=passphrase))
            return opened[url]

    return open_store
