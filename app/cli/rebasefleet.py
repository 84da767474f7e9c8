"""`zfleet rebase HOST:IMAGE... --onto HOST:BASE@SNAP -c fleet.toml`: rebase across the fleet.

The fleet form of `zfleet rebase` (app/cli/rebase.py hands over to :func:`run` when the images
are HOST: addresses or --on names a host): one job of the `rebase` kind (coordinator/rebasejob.py)
run by each image's host worker, so the coordinator must be running. `--sync JOB` sets the
replicas aside and runs JOB afterwards, so they receive only each image's own blocks;
`--proposal FILE --on HOST` rebases the clusters of `zfleet dedup analyze`'s proposal on HOST.
Exit codes: 0 done, 1 a rebase or the sync failed (a failed rebase is rolled back), 2 bad input
(nothing submitted), 3 refused or a conflict (nothing changed), 4 Redis unreachable, 5 timed out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from app.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    cli_errors,
    human_bytes,
    print_json,
    redis_client,
    settings_for,
)
from app.cli.jobs import exit_code, job_detail, print_job
from bus import keys
from coordinator import engine
from coordinator.config import load_config
from coordinator.engine import Job
from coordinator.jobstore import JobStore
from coordinator.rebasejob import Request, requests_for, requests_from_pairs, submit_rebase
from coordinator.runner import wait_job
from protocol.errors import ConfigError


def proposal_pairs(data: Any) -> list[tuple[str, str]]:
    """``(member, base)`` from a proposal: `zfleet dedup analyze --json`'s (members as objects
    with a ``dataset``, the base's analysed ``base_snapshot``) or the hand-written form
    (``{"clusters": [{"base": ..., "members": [names]}]}``). ConfigError when malformed."""
    clusters = data.get("clusters") if isinstance(data, Mapping) else None
    if not isinstance(clusters, list):
        raise ConfigError('a proposal needs "clusters": a list of {base, members}')
    out = []
    for i, c in enumerate(clusters):
        base = c.get("base") if isinstance(c, Mapping) else None
        members = c.get("members") if isinstance(c, Mapping) else None
        if not isinstance(base, str) or not isinstance(members, list):
            raise ConfigError(f'cluster {i}: needs a "base" name and a "members" list')
        snap = c.get("base_snapshot")
        if isinstance(snap, str) and snap and "@" not in base:
            base = f"{base}@{snap}"
        for m in members:
            name = m.get("dataset") if isinstance(m, Mapping) else m
            if not isinstance(name, str):
                raise ConfigError(f"cluster {i}: a member is not a dataset name: {m!r}")
            out.append((name, base))
    if not out:
        raise ConfigError("the proposal has no members to rebase")
    return out


def analysis_lines(data: Mapping[str, Any]) -> list[str]:
    """The analysis's figures before an --optimize rebase: its clusters and what they save."""
    lines = []
    for c in data.get("clusters", []):
        if not c.get("members"):
            continue
        members = ", ".join(str(m.get("dataset")) for m in c.get("members", []))
        lines.append(f"cluster: {members} onto {c.get('base')}")
    lines.append(f"estimate: {human_bytes(data.get('bytes_now'))} now, "
                 f"{human_bytes(data.get('bytes_after'))} after, lower bound "
                 f"{human_bytes(data.get('lower_bound'))}")  # fmt: skip
    return lines


