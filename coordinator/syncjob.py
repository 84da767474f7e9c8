"""A sync job's life as a DAG: snapshot, inventory, plan, then the planned steps.

The first steps are known up front (one atomic snapshot per source host, one inventory per host
involved, then ``plan``); the ``plan`` step runs in the coordinator on the fresh inventories and
appends the planner's DAG behind itself. The job stores the config text it was started with, so a
restarted coordinator plans exactly what was asked.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import asdict
from typing import Any, Final

import structlog

from coordinator.config import FleetConfig, JobConfig, parse_config, store_descriptor, store_ref
from coordinator.engine import Job, Step, add_steps
from coordinator.graph import FleetGraph
from coordinator.jobkinds import JobKind, register
from coordinator.jobstore import JobStore
from coordinator.planner import Plan, StepPlan, plan_sync, store_host
from coordinator.rolestate import RoleStore, oriented
from protocol.messages import ResultValue
from protocol.steps import (
    InventoryArgs,
    OrientArgs,
    PlanArgs,
    SnapshotArgs,
    StoreRef,
    args_to_data,
)
from protocol.zfs import InventoryReport, ZfsObject

log = structlog.get_logger(__name__)

ASIDE_PATTERNS: Final = ("*.diverged-*", "*.replaced-*")  # workers/roles.py's aside names


def new_job_id() -> str:
    """Sortable by time, unique without coordination: ``20261128T075812-1a2b3c``."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def snapshot_name(job: JobConfig, now: float) -> str | None:
    """The snapshot this run takes, from the job's pattern (UTC), if it has one."""
    if job.snapshot_pattern is None:
        return None
    return time.strftime(job.snapshot_pattern, time.gmtime(now))


def host_roots(job: JobConfig) -> dict[str, list[str]]:
    """For each host the job touches, the dataset roots its inventory must cover."""
    roots: dict[str, list[str]] = {}
    for src in job.sources:
        roots.setdefault(src.host, []).append(src.dataset)
        for tgt in job.targets:
            if tgt.host and tgt.dataset:
                roots.setdefault(tgt.host, []).append(job.target_dataset(src, tgt, src.dataset))
    return {h: sorted(set(r)) for h, r in roots.items()}


def new_sync_job(
    config_text: str,
    config: FleetConfig,
    name: str,
    *,
    dry_run: bool = False,
    now: float | None = None,
    job_id: str | None = None,
    trigger: str = "cli",
) -> Job:
    """The DAG's first steps for one run of the job ``name``.

    A job with a failover table starts with the coordinator-side ``orient`` step instead: who is
    primary is read from Redis when the run starts (not when it was queued), and the snapshot,
    inventory and plan steps follow it in that direction, fenced by the job's epoch.
    """
    when = time.time() if now is None else now
    jc = config.job(name)
    stores = {t.store: store_descriptor(config.stores[t.store]) for t in jc.targets if t.store}
    job = Job(
        id=job_id or new_job_id(),
        name=name,
        kind="sync",
        created=when,
        options={"config": config_text, "source": config.source, "dry_run": dry_run,
                 "trigger": trigger, "stores": stores, "snapshot_pattern": jc.snapshot_pattern},
    )  # fmt: skip
    if jc.failover is not None:
        add_steps(job, [StepPlan(id="orient", host=None, args=OrientArgs())])
    else:
        add_steps(job, first_steps(jc, job))
    return job


def first_steps(jc: JobConfig, job: Job) -> list[StepPlan]:
    """Snapshot per source host (unless a dry run), inventory per host, then ``plan``."""
    stores = job.options.get("stores", {})
    steps: list[StepPlan] = []
    snap_ids: dict[str, str] = {}
    snap = None if job.options.get("dry_run") else snapshot_name(jc, job.created)
    if snap:
        by_host: dict[str, list[str]] = {}
        for src in jc.sources:
            by_host.setdefault(src.host, []).append(f"{src.dataset}@{snap}")
        for host, names in sorted(by_host.items()):
            sid = f"snapshot-{host}"
            snap_ids[host] = sid
            steps.append(
                StepPlan(id=sid, host=host,
                         args=SnapshotArgs(names=tuple(names), recursive=jc.recursive))
            )  # fmt: skip
    inv_ids = []
    for host, roots in sorted(host_roots(jc).items()):
        sid = f"inventory-{host}"
        inv_ids.append(sid)
        deps = (snap_ids[host],) if host in snap_ids else ()
        refs: tuple[StoreRef, ...] = ()
        if stores and host == jc.sources[0].host:
            refs = tuple(store_ref(d) for _, d in sorted(stores.items()))
        args = InventoryArgs(roots=tuple(roots), stores=refs)
        steps.append(StepPlan(id=sid, host=host, args=args, deps=deps))
    steps.append(StepPlan(id="plan", host=None, args=PlanArgs(), deps=tuple(inv_ids)))
    return steps


