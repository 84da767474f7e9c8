"""`zfleet container create|checkpoint|restore|send|ls`: containers whose file systems are datasets.

Each command submits a job of the `container` kind (coordinator/containerjob.py) and follows it;
the hosts' workers run podman (docs/containers.md). Exit codes:

    0 done, 1 failed, 2 bad name, address or config, 3 refused (a target diverged, a dataset is
    missing), 4 Redis unreachable, 5 timed out waiting, 6 cancelled, 7 a host has no container
    runtime (podman is not installed there).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import click
from rich.console import Console
from rich.table import Table

from app.cli.common import (
    EXIT_FAILED,
    EXIT_NO_RUNTIME,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    cli_errors,
    config_option,
    human_bytes,
    json_option,
    print_json,
    redis_client,
    settings_for,
)
from app.cli.jobs import exit_code, job_detail, print_job
from app.cli.sync import follow
from bus import containers as records
from bus import keys
from coordinator import engine
from coordinator.containerjob import submit_container
from coordinator.engine import Job
from coordinator.jobstore import JobStore
from protocol.errors import AddressError

EXIT_CODES: Final = (
    "Exit codes: 0 done, 1 failed, 2 bad name/address/config, 3 refused, 4 Redis unreachable, "
    "5 timed out, 6 cancelled, 7 no container runtime on a host."
)


def _common(fn: Any) -> Any:
    for deco in reversed((
        config_option(),
        click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait."),
        json_option,
    )):  # fmt: skip
        fn = deco(fn)
    return fn


@click.group("container", epilog=EXIT_CODES)
def container() -> None:
    """Containers whose root is a clone of an image snapshot and whose home, shared and log
    datasets are mounted in; checkpointed with CRIU and sent to a co-worker's host.

    \b
    zfleet container create web --image alpha:tank/images/debian@v3 --home tank/home/ana --on alpha
    zfleet container checkpoint web
    zfleet container restore web@ckpt-20261203T120000Z
    zfleet container send web --to beta --live
    """


def _failed_step(job: Job) -> engine.Step | None:
    return next((s for s in job.steps.values() if s.status == engine.FAILED), None)


def run_op(op: str, params: Mapping[str, Any], *, config_path: Path, timeout: float,
           as_json: bool) -> Job:  # fmt: skip
    """Submit the operation's job, follow it, print the outcome, exit with its code."""
    with cli_errors():
        client = redis_client(settings_for(config_path))
        store = JobStore(client)
        job = submit_container(store, str(config_path), op, params)
        console = Console(stderr=as_json)
        if not client.exists(keys.LEADER):
            console.print("[yellow]note[/] no coordinator holds the lease: the job waits for "
                          "`zfleet coordinator`")  # fmt: skip
        done = follow(store, job.id, timeout=timeout, console=console, bars=not as_json)
    if as_json:
        print_json(job_detail(done))
    if not done.done:
        raise SystemExit(EXIT_TIMEOUT)
    if done.status == engine.JOB_SUCCEEDED:
        if not as_json:
            for note in done.report.get("notes", []):
                console.print(f"[dim]note[/] {note}")
        return done
    failed = _failed_step(done)
    if failed is not None and failed.error_type == "RuntimeMissing":
        click.echo(f"zfleet: {failed.host} has no container runtime: {failed.error}", err=True)
        raise SystemExit(EXIT_NO_RUNTIME)
    if failed is not None and failed.error_type in ("PlanRefused", "CheckpointUnsupported",
                                                     "DatasetNotFound"):  # fmt: skip
        click.echo(f"zfleet: {done.name}: {failed.error}", err=True)
        raise SystemExit(EXIT_REFUSED if failed.error_type == "PlanRefused" else EXIT_FAILED)
    if not as_json:
        print_job(console, done)
    raise SystemExit(exit_code(done))


def _local(address: str | None, host: str, what: str) -> str | None:
    """A dataset given as DATASET or HOST:DATASET (that host must be the container's)."""
    if not address:
        return None
    there, sep, dataset = address.rpartition(":")
    if sep and there != host:
        raise click.UsageError(f"--{what} {address}: must be on {host}, the container's host")
    return dataset if sep else address


@container.command("create", epilog=EXIT_CODES)
@click.argument("name")
@click.argument("command", nargs=-1)
@click.option("--image", required=True, metavar="HOST:DATASET@SNAP",
              help="The image snapshot; the root is a clone of it.")  # fmt: skip
@click.option("--on", "host", required=True, metavar="HOST", help="The host to run it on.")
@click.option("--home", metavar="DATASET", help="Mounted at /home.")
@click.option("--shared", metavar="DATASET", help="Mounted at /shared.")
@click.option("--log", "log_ds", metavar="DATASET", help="Mounted at /var/log/zfleet.")
@click.option("--network", default="none", show_default=True,
              help="podman's network: none, host, or a network of the host.")  # fmt: skip
