"""`zfleet ls [HOST:]PATTERN`: datasets and snapshots across the fleet, from its inventories.

Reads the latest inventory each host's worker reported to Redis (every job leaves a fresh one);
`--refresh` first asks every host (through the coordinator, as an `adhoc` job) for a new one.
"""

from __future__ import annotations

import time
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from app.cli.common import (
    EXIT_TIMEOUT,
    cli_errors,
    config_option,
    human_bytes,
    json_option,
    print_json,
    redis_client,
    settings_for,
)
from app.cli.jobs import exit_code
from app.cli.verbs import EXIT_CODES
from bus import records
from coordinator import engine
from coordinator.adhoc import submit_adhoc
from coordinator.config import load_config
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from protocol.addresses import parse_pattern
from protocol.zfs import ZfsObject

TYPES = ("filesystem", "volume", "snapshot", "bookmark")


def matches(obj: ZfsObject, glob: str) -> bool:
    """A glob matches names (``tank/*``, ``*@daily-*``); a plain name matches itself and what
    lies under it, as ``zfs list -r`` would."""
    if not glob:
        return True
    if any(ch in glob for ch in "*?["):
        return fnmatchcase(obj.name, glob)
    return obj.name == glob or obj.name.startswith((glob + "/", glob + "@", glob + "#"))


def select(objects: list[ZfsObject], glob: str, types: set[str]) -> list[ZfsObject]:
    return [o for o in objects if o.type.value in types and matches(o, glob)]


@click.command("ls", epilog=EXIT_CODES)
@click.argument("pattern", default="", required=False)
@config_option()
@click.option("-t", "--type", "types", multiple=True, type=click.Choice([*TYPES, "all"]),
              help="What to list (repeatable; default filesystems and volumes, or snapshots "
                   "when PATTERN has '@').")  # fmt: skip
@click.option("--refresh", is_flag=True, help="Take fresh inventories first (needs a coordinator).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds --refresh waits.")
@json_option
def ls(pattern: str, *, config_path: Path, types: tuple[str, ...], refresh: bool, timeout: float,
       as_json: bool) -> None:  # fmt: skip
    """List [HOST:]PATTERN (or store:NAME[:PATTERN]) on every host and store of the fleet.

    \b
    zfleet ls 'alpha:tank/*'
    zfleet ls tank/home -t snapshot
    zfleet ls store:vault
    """
    with cli_errors():
        config = load_config(config_path)
        host, glob = parse_pattern(pattern, hosts=set(config.hosts), stores=set(config.stores))
        wanted = set(types) if types else ({"snapshot"} if "@" in glob else
                                           {"filesystem", "volume"})  # fmt: skip
        if "all" in wanted:
            wanted = set(TYPES)
        client = redis_client(settings_for(config_path))
        hosts = ([host] if host else
                 [*sorted(config.hosts), *(f"store:{s}" for s in sorted(config.stores))])
        job_id = None
        if refresh:
            params = {"host": host} if host and not host.startswith("store:") else {}
            store = JobStore(client)
            job = wait_job(store, submit_adhoc(store, str(config_path), "ls", params).id,
                           timeout=timeout, poll=0.3)  # fmt: skip
            if not job.done:
                raise SystemExit(EXIT_TIMEOUT)
            if job.status != engine.JOB_SUCCEEDED:
                click.echo(f"zfleet: refresh failed: {job.error or engine.counts(job)}", err=True)
                raise SystemExit(exit_code(job))
            job_id = job.id
        rows: list[dict[str, Any]] = []
        missing = []
        for h in hosts:
            report = (records.get_inventory(client, h, job_id) if job_id else None) or \
                records.get_inventory(client, h)
            if report is None:
                missing.append(h)
                continue
            for o in select(list(report.objects), glob, wanted):
                rows.append({"host": h, "name": o.name, "type": o.type.value, "guid": o.guid,
                             "origin": o.origin, "used": o.used, "referenced": o.referenced,
                             "creation": o.creation, "taken_at": report.taken_at})  # fmt: skip
        if as_json:
            print_json({"objects": rows, "no_inventory": missing})
            return
        table = Table(title=f"zfleet ls {pattern}".rstrip())
        for col in ("host", "name", "type", "refer", "origin", "created"):
            table.add_column(col)
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["creation"])) \
                if r["creation"] else "-"
            table.add_row(r["host"], r["name"], r["type"], human_bytes(r["referenced"]),
                          r["origin"] or "", when)  # fmt: skip
        console = Console()
        console.print(table)
        for h in missing:
            console.print(f"[yellow]no inventory[/] from {h} yet (`zfleet ls --refresh`)")
