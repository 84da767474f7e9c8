"""The fleet's state from the hosts' latest inventories: per dataset, where each snapshot is and
how far each target lags. Read by `zfleet status`, the metrics endpoint and the HTTP API."""

from __future__ import annotations

from typing import Any, Final

from coordinator.config import FleetConfig
from coordinator.graph import FleetGraph
from coordinator.jobstore import JobStore
from coordinator.rolestate import replica_root
from coordinator.selection import select_datasets
from coordinator.syncjob import report_objects


def fleet_status(graph: FleetGraph, config: FleetConfig) -> list[dict[str, Any]]:
    """Per job and source dataset: snapshots with the hosts holding each, and target lag."""
    rows: list[dict[str, Any]] = []
    for job in config.jobs.values():
        for src in job.sources:
            for ds in select_datasets(graph, src, job):
                snaps = ds.snapshots()
                entry: dict[str, Any] = {
                    "job": job.name, "host": src.host, "dataset": ds.name,
                    "origin": ds.origin, "kind": ds.kind, "snapshots": [], "targets": [],
                }  # fmt: skip
                held: dict[int, list[str]] = {s.guid: [src.host] for s in snaps}
                for tgt in job.targets:
                    if not tgt.host:
                        continue
                    tname = job.target_dataset(src, tgt, ds.name)
                    tds = graph.dataset(tgt.host, tname)
                    lag: dict[str, Any] = {"target": f"{tgt.host}:{tname}",
                                           "reported": tgt.host in graph.hosts}  # fmt: skip
                    common = -1
                    if tds is not None:
                        for g in tds.snap_guids:
                            if g in held:
                                held[g].append(tgt.host)
                                common = max(common, ds.index_of_guid(g))
                    lag["exists"] = tds is not None
                    lag["newest_common"] = snaps[common].short if common >= 0 else None
                    lag["snapshots_behind"] = len(snaps) - 1 - common if snaps else 0
                    lag["seconds_behind"] = (
                        snaps[-1].creation - snaps[common].creation
                        if snaps and common >= 0 else None
                    )  # fmt: skip
                    entry["targets"].append(lag)
                entry["snapshots"] = [
                    {"name": s.short, "guid": s.guid, "created": s.creation, "on": held[s.guid]}
                    for s in snaps
                ]
                rows.append(entry)
    return rows


ASIDE_MARKS: Final = {".diverged-": "diverged", ".replaced-": "replaced"}


def aside_datasets(graph: FleetGraph, config: FleetConfig) -> list[dict[str, Any]]:
    """The datasets a rejoin kept aside, per host: ``DATASET.diverged-ID`` holds what an old
    primary wrote after the newest common snapshot, ``DATASET.replaced-ID`` the replica line an
    operator replaced with ``--keep-diverged``. Never destroyed by zfleet: listed so that an
    operator can look, copy out and destroy them."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for job in sorted(config.jobs.values(), key=lambda j: j.name):
        if len(job.sources) != 1:
            continue
        for host in sorted({job.sources[0].host, *(t.host for t in job.targets if t.host)}):
            root = replica_root(job, host)
            if root is None:
                continue
            for ds in graph:
                mark = next((m for m in ASIDE_MARKS if m in ds.name), None)
                # the root's own aside is its sibling (tank/img.diverged-ID), not its child
                under = ds.name.startswith(root + "/") or ds.name.startswith(root + ".")
                if ds.host != host or mark is None or not under or (host, ds.name) in seen:
                    continue
                seen.add((host, ds.name))
                beside, _, tag = ds.name.rpartition(mark)
                snaps = ds.snapshots()
                rows.append({
                    "job": job.name, "host": host, "dataset": ds.name, "kind": ASIDE_MARKS[mark],
                    "beside": beside, "rejoin": tag.split("/", 1)[0], "origin": ds.origin,
                    "snapshots": [s.short for s in snaps],
                    "newest": snaps[-1].creation if snaps else None,
                })  # fmt: skip
    return sorted(rows, key=lambda r: (r["job"], r["host"], r["dataset"]))


def load_graph(store: JobStore, config: FleetConfig) -> FleetGraph:
    """The fleet graph from the hosts' latest inventories in Redis."""
    graph = FleetGraph()
    for host in config.hosts:
        report = store.inventory(host)
        if report is not None:
            graph.add_inventory(host, report_objects(report), report.taken_at)
    return graph
