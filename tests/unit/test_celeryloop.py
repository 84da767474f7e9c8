"""app/celeryloop.py: Celery started again when it stops on its own, never when asked to stop,
and not forever."""

from __future__ import annotations

from celery import signals

from app.celeryloop import run_celery


class Worker:
    """Stands in for a Celery app: each ``worker_main`` is one run ending as scripted."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.runs = 0

    def worker_main(self, argv: list[str] | None = None) -> None:
        how = self.script[min(self.runs, len(self.script) - 1)]
        self.runs += 1
        if how == "asked":
            signals.worker_shutting_down.send(sender="alpha@zfleet", sig="SIGTERM", how="Warm",
                                              exitcode=0)  # fmt: skip
            raise SystemExit(0)
        raise SystemExit(1)


def test_a_crash_restarts_and_a_requested_stop_ends_it() -> None:
    w = Worker(["crash", "crash", "asked"])
    assert run_celery(lambda: w, ["worker"], sleep=lambda _: None) == 0
    assert w.runs == 3


def test_quick_crashes_in_a_row_give_up() -> None:
    w = Worker(["crash"])
    assert run_celery(lambda: w, ["worker"], max_quick=4, sleep=lambda _: None) == 1
    assert w.runs == 4


def test_a_long_run_between_crashes_resets_the_count() -> None:
    # runs last 10, 10, 100, 10, 10, 100 s: never three quick exits in a row
    times = iter([0, 10, 10, 20, 20, 120, 120, 130, 130, 140, 140, 240, 240])
    w = Worker(["crash"] * 6 + ["asked"])
    assert run_celery(lambda: w, ["worker"], max_quick=3, quick=30, clock=lambda: next(times),
                      sleep=lambda _: None) == 0  # fmt: skip
    assert w.runs == 7


def test_the_shutdown_receiver_is_gone_afterwards() -> None:
    w = Worker(["asked"])
    run_celery(lambda: w, ["worker"], sleep=lambda _: None)
    again = Worker(["crash", "asked"])
    assert run_celery(lambda: again, ["worker"], sleep=lambda _: None) == 0
    assert again.runs == 2  # an old "requested" flag did not leak into this loop