def load_proposal(path: Path) -> list[tuple[str, str]]:
    try:
        return proposal_pairs(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the proposal {path}: {exc}") from exc


def _sync_bytes(job: Job) -> int:
    return sum(int(s.result.get("bytes") or 0) for s in job.steps.values()
               if s.kind == "transfer")  # fmt: skip


def outcome(job: Job) -> int:
    """A conflict stopped a rebase (nothing changed): 3, like a refusal; else the job's code."""
    if job.status != engine.JOB_SUCCEEDED and any(
        s.error_type == "RebaseConflict" for s in job.steps.values()
    ):
        return EXIT_REFUSED
    return exit_code(job)


def run(
    config_path: Path,
    images: Sequence[str],
    onto: str | None,
    *,
    proposal: Path | None,
    on: str | None,
    sync: str | None,
    optimize: bool = False,
    threshold: float | None = None,
    dry_run: bool,
    timeout: float,
    as_json: bool,
    **kw: Any,
) -> None:
    """Submit the rebase job, follow it (and its sync), print the report, exit with its code."""
    with cli_errors():
        config = load_config(config_path)
        requests: list[Request]
        estimate: dict[str, Any] | None = None
        if optimize:
            if on is None:
                raise ConfigError("--optimize with a fleet config needs --on HOST")
            if on not in config.hosts:
                raise ConfigError(f"--on {on!r}: unknown host (hosts: {', '.join(config.hosts)})")
            from app.cli.dedup import analyze_names, host_backend

            kw = {} if threshold is None else {"threshold": threshold}
            estimate = analyze_names(host_backend(on, config_path), list(images), **kw
                                     ).proposal.to_dict()  # fmt: skip
            if not any(c["members"] for c in estimate["clusters"]):
                click.echo("nothing to rebase: no images alike enough (see zfleet dedup analyze)")
                raise SystemExit(EXIT_OK)
            requests = requests_from_pairs(config, on, proposal_pairs(estimate))
        elif proposal is not None:
            if images or onto:
                raise ConfigError("--proposal takes no IMAGE or --onto")
            if on is None:
                raise ConfigError("--proposal with a fleet config needs --on HOST")
            requests = requests_from_pairs(config, on, load_proposal(proposal))
        else:
            if not images or not onto:
                raise ConfigError("name HOST:IMAGE... and --onto HOST:BASE@SNAP")
            requests = requests_for(config, images, onto)
        if sync is not None:
            config.job(sync)
        client = redis_client(settings_for(config_path))
        store = JobStore(client)
        job = submit_rebase(store, str(config_path), requests, sync=sync, dry_run=dry_run, **kw)
        console = Console(stderr=as_json)
        if not client.exists(keys.LEADER):
            console.print("[yellow]note[/] no coordinator holds the lease: the job waits for "
                          "`zfleet coordinator`")  # fmt: skip
        done = wait_job(store, job.id, timeout=timeout, poll=0.3)
        code = outcome(done) if done.done else EXIT_TIMEOUT
        follow: Job | None = None
        sync_id = done.report.get("sync_job")
        if code == EXIT_OK and sync_id:
            follow = wait_job(store, str(sync_id), timeout=timeout, poll=0.3)
            if not follow.done:
                code = EXIT_TIMEOUT
            elif follow.status != engine.JOB_SUCCEEDED:
                code = EXIT_FAILED
        if as_json:
            out = job_detail(done)
            if estimate is not None:
                out["analysis"] = estimate
            if follow is not None:
                out["sync"] = {**job_detail(follow), "sent_bytes": _sync_bytes(follow)}
            print_json(out)
        else:
            if estimate is not None:
                console.print("\n".join(analysis_lines(estimate)))
            _print(console, done, follow)
        raise SystemExit(code)


def _print(console: Console, job: Job, follow: Job | None) -> None:
    for note in job.report.get("notes", []):
        console.print(f"[dim]note[/] {note}")
    if job.status != engine.JOB_SUCCEEDED or job.report.get("refusals"):
        print_job(console, job)
        return
    if job.options.get("dry_run"):
        for row in job.report.get("plan", []):
            args = row["args"]
            console.print(f"{row['host']}: rebase {args.get('image') or args.get('names')} "
                          f"onto {args.get('onto', '')}")  # fmt: skip
        return
    for img in job.report.get("images", []):
        if img.get("method") == "none":
            console.print(f"{img['host']}:{img['image']}: already a clone of {img['onto']}")
            continue
        console.print(
            f"{img['host']}:{img['image']}: onto {img['onto']} ({img['method']}), wrote "
            f"{human_bytes(img.get('bytes_written'))}, used {human_bytes(img.get('used_before'))}"
            f" -> {human_bytes(img.get('used_after'))}; old image "
            f"{img.get('backup') or 'dropped'}")  # fmt: skip
    if follow is not None:
        console.print(f"sync {follow.name} ({follow.id}): {follow.status}, sent "
                      f"{human_bytes(_sync_bytes(follow))}")  # fmt: skip
