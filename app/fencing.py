"""Fencing at worker start: a host whose primary role moved away stops taking writes first.

A worker that comes back after its host was failed over from (a power cut, a partition) may find
its old primary datasets mounted and writable, with users or containers about to write to them
while the new primary takes writes too. So before the worker's stream server, heartbeat or Celery
queue start, :func:`fence_on_start` reads each failover-configured job's role record in Redis
(``bus.records.role_record``: epoch, the primary it names, former primaries still out) and sets
``readonly=on`` on the datasets this host holds of every job it no longer leads:

- a host still *out* of a job (failed over from, not rejoined): all its datasets of the job;
- any other non-primary host of a job that has changed hands: the datasets that still say
  ``zfleet:role=primary`` (a primary of an earlier epoch whose demotion never ran).

Aside datasets (a rejoin's ``.diverged-``/``.replaced-``) are left as they are. Redis that cannot
be read stops the worker from starting: it cannot know what to fence.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
import structlog

from bus import records
from coordinator.config import FleetConfig
from coordinator.rolestate import first_primary, replica_root
from protocol.errors import DatasetNotFound, RedisUnavailable
from workers.roles import ROLE_PROP, FenceReport, fence
from workers.zfs.base import ObjType, ZfsBackend

log = structlog.get_logger(__name__)

_ASIDE = (".diverged-", ".replaced-")


def _held(backend: ZfsBackend, root: str) -> list[str]:
    """``root`` and its descendants on this host, aside datasets left out; [] when absent."""
    try:
        rows = backend.list(root, recursive=True, types=[ObjType.FILESYSTEM, ObjType.VOLUME])
    except DatasetNotFound:
        return []
    return sorted(r.name for r in rows if not any(mark in r.name for mark in _ASIDE))


def _still_primary(backend: ZfsBackend, names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        got = backend.get(name, [ROLE_PROP]).get(ROLE_PROP)
        if got is not None and got.value == "primary":
            out.append(name)
    return out


def to_fence(
    host: str, fleet: FleetConfig, backend: ZfsBackend, client: redis.Redis[bytes]
) -> dict[str, list[str]]:
    """Per job, the datasets of ``host`` to make read-only now (jobs with none left out)."""
    plan: dict[str, list[str]] = {}
    for name, jc in sorted(fleet.jobs.items()):
        if jc.failover is None:
            continue
        root = replica_root(jc, host)
        if root is None:
            continue
        try:
            rec = records.role_record(client, name)
        except redis.RedisError as exc:
            raise RedisUnavailable(
                f"cannot read the roles of job {name}: the worker of {host} does not start "
                f"unfenced ({exc})"
            ) from exc
        primary = rec.primary or first_primary(jc)
        if host == primary:
            continue
        if host in rec.out:
            names = _held(backend, root)
        elif rec.epoch > 0:
            names = _still_primary(backend, _held(backend, root))
        else:
            names = []
        if names:
            plan[name] = names
    return plan


def fence_on_start(
    host: str, fleet: FleetConfig, backend: ZfsBackend, client: redis.Redis[bytes]
) -> tuple[FenceReport, ...]:
    """Make read-only what moved away from ``host`` (see the module docstring); what it did."""
    plan = to_fence(host, fleet, backend, client)
    reports: list[FenceReport] = []
    for job, names in plan.items():
        done = fence(backend, names)
        reports += done
        log.warning("worker.fenced", job=job, host=host,
                    datasets=[r.dataset for r in done if r.made_readonly])  # fmt: skip
    return tuple(reports)
