"""`zfleet kind set|show|mounts`: a dataset's compartment (its `zfleet:kind`) and what follows.

`set` and `show` are one-off jobs of the `kind` kind (coordinator/kindjob.py), run by the host's
worker like the short verbs, so the coordinator must be running. `mounts` reads the hosts'
latest inventories and prints what a container mounts by policy (the container runtime's query).
Exit codes as the short verbs: 0 done, 1 failed, 2 bad address, kind or config, 3 refused (the
new kind would break the compartments), 4 Redis unreachable, 5 timed out waiting, 6 cancelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from app.cli.common import (
    EXIT_OK,
    EXIT_TIMEOUT,
    cli_errors,
    config_option,
    json_option,
    print_json,
    redis_client,
    settings_for,
)
from app.cli.jobs import exit_code, job_detail, print_job
from app.cli.sync import follow
from bus import keys
from coordinator import engine
from coordinator.config import load_config
from coordinator.engine import Job
from coordinator.fleetstatus import load_graph
from coordinator.jobstore import JobStore
from coordinator.kindjob import kind_report, replica_roots, submit_kind
from coordinator.kinds import mounts_for
from coordinator.rolestate import RoleStore, roles_of
from protocol.errors import ConfigError
from protocol.kinds import DESCRIPTIONS, KIND_PROPERTY, KINDS, Kind

EPILOG = ("Kinds: " + ", ".join(KINDS) + ". Exit codes: 0 done, 1 failed, 2 bad address, kind or "
          "config, 3 refused, 4 Redis unreachable, 5 timed out waiting, 6 cancelled.")  # fmt: skip


@click.group("kind", epilog=EPILOG)
def kind() -> None:
    """A dataset's kind (its compartment): where it replicates, how long it is kept, who mounts it.

    The policies are [kinds.<kind>] tables in the fleet config (docs/compartments.md).
    """


def _run(config_path: Path, action: str, address: str, value: str | None, *, force: bool,
         wait: bool, timeout: float, as_json: bool) -> None:  # fmt: skip
    with cli_errors():
        config = load_config(config_path)
        client = redis_client(settings_for(config_path))
        store = JobStore(client)
        job = submit_kind(store, str(config_path), action, address, value, force=force)
        console = Console(stderr=as_json)
        if not client.exists(keys.LEADER):
            console.print("[yellow]note[/] no coordinator holds the lease: the job waits for "
                          "`zfleet coordinator`")  # fmt: skip
        if not wait:
            if as_json:
                print_json({"id": job.id, "job": job.name, "status": job.status})
            else:
                console.print(f"submitted job {job.id} ({job.name}); `zfleet job show {job.id}`")
            return
        done = follow(store, job.id, timeout=timeout, console=console, bars=False)
        host, _, dataset = str(job.options["address"]).partition(":")
        replicas = replica_roots(config, roles_of(config.jobs, RoleStore(client)))
        shown = kind_report(config, load_graph(store, config), host, dataset, replicas=replicas)
        shown.update(_property(done, action))
        if as_json:
            print_json({**job_detail(done), "kind": shown})
        elif done.status == engine.JOB_SUCCEEDED and not done.report.get("refusals"):
            for note in done.report.get("notes", []):
                console.print(f"[dim]note[/] {note}")
            _print(console, shown)
        else:
            print_job(console, done)
        if not done.done:
            raise SystemExit(EXIT_TIMEOUT)
        raise SystemExit(exit_code(done) if done.status != engine.JOB_SUCCEEDED else EXIT_OK)


def _property(job: Job, action: str) -> dict[str, Any]:
    """The property step's answer: the kind on the host and where it comes from."""
    step = job.steps.get("get-property" if action == "show" else "set-property")
    if step is None or step.status != engine.SUCCEEDED:
        return {}
    r = step.result
    if action == "show":
        return {"kind": r.get(KIND_PROPERTY), "source": r.get(f"{KIND_PROPERTY}.source")}
    return {"kind": r.get("value"), "source": r.get("source"), "changed": r.get("changed"),
            "before": r.get("before")}  # fmt: skip


