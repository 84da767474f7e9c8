"""`zfleet jobs` and `zfleet job show|cancel`: what ran, what runs, and stopping it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from app.cli.common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    cli_errors,
    config_option,
    human_bytes,
    json_option,
    print_json,
    redis_client,
    settings_for,
)
from coordinator import engine
from coordinator.engine import Job
from coordinator.jobstore import JobStore

_STYLE = {"succeeded": "green", "failed": "red", "blocked": "yellow", "cancelled": "magenta",
          "running": "cyan", "submitted": "cyan", "pending": "dim"}  # fmt: skip


def exit_code(job: Job) -> int:
    """The exit code a finished job stands for."""
    if job.status == engine.JOB_SUCCEEDED:
        return EXIT_OK
    if job.status == engine.JOB_CANCELLED:
        return EXIT_CANCELLED
    if job.report.get("refusals") and all(
        s.status == engine.SUCCEEDED for s in job.steps.values()
    ):
        return EXIT_REFUSED
    return EXIT_FAILED


def job_summary(job: Job) -> dict[str, Any]:
    """A job as plain data for --json."""
    moved = sum(int(s.result.get("bytes") or 0) for s in job.steps.values())
    return {
        "id": job.id, "job": job.name, "status": job.status, "created": job.created,
        "finished": job.finished, "error": job.error, "steps": engine.counts(job),
        "bytes": moved, "trigger": job.options.get("trigger"),
        "dry_run": bool(job.options.get("dry_run")),
    }  # fmt: skip


def job_detail(job: Job) -> dict[str, Any]:
    out = job_summary(job)
    out["report"] = job.report
    out["step_list"] = [
        {k: v for k, v in s.to_dict().items() if k != "args"} | {"args": s.args}
        for s in job.steps.values()
    ]
    return out


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _store(config_path: Path | None) -> JobStore:
    return JobStore(redis_client(settings_for(config_path)))


@click.command("jobs")
@config_option(required=False)
@click.option("--limit", default=20, show_default=True, help="How many recent jobs.")
@json_option
def jobs(config_path: Path | None, limit: int, as_json: bool) -> None:
    """List recent jobs, newest first."""
    with cli_errors():
        found = _store(config_path).recent(limit)
        if as_json:
            print_json([job_summary(j) for j in found])
            return
        table = Table(title="zfleet jobs")
        for col in ("id", "job", "status", "steps", "moved", "started", "trigger"):
            table.add_column(col)
        for j in found:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(engine.counts(j).items()))
            table.add_row(j.id, j.name, f"[{_STYLE.get(j.status, '')}]{j.status}", counts,
                          human_bytes(job_summary(j)["bytes"]), _when(j.created),
                          str(j.options.get("trigger", "")))  # fmt: skip
        Console().print(table)


@click.group("job")
def job() -> None:
    """Inspect or cancel one job (an id or a unique prefix of one)."""


@job.command("show")
@click.argument("job_id")
@config_option(required=False)
@json_option
def show(job_id: str, config_path: Path | None, as_json: bool) -> None:
    """Show a job's steps, their state, and what the plan reported."""
    with cli_errors():
        store = _store(config_path)
        j = store.load(store.resolve(job_id))
        if as_json:
            print_json(job_detail(j))
            raise SystemExit(exit_code(j) if j.done else EXIT_OK)
        print_job(Console(), j)
        raise SystemExit(exit_code(j) if j.done else EXIT_OK)


def print_job(console: Console, j: Job) -> None:
    """The job as a table of steps, followed by refusals and notes."""
    table = Table(title=f"job {j.id} ({j.name}): {j.status}")
    for col in ("step", "kind", "host", "state", "try", "deps", "moved/estimate", "error"):
        table.add_column(col)
    for s in j.steps.values():
        moved = s.result.get("bytes")
        size = f"{human_bytes(moved) if moved is not None else '-'} / {human_bytes(s.estimate)}"
        table.add_row(s.id, s.kind, s.host or "(coordinator)",
                      f"[{_STYLE.get(s.status, '')}]{s.status}", str(s.attempt),
                      ",".join(s.deps), size, (s.error or "")[:80])  # fmt: skip
    console.print(table)
    for r in j.report.get("refusals", []):
        snaps = f" ({', '.join(r['snapshots'])})" if r.get("snapshots") else ""
        console.print(f"[red]refused[/] {r['source']} -> {r['target']}: {r['reason']}{snaps}")
    for note in j.report.get("notes", []):
        console.print(f"[dim]note[/] {note}")
    if j.error and not j.report.get("refusals"):
        console.print(f"[red]error[/] {j.error}")


@job.command("cancel")
@click.argument("job_id")
@config_option(required=False)
@json_option
def cancel(job_id: str, config_path: Path | None, as_json: bool) -> None:
    """Ask a job to stop: nothing new starts, running steps stop at their next check.

    Partial receives stay resumable and holds are released. Returns at once; `zfleet job show`
    tells when the job has stopped.
    """
    with cli_errors():
        store = _store(config_path)
        full = store.resolve(job_id)
        store.request_cancel(full)
        if as_json:
            print_json({"id": full, "cancel_requested": True})
        else:
            click.echo(f"cancel requested for job {full}")
