"""The job DAG as a state machine: which steps are ready, and what an event changes.

Pure: no Redis, no Celery. The coordinator loop (``coordinator/runner.py``) loads a
:class:`Job` from the job store, feeds it events and the clock, and persists what changed.

A step moves ``pending -> submitted -> running -> succeeded | failed``; a retryable failure sends it
back to ``pending`` with the next attempt number and a backoff. A failed step blocks only its
descendants (``blocked``); an ``always`` step (releasing holds) runs once its dependencies are
finished whatever their outcome. Cancelling stops new submissions (``cancelled``) and lets running
steps notice on their own: never a forced kill half-way through a receive.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bus.records import StepStatus
from protocol.errors import JobError, MessageError
from protocol.messages import StepEvent, StepState
from protocol.steps import StepArgs, args_from_data, args_to_data

# The step states are bus.records.StepStatus (workers read them too); short names for the engine.
PENDING: Final = StepStatus.PENDING
SUBMITTED: Final = StepStatus.SUBMITTED
RUNNING: Final = StepStatus.RUNNING
SUCCEEDED: Final = StepStatus.SUCCEEDED
FAILED: Final = StepStatus.FAILED
BLOCKED: Final = StepStatus.BLOCKED
CANCELLED: Final = StepStatus.CANCELLED
TERMINAL: Final = frozenset({SUCCEEDED, FAILED, BLOCKED, CANCELLED})
UNSUCCESSFUL: Final = frozenset({FAILED, BLOCKED, CANCELLED})

JOB_RUNNING: Final = "running"
JOB_SUCCEEDED: Final = "succeeded"
JOB_FAILED: Final = "failed"
JOB_CANCELLED: Final = "cancelled"
JOB_TERMINAL: Final = frozenset({JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED})


@dataclass(frozen=True)
class StepPlan:
    """One node of the DAG, as a planner makes it. ``host`` None means the coordinator runs it.

    ``args`` is the step's typed message (protocol/steps.py); its kind is the step's kind.
    ``always`` steps run once their dependencies are finished whatever the outcome (releasing
    holds); ``writes`` names the ``host:dataset`` pairs the step may change (for locks).
    """

    id: str
    host: str | None
    args: StepArgs
    deps: tuple[str, ...] = ()
    always: bool = False
    estimate: int = 0
    writes: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.args.KIND


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a retryable failure is tried again."""

    max_attempts: int = 5
    backoff_base: float = 1.0  # seconds before the 2nd attempt; doubles each time
    backoff_max: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        return float(min(self.backoff_max, self.backoff_base * 2.0 ** max(0, attempt - 1)))


