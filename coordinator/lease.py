"""The leader lease: one active coordinator at a time (SET NX PX, renewed by its owner only).

A coordinator that dies stops renewing, and another takes over once the lease expires; one that
cannot renew in time (paused, partitioned) learns it lost the lease and stops acting.
"""

from __future__ import annotations

from typing import Any, Final

import redis

from coordinator import keys
from protocol.errors import LeaseLost

# Renew or release only while we still own it: compare and act in one step.
_RENEW: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class LeaderLease:
    """A lease on ``key`` owned by ``owner`` for ``ttl_ms`` at a time."""

    def __init__(self, client: redis.Redis[bytes], owner: str, ttl_ms: int = 10_000,
                 key: str = keys.LEADER) -> None:  # fmt: skip
        self.r = client
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.key = key
        self.held = False
        self._renew: Any = client.register_script(_RENEW)
        self._release: Any = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lease if it is free (or already ours); True when we hold it."""
        if self.r.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            self.held = True
        else:
            self.held = self.renew_if_ours()
        return self.held

    def renew_if_ours(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))

    def renew(self) -> None:
        """Extend the lease; LeaseLost when someone else holds it now."""
        if not self.renew_if_ours():
            self.held = False
            raise LeaseLost(f"coordinator {self.owner} lost the leader lease to {self.holder()}")

    def release(self) -> None:
        if self.held:
            self._release(keys=[self.key], args=[self.owner])
            self.held = False

    def holder(self) -> str | None:
        raw = self.r.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else None
