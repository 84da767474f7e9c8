"""The fleet's state from the hosts' latest inventories: per dataset, where each snapshot is and
how far each target lags. Read by `zfleet status`, the metrics endpoint and the HTTP API."""

from __future__ import annotations

from typing import Any

from coordinator.config import FleetConfig
from coordinator.graph import FleetGraph
from coordinator.jobstore import JobStore
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


def load_graph(store: JobStore, config: FleetConfig) -> FleetGraph:
    """The fleet graph from the hosts' latest inventories in Redis."""
    graph = FleetGraph()
    for host in config.hosts:
        report = store.inventory(host)
        if report is not None:
            graph.add_inventory(host, report_objects(report), report.taken_at)
    return graph
