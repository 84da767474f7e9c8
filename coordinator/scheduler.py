"""Scheduled jobs: which configured jobs are due now (pure), and when each last started.

The coordinator loop asks ``due`` every tick; a job that is still running is not started again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime

import redis

from bus import keys
from coordinator.config import FleetConfig


def due(
    config: FleetConfig,
    last_runs: Mapping[str, float | None],
    running: Collection[str],
    now: float,
) -> list[str]:
    """Names of scheduled jobs whose next run time has come and that are not running."""
    at = datetime.fromtimestamp(now, UTC)
    out = []
    for name, job in sorted(config.jobs.items()):
        if job.schedule is None or name in running:
            continue
        last = last_runs.get(name)
        last_at = datetime.fromtimestamp(last, UTC) if last is not None else None
        if job.schedule.next_after(last_at, at) <= at:
            out.append(name)
    return out


def last_runs(client: redis.Redis[bytes], names: Collection[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in names:
        raw = client.get(keys.schedule_last(name))
        out[name] = float(raw) if raw is not None else None
    return out


def record_run(client: redis.Redis[bytes], name: str, now: float) -> None:
    client.set(keys.schedule_last(name), repr(now))
