"""Celery inside `zfleet worker`, started again when it stops without being asked to.

Celery 5.7's worker dies ("Unrecoverable error: AttributeError: 'NoneType' object has no
attribute 'hostname'") when it loses Redis while a late-acknowledged task runs on the threads
pool: its reconnect path closes the broker connection twice and the second close tries to restore
the unacknowledged message through a transport it has already torn down. A Redis restart in the
middle of a step, the very fault a failover must survive, would otherwise take every busy worker
down with it, and with it the host's part in the failover.

So :func:`run_celery` runs a fresh Celery app again when the last one ended on its own (no
SIGTERM/SIGINT: Celery's ``worker_shutting_down`` signal was not sent), after a pause; the stream
server and the heartbeat of the process keep running meanwhile. The step that was running is
not lost: its message stays unacknowledged in Redis, and the coordinator resubmits a step whose
run lease expired. Bounded: after ``max_quick`` exits in a row, each less than ``quick`` seconds
after its start, it gives up and returns the exit code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import structlog
from celery import signals

log = structlog.get_logger(__name__)

RESTART_PAUSE: Final = 1.0  # seconds before a new Celery app starts
MAX_QUICK_EXITS: Final = 5
QUICK: Final = 30.0  # seconds: an exit sooner than this after a start counts as quick


class WorkerApp(Protocol):
    def worker_main(self, argv: list[str] | None = None) -> None: ...


def _run_once(app: WorkerApp, argv: Sequence[str]) -> int:
    try:
        app.worker_main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def run_celery(
    make_app: Callable[[], WorkerApp],
    argv: Sequence[str],
    *,
    pause: float = RESTART_PAUSE,
    max_quick: int = MAX_QUICK_EXITS,
    quick: float = QUICK,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run Celery's worker until it is asked to stop; its last exit code."""
    requested = threading.Event()

    def on_shutdown(**_: object) -> None:
        requested.set()

    signals.worker_shutting_down.connect(on_shutdown, weak=False,
                                         dispatch_uid="zfleet.shutdown_requested")  # fmt: skip
    quick_exits = 0
    try:
        while True:
            started = clock()
            code = _run_once(make_app(), argv)
            if requested.is_set():
                return code
            ran = clock() - started
            quick_exits = quick_exits + 1 if ran < quick else 0
            if quick_exits >= max_quick:
                log.error("worker.celery_gave_up", exit_code=code, exits=quick_exits)
                return code or 1
            log.warning("worker.celery_restarting", exit_code=code, ran_s=round(ran, 2))
            sleep(pause)
    finally:
        signals.worker_shutting_down.disconnect(dispatch_uid="zfleet.shutdown_requested")
