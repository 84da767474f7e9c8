"""What the demo shows at the end: the status tree of every host, and the fleet graph SVG.

Both read the hosts' simulated pools directly (the demo's processes are stopped by then), through
the same FleetGraph and lag computation `zfleet graph` uses on a live fleet's inventories.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.tree import Tree

from coordinator.config import load_config
from coordinator.demo.fleet import HOSTS, DemoFleet
from coordinator.graph import FleetGraph
from coordinator.graphsvg import render_svg
from coordinator.lag import UP_TO_DATE, fleet_lag
from workers.zfs.sim import SimBackend

_STATE_STYLE = {UP_TO_DATE: "green", "behind": "yellow", "missing": "red"}


def graph_of(root: Path) -> FleetGraph:
    """The fleet graph of the demo's hosts, read from their pools."""
    graph = FleetGraph()
    now = time.time()
    for host in HOSTS:
        graph.add_inventory(host, SimBackend(root / "hosts" / host).list(), now)
    return graph


def write_fleet_svg(fleet: DemoFleet, path: Path) -> None:
    """Draw the demo fleet, with lag against the demo job's targets, into ``path``."""
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
        lags = {(lg.target_host, lg.target_dataset): lg
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
