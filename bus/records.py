"""The records both sides read and write in Redis, with their layout in one place.

- step state: the coordinator stores each step of a job as JSON in the job's hash (field
  ``step:<id>``); a worker only asks whether its attempt is still the wanted one
  (:func:`attempt_wanted`), through :class:`StepStatus`, the one set of status names;
- done records: a worker's record that a step succeeded (its result), and which targets of a
  fan-out already received the stream, so a rerun re-reports instead of redoing;
- progress of running transfers, inventories, cancel requests, worker heartbeats.

Values are JSON or protocol messages (msgpack), so ``redis-cli`` shows them readably.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

import redis

from bus import keys
from protocol.errors import MessageError
from protocol.messages import ResultValue, decode, encode
from protocol.zfs import InventoryReport

META_FIELD: Final = "meta"
STEP_FIELD: Final = "step:"  # + step id
DONE_TTL: Final = 7 * 86400
CANCEL_TTL: Final = 7 * 86400
HEARTBEAT_TTL: Final = 10  # seconds without a beat before a worker counts as gone


class StepStatus(enum.StrEnum):
    """Where a step is: ``pending -> submitted -> running -> succeeded | failed``, or
    ``blocked`` (a dependency did not succeed) or ``cancelled``."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


WANTED: Final = frozenset({StepStatus.SUBMITTED, StepStatus.RUNNING})


# -- step state (written by the coordinator, read by workers) --------------------------------


def attempt_wanted(client: redis.Redis[bytes], job_id: str, step_id: str, attempt: int) -> bool:
    """Is ``attempt`` still the attempt of the step the coordinator waits for?"""
    raw = client.hget(keys.job(job_id), STEP_FIELD + step_id)
    if raw is None:
        return False
    try:
        step = json.loads(raw)
    except ValueError:
        return False
    return step.get("status") in WANTED and step.get("attempt") == attempt


# -- done records (written by workers) ---------------------------------------------------------


def done_result(client: redis.Redis[bytes], job_id: str, step_id: str) -> dict[str, Any] | None:
    raw = client.get(keys.done(job_id, step_id))
    return None if raw is None else dict(json.loads(raw))


def record_done(
    client: redis.Redis[bytes], job_id: str, step_id: str, result: Mapping[str, ResultValue]
) -> None:
    client.set(keys.done(job_id, step_id), json.dumps(dict(result)), ex=DONE_TTL)


def delivered(client: redis.Redis[bytes], job_id: str, step_id: str, target: str) -> bool:
    """Has ``target`` of a fan-out step already received the stream (an earlier attempt)?"""
    return bool(client.hexists(keys.done(job_id, step_id) + ":targets", target))


def mark_delivered(
    client: redis.Redis[bytes], job_id: str, step_id: str, target: str, attempt: int
) -> None:
    key = keys.done(job_id, step_id) + ":targets"
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, target, attempt)
    pipe.expire(key, DONE_TTL)
    pipe.execute()


# -- progress ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Bytes one running transfer moved so far to ``target`` (labels, comma-joined)."""

    step_id: str
    target: str
    done: int
    total: int | None  # ``send -nP``'s estimate, when there is one
    at: float


def put_progress(client: redis.Redis[bytes], job_id: str, progress: Progress) -> None:
    key = keys.progress(job_id)
    value = json.dumps({"done": progress.done, "total": progress.total, "at": progress.at})
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, f"{progress.step_id}|{progress.target}", value)
    pipe.expire(key, DONE_TTL)
    pipe.execute()


def read_progress(client: redis.Redis[bytes], job_id: str) -> dict[str, dict[str, Any]]:
    """``{"<step>|<target>": {done, total, at}}`` for the job's transfers."""
    raw: dict[bytes, bytes] = client.hgetall(keys.progress(job_id))
    out: dict[str, dict[str, Any]] = {}
    for k, v in raw.items():
        try:
            out[k.decode()] = dict(json.loads(v))
        except ValueError:
            continue  # a damaged record is as good as none: the next update replaces it
    return out


# -- inventories -------------------------------------------------------------------------------


def put_inventory(
    client: redis.Redis[bytes], report: InventoryReport, job_id: str | None = None
) -> None:
    """Store ``report`` as the host's latest, and as the one taken for ``job_id``."""
    data = encode(report)
    pipe = client.pipeline(transaction=True)
    pipe.set(keys.inventory(report.host), data)
    if job_id:
        pipe.set(keys.inventory(report.host, job_id), data, ex=DONE_TTL)
    pipe.execute()


def get_inventory(
    client: redis.Redis[bytes], host: str, job_id: str | None = None
) -> InventoryReport | None:
    raw = client.get(keys.inventory(host, job_id))
    if raw is None:
        return None
    try:
        return decode(raw, InventoryReport)
    except MessageError:
        return None  # a damaged report is as good as none: the next inventory replaces it


