"""Jobs in Redis: one hash per job (meta and one field per step), sets of all and active jobs.

Only the active coordinator writes a running job's state; ``create`` and ``request_cancel`` are
safe for anyone (the CLI). JSON values, so ``redis-cli hgetall zfleet:job:<id>`` is readable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import redis

from coordinator import keys
from coordinator.engine import Job, Step
from protocol.errors import JobError, MessageError
from protocol.messages import InventoryReport, decode, encode

_META = "meta"
_STEP = "step:"


class JobStore:
    """Reads and writes jobs, inventories and progress in Redis."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.r = client

    # -- jobs -------------------------------------------------------------------------------
    def create(self, job: Job) -> None:
        """Store a new job and hand it to the coordinator (it becomes active)."""
        pipe = self.r.pipeline(transaction=True)
        self._write(pipe, job, job.steps.values())
        pipe.zadd(keys.JOBS_ALL, {job.id: job.created})
        pipe.sadd(keys.JOBS_ACTIVE, job.id)
        pipe.execute()

    def save(
        self, job: Job, steps: Iterable[Step] | None = None, pipe: Any | None = None
    ) -> None:
        """Write the job's meta and ``steps`` (all of them when None), in ``pipe`` if given."""
        own = pipe is None
        p: Any = self.r.pipeline(transaction=True) if pipe is None else pipe
        self._write(p, job, job.steps.values() if steps is None else steps)
        if job.done:
            p.srem(keys.JOBS_ACTIVE, job.id)
        if own:
            p.execute()

    def _write(self, pipe: Any, job: Job, steps: Iterable[Step]) -> None:
        fields = {_META: json.dumps(job.meta())}
        for s in steps:
            fields[_STEP + s.id] = json.dumps(s.to_dict())
        pipe.hset(keys.job(job.id), mapping=fields)

    def load(self, job_id: str) -> Job:
        """The job ``job_id``, or a JobError when there is none."""
        raw: dict[bytes, bytes] = self.r.hgetall(keys.job(job_id))
        if not raw or _META.encode() not in raw:
            raise JobError(f"no job {job_id!r}")
        try:
            meta = json.loads(raw[_META.encode()])
            steps = [
                Step.from_dict(json.loads(v))
                for k, v in raw.items()
                if k.startswith(_STEP.encode())
            ]
        except (ValueError, TypeError) as exc:
            raise JobError(f"job {job_id!r} is stored damaged: {exc}") from exc
        order = meta.get("options", {}).get("order")
        job = Job.from_parts(meta, steps)
        if order:
            # Keep insertion order (dependencies first) across a store round trip.
            rank = {sid: i for i, sid in enumerate(order)}
            job.steps = dict(sorted(job.steps.items(), key=lambda kv: rank.get(kv[0], len(rank))))
        return job

    def active_ids(self) -> list[str]:
        return sorted(m.decode() for m in self.r.smembers(keys.JOBS_ACTIVE))

    def recent(self, limit: int = 20) -> list[Job]:
        """The newest ``limit`` jobs, newest first."""
        ids = [i.decode() for i in self.r.zrevrange(keys.JOBS_ALL, 0, limit - 1)]
        out = []
        for job_id in ids:
            try:
                out.append(self.load(job_id))
            except JobError:
                continue  # expired or removed while we listed
        return out

    def resolve(self, prefix: str) -> str:
        """The full id of the job whose id starts with ``prefix`` (unique), or a JobError."""
        if self.r.exists(keys.job(prefix)):
            return prefix
        ids = [i.decode() for i in self.r.zrange(keys.JOBS_ALL, 0, -1)]
        found = [i for i in ids if i.startswith(prefix)]
        if len(found) != 1:
            raise JobError(
                f"no job matches {prefix!r}" if not found else f"{prefix!r} is ambiguous"
            )
        return str(found[0])

    # -- cancel -----------------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        self.load(job_id)  # a JobError for an unknown id
        self.r.set(keys.cancel(job_id), str(time.time()), ex=7 * 86400)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.r.exists(keys.cancel(job_id)))

    # -- inventories and progress -------------------------------------------------------------
    def inventory(self, host: str, job_id: str | None = None) -> InventoryReport | None:
        """The latest inventory of ``host`` (or the one taken for ``job_id``), if any."""
        raw = self.r.get(keys.inventory(host, job_id))
        if raw is None:
            return None
        try:
            return decode(raw, InventoryReport)
        except MessageError:
            return None  # a damaged report is as good as none: the next inventory replaces it

    def put_inventory(self, report: InventoryReport, job_id: str | None = None) -> None:
        data = encode(report)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(keys.inventory(report.host), data)
        if job_id:
            pipe.set(keys.inventory(report.host, job_id), data, ex=7 * 86400)
        pipe.execute()

    def progress(self, job_id: str) -> dict[str, dict[str, Any]]:
        raw: dict[bytes, bytes] = self.r.hgetall(keys.progress(job_id))
        return {k.decode(): json.loads(v) for k, v in raw.items()}
