"""What the demo shows at the end: the status tree of every host, and the fleet graph SVG.

Both read the hosts' simulated pools directly (the demo's processes are stopped by then), through
the same FleetGraph and lag computation `zfleet graph` uses on a live fleet's inventories.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.tree import Tree

from app.demo.fleet import HOSTS, PASSPHRASE_FILE, STORE_NAME, DemoFleet
from app.demo.store import open_repo
from coordinator.config import load_config
from coordinator.graph import FleetGraph
from coordinator.graphsvg import render_svg
from coordinator.lag import UP_TO_DATE, fleet_lag
from coordinator.planner import store_host
from workers.cloud import manifest as mf
from workers.cloud.repo import Repository
from workers.zfs.base import ObjType, ZfsObject
from workers.zfs.sim import SimBackend

_STATE_STYLE = {UP_TO_DATE: "green", "behind": "yellow", "missing": "red"}


def graph_of(root: Path) -> FleetGraph:
    """The fleet graph of the demo's hosts, read from their pools, and of its store."""
    graph = FleetGraph()
    now = time.time()
    for host in HOSTS:
        graph.add_inventory(host, SimBackend(root / "hosts" / host).list(), now)
    secret = root / PASSPHRASE_FILE
    if (root / "store" / "config").exists() and secret.exists():
        repo = open_repo(root / "store", secret.read_text().strip())
        graph.add_inventory(store_host(STORE_NAME), store_objects(graph, repo), now)
    return graph


def store_objects(graph: FleetGraph, repo: Repository) -> list[ZfsObject]:
    """The store's streams as inventory rows: a dataset per stored dataset, a snapshot per
    stream's end (with the source's creation time where the graph knows the guid)."""
    manifests, _broken = mf.load_all(repo.target, repo.crypto)
    created = {s.guid: s.creation for ds in graph for s in ds.snapshots()}
    rows: dict[str, ZfsObject] = {}
    for txg, m in enumerate(sorted(manifests, key=lambda m: m.created), start=1):
        for sub in m.substreams or (mf.Substream(m.snapshot, m.toguid, m.fromguid),):
            dataset = sub.toname.split("@", 1)[0]
            rows.setdefault(dataset, ZfsObject(dataset, ObjType.FILESYSTEM, 0, 0, 0))
            rows[sub.toname] = ZfsObject(sub.toname, ObjType.SNAPSHOT, sub.toguid, txg,
                                         created.get(sub.toguid, int(m.created)))  # fmt: skip
    # A stream whose base is another dataset's snapshot stored a clone: keep the clone edge.
    by_guid = {o.guid: o.name for o in rows.values() if o.type is ObjType.SNAPSHOT}
    for m in manifests:
        base = by_guid.get(m.fromguid)
        dataset = m.snapshot.split("@", 1)[0]
        if base and base.split("@", 1)[0] != dataset and dataset in rows:
            rows[dataset] = replace(rows[dataset], origin=base)
    return list(rows.values())


def write_fleet_svg(fleet: DemoFleet, path: Path) -> None:
    """Draw the demo fleet and its object store, with lag against the job's targets."""
    graph = graph_of(fleet.root)
    now = time.time()
    lags = fleet_lag(graph, load_config(fleet.config), now)
    path.write_text(render_svg(graph, lags, title="zfleet demo fleet", now=now), encoding="utf-8")


def status_tree(root: Path) -> Tree:
    """Hosts, their datasets (clones with their origin) and snapshots, and each target's lag."""
    graph = graph_of(root)
    lags = {}
    config = root / "fleet.toml"
    if config.exists():
        lags = {(lg.target_host, lg.target_dataset or lg.dataset): lg
                for lg in fleet_lag(graph, load_config(config), time.time())}  # fmt: skip
    tree = Tree("[bold]fleet status[/]")
    for host, inv in sorted(graph.hosts.items()):
        branch = tree.add(f"[bold]{host}[/]")
        for name, ds in sorted(inv.datasets.items()):
            snaps = [s.short for s in ds.snapshots()]
            shown = " ".join(f"@{s}" for s in snaps[-4:])
            more = f"… +{len(snaps) - 4} " if len(snaps) > 4 else ""
            line = f"{name}  [dim]{more}{shown}[/]"
            if ds.origin:
                line += f"  [magenta]clone of {ds.origin}[/]"
            lag = lags.get((host, name))
            if lag is not None:
                style = _STATE_STYLE.get(lag.state, "white")
                line += f"  [{style}]{lag.state} ({lag.dataset})[/]"
            branch.add(line)
    return tree