# -- cancel requests ---------------------------------------------------------------------------


def request_cancel(client: redis.Redis[bytes], job_id: str) -> None:
    client.set(keys.cancel(job_id), str(time.time()), ex=CANCEL_TTL)


def cancel_requested(client: redis.Redis[bytes], job_id: str) -> bool:
    return bool(client.exists(keys.cancel(job_id)))


# -- worker heartbeats -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerBeat:
    """What a worker's heartbeat says: its instance, start time, last beat, stream server."""

    host: str
    instance: str
    started: float
    beat: float
    stream: tuple[str, int] | None
    version: str | None = None


def put_beat(client: redis.Redis[bytes], beat: WorkerBeat, ttl: int = HEARTBEAT_TTL) -> None:
    fields: dict[str | bytes, bytes | float | int | str] = {
        "instance": beat.instance, "started": repr(beat.started), "beat": repr(beat.beat),
    }  # fmt: skip
    if beat.stream is not None:
        fields["stream"] = f"{beat.stream[0]}:{beat.stream[1]}"
    if beat.version:
        fields["version"] = beat.version
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.worker(beat.host), mapping=fields)
    pipe.expire(keys.worker(beat.host), ttl)
    pipe.execute()


def get_beat(client: redis.Redis[bytes], host: str) -> WorkerBeat | None:
    """The host's live heartbeat, or None when it expired (the worker is gone)."""
    raw: dict[bytes, bytes] = client.hgetall(keys.worker(host))
    if not raw:
        return None
    stream = None
    text = raw.get(b"stream", b"").decode()
    if text:
        addr, _, port = text.rpartition(":")
        if port.isdigit():
            stream = (addr, int(port))
    try:
        started = float(raw.get(b"started", b"0"))
        beat = float(raw.get(b"beat", b"0"))
    except ValueError:
        started = beat = 0.0
    version = raw.get(b"version")
    return WorkerBeat(host=host, instance=raw.get(b"instance", b"").decode(), started=started,
                      beat=beat, stream=stream,
                      version=version.decode() if version else None)  # fmt: skip


def drop_beat(client: redis.Redis[bytes], host: str) -> None:
    client.delete(keys.worker(host))


# -- fencing epochs ----------------------------------------------------------------------------


def current_epoch(client: redis.Redis[bytes], scope: str) -> int:
    """The fencing epoch of ``scope`` (0 until a failover first raises it)."""
    raw = client.get(keys.epoch(scope))
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class RoleRecord:
    """What Redis says of a replication job's roles: its ``epoch``, the ``primary`` that epoch
    names (None before the first failover or switchover) and the former primaries still ``out``
    (failed over from, not rejoined)."""

    job: str
    epoch: int
    primary: str | None
    out: frozenset[str]


def role_record(client: redis.Redis[bytes], job: str) -> RoleRecord:
    """The job's epoch, its meta and its roles hash, read in one transaction (a worker reads
    them at start, to fence what moved away from its host before anything else runs)."""
    pipe = client.pipeline(transaction=True)
    pipe.get(keys.epoch(job))
    pipe.hget(keys.epoch_meta(job), "primary")
    pipe.hkeys(keys.roles(job))
    raw, primary, fields = pipe.execute()
    try:
        epoch = int(raw) if raw is not None else 0
    except ValueError:
        epoch = 0
    out = frozenset(f.decode()[4:] for f in fields if f.startswith(b"out:"))
    return RoleRecord(job, epoch, primary.decode() if primary is not None else None, out)


# -- large step results ------------------------------------------------------------------------
# An event carries a few small values; a result with many entries (a diff) is kept here instead,
# under the job and step, and the event only says it was stored.


def put_step_record(
    client: redis.Redis[bytes], job_id: str, step_id: str, data: Any, ttl: int = DONE_TTL
) -> None:
    client.set(keys.step_record(job_id, step_id), json.dumps(data), ex=ttl)


def get_step_record(client: redis.Redis[bytes], job_id: str, step_id: str) -> Any | None:
    raw = client.get(keys.step_record(job_id, step_id))
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


# -- schedules ---------------------------------------------------------------------------------


def schedule_last_runs(
    client: redis.Redis[bytes], names: Collection[str]
) -> dict[str, float | None]:
    """When each named scheduled job last started (None: never)."""
    out: dict[str, float | None] = {}
    for name in names:
        raw = client.get(keys.schedule_last(name))
        try:
            out[name] = float(raw) if raw is not None else None
        except ValueError:
            out[name] = None
    return out


def record_schedule_run(client: redis.Redis[bytes], name: str, now: float) -> None:
    client.set(keys.schedule_last(name), repr(now))
