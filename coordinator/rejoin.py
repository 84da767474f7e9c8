"""The ``rejoin`` job kind: a former primary comes back as a replica, with only the increment.

The DAG::

    fence-HOST          readonly=on on every dataset of the job there, before anything else
    inventory-HOST, inventory-PRIMARY
    rejoin-plan         per dataset, the newest snapshot HOST shares (by guid) with the primary
    preserve-HOST       what HOST wrote after it kept aside (snapshot + clone DATASET.diverged-ID),
                        the main line rewound to the common snapshot, guids kept
    [keep-HOST]         --keep-diverged: the diverged side becomes the main line instead, the
                        replica line is kept aside; HOST then stays out (it cannot take increments)
    inventory-*, plan   the sync planner from the primary: HOST receives the increments only
    record              HOST is a replica again (no longer out); bytes moved in the report

Nothing is destroyed on the way: a dataset without a common snapshot stops the rejoin before
any change (it would need a full resend, which the operator decides on), and datasets HOST
created after the failover are left alone and listed in the report.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Final

import structlog

from bus import records
from coordinator import engine
from coordinator.config import FleetConfig, parse_config
from coordinator.engine import Job, Step, StepPlan, add_steps
from coordinator.failover import FailoverRefused, active_job, failover_config, job_graph
from coordinator.graph import Dataset
from coordinator.jobkinds import JobKind, register
from coordinator.jobstore import JobStore
from coordinator.planner import Plan
from coordinator.rolestate import JobRoles, RoleStore, oriented, placements, replica_root
from coordinator.syncjob import expand, host_roots, new_job_id, plan_job
from protocol.errors import PlanRefused
from protocol.messages import ResultValue
from protocol.steps import (
    FenceArgs,
    InventoryArgs,
    KeepDivergedArgs,
    PlanArgs,
    PreserveArgs,
    RecordArgs,
    RejoinPlanArgs,
    TransferArgs,
)

log = structlog.get_logger(__name__)

KIND: Final = "rejoin"


def new_rejoin_job(
    config_text: str, config: FleetConfig, name: str, host: str, roles: JobRoles, *,
    known: list[str], keep_diverged: bool = False, now: float | None = None,
    job_id: str | None = None,
) -> Job:  # fmt: skip
    """Fence ``host``'s datasets (``known``: from its last inventory, the root at least), take
    fresh inventories, then ``rejoin-plan``."""
    when = time.time() if now is None else now
    jc, _ = failover_config(config, name)
    if host == roles.primary:
        raise FailoverRefused(f"{host} is the primary of job {name}: nothing to rejoin")
    root = replica_root(jc, host)
    if root is None:
        raise FailoverRefused(f"{host} holds no dataset of job {name}")
    jid = job_id or new_job_id()
    job = Job(
        id=jid, name=name, kind=KIND, created=when,
        options={"config": config_text, "source": config.source, "trigger": "cli",
                 "host": host, "received_at": when, "epoch": roles.epoch, "fence": name,
                 "primary": roles.primary, "skip": [h for h in roles.out if h != host],
                 "keep_diverged": keep_diverged, "tag": jid},
    )  # fmt: skip
    fence = sorted({root, *(n for n in known if n == root or n.startswith(root + "/"))})
    add_steps(job, [
        StepPlan(id=f"fence-{host}", host=host,
                 args=FenceArgs(datasets=tuple(fence), epoch=roles.epoch)),
        StepPlan(id=f"inventory-{host}", host=host, args=InventoryArgs(roots=(root,)),
                 deps=(f"fence-{host}",)),
        StepPlan(id=f"inventory-{roles.primary}", host=roles.primary, deps=(f"fence-{host}",),
                 args=InventoryArgs(roots=(str(replica_root(jc, roles.primary)),))),
    ])  # fmt: skip
    add_steps(job, [StepPlan(id="rejoin-plan", host=None, args=RejoinPlanArgs(),
                             deps=(f"inventory-{host}", f"inventory-{roles.primary}"))])
    return job


def submit_rejoin(
    store: JobStore, config_text: str, config: FleetConfig, host: str, *,
    jobs: list[str] | None = None, keep_diverged: bool = False,
) -> list[Job]:  # fmt: skip
    """One rejoin job per failover-configured job ``host`` is out of (or ``jobs``)."""
    if records.get_beat(store.r, host) is None:
        raise FailoverRefused(f"the worker of {host} is not running: start it first "
                              f"(`zfleet worker --host {host}`)")  # fmt: skip
    rs = RoleStore(store.r)
    names = jobs or sorted(n for n, j in config.jobs.items() if j.failover is not None)
    report = store.inventory(host)
    known = [o.name for o in (report.objects if report is not None else ())
             if o.type.value in ("filesystem", "volume")]  # fmt: skip
    out = []
    for name in names:
        jc, _ = failover_config(config, name)
        roles = rs.read(jc)
        if host not in roles.out and not jobs:
            continue
        if records.get_beat(store.r, roles.primary) is None:
            raise FailoverRefused(f"the primary {roles.primary} of job {name} is not running")
        if active_job(store, KIND, name) is not None:
            raise FailoverRefused(f"a rejoin of job {name} is already running")
        job = new_rejoin_job(config_text, config, name, host, roles, known=known,
                             keep_diverged=keep_diverged)  # fmt: skip
        store.create(job)
        out.append(job)
    if not out:
        raise FailoverRefused(f"{host} is out of no job (it has not been failed over from)")
    return out


def newest_common(mine: Dataset, theirs: Dataset) -> str | None:
    """The short name of ``mine``'s newest snapshot whose guid ``theirs`` has too."""
    for i in range(len(mine) - 1, -1, -1):
        if theirs.index_of_guid(mine.snap_guids[i]) >= 0:
            return mine.snap(i).short
    return None


