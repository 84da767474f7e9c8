"""A task message built ahead (coordinator/runner.py) is sent only while it is still exactly the
message the step's attempt would get: same attempt, host, arguments, epoch, fence, time limit,
and young enough that its grants are fresh."""

from __future__ import annotations

import time

from coordinator.engine import Job, add_steps
from coordinator.runner import EARLY_MAX_AGE, _Early
from protocol.messages import StepCall
from protocol.steps import args_to_bytes
from tests.unit.dagfakes import args_of, plan_step


def _job() -> Job:
    job = Job(id="J", name="j", created=time.time(), options={"epoch": 3, "fence": "nightly"})
    add_steps(job, [plan_step("x", "transfer", "alpha")])
    return job


def _early(job: Job, *, attempt: int = 1, built: float | None = None) -> _Early:
    step = job.steps["x"]
    call = StepCall(job_id=job.id, step_id="x", attempt=attempt, host="alpha",
                    args=args_to_bytes(step.args), epoch=3, fence="nightly")  # fmt: skip
    return _Early(call=call, args=step.args, built=time.monotonic() if built is None else built,
                  message=("q", b"m"))  # fmt: skip


def test_it_fits_the_attempt_it_was_built_for() -> None:
    job = _job()
    early = _early(job)
    assert early.fits(job, job.steps["x"], attempt=1)
    job.steps["x"].attempt = 1  # submitted: the attempt it was built for
    assert early.fits(job, job.steps["x"])
    job.steps["x"].attempt = 2  # a retry needs a call (and grants) of its own
    assert not early.fits(job, job.steps["x"])


def test_a_changed_epoch_fence_limit_host_or_arguments_means_a_new_message() -> None:
    for change in ("epoch", "fence", "limit", "host", "args"):
        job = _job()
        early = _early(job)
        step = job.steps["x"]
        if change == "epoch":
            job.options["epoch"] = 4  # a failover bumped it: the old one would be fenced off
        elif change == "fence":
            job.options["fence"] = "other"
        elif change == "limit":
            job.options["step_time_limit"] = 30.0
        elif change == "host":
            step.host = "beta"
        else:
            step.args = args_of("transfer", tag="new")
        assert not early.fits(job, step, attempt=1), change


def test_an_old_message_is_not_sent() -> None:
    job = _job()
    assert not _early(job, built=time.monotonic() - EARLY_MAX_AGE - 1).fits(
        job, job.steps["x"], attempt=1
    )
