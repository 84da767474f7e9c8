"""Per-dataset write locks: no two jobs write the same target dataset at once.

A lock is a Redis key owned by a job id, with no expiry: a job holds its locks until it is done.
A lock whose owner is no longer running (finished, cancelled, vanished) is stale and may be taken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

import redis

from coordinator import keys

_TAKE_STALE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class DatasetLocks:
    """Acquire all or none of a job's ``host:dataset`` locks."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.r = client
        self._take_stale: Any = client.register_script(_TAKE_STALE)
        self._release: Any = client.register_script(_RELEASE)

    def acquire_all(
        self, job_id: str, resources: Iterable[str], alive: Callable[[str], bool]
    ) -> dict[str, str]:
        """Lock every resource for ``job_id``; on conflict hold none, return {resource: owner}."""
        taken: list[str] = []
        conflicts: dict[str, str] = {}
        for res in sorted(set(resources)):
            key = keys.dataset_lock(res)
            if self.r.set(key, job_id, nx=True):
                taken.append(res)
                continue
            raw = self.r.get(key)
            owner = raw.decode() if isinstance(raw, bytes) else ""
            if owner == job_id:
                continue
            if owner and not alive(owner) and self._take_stale(keys=[key], args=[owner, job_id]):
                taken.append(res)
                continue
            conflicts[res] = owner
        if conflicts:
            self.release_all(job_id, taken)
        return conflicts

    def release_all(self, job_id: str, resources: Iterable[str]) -> None:
        for res in set(resources):
            self._release(keys=[keys.dataset_lock(res)], args=[job_id])

    def owner(self, resource: str) -> str | None:
        raw = self.r.get(keys.dataset_lock(resource))
        return raw.decode() if isinstance(raw, bytes) else None