def rejoin_plan(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """Per dataset the common snapshot; then preserve (and keep), inventories and the plan."""
    config = parse_config(store.config_text(job), source=str(job.options.get("source", "<job>")))
    jc, _ = failover_config(config, job.name)
    host, primary = str(job.options["host"]), str(job.options["primary"])
    epoch, tag = int(job.options["epoch"]), str(job.options["tag"])
    graph = job_graph(store, job)
    root = str(replica_root(jc, host))
    mine = [d for d in graph.subtree(host, root, recursive=jc.recursive)
            if ".diverged-" not in d.name and ".replaced-" not in d.name]  # fmt: skip
    where = placements(jc, host, [d.name for d in mine])
    pairs: list[tuple[str, str]] = []
    only_here: list[str] = []
    missing: list[str] = []
    for ds in mine:
        theirs = graph.dataset(primary, where[ds.name][primary])
        if theirs is None:
            only_here.append(ds.name)  # created here after the failover: left alone
            continue
        common = newest_common(ds, theirs)
        if common is None:
            missing.append(ds.name)
            continue
        pairs.append((ds.name, common))
    job.report.update(only_here=only_here, common=dict(pairs))
    if missing:
        raise PlanRefused(f"no snapshot in common with {primary} for {', '.join(missing)}: "
                          "a rejoin would need a full resend; nothing was changed")  # fmt: skip
    steps = [StepPlan(id=f"preserve-{host}", host=host,
                      args=PreserveArgs(datasets=tuple(pairs), tag=tag, epoch=epoch))]  # fmt: skip
    if job.options.get("keep_diverged"):
        steps.append(StepPlan(id=f"keep-{host}", host=host, deps=(f"preserve-{host}",),
                              args=KeepDivergedArgs(datasets=tuple(p[0] for p in pairs),
                                                    tag=tag, epoch=epoch)))  # fmt: skip
        steps.append(StepPlan(id="record", host=None, args=RecordArgs(), deps=(f"keep-{host}",)))
        add_steps(job, steps, after=step.id)
        return {"datasets": len(pairs), "only_here": len(only_here)}
    # Only the returning host receives here (the others sync as usual), with a rollback allowed:
    # it was fenced (no writes since) and every change it had made is aside now, so what still
    # differs from the common snapshot is the split's own doing (mountpoint directories of
    # renamed children in their parents, zfs#12580), never a user's data.
    job.options.update(only_targets=[host], force_rollback=True)
    oj = oriented(jc, primary, skip=[h for h in job.options.get("skip", ()) if h != host])
    oj = dataclasses.replace(oj, targets=tuple(t for t in oj.targets if t.host == host))
    inv = [StepPlan(id=f"inventory-sync-{h}", host=h, args=InventoryArgs(roots=tuple(r)),
                    deps=(f"preserve-{host}",)) for h, r in sorted(host_roots(oj).items())]
    steps += inv
    steps.append(StepPlan(id="plan", host=None, args=PlanArgs(), deps=tuple(s.id for s in inv)))
    add_steps(job, steps, after=step.id)
    return {"datasets": len(pairs), "only_here": len(only_here)}


def forced_on(plan: Plan, host: str) -> Plan:
    """The plan with ``receive -F`` on ``host``: a split can also leave a parent's live tree
    changed in a way its ``written`` does not show yet, which only -F's rollback clears (safe for
    the same reason as ``force_rollback`` here)."""
    steps = []
    for s in plan.steps:
        args = s.args
        if isinstance(args, TransferArgs) and any(t.host == host for t in args.targets):
            targets = tuple(dataclasses.replace(t, force=True) if t.host == host else t
                            for t in args.targets)  # fmt: skip
            args = dataclasses.replace(args, targets=targets)
        steps.append(dataclasses.replace(s, args=args))
    return dataclasses.replace(plan, steps=tuple(steps))


def plan(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """The sync planner from the primary (only the rejoining host's increments are new)."""
    p = plan_job(store, job)
    if p.refusals:
        raise PlanRefused("; ".join(str(r) for r in p.refusals))
    kept = dict(job.report)
    expand(job, forced_on(p, str(job.options["host"])))
    job.report = {**kept, **job.report}
    last = tuple(s.id for s in p.steps) or (step.id,)
    add_steps(job, [StepPlan(id="record", host=None, args=RecordArgs(), deps=last)])
    return {"steps": len(p.steps), "estimate": p.estimate}


def record(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    host = str(job.options["host"])
    kept = job.steps.get(f"preserve-{host}")
    aside = str(kept.result.get("aside") or "") if kept is not None else ""
    moved = sum(int(s.result.get("bytes") or 0) for s in job.steps.values()
                if s.kind == "transfer" and s.status == engine.SUCCEEDED)  # fmt: skip
    if job.options.get("keep_diverged"):
        keep = job.steps[f"keep-{host}"]
        job.report.update(kept_diverged=True, replaced=str(keep.result.get("replaced") or ""),
                          note=f"{host} keeps its own changes as the main line and stays out "
                               "of the job; switch over to it or resend to make it a replica")
    else:
        RoleStore(store.r).rejoined(job.name, host)
    job.report.update(host=host, primary=job.options["primary"], aside=aside.split(",") if aside
                      else [], bytes=moved)  # fmt: skip
    log.info("rejoin.done", job_id=job.id, job=job.name, host=host, bytes=moved, aside=aside)
    return {"bytes": moved}


REJOIN: Final = register(JobKind(
    name=KIND, local_steps={RejoinPlanArgs.KIND: rejoin_plan, PlanArgs.KIND: plan,
                            RecordArgs.KIND: record},
    description="a former primary: fenced, diverged changes kept aside, then only increments",
))  # fmt: skip