def _print(console: Console, shown: dict[str, Any]) -> None:
    where = shown["address"]
    value = shown.get("kind")
    if value is None:
        console.print(f"{where}: no kind (its jobs decide alone)")
    else:
        source = shown.get("source")
        console.print(f"{where}: [bold]{value}[/]" + (f" ({source})" if source else ""))
    if shown.get("changed") is False:
        console.print("[dim]unchanged: it had that already[/]")
    if value is not None and not shown.get("valid", True):
        console.print(f"[red]{value!r} is not a kind[/]: every sync refuses it (kinds: "
                      f"{', '.join(KINDS)})")  # fmt: skip
    policy = shown.get("policy")
    if policy:
        console.print(f"  {DESCRIPTIONS[Kind(policy['kind'])]}")
        hosts = policy["hosts"]
        to = "every job target" if hosts is None else ", ".join(hosts) or "no host"
        console.print(f"  replicates to: {to}; store: {'yes' if policy['store'] else 'no'}")
        kept = policy["retention"]
        console.print("  retention: " + ("the job's" if kept is None else
                      ", ".join(f"{n} x {p}" for p, n in kept.items()) or "keep all"))
        group = f", key group {policy['key_group']}" if policy["key_group"] else ""
        console.print(f"  encryption: {policy['encryption']}{group}")
        if policy["mounts"]:
            console.print(f"  mounted by: {', '.join(policy['mounts'])} at "
                          f"{policy['mount_path']}")  # fmt: skip
    for problem in shown.get("problems", []):
        console.print(f"  [red]layout[/] {problem}")


def _options(fn: Any) -> Any:
    for deco in reversed((
        config_option(),
        click.option("--wait/--no-wait", default=True, show_default=True,
                     help="Follow the job until it finishes (else print its id)."),
        click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait."),
        json_option,
    )):  # fmt: skip
        fn = deco(fn)
    return fn


@kind.command("set", epilog=EPILOG)
@click.argument("address")
@click.argument("value", metavar="KIND", required=False)
@click.option("--inherit", is_flag=True, help="Drop the dataset's own kind: it inherits again.")
@click.option("--force", is_flag=True, help="Set it although it breaks the compartments.")
@_options
def kind_set(address: str, value: str | None, inherit: bool, force: bool, config_path: Path,
             **kw: Any) -> None:  # fmt: skip
    """Give HOST:DATASET the kind KIND (zfs set zfleet:kind=KIND; its children inherit it).

    Refused (exit 3, nothing changed) when the new kind puts a home inside an image's tree or
    makes an image of a clone of a home; --force sets it anyway.

    \b
    zfleet kind set alpha:tank/homes home
    zfleet kind set alpha:tank/homes/guest --inherit
    """
    if (value is None) == (not inherit):
        with cli_errors():
            raise ConfigError("give a KIND, or --inherit (not both)" if inherit else
                              f"give a KIND ({', '.join(KINDS)}) or --inherit")  # fmt: skip
    _run(config_path, "set", address, value, force=force, **kw)


@kind.command("show", epilog=EPILOG)
@click.argument("address")
@_options
def kind_show(address: str, config_path: Path, **kw: Any) -> None:
    """HOST:DATASET's kind, where it comes from (set there or inherited) and its policy."""
    _run(config_path, "show", address, None, force=False, **kw)


@kind.command("mounts")
@click.argument("container")
@click.option("--host", help="Only datasets on this host.")
@config_option()
@json_option
def kind_mounts(container: str, host: str | None, config_path: Path, as_json: bool) -> None:
    """The datasets CONTAINER mounts by policy (homes, shared data), from the latest inventories.

    Each appears at <mount_path>/<its last component>; a dataset that only groups others of its
    kind (tank/homes above tank/homes/alice) is not listed itself, nor is a job's replica (a
    container writing into it would make it diverge; after a failover the new primary's are).
    """
    with cli_errors():
        config = load_config(config_path)
        client = redis_client(settings_for(config_path))
        store = JobStore(client)
        replicas = replica_roots(config, roles_of(config.jobs, RoleStore(client)))
        mounts = mounts_for(load_graph(store, config), config.kinds, container, host=host,
                            replicas=replicas)  # fmt: skip
        if as_json:
            print_json({"container": container, "mounts": [m.to_dict() for m in mounts]})
            return
        if not mounts:
            click.echo(f"{container} mounts nothing (no [kinds.*] mounts name it, or no "
                       "inventory yet)")  # fmt: skip
        for m in mounts:
            click.echo(f"{m.host}:{m.dataset}\t{m.target}\t{m.kind}")
