"""Replication lag: how far each job target is behind its source, from the fleet graph alone.

For every (job, source dataset, target) the newest source snapshot is compared with the newest
source snapshot the target holds (matched by guid, so a renamed snapshot still counts). Lag is
the time between their creation (snapshot creation times survive a send), or, when the target
holds none, the age of the source's oldest snapshot. Pure: no Redis, no clocks but ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from coordinator.config import FleetConfig
from coordinator.graph import FleetGraph, Snap
from coordinator.planner import select_datasets, store_host

UP_TO_DATE: Final = "up-to-date"
BEHIND: Final = "behind"
MISSING: Final = "missing"


@dataclass(frozen=True)
class Lag:
    """One source dataset on one target of one job."""

    job: str
    source_host: str
    dataset: str
    target: str  # "host:dataset" or "store:NAME"
    target_host: str  # the graph key (a host, or "store:NAME")
    target_dataset: str | None
    newest: Snap | None  # the source's newest snapshot
    held: Snap | None  # the newest source snapshot the target has
    behind: int  # source snapshots newer than ``held``
    seconds: float

    @property
    def state(self) -> str:
        if self.held is None and self.newest is not None:
            return MISSING
        return UP_TO_DATE if self.behind == 0 else BEHIND


def fleet_lag(graph: FleetGraph, fleet: FleetConfig, now: float) -> list[Lag]:
    """The lag of every target of every job the graph can tell about.

    Targets whose host has reported no inventory are left out: unknown is not the same as behind.
    """
    out: list[Lag] = []
    for job in fleet.jobs.values():
        for src in job.sources:
            for ds in select_datasets(graph, src, job):
                snaps = ds.snapshots()
                newest = snaps[-1] if snaps else None
                for tgt in job.targets:
                    if tgt.store:
                        key, tname = store_host(tgt.store), None
                        held_guids = _store_guids(graph, key)
                    else:
                        assert tgt.host is not None
                        key, tname = tgt.host, job.target_dataset(src, tgt, ds.name)
                        tds = graph.dataset(key, tname)
                        held_guids = set(tds.snap_guids) if tds is not None else set()
                    if key not in graph.hosts:
                        continue
                    held_i = max((i for i, s in enumerate(snaps) if s.guid in held_guids),
                                 default=-1)  # fmt: skip
                    held = snaps[held_i] if held_i >= 0 else None
                    behind = len(snaps) - 1 - held_i
                    if newest is None or held is newest:
                        seconds = 0.0
                    elif held is None:
                        seconds = max(0.0, now - snaps[0].creation)
                    else:
                        seconds = float(max(0, newest.creation - held.creation))
                    out.append(Lag(job.name, src.host, ds.name, str(tgt), key, tname, newest,
                                   held, behind, seconds))  # fmt: skip
    return out


def _store_guids(graph: FleetGraph, key: str) -> set[int]:
    inv = graph.hosts.get(key)
    if inv is None:
        return set()
    return {g for d in inv.datasets.values() for g in d.snap_guids}
