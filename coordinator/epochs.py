"""Fencing epochs: one counter per job in Redis, bumped only by whoever saw the current value.

A failover or switchover bumps the job's epoch when it hands the primary role to another host;
every write-affecting step carries the epoch it was planned under, and a worker refuses a step
whose epoch is older than the job's current one. The bump is a compare-and-set in one Lua script
(``zfleet:epoch:<job>`` is INCRed only if it still holds the value the caller read), so of two
coordinators racing to fail the same job over, exactly one wins and the other learns the winner.

The script also records who the epoch names as primary, when, and the caller's request id; a
caller that retries after a timeout with the same request id is told its own earlier bump won.
(A draft of the neutral ``bus`` package's epoch store: it imports nothing from coordinator/.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import redis

from bus import keys
from protocol.errors import RedisUnavailable, StaleEpoch

# KEYS[1] counter, KEYS[2] meta hash; ARGV seen, primary, request id.
_BUMP: Final = """
redis.replicate_commands()
local current = tonumber(redis.call('get', KEYS[1]) or '0')
local seen = tonumber(ARGV[1])
if current == seen then
  local now = redis.call('time')
  local at = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  current = redis.call('incr', KEYS[1])
  redis.call('hset', KEYS[2], 'primary', ARGV[2], 'at_ms', at, 'request', ARGV[3])
  return {1, current}
end
if current == seen + 1 and redis.call('hget', KEYS[2], 'request') == ARGV[3] then
  return {1, current}
end
return {0, current}
"""


def epoch_key(job: str) -> str:
    """The job's epoch counter (a plain integer string; absent means 0)."""
    return keys.epoch(job)


def meta_key(job: str) -> str:
    """Hash: ``primary`` (host the current epoch names), ``at_ms``, ``request``."""
    return keys.epoch_meta(job)


@dataclass(frozen=True)
class Epoch:
    """A job's current epoch and what it says; ``primary`` None before the first bump."""

    job: str
    value: int
    primary: str | None = None
    at: float | None = None  # unix seconds of the bump, by Redis's clock


@dataclass(frozen=True)
class Bump:
    """The outcome of a compare-and-set: ``won`` and the epoch now current."""

    won: bool
    epoch: int


class EpochStore:
    """Read, bump and check jobs' fencing epochs in one Redis."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.r = client
        self._bump: Any = client.register_script(_BUMP)

    def read(self, job: str) -> Epoch:
        try:
            pipe = self.r.pipeline(transaction=True)
            pipe.get(epoch_key(job))
            pipe.hgetall(meta_key(job))
            raw, meta = pipe.execute()
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot read the epoch of job {job}: {exc}") from exc
        value = int(raw) if raw is not None else 0
        primary = meta.get(b"primary")
        at_ms = meta.get(b"at_ms")
        return Epoch(
            job,
            value,
            primary.decode() if primary is not None else None,
            int(at_ms) / 1000 if at_ms is not None else None,
        )

    def bump(self, job: str, *, seen: int, primary: str, request: str) -> Bump:
        """Make ``primary`` the holder of epoch ``seen + 1`` if the epoch is still ``seen``.

        ``request`` identifies the caller's attempt (a job id): the same call retried after a
        lost reply is reported as won, any other caller that saw ``seen`` loses.
        """
        if seen < 0:
            raise ValueError(f"an epoch is >= 0, not {seen}")
        try:
            won, current = self._bump(
                keys=[epoch_key(job), meta_key(job)], args=[seen, primary, request]
            )
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot bump the epoch of job {job}: {exc}") from exc
        return Bump(bool(won), int(current))

    def check(self, job: str, epoch: int) -> None:
        """Refuse (StaleEpoch) work planned under another epoch than the current one.

        Older: planned before a failover. Newer: Redis lost its state (restored from an old
        backup, or replaced); refused too, since the counter can no longer fence anything.
        """
        current = self.read(job).value
        if epoch < current:
            raise StaleEpoch(
                f"job {job}: step of epoch {epoch} refused, the current epoch is {current}",
                seen=epoch,
                current=current,
            )
        if epoch > current:
            raise StaleEpoch(
                f"job {job}: step of epoch {epoch} refused, Redis says the epoch is only "
                f"{current} (was its state lost?)",
                seen=epoch,
                current=current,
            )
