"""Step events: workers append to a Redis stream; the coordinator reads it as a consumer group.

An event is acknowledged (XACK) in the same transaction that stores its effect on the job, so a
coordinator killed between reading and storing sees the event again after restart: the new leader
claims the old consumers' pending entries (XAUTOCLAIM) before reading new ones.

The stream is never capped on write (a MAXLEN could drop events no coordinator has read while
none runs); the consumer trims it itself, only below the oldest entry the group has not yet
both read and acknowledged (:meth:`EventConsumer.trim_acknowledged`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

import redis
import structlog

from bus import keys
from protocol.errors import MessageError
from protocol.messages import StepEvent, decode, encode

log = structlog.get_logger(__name__)

_FIELD: Final = b"m"
# Acknowledged events kept for debugging (`redis-cli xrange`); older ones are trimmed.
KEEP_ACKED: Final = 10_000


def publish(client: redis.Redis[bytes], event: StepEvent) -> None:
    """Append ``event`` to the events stream."""
    client.xadd(keys.EVENTS, {_FIELD: encode(event)})


@dataclass(frozen=True)
class Delivery:
    """One stream entry: its id (for XACK) and the event, or None when it could not be read."""

    entry_id: bytes
    event: StepEvent | None


class EventConsumer:
    """The coordinator's side of the events stream (consumer group ``coordinator``)."""

    def __init__(self, client: redis.Redis[bytes], consumer: str) -> None:
        self.r = client
        self.consumer = consumer
        self._backlog_done = False

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(keys.EVENTS, keys.EVENTS_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def reclaim(self) -> None:
        """Read the pending entries again before new ones: a tick that failed (Redis lost mid-way)
        read events whose effects were never stored; they stay pending, unacknowledged, and
        ``>`` alone would never deliver them again."""
        self._backlog_done = False

    def claim_pending(self) -> list[Delivery]:
        """Take over every entry other (dead) coordinators read but never acknowledged."""
        out: list[Delivery] = []
        start: Any = "0-0"
        while True:
            reply: Any = self.r.xautoclaim(
                keys.EVENTS, keys.EVENTS_GROUP, self.consumer, min_idle_time=0,
                start_id=start, count=500,
            )  # fmt: skip
            start, entries = reply[0], reply[1]
            out.extend(self._decode(e) for e in entries if e and e[1] is not None)
            if start in (b"0-0", "0-0"):
                return out

    def read(self, block_ms: int = 1000, count: int = 200) -> list[Delivery]:
        """New events (after the backlog of claimed ones), waiting up to ``block_ms``."""
        if not self._backlog_done:
            self._backlog_done = True
            self.ensure_group()
            backlog = self.claim_pending()
            if backlog:
                return backlog
        reply: Any = self.r.xreadgroup(
            keys.EVENTS_GROUP, self.consumer, {keys.EVENTS: ">"}, count=count, block=block_ms
        )
        if not reply:
            return []
        return [self._decode(e) for _, entries in reply for e in entries]

    def read_after(
        self, pipe: Any, block_ms: int = 1000, count: int = 200
    ) -> tuple[list[Any], list[Delivery]]:
        """Run the commands queued on ``pipe`` (a non-transactional pipeline) and then the read,
        in one round trip: their replies (as before the wait) and the new events."""
        if not self._backlog_done:
            first = self.read(block_ms=block_ms, count=count)  # claims the backlog first
            return pipe.execute(), first
        pipe.xreadgroup(keys.EVENTS_GROUP, self.consumer, {keys.EVENTS: ">"}, count=count,
                        block=block_ms)  # fmt: skip
        *replies, reply = pipe.execute()
        if not reply:
            return replies, []
        return replies, [self._decode(e) for _, entries in reply for e in entries]

    def ack(self, ids: list[bytes], pipe: Any | None = None) -> None:
        if ids:
            (pipe or self.r).xack(keys.EVENTS, keys.EVENTS_GROUP, *ids)

    def trim_acknowledged(self, keep: int = KEEP_ACKED) -> int:
        """Drop acknowledged events beyond the newest ``keep``; never one still unread or
        unacknowledged by the group. Returns how many entries were removed."""
        groups: Any = self.r.xinfo_groups(keys.EVENTS)  # type: ignore[no-untyped-call]
        ours = [g for g in groups if _text(g.get("name")) == keys.EVENTS_GROUP]
        if not ours:
            return 0  # no group yet: nothing is known to be read
        last = _text(ours[0].get("last-delivered-id")) or "0-0"
        pending: Any = self.r.xpending(keys.EVENTS, keys.EVENTS_GROUP)  # type: ignore[no-untyped-call]
        floor = _text(pending.get("min")) if pending and pending.get("pending") else None
        # entries before both the oldest unacknowledged and the next unread one are done with
        bound = min((_id(x) for x in (last, floor) if x), default=(0, 0))
        if bound == (0, 0):
            return 0
        # keep the newest `keep` of the done ones: find the id `keep` entries below the bound
        older: Any = self.r.xrevrange(keys.EVENTS, max=f"({bound[0]}-{bound[1]}",
                                      count=keep + 1)  # fmt: skip
        if len(older) <= keep:
            return 0
        # XTRIM MINID drops ids below it: the oldest kept one, or the bound when keeping none
        cut = _text(older[keep - 1][0]) if keep else f"{bound[0]}-{bound[1]}"
        return int(self.r.xtrim(keys.EVENTS, minid=cut, approximate=False))

    def _decode(self, entry: Any) -> Delivery:
        entry_id, fields = entry
        try:
            return Delivery(entry_id, decode(fields[_FIELD], StepEvent))
        except (MessageError, KeyError, TypeError) as exc:
            # Never retry a message that cannot be read: acknowledge and report it instead.
            log.warning("events.unreadable", entry=entry_id, error=str(exc))
            return Delivery(entry_id, None)


def now() -> float:
    return time.time()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
