"""Compare-and-set on a Redis key: the one primitive behind every lease and lock zfleet holds.

The leader lease (one active coordinator), the per-dataset write locks (one job per target
dataset) and a worker's run lease (one copy of a step at a time) all do the same thing: change a
key's holder only if it is still the holder the caller saw. Doing the compare and the change in
one Lua script makes each change atomic: a holder that lost its lease can never renew or delete
its successor's, and a take-over replaces exactly the dead holder it looked at.
"""

from __future__ import annotations

from typing import Any, Final

import redis

# KEYS[1] the key; ARGV[1] the holder expected ('' = absent), ARGV[2] the new holder ('' = delete
# the key), ARGV[3] time to live in ms (0 = none). Returns 1 when the change was made.
_CAS: Final = """
local cur = redis.call('get', KEYS[1])
if ARGV[1] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('del', KEYS[1])
  return 1
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('set', KEYS[1], ARGV[2])
end
return 1
"""


class Cas:
    """Atomic holder changes on keys of one Redis client."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.r = client
        self._script: Any = client.register_script(_CAS)

    def swap(self, key: str, expect: str | None, new: str | None, ttl_ms: int = 0) -> bool:
        """Set ``key`` to ``new`` (None deletes it) if its holder is ``expect`` (None: absent)."""
        return bool(self.queue_swap(self.r, key, expect, new, ttl_ms))

    def queue_swap(
        self, pipe: Any, key: str, expect: str | None, new: str | None, ttl_ms: int = 0
    ) -> Any:
        """:meth:`swap` on ``pipe`` (a pipeline: its reply, 1 or 0, comes with the others)."""
        if (expect is not None and not expect) or (new is not None and not new):
            raise ValueError("a holder must be a non-empty string")
        return self._script(keys=[key], args=[expect or "", new or "", int(ttl_ms)], client=pipe)

    def take(self, key: str, holder: str, ttl_ms: int = 0) -> bool:
        return self.swap(key, None, holder, ttl_ms)

    def renew(self, key: str, holder: str, ttl_ms: int) -> bool:
        return self.swap(key, holder, holder, ttl_ms)

    def release(self, key: str, holder: str) -> bool:
        return self.swap(key, holder, None)

    def holder(self, key: str) -> str | None:
        raw = self.r.get(key)
        return raw.decode() if isinstance(raw, bytes) else None
