"""The short fleet verbs: `zfleet snapshot|diff|clone|send|destroy HOST:DATASET[@SNAP] ...`.

Each submits a one-off job of the `adhoc` kind (coordinator/adhoc.py) to the coordinator, which
must be running (`zfleet coordinator`), and follows it: the hosts take an inventory, the plan is
checked against it, and the hosts' workers do the work with the same grants, progress and
resumable transfers as `zfleet sync`. Only the fleet config's [hosts] (and, for `store:NAME`,
[stores]) are needed. Every verb takes `--dry-run` (plan and print, change nothing), `--json`,
`--no-wait` (submit and return the job id) and has the exit codes of `zfleet sync`:

    0 done, 1 failed, 2 bad address or config, 3 refused (a replica needs it, a diverged
    target), 4 Redis unreachable, 5 timed out waiting, 6 cancelled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

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
from app.cli.sync import follow, print_plan
from bus import keys, records
from coordinator import engine
from coordinator.adhoc import submit_adhoc
from coordinator.engine import Job
from coordinator.jobstore import JobStore

EXIT_CODES: Final = (
    "Exit codes: 0 done, 1 failed, 2 bad address or config, 3 refused, 4 Redis unreachable, "
    "5 timed out waiting, 6 cancelled."
)
F = Callable[..., Any]


def verb_options(fn: F) -> F:
    """The options every verb shares."""
    for deco in reversed((
        config_option(),
        click.option("--dry-run", is_flag=True, help="Plan and print the plan; change nothing."),
        click.option("--wait/--no-wait", default=True, show_default=True,
                     help="Follow the job until it finishes (else print its id)."),
        click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait."),
        json_option,
    )):  # fmt: skip
        fn = deco(fn)
    return fn


def diff_changes(client: Any, job: Job) -> list[dict[str, Any]] | None:
    """A diff job's entries: inline in the step's result, or from its record when large."""
    step = job.steps.get("diff")
    if step is None or step.status != engine.SUCCEEDED:
        return None
    if step.result.get("stored"):
        data = records.get_step_record(client, job.id, step.id)
        return list(data) if isinstance(data, list) else None
    return list(json.loads(str(step.result.get("changes") or "[]")))


def run_verb(
    verb: str,
    params: Mapping[str, Any],
    *,
    config_path: Path,
    dry_run: bool,
    wait: bool,
    timeout: float,
    as_json: bool,
    done_line: Callable[[Job], str] | None = None,
) -> None:
    """Submit the verb's job, follow it, print the outcome, exit with its code."""
    with cli_errors():
        client = redis_client(settings_for(config_path))
        store = JobStore(client)
        job = submit_adhoc(store, str(config_path), verb, params, dry_run=dry_run)
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
        done = follow(store, job.id, timeout=timeout, console=console,
                      bars=not as_json and verb in ("send", "clone"))  # fmt: skip
        changes = diff_changes(client, done) if verb == "diff" else None
        if as_json:
            out = job_detail(done)
            if verb == "diff":
                out["changes"] = changes
            print_json(out)
        elif dry_run:
            print_plan(console, done)
        elif done.status == engine.JOB_SUCCEEDED and verb == "diff":
            for c in changes or []:
                extra = f" -> {c['new_path']}" if c.get("new_path") else ""
                click.echo(f"{c['change']}\t{c['path']}{extra}")
        elif done.status == engine.JOB_SUCCEEDED and not done.report.get("refusals"):
            for note in done.report.get("notes", []):
                console.print(f"[dim]note[/] {note}")
            console.print(done_line(done) if done_line else f"{done.name}: done")
        else:
            print_job(console, done)
        if not done.done:
            raise SystemExit(EXIT_TIMEOUT)
        raise SystemExit(exit_code(done) if done.status != engine.JOB_SUCCEEDED else EXIT_OK)


def _moved(job: Job) -> int:
    return sum(int(s.result.get("bytes") or 0) for s in job.steps.values() if s.kind == "transfer")


