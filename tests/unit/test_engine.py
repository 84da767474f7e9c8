"""The job DAG state machine: readiness, retries, blocking, always-steps, cancel, stale events."""

from __future__ import annotations

from coordinator import engine
from coordinator.engine import Job, RetryPolicy, add_steps, apply_event, ready_steps
from protocol.messages import StepEvent, StepState
from tests.unit.dagfakes import plan_step

POLICY = RetryPolicy(max_attempts=3, backoff_base=2.0)


def diamond() -> Job:
    """hold -> (a, b) -> c ; release (always) after all; d depends on b only."""
    job = Job(id="J", name="j")
    add_steps(
        job,
        [
            plan_step("hold", "hold", "alpha"),
            plan_step("a", "transfer", "alpha", deps=("hold",)),
            plan_step("b", "transfer", "alpha", deps=("hold",)),
            plan_step("c", "transfer", "alpha", deps=("a", "b")),
            plan_step("d", "prune", "beta", deps=("b",)),
            plan_step("release", "release", "alpha", deps=("a", "b", "c"), always=True),
        ],
    )
    return job


def run(job: Job, step_id: str, state: StepState, now: float = 0.0, **kw: object) -> bool:
    step = job.steps[step_id]
    if step.status == engine.PENDING:
        engine.mark_submitted(step, now)
    ev = StepEvent(job_id=job.id, step_id=step_id, attempt=step.attempt, host="alpha",
                   state=state, **kw)  # type: ignore[arg-type]
    return apply_event(job, ev, POLICY, now)


def ready_ids(job: Job, now: float = 0.0) -> set[str]:
    return {s.id for s in ready_steps(job, now)}


def test_steps_become_ready_in_dependency_order_and_job_succeeds() -> None:
    job = diamond()
    assert ready_ids(job) == {"hold"}
    run(job, "hold", StepState.SUCCEEDED)
    assert ready_ids(job) == {"a", "b"}
    for sid in ("a", "b"):
        run(job, sid, StepState.SUCCEEDED)
    assert ready_ids(job) == {"c", "d"}
    run(job, "c", StepState.SUCCEEDED)
    run(job, "d", StepState.SUCCEEDED)
    assert ready_ids(job) == {"release"}
    run(job, "release", StepState.SUCCEEDED, result={"released": 3})
    assert job.status == engine.JOB_SUCCEEDED
    assert job.steps["release"].result == {"released": 3}


def test_failure_blocks_only_descendants_and_release_still_runs() -> None:
    job = diamond()
    run(job, "hold", StepState.SUCCEEDED)
    run(job, "a", StepState.FAILED, error_type="DestinationModified", error_message="modified")
    assert job.steps["a"].status == engine.FAILED
    assert job.steps["c"].status == engine.BLOCKED
    assert ready_ids(job) == {"b"}  # b is independent of a: it still runs
    run(job, "b", StepState.SUCCEEDED)
    assert ready_ids(job) == {"d", "release"}
    run(job, "d", StepState.SUCCEEDED)
    run(job, "release", StepState.SUCCEEDED)
    assert job.status == engine.JOB_FAILED
    assert job.steps["a"].error == "modified"


def test_retryable_failure_retries_with_backoff_then_gives_up() -> None:
    job = diamond()
    run(job, "hold", StepState.FAILED, now=10.0, retryable=True, error_message="busy")
    hold = job.steps["hold"]
    assert hold.status == engine.PENDING and hold.not_before == 12.0
    assert ready_ids(job, now=11.0) == set()
    assert ready_ids(job, now=12.0) == {"hold"}
    run(job, "hold", StepState.FAILED, now=12.0, retryable=True)
    assert hold.attempt == 2 and hold.not_before == 16.0  # doubled
    run(job, "hold", StepState.FAILED, now=16.0, retryable=True)
    assert hold.attempt == 3 and hold.status == engine.FAILED  # max_attempts reached
    assert job.steps["a"].status == engine.BLOCKED


def test_stale_and_duplicate_events_change_nothing() -> None:
    job = diamond()
    run(job, "hold", StepState.FAILED, retryable=True)
    old = StepEvent(job_id="J", step_id="hold", attempt=1, host="alpha", state=StepState.SUCCEEDED)
    assert not apply_event(job, old, POLICY, 1.0)  # attempt 1 was given up on
    run(job, "hold", StepState.SUCCEEDED, now=5.0)
    again = StepEvent(job_id="J", step_id="hold", attempt=2, host="alpha", state=StepState.FAILED)
    assert not apply_event(job, again, POLICY, 6.0)
    assert job.steps["hold"].status == engine.SUCCEEDED


def test_cancel_stops_new_work_but_releases_holds() -> None:
    job = diamond()
    run(job, "hold", StepState.SUCCEEDED)
    engine.mark_submitted(job.steps["a"], 0.0)
    engine.cancel(job, 1.0)
    assert job.steps["b"].status == engine.CANCELLED
    assert job.steps["a"].status == engine.SUBMITTED  # running work stops cooperatively
    assert ready_ids(job) == set()
    run(job, "a", StepState.CANCELLED)
    assert ready_ids(job) == {"release"}
    run(job, "release", StepState.SUCCEEDED)
    assert job.status == engine.JOB_CANCELLED


def test_lost_worker_gives_a_new_attempt() -> None:
    job = diamond()
    run(job, "hold", StepState.STARTED)
    engine.retry_lost(job, "hold", "worker alpha restarted", POLICY, 3.0)
    assert job.steps["hold"].status == engine.PENDING
    assert ready_ids(job, 3.0) == {"hold"}
    run(job, "hold", StepState.SUCCEEDED)
    assert job.steps["hold"].attempt == 2


def test_job_round_trips_through_plain_data() -> None:
    job = diamond()
    run(job, "hold", StepState.SUCCEEDED, result={"held": 2})
    copy = Job.from_parts(job.meta(), [engine.Step.from_dict(s.to_dict())
                                       for s in job.steps.values()])  # fmt: skip
    assert copy == job
