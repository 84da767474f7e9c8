"""`zfleet sync JOB`: run a replication job from the fleet config now.

Submits the job to the coordinator (which must be running: `zfleet coordinator`). With --wait it
follows the job with a progress bar per running transfer; with --dry-run the hosts take an
inventory, the planner plans, and the plan is printed with size estimates: nothing is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from app.cli.common import (
    EXIT_OK,
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
from coordinator import engine
from coordinator.engine import Job
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from coordinator.syncjob import submit_sync


@click.command("sync")
@click.argument("job_name")
@config_option()
@click.option("--dry-run", is_flag=True, help="Plan and print the plan with size estimates.")
@click.option("--wait/--no-wait", default=False, help="Follow the job until it finishes.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits.")
@json_option
def sync(
    job_name: str, *, config_path: Path, dry_run: bool, wait: bool, timeout: float, as_json: bool
) -> None:
    """Run JOB_NAME (a [jobs.NAME] of the fleet config) now.

    Exit codes: 0 done (or submitted), 1 failed, 2 bad config, 3 some datasets refused
    (diverged targets), 4 Redis unreachable, 5 --wait timed out, 6 cancelled.
    """
    with cli_errors():
        store = JobStore(redis_client(settings_for(config_path)))
        job = submit_sync(store, str(config_path), job_name, dry_run=dry_run)
        console = Console(stderr=as_json)
        if not (wait or dry_run):
            if as_json:
                print_json({"id": job.id, "job": job.name, "status": job.status})
            else:
                console.print(f"submitted job {job.id} ({job_name}); `zfleet job show {job.id}`")
            return
        done = follow(store, job.id, timeout=timeout, console=console, bars=not as_json)
        if as_json:
            print_json(job_detail(done))
        elif dry_run:
            print_plan(console, done)
        else:
            print_job(console, done)
        if not done.done:
            raise SystemExit(EXIT_TIMEOUT)
        raise SystemExit(exit_code(done) if done.status != engine.JOB_SUCCEEDED else EXIT_OK)


def follow(store: JobStore, job_id: str, *, timeout: float, console: Console, bars: bool) -> Job:
    """Wait for the job, with one progress bar per running transfer target."""
    if not bars:
        return wait_job(store, job_id, timeout=timeout, poll=0.5)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
        console=console, transient=False,
    ) as progress:  # fmt: skip
        tasks: dict[str, TaskID] = {}
        overall = progress.add_task(f"job {job_id}", total=None, detail="")

        def update(job: Job) -> None:
            counts = engine.counts(job)
            finished = sum(counts.get(s, 0) for s in engine.TERMINAL)
            progress.update(overall, total=len(job.steps), completed=finished,
                            description=f"job {job_id}: {job.status}",
                            detail=f"{finished}/{len(job.steps)} steps")  # fmt: skip
            for key, p in store.progress(job_id).items():
                step_id, _, target = key.partition("|")
                if key not in tasks:
                    tasks[key] = progress.add_task(f"{step_id} -> {target}", total=p.get("total"),
                                                   detail="")  # fmt: skip
                step = job.steps.get(step_id)
                total = p.get("total")
                done = p.get("done", 0)
                if step is not None and step.status == engine.SUCCEEDED:
                    done = total = max(int(done), int(total or 0))
                progress.update(tasks[key], completed=done, total=total,
                                detail=f"{human_bytes(done)} / {human_bytes(total)}")

        return wait_job(store, job_id, timeout=timeout, poll=0.5, on_poll=update)


def print_plan(console: Console, job: Job) -> None:
    """The dry run's plan: each step, what it sends where, and how much."""
    report: dict[str, Any] = job.report
    table = Table(title=f"plan for {job.name} (dry run {job.id})")
    for col in ("step", "kind", "host", "what", "after", "estimate"):
        table.add_column(col)
    for row in report.get("plan", []):
        args = row["args"]
        if row["kind"] == "transfer":
            send = args["send"]
            base = send["from_snap"] or "full"
            flag = "-I" if send["intermediates"] else "-i" if send["from_snap"] else ""
            tgts = ", ".join(f"{t['host']}:{t['dataset']}" for t in args["targets"])
            what = f"{send['snapshot']} {flag} {base} -> {tgts}".replace("  ", " ")
        elif row["kind"] in ("hold", "release"):
            what = f"{len(args['snapshots'])} snapshot(s), tag {args['tag']}"
        elif row["kind"] == "prune":
            what = ", ".join(name for name, _ in args["destroy"])
        else:
            what = ", ".join(f"{k}={v}" for k, v in args.items())
        table.add_row(row["id"], row["kind"], row["host"] or "-", what, ",".join(row["deps"]),
                      human_bytes(row["estimate"]) if row["estimate"] else "")  # fmt: skip
    console.print(table)
    console.print(f"estimated total: {human_bytes(report.get('estimate', 0))}")
    for t in report.get("up_to_date", []):
        console.print(f"[green]up to date[/] {t}")
    for r in report.get("refusals", []):
        snaps = f" ({', '.join(r['snapshots'])})" if r.get("snapshots") else ""
        console.print(f"[red]refused[/] {r['source']} -> {r['target']}: {r['reason']}{snaps}")
    for note in report.get("notes", []):
        console.print(f"[dim]note[/] {note}")
