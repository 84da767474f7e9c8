"""Per-dataset write locks: no two jobs write the same target dataset at once.

A lock is a Redis key owned by a job id, with no expiry: a job holds its locks until it is done.
A lock whose owner is no longer running (finished, cancelled, vanished) is stale and may be taken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import redis

from bus import keys
from bus.lease import Cas


class DatasetLocks:
    """Acquire all or none of a job's ``host:dataset`` locks."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.r = client
        self.cas = Cas(client)

    def acquire_all(
        self, job_id: str, resources: Iterable[str], alive: Callable[[str], bool]
    ) -> dict[str, str]:
        """Lock every resource for ``job_id``; on conflict hold none, return {resource: owner}."""
        taken: list[str] = []
        conflicts: dict[str, str] = {}
        wanted = sorted(set(resources))
        # one round trip for the common case (every lock free); only the others one by one
        pipe = self.r.pipeline(transaction=False)
        for res in wanted:
            self.cas.queue_swap(pipe, keys.dataset_lock(res), None, job_id)
        for res, free in zip(wanted, pipe.execute() if wanted else [], strict=True):
            key = keys.dataset_lock(res)
            if free:
                taken.append(res)
                continue
            owner = self.cas.holder(key) or ""
            if owner == job_id:
                continue
            if owner and not alive(owner) and self.cas.swap(key, owner, job_id):
                taken.append(res)
                continue
            conflicts[res] = owner
        if conflicts:
            self.release_all(job_id, taken)
        return conflicts

    def release_all(self, job_id: str, resources: Iterable[str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for res in set(resources):
            self.cas.queue_swap(pipe, keys.dataset_lock(res), job_id, None)
        if len(pipe):
            pipe.execute()

    def owner(self, resource: str) -> str | None:
        return self.cas.holder(keys.dataset_lock(resource))
