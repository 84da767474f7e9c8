"""`zfleet rejoin HOST`: a former primary comes back as a replica, receiving only increments.

HOST's datasets are fenced (read-only) first; what HOST wrote after the newest snapshot it shares
with the current primary is kept aside (a snapshot and a clone ``DATASET.diverged-JOBID``), the
dataset is rewound to the common snapshot and receives the increments since. With
``--keep-diverged`` HOST's own changes become its main line again instead (the replica line is
kept aside as ``DATASET.replaced-JOBID``) and HOST stays out of the job.
"""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.common import cli_errors, config_option, json_option, redis_client, settings_for
from app.cli.failover import EXIT_CODES, finish, read_config, wait_all
from coordinator.jobstore import JobStore
from coordinator.rejoin import submit_rejoin


@click.command("rejoin", epilog=EXIT_CODES)
@click.argument("host")
@config_option()
@click.option("--job", "jobs", multiple=True, help="Only this replication job (repeatable).")
@click.option("--keep-diverged", is_flag=True,
              help="Keep HOST's own changes as its main line (it stays out of the job).")
@click.option("--wait/--no-wait", default=False, help="Follow the jobs until they finish.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits.")
@json_option
def rejoin(
    host: str, *, config_path: Path, jobs: tuple[str, ...], keep_diverged: bool, wait: bool,
    timeout: float, as_json: bool,
) -> None:  # fmt: skip
    """Make HOST, failed over from, a replica of the jobs it was primary of."""
    with cli_errors():
        text, config = read_config(config_path)
        store = JobStore(redis_client(settings_for(config_path)))
        started = submit_rejoin(store, text, config, host, jobs=list(jobs) or None,
                                keep_diverged=keep_diverged)  # fmt: skip
        rows = [{"job": j.name, "id": j.id, "outcome": "started", "reason": ""} for j in started]
        done = wait_all(store, [j.id for j in started], timeout) if wait else []
    finish(done, rows, as_json=as_json, waited=wait)
