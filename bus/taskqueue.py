"""Celery task messages written straight onto the Redis broker's queues, many in one pipeline.

The coordinator submits every ready step of a tick at once. Celery's ``send_task`` costs about
0.6 ms of CPU and one Redis round trip per message (routing, its producer pool, a task-sent
event); here a message is built in a few microseconds and the caller adds the LPUSH to a
pipeline of its own, so a whole batch is one round trip, and the coordinator can store the
steps as sent in the same transaction.

The bytes are what kombu's Redis transport would have pushed for ``send_task(name, args,
queue=...)``: Celery's task protocol 2 (headers naming the task and its id, a JSON body
``[args, kwargs, embed]``) inside kombu's envelope (body base64-encoded, a unique delivery tag
the worker acknowledges late, delivery info naming the queue, priority 0 so the list key is the
queue's own name). tests/integration/test_taskqueue_redis.py compares them field by field with
Celery's own. What is left out: the task-sent event (Flower still sees a task once a worker
receives it) and ``reply_to`` (results travel as step events, never through Celery).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from typing import Any, Final

# Celery's ``origin`` header: who sent the task (Flower shows it).
ORIGIN: Final = f"zfleet-coordinator-{os.getpid()}@{socket.gethostname()}"
_EMBED: Final = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
# Task ids and delivery tags: a random prefix per process and a counter, unique like uuid4 but
# without a system call each (a 10,000-step fan-out made 20,000 of them).
_PREFIX: Final = secrets.token_hex(8)
_COUNTER = itertools.count()


def unique_id() -> str:
    """An id no other message of any process shares (random prefix, process counter)."""
    return f"{_PREFIX}-{os.getpid():x}-{next(_COUNTER):x}"


def _template(name: str) -> str:
    """The message's JSON with ``%(key)s`` where the per-message values go (body, ids, argsrepr,
    queue, delivery tag), made once per task name: json.dumps of the whole envelope for every
    message was most of a submission's cost."""
    marks = {"body": "\0body", "id": "\0id", "argsrepr": "\0argsrepr", "queue": "\0queue",
             "tag": "\0tag"}  # fmt: skip
    headers: dict[str, Any] = {
        "lang": "py", "task": name, "id": marks["id"], "shadow": None, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": marks["id"], "parent_id": None,
        "argsrepr": marks["argsrepr"], "kwargsrepr": "{}", "origin": ORIGIN,
        "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
    }  # fmt: skip
    envelope = {
        "body": marks["body"],
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": marks["id"],
            "delivery_mode": 2,  # persistent
            "delivery_info": {"exchange": "", "routing_key": marks["queue"]},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": marks["tag"],
        },
    }
    text = json.dumps(envelope).replace("%", "%%")
    for key, mark in marks.items():
        text = text.replace(json.dumps(mark), f"%({key})s")
    return text


_TEMPLATES: dict[str, str] = {}


def task_message(
    name: str, args: Sequence[Any], queue: str, *, task_id: str | None = None,
    argsrepr: str | None = None,
) -> bytes:  # fmt: skip
    """One Celery task message for ``queue``, as the Redis broker stores it."""
    template = _TEMPLATES.get(name)
    if template is None:
        template = _TEMPLATES[name] = _template(name)
    tid = json.dumps(task_id or unique_id())
    body = base64.b64encode(json.dumps([list(args), {}, _EMBED]).encode()).decode()
    values = {
        "body": f'"{body}"', "id": tid, "queue": json.dumps(queue),
        "argsrepr": json.dumps(argsrepr if argsrepr is not None else repr(list(args))),
        "tag": f'"{unique_id()}"',
    }  # fmt: skip
    return (template % values).encode()


def push(pipe: Any, messages: Iterable[tuple[str, bytes]]) -> int:
    """Add the LPUSHes of ``(queue, message)`` pairs to ``pipe``: one command per queue, in
    order (a worker takes a queue's oldest message first). Returns how many were added."""
    by_queue: dict[str, list[bytes]] = {}
    for queue, message in messages:
        by_queue.setdefault(queue, []).append(message)
    for queue, batch in by_queue.items():
        pipe.lpush(queue, *batch)
    return sum(len(b) for b in by_queue.values())