def job_config(config: FleetConfig, job: Job) -> JobConfig:
    """The replication job as this run sees it: oriented from the primary ``orient`` read."""
    jc = config.job(job.name)
    primary = job.options.get("primary")
    if primary is None:
        return jc
    # a rejoin's kept-aside datasets stay on the host that made them (zfleet status lists them)
    jc = dataclasses.replace(jc, exclude=(*jc.exclude, *ASIDE_PATTERNS))
    jc = oriented(jc, str(primary), skip=tuple(job.options.get("skip", ())))
    only = job.options.get("only_targets")
    if only is not None:
        # a rejoin: only the returning host, rolled back past what its own split changed
        targets = tuple(t for t in jc.targets if t.host in only)
        force = bool(job.options.get("force_rollback"))
        jc = dataclasses.replace(jc, targets=targets, force_rollback=force)
    return jc


def orient(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """The coordinator-side ``orient`` step: read the job's primary and epoch from Redis, fence
    every later step with that epoch, and append the run's steps in that direction."""
    config = parse_config(store.config_text(job), source=str(job.options.get("source", "<job>")))
    roles = RoleStore(store.r).read(config.job(job.name))
    job.options.update(primary=roles.primary, skip=list(roles.out), epoch=roles.epoch,
                       fence=job.name)  # fmt: skip
    add_steps(job, first_steps(job_config(config, job), job), after=step.id)
    log.info("sync.oriented", job_id=job.id, primary=roles.primary, epoch=roles.epoch,
             skip=list(roles.out))  # fmt: skip
    return {"primary": roles.primary, "epoch": roles.epoch, "skip": ",".join(roles.out)}


def submit_sync(
    store: JobStore, config_path: str, name: str, *, dry_run: bool = False, trigger: str = "cli"
) -> Job:
    """Read the config, build the job and hand it to the coordinator; returns the stored job."""
    with open(config_path, encoding="utf-8") as fh:
        text = fh.read()
    config = parse_config(text, source=config_path)
    job = new_sync_job(text, config, name, dry_run=dry_run, trigger=trigger)
    store.create(job)
    return job


def plan_job(store: JobStore, job: Job) -> Plan:
    """Run the planner for ``job`` on the inventories its own inventory steps took."""
    text = store.config_text(job)
    config = parse_config(text, source=str(job.options.get("source", "<job>")))
    graph = FleetGraph()
    for step in job.steps.values():
        if not isinstance(step.args, InventoryArgs) or step.host is None:
            continue
        report = store.inventory(step.host, job.id)
        if report is not None:
            graph.add_inventory(step.host, report_objects(report), report.taken_at)
    for name in job.options.get("stores", {}):
        report = store.inventory(store_host(name), job.id)
        if report is not None:
            graph.add_inventory(store_host(name), report_objects(report), report.taken_at)
    return plan_sync(graph, job_config(config, job), job_id=job.id)


def report_objects(report: InventoryReport) -> list[ZfsObject]:
    """An inventory report's rows (the same ZfsObject the backends list)."""
    return list(report.objects)



def expand(job: Job, plan: Plan) -> None:
    """Record the plan in the job and (unless a dry run) append its steps after ``plan``."""
    job.report = {
        "refusals": [asdict(r) for r in plan.refusals],
        "up_to_date": list(plan.up_to_date),
        "notes": list(plan.notes),
        "estimate": plan.estimate,
    }
    if job.options.get("dry_run"):
        job.report["plan"] = [plan_row(s) for s in plan.steps]  # a real run has the steps
    if plan.refusals:
        job.error = "; ".join(str(r) for r in plan.refusals)
    pattern = job.options.get("snapshot_pattern")
    if job.options.get("dry_run") and pattern:
        job.report["notes"].insert(0, f"a real run first snapshots the sources ({pattern}); "
                                      "this plan shows what exists now")  # fmt: skip
    if job.options.get("dry_run") or not plan.steps:
        return
    add_steps(job, plan.steps, after="plan")
    # A fresh inventory at the end, whatever happened, so `zfleet status` shows the new state.
    last = tuple(s.id for s in plan.steps)
    roots = {s.host: s.args.roots for s in job.steps.values()
             if isinstance(s.args, InventoryArgs) and s.host is not None}  # fmt: skip
    add_steps(job, [
        StepPlan(id=f"inventory-after-{host}", host=host, args=InventoryArgs(roots=r),
                 deps=last, always=True)
        for host, r in sorted(roots.items())
    ])  # fmt: skip


def plan_row(step: StepPlan) -> dict[str, Any]:
    """A plan step as plain data for ``--dry-run`` output and the job report."""
    return {"id": step.id, "kind": step.kind, "host": step.host, "deps": list(step.deps),
            "estimate": step.estimate, "args": args_to_data(step.args)}  # fmt: skip


def run_plan(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """The sync kind's coordinator-side ``plan`` step: plan on fresh inventories, append steps."""
    plan = plan_job(store, job)
    expand(job, plan)
    log.info("plan.done", job_id=job.id, steps=len(plan.steps), refusals=len(plan.refusals),
             estimate=plan.estimate)  # fmt: skip
    return {"steps": len(plan.steps), "estimate": plan.estimate, "refusals": len(plan.refusals)}


def _scheduled(config_text: str, config: FleetConfig, name: str, now: float) -> Job:
    return new_sync_job(config_text, config, name, now=now, trigger="schedule")


SYNC: Final = register(JobKind(
    name="sync", local_steps={PlanArgs.KIND: run_plan, OrientArgs.KIND: orient},
    scheduled=_scheduled,
    description="replicate a configured job's datasets to its targets, clones as clones",
))  # fmt: skip
