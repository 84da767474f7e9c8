"""Alert intake: from a parsed Alertmanager notification to "host H is down, jobs J need a
successor", each alert once.

:func:`triage` is pure: firing alerts whose labels name a fleet host that is some job's current
primary become :class:`HostDown`; everything else is :class:`Ignored` with the reason (resolved
alerts above all: a host coming back never fails anything back by itself). :class:`AlertLedger`
makes repeats harmless: the first notification of an outage claims its idempotency key in Redis
with the id of the job started for it, and every repeat (Alertmanager's repeat_interval, retries,
a second Alertmanager of a cluster) is answered with that same job id.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import redis

from protocol.alertmanager import HostRule, Notification, host_of
from protocol.errors import RedisUnavailable

LEDGER_PREFIX: Final = "zfleet:alert:"
LEDGER_TTL: Final = 30 * 86400  # seconds; longer than any outage is notified for


@dataclass(frozen=True)
class HostDown:
    """A firing alert about ``host``, the primary of ``jobs`` (sorted)."""

    host: str
    jobs: tuple[str, ...]
    key: str  # the alert's idempotency key
    since: datetime  # the alert's startsAt


@dataclass(frozen=True)
class Ignored:
    """An alert that asks for nothing, and why."""

    key: str
    reason: str
    host: str | None = None


@dataclass(frozen=True)
class Triage:
    down: tuple[HostDown, ...]
    ignored: tuple[Ignored, ...]


def triage(
    note: Notification,
    *,
    rule: HostRule,
    hosts: Collection[str],
    primaries: Mapping[str, str],
) -> Triage:
    """Sort a notification's alerts; ``primaries`` maps each job to its current primary host."""
    down: list[HostDown] = []
    ignored: list[Ignored] = []
    for alert in note.alerts:
        key = alert.idempotency_key
        host = host_of(alert, rule, hosts)
        if alert.status == "resolved":
            ignored.append(Ignored(key, "resolved: a returning host never fails back by itself",
                                   host))  # fmt: skip
        elif host is None:
            ignored.append(Ignored(key, f"label {rule.label!r} names no fleet host"))
        else:
            jobs = tuple(sorted(j for j, p in primaries.items() if p == host))
            if jobs:
                down.append(HostDown(host, jobs, key, alert.starts_at))
            else:
                ignored.append(Ignored(key, "the host is the primary of no job", host))
    return Triage(tuple(down), tuple(ignored))


class AlertLedger:
    """Which alert (idempotency key) started which job, in Redis."""

    def __init__(self, client: redis.Redis[bytes], *, ttl: int = LEDGER_TTL) -> None:
        self.r = client
        self.ttl = ttl

    def claim(self, key: str, job_id: str) -> str:
        """Record ``job_id`` for ``key`` unless one is recorded; the job id now on record."""
        name = LEDGER_PREFIX + key
        try:
            # SET NX GET needs Redis 7; a transaction of SET NX then GET works on 6.2 as well.
            pipe = self.r.pipeline(transaction=True)
            pipe.set(name, job_id, nx=True, ex=self.ttl)
            pipe.get(name)
            _, current = pipe.execute()
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot record alert {key}: {exc}") from exc
        return current.decode() if isinstance(current, bytes) else job_id

    def job_for(self, key: str) -> str | None:
        try:
            current = self.r.get(LEDGER_PREFIX + key)
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot read alert {key}: {exc}") from exc
        return current.decode() if isinstance(current, bytes) else None
