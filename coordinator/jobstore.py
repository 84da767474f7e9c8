"""Jobs in Redis: one hash per job (meta and one field per step), sets of all and active jobs.

Only the active coordinator writes a running job's state; ``create`` and ``request_cancel`` are
safe for anyone (the CLI). JSON values, so ``redis-cli hgetall zfleet:job:<id>`` is readable.

A finished job's hash expires after the store's retention (``job_retention`` setting, a week by
default); ``recent`` forgets ids whose hash expired. A job's fleet config is kept once per
content (``zfleet:config:<sha256>``), not in every job: a job scheduled every few minutes would
otherwise store the same file thousands of times.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, Final

import redis

from bus import keys, records
from coordinator.engine import JOB_TERMINAL, Job, Step
from protocol.errors import JobError
from protocol.zfs import InventoryReport

_META: Final = records.META_FIELD
_STEP: Final = records.STEP_FIELD
DEFAULT_RETENTION: Final = 7 * 86400.0


class JobStore:
    """Reads and writes jobs, inventories and progress in Redis."""

    def __init__(self, client: redis.Redis[bytes], retention: float = DEFAULT_RETENTION) -> None:
        self.r = client
        self.retention = retention

    # -- jobs -------------------------------------------------------------------------------
    def create(self, job: Job) -> None:
        """Store a new job and hand it to the coordinator (it becomes active)."""
        pipe = self.r.pipeline(transaction=True)
        text = job.options.pop("config", None)
        if isinstance(text, str):
            digest = hashlib.sha256(text.encode()).hexdigest()
            job.options["config_sha"] = digest
            # outlives every job that names it: refreshed by each new job using it
            pipe.set(keys.config(digest), text, ex=int(self.retention) + 86400)
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
            p.expire(keys.job(job.id), int(self.retention))
            p.expire(keys.progress(job.id), int(self.retention))
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

    def finished(self, job_id: str) -> bool:
        """Is the job finished? Reads its meta alone (a wide job's steps are many MB); a
        JobError when there is no such job."""
        raw = self.r.hget(keys.job(job_id), _META)
        if raw is None:
            raise JobError(f"no job {job_id!r}")
        try:
            status = json.loads(raw).get("status")
        except (ValueError, AttributeError) as exc:
            raise JobError(f"job {job_id!r} is stored damaged: {exc}") from exc
        return status in JOB_TERMINAL

    def active_ids(self) -> list[str]:
        return sorted(m.decode() for m in self.r.smembers(keys.JOBS_ACTIVE))

    def config_text(self, job: Job) -> str:
        """The fleet config the job was started with; JobError when it is gone."""
        digest = job.options.get("config_sha")
        if isinstance(digest, str):
            raw = self.r.get(keys.config(digest))
            if raw is None:
                raise JobError(f"job {job.id}: its fleet config {digest[:12]} has expired")
            return raw.decode()
        text = job.options.get("config")  # jobs stored before configs were kept apart
        if not isinstance(text, str):
            raise JobError(f"job {job.id} carries no config")
        return text

    def recent(self, limit: int = 20) -> list[Job]:
        """The newest ``limit`` jobs, newest first (ids whose job expired are forgotten)."""
        ids = [i.decode() for i in self.r.zrevrange(keys.JOBS_ALL, 0, limit - 1)]
        out = []
        for job_id in ids:
            try:
                out.append(self.load(job_id))
            except JobError:
                if not self.r.exists(keys.job(job_id)):
                    self.r.zrem(keys.JOBS_ALL, job_id)  # expired: forget the id too
        return out

    def forget_expired(self, batch: int = 500) -> int:
        """Drop the ids of the oldest jobs whose hash expired; returns how many."""
        ids = [i.decode() for i in self.r.zrange(keys.JOBS_ALL, 0, batch - 1)]
        if not ids:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.exists(keys.job(job_id))
        gone = [i for i, alive in zip(ids, pipe.execute(), strict=True) if not alive]
        if gone:
            self.r.zrem(keys.JOBS_ALL, *gone)
        return len(gone)

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
        records.request_cancel(self.r, job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return records.cancel_requested(self.r, job_id)

    # -- inventories and progress -------------------------------------------------------------
    def inventory(self, host: str, job_id: str | None = None) -> InventoryReport | None:
        """The latest inventory of ``host`` (or the one taken for ``job_id``), if any."""
        return records.get_inventory(self.r, host, job_id)

    def put_inventory(self, report: InventoryReport, job_id: str | None = None) -> None:
        records.put_inventory(self.r, report, job_id)

    def progress(self, job_id: str) -> dict[str, dict[str, Any]]:
        return records.read_progress(self.r, job_id)