@_common
def create(name: str, command: tuple[str, ...], *, image: str, host: str, home: str | None,
           shared: str | None, log_ds: str | None, network: str, **kw: Any) -> None:  # fmt: skip
    """Create and start container NAME on HOST, its root a clone of the image snapshot.

    COMMAND (after --) is what runs; default /sbin/init. The datasets are recorded so that
    sync, failover and rebase know the container uses them.
    """
    params = {"name": name, "image": image, "host": host, "home": _local(home, host, "home"),
              "shared": _local(shared, host, "shared"), "log": _local(log_ds, host, "log"),
              "command": list(command), "network": network}  # fmt: skip
    run_op("create", params, **kw)
    if not kw["as_json"]:
        click.echo(f"container {name} runs on {host} (root a clone of {image})")


@container.command("checkpoint", epilog=EXIT_CODES)
@click.argument("name")
@click.option("--as", "checkpoint", metavar="NAME", help="The checkpoint's name "
              "(default ckpt-<UTC time>).")  # fmt: skip
@click.option("--cold", is_flag=True, help="Without CRIU: stop, snapshot, start again.")
@_common
def checkpoint(name: str, checkpoint: str | None, cold: bool, **kw: Any) -> None:
    """CRIU checkpoint of NAME into its checkpoint dataset, every dataset snapshotted with it."""
    done = run_op("checkpoint", {"name": name, "checkpoint": checkpoint, "cold": cold}, **kw)
    if not kw["as_json"]:
        short = done.options["params"]["checkpoint"]
        mode = done.steps["checkpoint"].result.get("mode")
        click.echo(f"checkpoint {name}@{short} taken ({mode})")


@container.command("restore", epilog=EXIT_CODES)
@click.argument("target", metavar="NAME@CHECKPOINT")
@_common
def restore(target: str, **kw: Any) -> None:
    """Bring NAME back at CHECKPOINT: datasets rolled back, the CRIU image restored (a cold
    checkpoint starts the command afresh). Later checkpoints are destroyed."""
    name, sep, short = target.partition("@")
    if not sep or not short:
        with cli_errors():
            raise AddressError(f"{target!r} is not NAME@CHECKPOINT")
    done = run_op("restore", {"name": name, "checkpoint": short}, **kw)
    if not kw["as_json"]:
        click.echo(f"{name} restored at {short} ({done.steps['restore'].result.get('mode')})")


@container.command("send", epilog=EXIT_CODES)
@click.argument("name")
@click.option("--to", "to", required=True, metavar="HOST", help="The co-worker's host.")
@click.option("--stop-source", is_flag=True, help="Leave the original stopped (a move).")
@click.option("--live", is_flag=True, help="Pre-copy while it runs, then freeze, final "
              "checkpoint and increment (cold when CRIU cannot work).")  # fmt: skip
@_common
def send(name: str, to: str, stop_source: bool, live: bool, **kw: Any) -> None:
    """Send NAME (image clone, datasets, checkpoint) to HOST and run it there.

    Only what HOST lacks moves: a root whose image is there goes as an increment.
    """
    done = run_op("send", {"name": name, "to": to, "stop_source": stop_source, "live": live},
                  **kw)  # fmt: skip
    if kw["as_json"]:
        return
    r = done.report.get("container", {})
    click.echo(f"{name} runs on {to} ({r.get('restored')}); frozen {int(r.get('frozen_ms', 0))} ms"
               f" (checkpoint {int(r.get('checkpoint_ms', 0))} ms, restore "
               f"{int(r.get('restore_ms', 0))} ms), {human_bytes(r.get('freeze_bytes'))} moved "
               "while frozen"
               + (f", {human_bytes(r.get('precopy_bytes'))} pre-copied" if live else ""))


@container.command("ls")
@click.option("--uses", metavar="HOST:DATASET",
              help="Only the containers on HOST using DATASET or a dataset below it (for hooks "
                   "that stop them around a swap, a failover or a rebase).")  # fmt: skip
@config_option()
@json_option
def ls(uses: str | None, config_path: Path, as_json: bool) -> None:
    """The containers zfleet knows, where they run, and their datasets and checkpoints."""
    with cli_errors():
        client = redis_client(settings_for(config_path))
        if uses:
            host, sep, dataset = uses.partition(":")
            if not sep or not host or not dataset:
                raise AddressError(f"--uses {uses!r} is not HOST:DATASET")
            recs = records.using_dataset(client, host, dataset)
        else:
            recs = records.all_records(client)
    if as_json:
        print_json([{"name": r.name, "host": r.host, "copies": list(r.copies), "state": r.state,
                     "spec": records.spec_to_data(r.spec),
                     "checkpoints": [c.__dict__ for c in r.checkpoints]} for r in recs])
        raise SystemExit(EXIT_OK)
    table = Table(title="containers")
    for col in ("name", "host", "copies", "image", "datasets", "checkpoints"):
        table.add_column(col)
    for r in recs:
        table.add_row(r.name, r.host, ",".join(r.copies), r.spec.image,
                      "\n".join(r.spec.datasets), str(len(r.checkpoints)))  # fmt: skip
    Console().print(table)