@dataclass
class Step:
    """A step of a job and where it is. Persisted as one JSON value per step."""

    id: str
    kind: str
    host: str | None
    args: StepArgs
    deps: list[str] = field(default_factory=list)
    always: bool = False
    estimate: int = 0
    writes: list[str] = field(default_factory=list)
    status: str = PENDING
    attempt: int = 0
    not_before: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    sent_at: float | None = None  # None while submitted but not yet handed to the broker
    reported_at: float | None = None  # when the worker reported the outcome (its clock)

    @classmethod
    def from_plan(cls, plan: StepPlan) -> Step:
        return cls(
            id=plan.id, kind=plan.kind, host=plan.host, args=plan.args,
            deps=list(plan.deps), always=plan.always, estimate=plan.estimate,
            writes=list(plan.writes),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        # shallow: it is serialised at once, and asdict's deep copy dominated the loop's time
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["args"] = args_to_data(self.args)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        """A stored step; a JobError when its arguments are not a step message this side knows."""
        known = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["args"] = args_from_data(values.get("args") or {})
        except MessageError as exc:
            raise JobError(f"step {data.get('id')!r} is stored damaged: {exc}") from exc
        return cls(**values)


@dataclass
class Job:
    """One run of a job: its steps (in dependency order) and its own status."""

    id: str
    name: str
    kind: str = "sync"
    status: str = JOB_RUNNING
    created: float = 0.0
    finished: float | None = None
    cancel_requested: bool = False
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, Step] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """The job's own fields, without its steps."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "steps"}

    @classmethod
    def from_parts(cls, meta: Mapping[str, Any], steps: Iterable[Step]) -> Job:
        known = cls.__dataclass_fields__
        job = cls(**{k: v for k, v in meta.items() if k in known and k != "steps"})
        job.steps = {s.id: s for s in steps}
        return job

    @property
    def done(self) -> bool:
        return self.status in JOB_TERMINAL


def add_steps(job: Job, plans: Iterable[StepPlan], *, after: str | None = None) -> list[Step]:
    """Append planned steps; with ``after``, every root of the new steps depends on that step."""
    added = []
    for p in plans:
        if p.id in job.steps:
            raise JobError(f"job {job.id}: step {p.id!r} already exists")
        step = Step.from_plan(p)
        if after is not None and not step.deps:
            step.deps = [after]
        unknown = [d for d in step.deps if d not in job.steps]
        if unknown:
            raise JobError(f"job {job.id}: step {p.id} depends on unknown steps {unknown}")
        job.steps[step.id] = step
        added.append(step)
    job.options["order"] = list(job.steps)  # the store keeps no order of its own
    return added


def ready_steps(job: Job, now: float) -> list[Step]:
    """Pending steps whose dependencies allow them to run now."""
    out = []
    for step in job.steps.values():
        if step.status != PENDING or step.not_before > now:
            continue
        deps = [job.steps[d].status for d in step.deps]
        if step.always:
            if all(s in TERMINAL for s in deps):
                out.append(step)
        elif job.cancel_requested:
            continue
        elif all(s == SUCCEEDED for s in deps):
            out.append(step)
    return out


def mark_submitted(step: Step, now: float) -> None:
    """The step is about to be sent as its next attempt."""
    step.attempt += 1
    step.status = SUBMITTED
    step.sent_at = None
    step.started_at = step.started_at or now


def apply_event(job: Job, event: StepEvent, policy: RetryPolicy, now: float) -> bool:
    """Apply one worker event; False when it is stale (an old attempt, or already applied)."""
    step = job.steps.get(event.step_id)
    if step is None or event.attempt != step.attempt or step.status in TERMINAL:
        return False
    if event.state is StepState.STARTED:
        if step.status != SUBMITTED:
            return False
        step.status = RUNNING
        step.result.update(event.result)
        return True
    if step.status == PENDING:
        return False  # this attempt was already given up on (a retry is scheduled)
    step.reported_at = event.at
    if event.state is StepState.SUCCEEDED:
        finish_step(step, SUCCEEDED, now, result=event.result)
    elif event.state is StepState.CANCELLED:
        finish_step(step, CANCELLED, now, error=event.error_message)
    elif event.retryable and step.attempt < policy.max_attempts and not job.cancel_requested:
        step.status = PENDING
        step.not_before = now + policy.delay(step.attempt)
        step.error, step.error_type = event.error_message, event.error_type
    else:
        finish_step(step, FAILED, now, error=event.error_message, error_type=event.error_type)
    if step.status == SUCCEEDED:
        # a success blocks nothing (the job was settled before it): only the end may be reached;
        # the blocking pass over every step, per event, made wide jobs quadratic
        _conclude(job, now)
    else:
        settle(job, now)
    return True


def retry_lost(job: Job, step_id: str, reason: str, policy: RetryPolicy, now: float) -> None:
    """A step's worker went away mid-attempt: try again (a new attempt) or give up."""
    step = job.steps[step_id]
    if step.status in TERMINAL:
        return
    if step.attempt < policy.max_attempts and not job.cancel_requested:
        step.status = PENDING
        step.not_before = now
        step.error, step.error_type = reason, "WorkerLost"
    else:
        finish_step(step, FAILED, now, error=reason, error_type="WorkerLost")
    settle(job, now)


def finish_step(
    step: Step,
    status: str,
    now: float,
    *,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
    error_type: str | None = None,
) -> None:
    step.status = status
    step.finished_at = now
    if result:
        step.result.update(result)
    if status == SUCCEEDED:
        step.error = step.error_type = None
    else:
        step.error, step.error_type = error, error_type


def cancel(job: Job, now: float) -> None:
    """Ask the job to stop: nothing new starts; running steps stop at their next check."""
    if job.done:
        return
    job.cancel_requested = True
    for step in job.steps.values():
        if step.status == PENDING and not step.always:
            finish_step(step, CANCELLED, now, error="job cancelled")
    settle(job, now)


def settle(job: Job, now: float | None = None) -> None:
    """Block what can no longer run, and finish the job when every step is finished."""
    now = time.time() if now is None else now
    changed = True
    while changed:
        changed = False
        for step in job.steps.values():
            if step.status != PENDING or step.always:
                continue
            if any(job.steps[d].status in UNSUCCESSFUL for d in step.deps):
                finish_step(step, BLOCKED, now, error="a step it depends on did not succeed")
                changed = True
    _conclude(job, now)


def _conclude(job: Job, now: float) -> None:
    """Finish the job when every step is finished."""
    # from the end: the last steps (releases, inventories after) finish last, so an unfinished
    # job is told at once rather than after a scan of every finished step (per event)
    if job.done or not all(s.status in TERMINAL for s in reversed(job.steps.values())):
        return
    job.finished = now
    if job.cancel_requested:
        job.status = JOB_CANCELLED
    elif all(s.status == SUCCEEDED for s in job.steps.values()) and not job.error:
        job.status = JOB_SUCCEEDED
    else:
        job.status = JOB_FAILED


def fail_job(job: Job, reason: str, now: float) -> None:
    """Record a job-level failure (for example a plan the planner refused in part)."""
    job.error = reason
    settle(job, now)


def counts(job: Job) -> dict[str, int]:
    """How many steps are in each state."""
    out: dict[str, int] = {}
    for s in job.steps.values():
        out[s.status] = out.get(s.status, 0) + 1
    return out
