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
from dataclasses import dataclass
from typing import Any, Final

import redis
import structlog

from bus import keys, records, taskqueue
from bus.events import EventConsumer
from bus.queues import STEP_TASK, queue_for
from coordinator import engine, jobkinds
from coordinator.config import FleetConfig, parse_config, store_ref
from coordinator.engine import Job, RetryPolicy, Step
from coordinator.jobstore import JobStore
from coordinator.lease import LeaderLease
from coordinator.locks import DatasetLocks
from coordinator.schedule import due
from protocol.errors import JobError, LeaseLost, ZfleetError
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
        return [
            (queue_for(host), taskqueue.task_message(
                STEP_TASK, [to_dict(call)], queue_for(host),
                argsrepr=f"{call.job_id}/{call.step_id}#{call.attempt}"))
            for host, call in calls
        ]  # fmt: skip

    def __call__(self, host: str, call: StepCall) -> None:
        pipe = self.client.pipeline(transaction=False)
        taskqueue.push(pipe, self.messages([(host, call)]))
        pipe.execute()


@dataclass
class _Config:
    text: str
    parsed: FleetConfig


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
        self._waiting_logged: set[str] = set()
        self._jobs: dict[str, Job] = {}
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
                    self._jobs.clear()
                except redis.RedisError as exc:
                    self.log.warning("coordinator.redis_error", error=str(exc))
                    self._jobs.clear()  # memory may be ahead of what was stored
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
        self._jobs.clear()
        self._renewed = time.monotonic()
        try:
            self.resend_unsent()
        except redis.RedisError:
            self.lease.held = False  # lead again next round, resending first
            raise
        return True

    def tick(self, now: float | None = None) -> None:
        """One round of work (the caller must hold the lease)."""
        if time.monotonic() - self._renewed > self.lease.ttl_ms / 3000:
            self.lease.renew()
            self._renewed = time.monotonic()
        self.apply_events()
        t = time.time() if now is None else now
        for job_id in self.store.active_ids():
            try:
                self.advance(job_id, t)
            except JobError as exc:
                self.log.warning("job.unloadable", job_id=job_id, error=str(exc))
                self.r.srem(keys.JOBS_ACTIVE, job_id)
        self.start_scheduled(t)
        if time.monotonic() - self._housekept > HOUSEKEEPING_EVERY:
            self._housekept = time.monotonic()
            self.events.trim_acknowledged()
            self.store.forget_expired()

    # -- events ----------------------------------------------------------------------------
    def apply_events(self) -> None:
        deliveries = self.events.read(block_ms=self.block_ms)
        if not deliveries:
            return
        by_job: dict[str, list[Any]] = {}
        junk: list[bytes] = []
        for d in deliveries:
            if d.event is None:
                junk.append(d.entry_id)
            else:
                by_job.setdefault(d.event.job_id, []).append(d)
        self.events.ack(junk)
        for job_id, items in by_job.items():
            ids = [d.entry_id for d in items]
            try:
                job = self._job(job_id)
            except JobError:
                self.events.ack(ids)
                continue
            changed: dict[str, Step] = {}
            now = time.time()
            before = {sid: st.status for sid, st in job.steps.items()}
            for d in items:
                if engine.apply_event(job, d.event, self.policy, now):
                    step = job.steps[d.event.step_id]
                    changed[step.id] = step
                    self.log.info("step.event", job_id=job.id, step_id=step.id,
                                  state=d.event.state.value, attempt=d.event.attempt,
                                  error=d.event.error_message)  # fmt: skip
            # blocking may have changed other steps too: write every step whose state moved
            changed.update({sid: st for sid, st in job.steps.items() if before[sid] != st.status})
            pipe = self.r.pipeline(transaction=True)
            if changed:
                self.store.save(job, changed.values(), pipe)
            self.events.ack(ids, pipe)
            pipe.execute()
            if job.done:
                self._finish(job)

    # -- jobs ------------------------------------------------------------------------------
    def advance(self, job_id: str, now: float) -> None:
        """Move one job forward: cancel, lost workers, coordinator steps, locks, submissions."""
        job = self._job(job_id)
        if job.done:
            self._finish(job)
            return
        if not job.cancel_requested and self.store.cancel_requested(job.id):
            engine.cancel(job, now)
            self.log.info("job.cancelling", job_id=job.id)
            self.store.save(job)
        self._check_lost(job, now)
        batch: list[Step] = []
        ready = engine.ready_steps(job, now)
        while ready and not job.done:
            local = [s for s in ready if s.host is None]
            for step in ready:
                if step.host is None:
                    self._run_local(job, step, now)
                elif not step.writes or self._locked(job):
                    engine.mark_submitted(step, now)
                    batch.append(step)
            # a local step (plan) adds steps that may be ready now: do not wait a tick for them
            ready = engine.ready_steps(job, now) if local else []
        if batch:
            self._submit_batch(job, batch)
        if job.done:
            self.store.save(job)
            self._finish(job)

    def _submit_batch(self, job: Job, batch: list[Step]) -> None:
        calls = [(step.host or "", self._call(job, step)) for step in batch]
        if isinstance(self.submit, QueueSubmitter):
            messages = self.submit.messages(calls)
            sent = time.time()
            for step in batch:
                step.sent_at = sent
            # sent and stored as sent together, or neither (then still pending in Redis)
            pipe = self.r.pipeline(transaction=True)
            taskqueue.push(pipe, messages)
            self.store.save(job, batch, pipe)
            pipe.execute()
        else:
            # stored before sending (a crash in between re-sends), marked sent after
            self.store.save(job, batch)
            for (host, call), step in zip(calls, batch, strict=True):
                self.submit(host, call)
                step.sent_at = time.time()
            self.store.save(job, batch)
        for step in batch:
            self.log.info("step.submitted", job_id=job.id, step_id=step.id, host=step.host,
                          kind=step.kind, attempt=step.attempt)  # fmt: skip

    def _call(self, job: Job, step: Step) -> StepCall:
        assert step.host is not None
        args = self._with_grants(job, step.id, step.attempt, step.args)
        return StepCall(
            job_id=job.id, step_id=step.id, attempt=step.attempt, host=step.host,
            args=args_to_bytes(args), epoch=int(job.options.get("epoch", 0)),
            fence=str(job.options.get("fence", "")),
            time_limit=float(job.options.get("step_time_limit", 0.0)),
        )  # fmt: skip

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
        for job_id in self.store.active_ids():
            try:
                job = self.store.load(job_id)
            except JobError:
                continue
            unsent = [s for s in job.steps.values()
                      if s.status == engine.SUBMITTED and s.sent_at is None and s.host]  # fmt: skip
            for step in unsent:
                self.log.info("step.resend", job_id=job.id, step_id=step.id)
            if unsent:
                self._submit_batch(job, unsent)

    def _run_local(self, job: Job, step: Step, now: float) -> None:
        """Run a coordinator-side step (sync's ``plan``) through the job's kind."""
        engine.mark_submitted(step, now)
        try:
            handler = jobkinds.get(job.kind).local_steps.get(step.kind)
            if handler is None:
                raise JobError(f"job kind {job.kind!r} has no coordinator step {step.kind!r}")
            result = handler(self.store, job, step)
            engine.finish_step(step, engine.SUCCEEDED, time.time(), result=result)
        except ZfleetError as exc:
            engine.finish_step(step, engine.FAILED, time.time(), error=str(exc),
                               error_type=type(exc).__name__)  # fmt: skip
        except Exception as exc:  # a planner bug fails this job, not the coordinator
            self.log.exception("local_step.crashed", job_id=job.id, step_id=step.id)
            engine.finish_step(step, engine.FAILED, time.time(),
                               error=f"internal error: {type(exc).__name__}: {exc}",
                               error_type=type(exc).__name__)  # fmt: skip
        engine.settle(job, time.time())
        self.store.save(job)

    def _locked(self, job: Job) -> bool:
        if job.options.get("locked"):
            return True
        resources = sorted({w for s in job.steps.values() for w in s.writes})
        active = set(self.store.active_ids())
        conflicts = self.locks.acquire_all(job.id, resources, alive=lambda j: j in active)
        if conflicts:
            if job.id not in self._waiting_logged:
                self._waiting_logged.add(job.id)
                self.log.info("job.waiting_for_lock", job_id=job.id, held_by=conflicts)
            return False
        job.options["locked"] = True
        job.options["locks"] = resources
        self.store.save(job, [])
        return True

    def _check_lost(self, job: Job, now: float) -> None:
        """Give a new attempt to steps whose worker died or restarted while it held them."""
        beats: dict[str, dict[bytes, bytes]] = {}
        for step in job.steps.values():
            if step.host is None or step.status not in (engine.SUBMITTED, engine.RUNNING):
                continue
            if step.host not in beats:
                beats[step.host] = self.r.hgetall(keys.worker(step.host))
            beat = beats[step.host]
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
            if reason:
                self.log.warning("step.lost", job_id=job.id, step_id=step.id, reason=reason)
                engine.retry_lost(job, step.id, reason, self.policy, now)
                self.store.save(job)

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
        if job.options.get("locks"):
            self.locks.release_all(job.id, job.options["locks"])
        self.r.srem(keys.JOBS_ACTIVE, job.id)
        self.log.info("job.finished", job_id=job.id, status=job.status, error=job.error)

    # -- schedules -------------------------------------------------------------------------
    def start_scheduled(self, now: float) -> None:
        if self.config is None:
            return
        names = [n for n, j in self.config.parsed.jobs.items() if j.schedule is not None]
        if not names:
            return
        running = {j.name for j in (self._load_quiet(i) for i in self.store.active_ids()) if j}
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
    """Wait until the job is finished (or ``timeout`` seconds); returns its last state."""
    deadline = time.monotonic() + timeout
    while True:
        job = store.load(job_id)
        if on_poll is not None:
            on_poll(job)
        if job.done or time.monotonic() >= deadline:
            return job
        time.sleep(poll)
