"""`zfleet failover HOST`: bring the datasets whose primary was HOST up on the best replica.

For each replication job with a ``[jobs.NAME.failover]`` table whose current primary is HOST (or
only ``--job``), the coordinator inventories the live replicas, picks the freshest (or the first
listed candidate that qualifies), bumps the job's fencing epoch and makes that replica writable
and mounted. Refused unless HOST's worker heartbeat has expired (``--force`` overrides: the
epoch still fences HOST's worker off) or within the job's ``min_interval`` of its last failover.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from app.cli.common import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    cli_errors,
    config_option,
    json_option,
    print_json,
    redis_client,
    settings_for,
)
from app.cli.jobs import exit_code, job_detail
from coordinator import engine
from coordinator.config import FleetConfig, parse_config
from coordinator.engine import Job
from coordinator.failover import submit_failover
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from protocol.errors import ConfigError
from protocol.log import configure_logging

EXIT_CODES = (
    "Exit codes: 0 done (or submitted), 1 failed, 2 bad config or arguments, 3 refused (policy, "
    "flap protection, a live primary, no eligible replica; nothing changed), 4 Redis unreachable, "
    "5 --wait timed out, 6 cancelled."
)


def read_config(path: Path) -> tuple[str, FleetConfig]:
    """The fleet config's text and parsed form; logs go to stderr (stdout is for --json)."""
    configure_logging(level=os.environ.get("ZFLEET_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the fleet config: {exc.strerror or exc}") from exc
    return text, parse_config(text, source=str(path))


def wait_all(store: JobStore, ids: list[str], timeout: float) -> list[Job]:
    return [wait_job(store, i, timeout=timeout, poll=0.2) for i in ids]


def finish(jobs: list[Job], rows: list[dict[str, Any]], *, as_json: bool, waited: bool) -> None:
    """Print the outcome and exit with the code the worst job stands for."""
    console = Console()
    if as_json:
        print_json({"jobs": rows, "details": [job_detail(j) for j in jobs]})
    else:
        for row in rows:
            console.print(f"{row['job']}: {row['outcome']}"
                          + (f" (job {row['id']})" if row.get("id") else ""))  # fmt: skip
        for job in jobs:
            report = job.report
            console.print(f"job {job.id} ({job.kind} of {job.name}): {job.status}"
                          + (f": {job.error}" if job.error else ""))  # fmt: skip
            for key in ("primary", "epoch", "data_loss_window", "time_to_writable", "bytes"):
                if report.get(key) is not None:
                    console.print(f"  {key}: {report[key]}")
    codes = [EXIT_REFUSED for r in rows if r["outcome"] == "refused"]
    if waited:
        if any(not j.done for j in jobs):
            raise SystemExit(EXIT_TIMEOUT)
        codes += [exit_code(j) for j in jobs if j.status != engine.JOB_SUCCEEDED]
    failed = [c for c in codes if c != EXIT_REFUSED]
    raise SystemExit(failed[0] if failed else codes[0] if codes else EXIT_OK)


@click.command("failover", epilog=EXIT_CODES)
@click.argument("host")
@config_option()
@click.option("--job", "jobs", multiple=True, help="Only this replication job (repeatable).")
@click.option("--force", is_flag=True, help="Fail over although HOST's worker still beats.")
@click.option("--wait/--no-wait", default=False, help="Follow the jobs until they finish.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds --wait waits.")
@json_option
def failover(
    host: str, *, config_path: Path, jobs: tuple[str, ...], force: bool, wait: bool,
    timeout: float, as_json: bool,
) -> None:  # fmt: skip
    """Make the best replica of every job whose primary is HOST the writable primary."""
    with cli_errors():
        text, config = read_config(config_path)
        store = JobStore(redis_client(settings_for(config_path)))
        results = submit_failover(store, text, config, host, jobs=jobs, force=force)
        rows = [{"job": r.job, "id": r.job_id,
                 "outcome": "started" if r.created else "running" if r.job_id else "refused",
                 "reason": r.reason} for r in results]  # fmt: skip
        ids = [r.job_id for r in results if r.job_id]
        done = wait_all(store, ids, timeout) if wait else []
    finish(done, rows, as_json=as_json, waited=wait)


