"""The coordinator loop: hold the lease, apply step events, submit ready steps, start schedules.

One tick: renew the leader lease; read step events (claiming what a dead coordinator left
pending) and store their effect together with the XACK; then for every active job apply cancel
requests, notice steps whose worker went away, run coordinator-side steps (``plan``), take the
job's dataset locks, and submit ready steps to their host's queue: all of a job's ready steps
at once. Through a :class:`QueueSubmitter` (the broker is the coordinator's own Redis) the task
messages and the steps stored as sent are one transaction, so a coordinator killed at any point
has either sent and stored them or done neither (they are still pending for the next leader).
Through any other submitter each submission is stored before it is sent and marked sent after,
so a coordinator killed in between re-sends it (the worker recognises a step it already did)
instead of losing it.

Usable in-process: ``Coordinator(...).run(stop_event)`` in a thread, or ``tick()`` by hand.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import redis
import structlog

from bus import keys, records, taskqueue
from bus.events import Delivery, EventConsumer
from bus.queues import STEP_TASK, queue_for
from coordinator import engine, jobkinds
from coordinator.config import FleetConfig, parse_config, store_ref
from coordinator.engine import Job, RetryPolicy, Step
from coordinator.jobstore import JobStore
from coordinator.lease import LeaderLease
from coordinator.locks import DatasetLocks
from coordinator.schedule import due
from protocol.errors import JobError, LeaseLost, RedisUnavailable, ZfleetError
from protocol.grants import new_grant, sign_grant
from protocol.messages import StepCall, to_dict
from protocol.steps import StepArgs, TransferArgs, args_to_bytes

log = structlog.get_logger(__name__)

Submit = Callable[[str, StepCall], None]
# A restarted worker gets this long to pick up messages queued before it came back.
LOST_GRACE: Final = 10.0
# A grant must outlive the queue wait and the stream's start, not the whole stream.
GRANT_TTL: Final = 6 * 3600.0
# How often the leader trims acknowledged events and forgets expired jobs.
HOUSEKEEPING_EVERY: Final = 60.0
# How often it reads the heartbeats of the hosts running steps (a worker beats every 2 s).
LOST_CHECK_EVERY: Final = 1.0


def celery_submitter(app: Any) -> Submit:
    """Send step calls as ``zfleet.step`` tasks to the host's queue, one ``send_task`` each."""

    def submit(host: str, call: StepCall) -> None:
        app.send_task(STEP_TASK, args=[to_dict(call)], queue=queue_for(host))

    return submit


class QueueSubmitter:
    """Step calls as ``zfleet.step`` task messages on the host queues of the broker that is
    ``client``'s Redis, which must be the coordinator's own: it writes a batch's messages in
    the transaction that stores its steps as sent (:mod:`bus.taskqueue`)."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.client = client

    def messages(self, calls: Iterable[tuple[str, StepCall]]) -> list[tuple[str, bytes]]:
        """``(queue, message)`` for each ``(host, call)``."""
        return [self.message(host, call) for host, call in calls]

    def message(self, host: str, call: StepCall) -> tuple[str, bytes]:
        queue = queue_for(host)
        text = taskqueue.task_message(STEP_TASK, [to_dict(call)], queue,
                                      argsrepr=f"{call.job_id}/{call.step_id}#{call.attempt}")
        return queue, text  # fmt: skip

    def __call__(self, host: str, call: StepCall) -> None:
        pipe = self.client.pipeline(transaction=False)
        taskqueue.push(pipe, self.messages([(host, call)]))
        pipe.execute()


@dataclass
class _Config:
    text: str
    parsed: FleetConfig


_IN_FLIGHT: Final = (engine.SUBMITTED, engine.RUNNING)
# Task messages built ahead per tick at most (each ~0.1-0.3 ms), and how long one stays usable
# (its grants are signed for GRANT_TTL from when it was built).
BUILD_AHEAD_PER_TICK: Final = 256
# Steps submitted per tick at most: a wide fan-out goes out over a few ticks, each one short
# enough to renew the lease and to read events in between.
SUBMIT_PER_TICK: Final = 1000
EARLY_MAX_AGE: Final = 60.0
# Long loops of a tick (building messages, advancing jobs) renew the lease every this many
# items when it is due: on a starved machine a wide tick may outlast the lease's ttl, and a
# leader that lost it mid-tick loads everything again, and may lose it again, forever.
LEASE_CHECK_EVERY: Final = 64


@dataclass(frozen=True)
class _Early:
    """A step's task message built before the step was ready (Coordinator._build_ahead)."""

    call: StepCall
    args: StepArgs
    built: float
    message: tuple[str, bytes]

    def fits(self, job: Job, step: Step, attempt: int | None = None) -> bool:
        """Still the message this step's attempt would get now."""
        c = self.call
        return (
            c.attempt == (step.attempt if attempt is None else attempt)
            and c.host == step.host
            and self.args is step.args
            and c.epoch == int(job.options.get("epoch", 0))
            and c.fence == str(job.options.get("fence", ""))
            and c.time_limit == float(job.options.get("step_time_limit", 0.0))
            and time.monotonic() - self.built < EARLY_MAX_AGE
        )


