"""`zfleet switchover JOB --to HOST`: a planned hand-over of JOB's primary role, zero data lost.

The old primary runs the job's demote hook (quiesce), is made read-only, takes a final snapshot
and sends the increment to every replica; then the epoch is bumped, HOST is made writable and
mounted, and later syncs of JOB run from HOST (the old primary receives as a replica).
"""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.common import cli_errors, config_option, json_option, redis_client, settings_for
from app.cli.failover import EXIT_CODES, finish, read_config, wait_all
from coordinator.jobstore import JobStore
from coordinator.switchover import submit_switchover


@click.command("switchover", epilog=EXIT_CODES)
@click.argument("job_name")
@click.option("--to", "to", required=True, help="The replica host that becomes the primary.")
@config_option()
@click.option("--no-quiesce", is_flag=True, help="Do not run the demote hook first.")
@click.option("--wait/--no-wait", default=False, help="Follow the job until it finishes.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits.")
@json_option
def switchover(
    job_name: str, *, to: str, config_path: Path, no_quiesce: bool, wait: bool, timeout: float,
    as_json: bool,
) -> None:  # fmt: skip
    """Hand JOB_NAME's primary role to the replica on --to HOST (both workers running)."""
    with cli_errors():
        text, config = read_config(config_path)
        store = JobStore(redis_client(settings_for(config_path)))
        job = submit_switchover(store, text, config, job_name, to, quiesce=not no_quiesce)
        rows = [{"job": job_name, "id": job.id, "outcome": "started", "reason": ""}]
        done = wait_all(store, [job.id], timeout) if wait else []
    finish(done, rows, as_json=as_json, waited=wait)
