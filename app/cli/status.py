"""`zfleet status`: per dataset, its snapshots and where each exists; the lag of every target.

Reads the latest inventory each host's worker reported (every job's inventory step refreshes it)
and matches snapshots across hosts by guid. Datasets are grouped by kind (their ``zfleet:kind``),
each group headed by what its kind's policy does, and datasets placed against the compartments
(a home inside an image's tree) are named first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import click
from rich.console import Console
from rich.table import Table

from app.cli.common import (
    cli_errors,
    config_option,
    json_option,
    print_json,
    redis_client,
    settings_for,
)
from coordinator.config import load_config
from coordinator.fleetstatus import aside_datasets, fleet_status, load_graph
from coordinator.jobstore import JobStore
from coordinator.kinds import KindPolicy, layout_problems
from protocol.kinds import KINDS, Kind

__all__ = ["fleet_status", "load_graph", "status"]

NO_KIND: Final = "no kind"


@click.command("status")
@config_option()
@json_option
def status(config_path: Path, as_json: bool) -> None:
    """Show each replicated dataset's snapshots, where each exists, and how far targets lag.

    Datasets a rejoin kept aside (an old primary's diverged writes, ``DATASET.diverged-ID``, or
    the replica line replaced by ``--keep-diverged``, ``DATASET.replaced-ID``) are listed last:
    zfleet never destroys them.
    """
    with cli_errors():
        config = load_config(config_path)
        store = JobStore(redis_client(settings_for(config_path)))
        graph = load_graph(store, config)
        rows = fleet_status(graph, config)
        aside = aside_datasets(graph, config)
        groups = by_kind(rows)
        problems = layout_problems(graph)
        if as_json:
            print_json({
                "hosts": {h: {"reported_at": inv.reported_at}
                          for h, inv in graph.hosts.items()},
                "datasets": rows,
                "aside": aside,
                "kinds": {k: {"policy": config.kinds[Kind(k)].describe() if k in KINDS else None,
                              "datasets": [f"{r['host']}:{r['dataset']}" for r in g]}
                          for k, g in groups.items()},
                "layout_problems": problems,
            })  # fmt: skip
            return
        console = Console()
        missing = [h for h in config.hosts if h not in graph.hosts]
        if missing:
            console.print(f"[yellow]no inventory yet from[/] {', '.join(missing)} "
                          "(run a sync, or wait for a scheduled one)")  # fmt: skip
        for problem in problems:
            console.print(f"[red]layout[/] {problem}")
        for kind, group in groups.items():
            policy = config.kinds[Kind(kind)] if kind in KINDS else None
            console.rule(f"[bold]{kind}[/] ({len(group)}): {policy_line(policy, kind)}")
            print_rows(console, group)
        if aside:
            table = Table(title="kept aside by rejoin (never destroyed by zfleet)")
            for col in ("host", "dataset", "kind", "beside", "snapshots", "newest"):
                table.add_column(col)
            for a in aside:
                newest = a["newest"]
                table.add_row(
                    a["host"], a["dataset"], a["kind"], a["beside"], str(len(a["snapshots"])),
                    time.strftime("%Y-%m-%d %H:%M", time.gmtime(newest)) if newest else "-",
                )  # fmt: skip
            console.print(table)


def by_kind(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Status rows by kind, in the order of protocol/kinds.py, then datasets with no kind (and
    values that are no kind, as they are spelled)."""
    out: dict[str, list[dict[str, Any]]] = {k.value: [] for k in Kind}
    for row in rows:
        out.setdefault(row["kind"] or NO_KIND, []).append(row)
    return {k: g for k, g in out.items() if g}


def policy_line(policy: KindPolicy | None, kind: str) -> str:
    """One line saying what a kind's policy does with its datasets."""
    if kind == NO_KIND:
        return "follow their jobs"
    if policy is None:
        return "[red]not a kind[/]: refused by every sync (`zfleet kind set` fixes it)"
    if not policy.replicates:
        return "never replicated"
    parts = ["to every job target" if policy.hosts is None
             else f"to {', '.join(policy.hosts) or 'no host'}"]  # fmt: skip
    parts.append("and stores" if policy.store else "not to stores")
    if policy.retention is not None:
        parts.append("keep " + ", ".join(f"{r.keep} {r.pattern}" for r in policy.retention))
    if policy.encryption == "required":
        parts.append("encrypted" + (f" under {policy.key_group}" if policy.key_group else ""))
    if policy.mounts:
        parts.append(f"mounted in {', '.join(policy.mounts)} at {policy.mount_path}")
    return "; ".join(parts)


def print_rows(console: Console, rows: list[dict[str, Any]]) -> None:
    """One table per dataset: its snapshots, where each is, and how far each target lags."""
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
