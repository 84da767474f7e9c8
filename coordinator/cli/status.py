"""`zfleet status`: per dataset, its snapshots and where each exists; the lag of every target.

Reads the latest inventory each host's worker reported (every job's inventory step refreshes it)
and matches snapshots across hosts by guid.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from coordinator.cli.common import (
    cli_errors,
    config_option,
    json_option,
    print_json,
    redis_client,
    settings_for,
)
from coordinator.config import FleetConfig, load_config
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
                    "origin": ds.origin, "snapshots": [], "targets": [],
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


@click.command("status")
@config_option()
@json_option
def status(config_path: Path, as_json: bool) -> None:
    """Show each replicated dataset's snapshots, where each exists, and how far targets lag."""
    with cli_errors():
        config = load_config(config_path)
        store = JobStore(redis_client(settings_for(config_path)))
        graph = load_graph(store, config)
        rows = fleet_status(graph, config)
        if as_json:
            print_json({
                "hosts": {h: {"reported_at": inv.reported_at}
                          for h, inv in graph.hosts.items()},
                "datasets": rows,
            })  # fmt: skip
            return
        console = Console()
        missing = [h for h in config.hosts if h not in graph.hosts]
        if missing:
            console.print(f"[yellow]no inventory yet from[/] {', '.join(missing)} "
                          "(run a sync, or wait for a scheduled one)")  # fmt: skip
        for row in rows:
            title = f"{row['host']}:{row['dataset']} (job {row['job']})"
            if row["origin"]:
                title += f", clone of {row['origin']}"
            table = Table(title=title)
            table.add_column("snapshot")
            table.add_column("created")
            table.add_column("on")
            for s in row["snapshots"]:
                table.add_row(s["name"], time.strftime("%Y-%m-%d %H:%M", time.gmtime(s["created"])),
                              ", ".join(s["on"]))  # fmt: skip
            console.print(table)
            for t in row["targets"]:
                if not t["exists"]:
                    console.print(f"  {t['target']}: [red]missing[/]")
                elif t["snapshots_behind"] == 0:
                    console.print(f"  {t['target']}: [green]up to date[/]")
                else:
                    secs = t["seconds_behind"]
                    behind = f", {secs}s" if secs is not None else ""
                    n, common = t["snapshots_behind"], t["newest_common"]
                    console.print(f"  {t['target']}: [yellow]{n} snapshot(s) behind{behind}[/] "
                                  f"(newest common: {common})")  # fmt: skip
