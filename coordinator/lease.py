"""The leader lease: one active coordinator at a time (a compare-and-set lease, bus/lease.py).

A coordinator that dies stops renewing, and another takes over once the lease expires; one that
cannot renew in time (paused, partitioned) learns it lost the lease and stops acting.
"""

from __future__ import annotations

import redis

from bus import keys
from bus.lease import Cas
from protocol.errors import LeaseLost


class LeaderLease:
    """A lease on ``key`` owned by ``owner`` for ``ttl_ms`` at a time."""

    def __init__(self, client: redis.Redis[bytes], owner: str, ttl_ms: int = 10_000,
                 key: str = keys.LEADER) -> None:  # fmt: skip
        self.r = client
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.key = key
        self.held = False
        self.cas = Cas(client)

    def acquire(self) -> bool:
        """Take the lease if it is free (or already ours); True when we hold it."""
        self.held = self.cas.take(self.key, self.owner, self.ttl_ms) or self.renew_if_ours()
        return self.held

    def renew_if_ours(self) -> bool:
        return self.cas.renew(self.key, self.owner, self.ttl_ms)

    def renew(self) -> None:
        """Extend the lease; LeaseLost when someone else holds it now."""
        if not self.renew_if_ours():
            self.held = False
            raise LeaseLost(f"coordinator {self.owner} lost the leader lease to {self.holder()}")

    def release(self) -> None:
        if self.held:
            self.cas.release(self.key, self.owner)
            self.held = False

    def holder(self) -> str | None:
        return self.cas.holder(self.key)
