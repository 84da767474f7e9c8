"""The Celery app: one queue per host (``zfleet.host.<name>``), tuned for long idempotent steps.

Steps can run for hours (a full send of a large dataset) and are safe to run twice, so a message is
acknowledged only after the step finished (``acks_late``), a worker takes one message at a time
(prefetch 1), and the broker's visibility timeout sits above the longest step in all three places
kombu and Celery read it, so a slow step is never handed to a second worker while it runs.
Steps report through the events stream (bus/events.py), not Celery's result backend.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from celery import Celery, signals

from bus.connect import SENTINEL_TIMEOUT
from bus.queues import NOOP_TASK, QUEUE_PREFIX, STEP_TASK, queue_for
from protocol.log import bind_context, clear_context, take_over_celery_logging
from protocol.redisurl import is_sentinel_url, parse_sentinel_url

__all__ = ["NOOP_TASK", "QUEUE_PREFIX", "STEP_TASK", "connect_signals", "make_app", "queue_for"]

# The longest step we plan for (a multi-TB full send at ~100 MB/s): 12 hours.
HARD_TIME_LIMIT: Final = 12 * 3600
SOFT_TIME_LIMIT: Final = HARD_TIME_LIMIT - 600  # time to abort the receive cleanly (-s keeps it)
VISIBILITY_TIMEOUT: Final = HARD_TIME_LIMIT + 3600


def celery_url(redis_url: str) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and transport options for zfleet's ``redis_url``.

    A ``sentinel://`` URL becomes kombu's list of sentinels (``sentinel://...;sentinel://...``)
    with the master's name as the ``master_name`` transport option.
    """
    if not is_sentinel_url(redis_url):
        return redis_url, {}
    target = parse_sentinel_url(redis_url)
    auth = ""
    if target.username or target.password is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    hosts = [f"[{h}]" if ":" in h else h for h, _ in target.sentinels]
    url = ";".join(f"sentinel://{auth}{h}:{port}/{target.db}"
                   for h, (_, port) in zip(hosts, target.sentinels, strict=True))  # fmt: skip
    ask = {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT}
    return url, {"master_name": target.master, "sentinel_kwargs": ask}


def make_app(redis_url: str, *, name: str = "zfleet") -> Celery:
    """A Celery app on ``redis_url`` with zfleet's settings (no task modules imported)."""
    broker, options = celery_url(redis_url)
    app = Celery(name, broker=broker, backend=broker, set_as_current=False)
    transport = {"visibility_timeout": VISIBILITY_TIMEOUT, **options}
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_acks_late=True,
        # A worker that dies mid-step leaves the message for another try (steps are idempotent).
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        visibility_timeout=VISIBILITY_TIMEOUT,
        task_soft_time_limit=SOFT_TIME_LIMIT,
        task_time_limit=HARD_TIME_LIMIT,
        task_ignore_result=True,  # results travel as step events
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        task_default_queue=queue_for("default"),
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        enable_utc=True,
    )
    return app


def _bind_task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    clear_context()
    bind_context(task_id=task_id, task=getattr(task, "name", None))


def _clear_task_context(**_: Any) -> None:
    clear_context()


def connect_signals() -> None:
    """Bind and clear structlog context around every task; keep zfleet's logging config."""
    take_over_celery_logging()
    signals.task_prerun.connect(_bind_task_context, weak=False, dispatch_uid="zfleet.prerun")
    signals.task_postrun.connect(_clear_task_context, weak=False, dispatch_uid="zfleet.postrun")