@dataclass
class _View:
    """What a tick reads of Redis before it acts (one round trip; see Coordinator._view)."""

    active: list[str]
    known: set[str]  # jobs that were in memory: their cancel flag was read
    cancels: set[str]
    # host -> heartbeat hash (empty: gone); None on the ticks that do not look for lost steps
    beats: dict[str, dict[bytes, bytes]] | None = None


@dataclass
class _Writes:
    """What a tick stores at its end: steps by job (None: all), acknowledgements, sends."""

    jobs: dict[str, Job] = field(default_factory=dict)
    steps: dict[str, dict[str, Step] | None] = field(default_factory=dict)
    acks: list[bytes] = field(default_factory=list)
    submit: list[tuple[Job, list[Step]]] = field(default_factory=list)
    sent: int = 0
    more: bool = False  # ready steps were left for the next tick

    def touch(self, job: Job, steps: Iterable[Step] | None = None) -> None:
        """Store ``job``'s meta and ``steps`` (all of them when None)."""
        self.jobs[job.id] = job
        if steps is None:
            self.steps[job.id] = None
            return
        have = self.steps.setdefault(job.id, {})
        if have is not None:
            have.update((s.id, s) for s in steps)


class Coordinator:
    """Drives every active job; only the holder of the leader lease acts."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        submit: Submit,
        *,
        config_path: str | None = None,
        owner: str | None = None,
        lease_ttl_ms: int = 10_000,
        policy: RetryPolicy | None = None,
        block_ms: int = 500,
        grant_secret: bytes | None = None,
        grant_ttl: float = GRANT_TTL,
        job_retention: float | None = None,
    ) -> None:
        self.r = client
        self.submit = submit
        self.owner = owner or f"coordinator-{uuid.uuid4().hex[:8]}"
        self.store = JobStore(client) if job_retention is None else JobStore(client, job_retention)
        self.events = EventConsumer(client, self.owner)
        self.lease = LeaderLease(client, self.owner, lease_ttl_ms)
        self.locks = DatasetLocks(client)
        self.policy = policy or RetryPolicy()
        self.block_ms = block_ms
        self.grant_secret = grant_secret
        self.grant_ttl = grant_ttl
        self.config: _Config | None = None
        if config_path is not None:
            with open(config_path, encoding="utf-8") as fh:
                text = fh.read()
            self.config = _Config(text, parse_config(text, source=config_path))
        self._renewed = 0.0
        self._housekept = 0.0
        self._lost_checked = 0.0
        self._waiting_logged: set[str] = set()
        self._jobs: dict[str, Job] = {}
        self._early: dict[tuple[str, str], _Early] = {}
        self._hurry = False
        self._redis_run_id = ""  # the Redis process this coordinator last read (INFO run_id)
        self._watch_run_id = True  # off once the ACL refuses INFO
        self._redis_restarted: float | None = None  # when it first saw another one
        self.log = log.bind(coordinator=self.owner)

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; stand by while another coordinator holds the lease."""
        self.log.info("coordinator.started")
        try:
            while not stop.is_set():
                # Redis may fail anywhere here (down, restarting, a Sentinel failover under way):
                # a standby or a new leader waits and tries again, it never exits
                try:
                    if not self.lease.held and not self._lead():
                        stop.wait(min(1.0, self.lease.ttl_ms / 3000))
                        continue
                    self.tick()
                except LeaseLost as exc:
                    self.log.warning("coordinator.lease_lost", error=str(exc))
                    self._forget()
                except redis.RedisError as exc:
                    self.log.warning("coordinator.redis_error", error=str(exc))
                    self._forget()  # memory may be ahead of what was stored
                    stop.wait(1.0)
        finally:
            try:
                self.lease.release()
            except redis.RedisError as exc:  # it expires on its own
                self.log.warning("coordinator.lease_not_released", error=str(exc))
            self.log.info("coordinator.stopped")

    def _lead(self) -> bool:
        """Take the lease if it is free; a new leader resends what was stored but never sent."""
        if not self.lease.acquire():
            return False
        self.log.info("coordinator.leader")
        self._forget()
        self._renewed = time.monotonic()
        try:
            self.resend_unsent()
        except redis.RedisError:
            self.lease.held = False  # lead again next round, resending first
            raise
        return True

    def tick(self, now: float | None = None) -> None:
        """One round of work (the caller must hold the lease): read step events (waiting up to
        ``block_ms`` for the first), apply them and advance every active job in memory, then
        store it all in one transaction: changed steps, event acknowledgements, submissions."""
        self._keep_lease()
        view, deliveries = self._read()
        t = time.time() if now is None else now
        out = _Writes()
        self._apply_events(deliveries, out)
        for job_id in view.active:
            self._keep_lease()  # a wide job may take a while to load and advance
            try:
                self.advance(job_id, t, view, out)
            except JobError as exc:
                self.log.warning("job.unloadable", job_id=job_id, error=str(exc))
                self.r.srem(keys.JOBS_ACTIVE, job_id)
        self._store(out)
        self._hurry = self._build_ahead() or out.more
        self.start_scheduled(t, view.active)
        if time.monotonic() - self._housekept > HOUSEKEEPING_EVERY:
            self._housekept = time.monotonic()
            self.events.trim_acknowledged()
            self.store.forget_expired()

    def _keep_lease(self) -> None:
        """Renew the lease when a third of its time has passed; LeaseLost if it is gone."""
        if time.monotonic() - self._renewed > self.lease.ttl_ms / 3000:
            self.lease.renew()
            self._renewed = time.monotonic()

    def _read(self) -> tuple[_View, list[Delivery]]:
        """Step events (waiting up to ``block_ms`` for the first), the active jobs and the
        cancel requests of the jobs in memory, in one round trip; every LOST_CHECK_EVERY
        seconds also the heartbeats of the hosts running their steps, read after the events
        (a heartbeat read before could predate a restarted worker's step start)."""
        known = list(self._jobs)
        pipe = self.r.pipeline(transaction=False)
        pipe.smembers(keys.JOBS_ACTIVE)
        for job_id in known:
            pipe.exists(keys.cancel(job_id))
        # with steps left to send or messages to build ahead: only look for events
        block = 1 if self._hurry else self.block_ms
        replies, deliveries = self.events.read_after(pipe, block_ms=block)
        view = _View(
            active=sorted(m.decode() for m in replies[0]),
            known=set(known),
            cancels={j for j, flag in zip(known, replies[1:], strict=True) if flag},
        )
        if time.monotonic() - self._lost_checked >= LOST_CHECK_EVERY:
            self._lost_checked = time.monotonic()
            hosts = sorted({s.host for j in self._jobs.values() for s in j.steps.values()
                            if s.host and s.status in _IN_FLIGHT})  # fmt: skip
            pipe = self.r.pipeline(transaction=False)
            for host in hosts:
                pipe.hgetall(keys.worker(host))
            view.beats = dict(zip(hosts, pipe.execute(), strict=True))
            if self._watch_run_id:
                self._note_redis(self._read_run_id())
        return view, deliveries

    def _read_run_id(self) -> str:
        """The Redis process's run id, or "" where the ACL denies INFO (it is in @dangerous,
        which the ACL of docs/operations.md leaves out unless it adds +info): the coordinator then
        works on without noticing restarts, and says so once."""
        try:
            info = self.r.info("server")
        except redis.exceptions.NoPermissionError:
            self._watch_run_id = False
            self.log.warning("coordinator.redis_restart_watch_off",
                             why="the Redis user may not run INFO; grant it +info")  # fmt: skip
            return ""
        return str(info.get("run_id", ""))

    def _note_redis(self, run_id: str) -> None:
        """Notice a Redis restart (its run id changes): a task message a worker had popped from
        its queue but not yet recorded as unacknowledged (two commands in kombu) is gone with
        the old process, and its step would wait forever (see _check_lost)."""
        if self._redis_run_id and run_id and run_id != self._redis_run_id:
            self._redis_restarted = time.time()
            self.log.warning("coordinator.redis_restarted", run_id=run_id)
        if run_id:
            self._redis_run_id = run_id

    def _store(self, out: _Writes) -> None:
        """Write what the tick changed and send what it submitted. Through a QueueSubmitter
        both are one transaction; otherwise submissions are stored before they are sent and
        marked sent after."""
        queued = isinstance(self.submit, QueueSubmitter)
        self._keep_lease()  # a long tick must not write once another coordinator leads
        pipe = self.r.pipeline(transaction=True)
        if isinstance(self.submit, QueueSubmitter) and out.submit:
            messages: list[tuple[str, bytes]] = []
            for job, batch in out.submit:
                for step in batch:
                    messages.append(self._message(job, step))
                    if len(messages) % LEASE_CHECK_EVERY == 0:
                        self._keep_lease()
            self._keep_lease()
            sent = time.time()
            for _, batch in out.submit:
                for step in batch:
                    step.sent_at = sent
            taskqueue.push(pipe, messages)
        for job_id, job in out.jobs.items():
            steps = out.steps[job_id]
            self.store.save(job, None if steps is None else steps.values(), pipe)
        self.events.ack(out.acks, pipe)
        if len(pipe):
            pipe.execute()
        if not queued and out.submit:
            pipe = self.r.pipeline(transaction=True)
            for job, batch in out.submit:
                for step in batch:
                    self.submit(step.host or "", self._call(job, step))
                    step.sent_at = time.time()
                self.store.save(job, batch, pipe)
            pipe.execute()
        for job, batch in out.submit:
            for step in batch:
                self.log.info("step.submitted", job_id=job.id, step_id=step.id, host=step.host,
                              kind=step.kind, attempt=step.attempt)  # fmt: skip
        for job in out.jobs.values():
            if job.done:
                self._finish(job)

    # -- events ----------------------------------------------------------------------------
    def _apply_events(self, deliveries: list[Delivery], out: _Writes) -> None:
        by_job: dict[str, list[Delivery]] = {}
        for d in deliveries:
            if d.event is None:
                out.acks.append(d.entry_id)
            else:
                by_job.setdefault(d.event.job_id, []).append(d)
        for job_id, items in by_job.items():
            out.acks.extend(d.entry_id for d in items)
            try:
                job = self._job(job_id)
            except JobError:
                continue
            changed: dict[str, Step] = {}
            now = time.time()
            before = {sid: st.status for sid, st in job.steps.items()}
            for d in items:
                assert d.event is not None
                if engine.apply_event(job, d.event, self.policy, now):
                    step = job.steps[d.event.step_id]
                    changed[step.id] = step
                    self.log.info("step.event", job_id=job.id, step_id=step.id,
                                  state=d.event.state.value, attempt=d.event.attempt,
                                  error=d.event.error_message)  # fmt: skip
            # blocking may have changed other steps too: write every step whose state moved
            changed.update({sid: st for sid, st in job.steps.items() if before[sid] != st.status})
            out.touch(job, changed.values())

    # -- jobs ------------------------------------------------------------------------------
    def advance(self, job_id: str, now: float, view: _View, out: _Writes) -> None:
        """Move one job forward: cancel, lost workers, coordinator steps, locks, submissions."""
        job = self._job(job_id)
        if job.done:
            out.touch(job)
            return
        if job.id in view.known:
            cancel = job.id in view.cancels
        else:
            cancel = self.store.cancel_requested(job.id)
        if not job.cancel_requested and cancel:
            engine.cancel(job, now)
            self.log.info("job.cancelling", job_id=job.id)
            out.touch(job)
        self._check_lost(job, now, view, out)
        batch: list[Step] = []
        ready = engine.ready_steps(job, now)
        while ready and not job.done:
            local = [s for s in ready if s.host is None]
            for step in ready:
                if step.host is None:
                    self._run_local(job, step, now, out)
                elif out.sent >= SUBMIT_PER_TICK:
                    out.more = True  # the rest next tick, at once: a tick stays short
                elif not step.writes or self._locked(job, view, out):
                    engine.mark_submitted(step, now)
                    batch.append(step)
                    out.sent += 1
            # a local step (plan) adds steps that may be ready now: do not wait a tick for them
            ready = engine.ready_steps(job, now) if local else []
        if batch:
            out.submit.append((job, batch))
            out.touch(job, batch)
        if job.done:
            out.touch(job)

    def _call(self, job: Job, step: Step, attempt: int | None = None) -> StepCall:
        """The call of ``attempt`` (default: the step's current one)."""
        assert step.host is not None
        attempt = step.attempt if attempt is None else attempt
        args = self._with_grants(job, step.id, attempt, step.args)
        return StepCall(
            job_id=job.id, step_id=step.id, attempt=attempt, host=step.host,
            args=args_to_bytes(args), epoch=int(job.options.get("epoch", 0)),
            fence=str(job.options.get("fence", "")),
            time_limit=float(job.options.get("step_time_limit", 0.0)),
        )  # fmt: skip

    # -- messages built ahead ----------------------------------------------------------------
    def _message(self, job: Job, step: Step) -> tuple[str, bytes]:
        """The step's task message: the one built ahead when it still fits, else a new one."""
        assert isinstance(self.submit, QueueSubmitter)
        early = self._early.pop((job.id, step.id), None)
        if early is not None and early.fits(job, step):
            return early.message
        return self.submit.message(step.host or "", self._call(job, step))

    def _build_ahead(self, limit: int = BUILD_AHEAD_PER_TICK) -> bool:
        """Build the task messages of steps the next events may make ready (each dependency
        succeeded or in flight) while the loop would only wait, so that sending them costs
        the transaction alone. Returns True when ``limit`` cut the work short."""
        if not isinstance(self.submit, QueueSubmitter):
            return False
        built = 0
        for job in self._jobs.values():
            # a coordinator-side step may still change the job's options (a failover's epoch)
            if job.done or job.cancel_requested or any(
                st.host is None and st.status not in engine.TERMINAL for st in job.steps.values()
            ):
                continue
            for step in job.steps.values():
                if step.status != engine.PENDING or step.host is None:
                    continue
                early = self._early.get((job.id, step.id))
                if early is not None and early.fits(job, step, attempt=step.attempt + 1):
                    continue
                deps = [job.steps[d].status for d in step.deps]
                if not deps or not all(d == engine.SUCCEEDED or d in _IN_FLIGHT for d in deps):
                    continue
                if built >= limit:
                    return True
                if built % LEASE_CHECK_EVERY == 0:
                    self._keep_lease()
                call = self._call(job, step, step.attempt + 1)
                self._early[(job.id, step.id)] = _Early(
                    call=call, args=step.args, built=time.monotonic(),
                    message=self.submit.message(step.host, call))  # fmt: skip
                built += 1
        return False

    def _with_grants(self, job: Job, step_id: str, attempt: int, args: StepArgs) -> StepArgs:
        """A transfer's arguments with a grant per peer, signed for this attempt only, and
        each store target's location; any other step's arguments as they are."""
        if not isinstance(args, TransferArgs):
            return args
        stores = job.options.get("stores", {})
        targets = []
        for t in args.targets:
            if t.is_store:
                desc = stores.get(t.host[len("store:") :])
                ref = None if desc is None else store_ref(desc)
                targets.append(dataclasses.replace(t, store=ref))
                continue
            if self.grant_secret is None:
                targets.append(t)
                continue
            grant = new_grant(
                transfer_id=f"{job.id}/{step_id}/{attempt}/{t.host}", host=t.host,
                dataset=t.dataset, fromguid=args.from_guid, toguid=args.to_guid,
                ttl=self.grant_ttl, force=t.force,
            )  # fmt: skip
            targets.append(dataclasses.replace(t, grant=sign_grant(self.grant_secret, grant)))
        return dataclasses.replace(args, targets=tuple(targets))

    def resend_unsent(self) -> None:
        """After taking the lease: send what a dead coordinator stored but never sent."""
        out = _Writes()
        for job_id in self.store.active_ids():
            self._keep_lease()
            try:
                job = self._job(job_id)
            except JobError:
                continue
            unsent = [s for s in job.steps.values()
                      if s.status == engine.SUBMITTED and s.sent_at is None and s.host]  # fmt: skip
            for step in unsent:
                self.log.info("step.resend", job_id=job.id, step_id=step.id)
            if unsent:
                out.submit.append((job, unsent))
                out.touch(job, unsent)
        self._store(out)

    def _run_local(self, job: Job, step: Step, now: float, out: _Writes) -> None:
        """Run a coordinator-side step (sync's ``plan``) through the job's kind."""
        engine.mark_submitted(step, now)
        try:
            handler = jobkinds.get(job.kind).local_steps.get(step.kind)
            if handler is None:
                raise JobError(f"job kind {job.kind!r} has no coordinator step {step.kind!r}")
            result = handler(self.store, job, step)
            engine.finish_step(step, engine.SUCCEEDED, time.time(), result=result)
        except RedisUnavailable as exc:
            raise redis.ConnectionError(str(exc)) from exc  # as below: the tick is lost
        except ZfleetError as exc:
            engine.finish_step(step, engine.FAILED, time.time(), error=str(exc),
                               error_type=type(exc).__name__)  # fmt: skip
        except redis.RedisError:
            raise  # Redis lost mid-step: the tick is lost and the step runs again, not failed
        except Exception as exc:  # a planner bug fails this job, not the coordinator
            self.log.exception("local_step.crashed", job_id=job.id, step_id=step.id)
            engine.finish_step(step, engine.FAILED, time.time(),
                               error=f"internal error: {type(exc).__name__}: {exc}",
                               error_type=type(exc).__name__)  # fmt: skip
        engine.settle(job, time.time())
        out.touch(job)

    def _locked(self, job: Job, view: _View, out: _Writes) -> bool:
        if job.options.get("locked"):
            return True
        resources = sorted({w for s in job.steps.values() for w in s.writes})
        active = set(view.active)
        conflicts = self.locks.acquire_all(job.id, resources, alive=lambda j: j in active)
        if conflicts:
            if job.id not in self._waiting_logged:
                self._waiting_logged.add(job.id)
                self.log.info("job.waiting_for_lock", job_id=job.id, held_by=conflicts)
            return False
        job.options["locked"] = True
        job.options["locks"] = resources
        out.touch(job, [])
        return True

    def _check_lost(self, job: Job, now: float, view: _View, out: _Writes) -> None:
        """Give a new attempt to steps whose worker died or restarted while it held them."""
        if view.beats is None:
            return
        for step in job.steps.values():
            if step.host is None or step.status not in _IN_FLIGHT:
                continue
            if step.host not in view.beats:  # a job loaded this tick
                view.beats[step.host] = self.r.hgetall(keys.worker(step.host))
            beat = view.beats[step.host]
            instance = beat.get(b"instance", b"").decode()
            started = float(beat.get(b"started", b"0"))
            reason = None
            if step.status == engine.RUNNING:
                ran_on = str(step.result.get("worker", ""))
                if not beat:
                    reason = f"worker {step.host} stopped heartbeating"
                elif ran_on and instance != ran_on:
                    reason = f"worker {step.host} restarted during the step"
            elif (beat and step.sent_at is not None and started > step.sent_at
                  and now - started > LOST_GRACE):  # fmt: skip
                reason = f"worker {step.host} restarted and never picked the step up"
            elif (step.sent_at is not None and self._redis_restarted is not None
                  and step.sent_at < self._redis_restarted
                  and now - self._redis_restarted > LOST_GRACE):  # fmt: skip
                # its message may have gone with the old Redis; a new attempt is safe, the old
                # one's message (if it was not lost) is refused by the worker as not current
                reason = "Redis restarted after the step was sent and no worker picked it up"
            if reason:
                self.log.warning("step.lost", job_id=job.id, step_id=step.id, reason=reason)
                engine.retry_lost(job, step.id, reason, self.policy, now)
                out.touch(job)

    def _forget(self) -> None:
        """Drop what memory holds of the jobs (Redis is read again), and read again the events
        the lost tick had read: their effects went with it."""
        self.events.reclaim()
        self._jobs.clear()
        self._early.clear()
        self._hurry = False

    def _job(self, job_id: str) -> Job:
        """The job, from this leader's memory: while it holds the lease it is the only writer
        of running jobs (the CLI only creates them), so Redis is read once per job."""
        job = self._jobs.get(job_id)
        if job is None:
            job = self.store.load(job_id)
            self._jobs[job_id] = job
        return job

    def _finish(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        for key in [k for k in self._early if k[0] == job.id]:
            del self._early[key]
        if job.options.get("locks"):
            self.locks.release_all(job.id, job.options["locks"])
        self.r.srem(keys.JOBS_ACTIVE, job.id)
        self.log.info("job.finished", job_id=job.id, status=job.status, error=job.error)

    # -- schedules -------------------------------------------------------------------------
    def start_scheduled(self, now: float, active: list[str] | None = None) -> None:
        if self.config is None:
            return
        names = [n for n, j in self.config.parsed.jobs.items() if j.schedule is not None]
        if not names:
            return
        ids = self.store.active_ids() if active is None else active
        running = {j.name for j in (self._load_quiet(i) for i in ids) if j}
        last = records.schedule_last_runs(self.r, names)
        starts = jobkinds.get("sync").scheduled
        schedules = {n: j.schedule for n, j in self.config.parsed.jobs.items()}
        for name in due(schedules, last, running, now):
            if starts is None:
                break
            job = starts(self.config.text, self.config.parsed, name, now)
            self.store.create(job)
            records.record_schedule_run(self.r, name, now)
            self.log.info("job.scheduled", job_id=job.id, job=name)

    def _load_quiet(self, job_id: str) -> Job | None:
        try:
            return self._job(job_id)
        except JobError:
            return None


def wait_job(store: JobStore, job_id: str, *, timeout: float, poll: float = 0.2,
             on_poll: Callable[[Job], None] | None = None) -> Job:  # fmt: skip
    """Wait until the job is finished (or ``timeout`` seconds); returns its last state.
    Without ``on_poll`` each poll reads the job's status alone and the whole job is loaded
    once, at the end: loading a 10,000-step job five times a second starved the coordinator
    of the same process."""
    deadline = time.monotonic() + timeout
    while True:
        if on_poll is None and time.monotonic() < deadline and not store.finished(job_id):
            time.sleep(poll)
            continue
        job = store.load(job_id)
        if on_poll is not None:
            on_poll(job)
        if job.done or time.monotonic() >= deadline:
            return job
        time.sleep(poll)