@click.command("snapshot", epilog=EXIT_CODES)
@click.argument("address")
@click.option("-r", "--recursive", is_flag=True, help="Snapshot the descendants too (atomic).")
@verb_options
def snapshot(address: str, recursive: bool, **kw: Any) -> None:
    """Snapshot HOST:DATASET[@NAME] (NAME defaults to zfleet-<UTC time>).

    \b
    zfleet snapshot alpha:tank/home@before-upgrade -r
    """
    run_verb("snapshot", {"src": address, "recursive": recursive}, **kw,
             done_line=lambda j: f"snapshot {j.options['params']['src']} taken")  # fmt: skip


@click.command("diff", epilog=EXIT_CODES)
@click.argument("snapshot")
@click.argument("other", required=False)
@verb_options
def diff(snapshot: str, other: str | None, **kw: Any) -> None:
    """Files changed from HOST:DATASET@A to HOST:DATASET@B (or to the live dataset).

    Prints `zfs diff`'s lines: + added, - removed, M modified, R renamed.
    """
    run_verb("diff", {"src": snapshot, "other": other}, **kw)


@click.command("clone", epilog=EXIT_CODES)
@click.argument("snapshot")
@click.argument("target")
@click.option("--origin-at", metavar="DATASET",
              help="Across hosts: where the origin lands if the target host lacks it "
                   "(default: next to the clone, named after the source).")  # fmt: skip
@verb_options
def clone(snapshot: str, target: str, origin_at: str | None, **kw: Any) -> None:
    """Clone HOST:DATASET@SNAP as HOST2:NEWDATASET, on the same host or another one.

    On another host the origin snapshot is sent there first (incrementally when a replica is
    there already) unless that host holds it, and the result is a real clone of it.
    """
    run_verb("clone", {"src": snapshot, "dst": target, "origin_at": origin_at}, **kw,
             done_line=lambda j: f"{target} is a clone of {snapshot}")  # fmt: skip


@click.command("send", epilog=EXIT_CODES)
@click.argument("source")
@click.argument("target")
@click.option("-r", "--recursive", is_flag=True, help="The descendants too (clones as clones).")
@click.option("--no-snapshot", is_flag=True,
              help="Without @SNAP: send what exists instead of taking a new snapshot first.")
@click.option("--force", is_flag=True, help="Roll a diverged target back (zfs receive -F).")
@click.option("--mount", is_flag=True, help="Mount what is received (default: unmounted).")
@verb_options
def send(source: str, target: str, *, recursive: bool, no_snapshot: bool, force: bool,
         mount: bool, **kw: Any) -> None:  # fmt: skip
    """Replicate HOST:DATASET[@SNAP] to HOST2:DATASET (or store:NAME), like syncoid.

    No [jobs] entry needed. Without @SNAP a new snapshot (zfleet-<UTC time>) is taken first;
    the newest common snapshot is the incremental base, clones arrive as clones, and an
    interrupted send resumes where it stopped the next time.

    zfleet send alpha:tank beta:backup/tank -r
    """
    params = {"src": source, "dst": target, "recursive": recursive, "no_snapshot": no_snapshot,
              "force": force, "mount": mount}  # fmt: skip
    run_verb("send", params, **kw, done_line=lambda j: _sent_line(j, target))


def _sent_line(job: Job, target: str) -> str:
    from app.cli.common import human_bytes

    if job.report.get("up_to_date") and not _moved(job):
        return f"{target} is up to date"
    return f"sent {human_bytes(_moved(job))} to {target}"


@click.command("destroy", epilog=EXIT_CODES)
@click.argument("snapshot")
@click.option("-r", "--recursive", is_flag=True, help="The snapshot of every descendant too.")
@click.option("--force", is_flag=True, help="Destroy it although a replica needs it as a base.")
@verb_options
def destroy(snapshot: str, recursive: bool, force: bool, **kw: Any) -> None:
    """Destroy HOST:DATASET@SNAP, refusing a replica's incremental base unless --force.

    The base is the newest snapshot the dataset shares with a copy on another host or store
    (from the hosts' latest inventories): without it, that copy needs a full send again.
    """
    run_verb("destroy", {"src": snapshot, "recursive": recursive, "force": force}, **kw,
             done_line=lambda j: f"{snapshot} destroyed")  # fmt: skip
