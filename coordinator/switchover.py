"""The ``switchover`` job kind: a planned hand-over of a replication job, zero data lost.

The DAG, in the order that loses nothing::

    hook-quiesce (the demote hook, optional) on the old primary
    inventory-old -> demote-plan:   the old primary's datasets, listed
    container-stop-*                the containers running there on them (coordinator/
                                    containerhooks.py)
    demote-old                      read-only: from here on nobody writes there
    snapshot-old                    the final snapshot, taken after the last write
    inventory-*  -> plan            the sync planner: the increment to every replica
    handover                        the epoch bumped (compare-and-set), direction reversed
    promote-new                     the new primary writable and mounted (the old one stays
                                    mounted read-only, a replica)
    container-start-*               the containers recorded on the new primary using them
    hook-promote (optional), record

Every replica received the final snapshot before the hand-over, so the replicas (the old primary
included) share its guid and the next sync from the new primary is incremental for all of them.
"""

from __future__ import annotations

import time
from typing import Final

import structlog

from bus import containers as container_records
from bus import records
from coordinator import containerhooks, engine
from coordinator.config import FleetConfig, parse_config
from coordinator.engine import Job, Step, StepPlan, add_steps
from coordinator.failover import FailoverRefused, active_job, failover_config
from coordinator.jobkinds import JobKind, register
from coordinator.jobstore import JobStore
from coordinator.rolestate import JobRoles, RoleStore, oriented, placements, replica_root
from coordinator.syncjob import expand, host_roots, new_job_id, plan_job
from protocol.containersteps import ContainerStopArgs
from protocol.errors import PlanRefused, StaleEpoch
from protocol.messages import ResultValue
from protocol.steps import (
    DemoteArgs,
    HandoverArgs,
    HookArgs,
    InventoryArgs,
    PlanArgs,
    PromoteArgs,
    RecordArgs,
    SnapshotArgs,
)

log = structlog.get_logger(__name__)

KIND: Final = "switchover"
FINAL_SNAPSHOT: Final = "zfleet-switchover-%Y%m%dT%H%M%SZ"


def new_switchover_job(
    config_text: str, config: FleetConfig, name: str, to: str, roles: JobRoles, *,
    now: float | None = None, quiesce: bool = True, job_id: str | None = None,
) -> Job:  # fmt: skip
    """The first steps: quiesce hook, inventory of the old primary, ``demote-plan``."""
    when = time.time() if now is None else now
    jc, fo = failover_config(config, name)
    old = roles.primary
    if to == old:
        raise FailoverRefused(f"{to} is already the primary of job {name}")
    if replica_root(jc, to) is None:
        raise FailoverRefused(f"{to} holds no replica of job {name}")
    if to in roles.out:
        raise FailoverRefused(f"{to} has not rejoined job {name} yet (`zfleet rejoin {to}`)")
    job = Job(
        id=job_id or new_job_id(), name=name, kind=KIND, created=when,
        options={"config": config_text, "source": config.source, "trigger": "cli",
                 "old": old, "to": to, "received_at": when, "seen_epoch": roles.epoch,
                 "epoch": roles.epoch, "fence": name, "primary": old, "skip": list(roles.out),
                 "final_snapshot": time.strftime(FINAL_SNAPSHOT, time.gmtime(when))},
    )  # fmt: skip
    steps: list[StepPlan] = []
    if quiesce and fo.demote_hook:
        steps.append(StepPlan(id="hook-quiesce", host=old,
                              args=HookArgs(argv=fo.demote_hook, epoch=roles.epoch)))  # fmt: skip
    root = str(replica_root(jc, old))
    steps.append(StepPlan(id="inventory-old", host=old, args=InventoryArgs(roots=(root,)),
                          deps=tuple(s.id for s in steps)))  # fmt: skip
    steps.append(StepPlan(id="demote-plan", host=None, args=HandoverArgs(),
                          deps=("inventory-old",)))  # fmt: skip
    add_steps(job, steps)
    return job


def submit_switchover(
    store: JobStore, config_text: str, config: FleetConfig, name: str, to: str, *,
    quiesce: bool = True,
) -> Job:  # fmt: skip
    jc, _ = failover_config(config, name)
    roles = RoleStore(store.r).read(jc)
    for host in (roles.primary, to):
        if records.get_beat(store.r, host) is None:
            raise FailoverRefused(f"the worker of {host} is not running: a switchover needs "
                                  "both (`zfleet failover` is for a dead primary)")  # fmt: skip
    for kind in (KIND, "failover"):
        running = active_job(store, kind, name)
        if running is not None:
            raise FailoverRefused(f"a {kind} of job {name} is already running: {running.id}")
    job = new_switchover_job(config_text, config, name, to, roles, quiesce=quiesce)
    store.create(job)
    return job


def _datasets(store: JobStore, job: Job, host: str, step_id: str) -> list[str]:
    report = store.inventory(host, job.id)
    if report is None or job.steps[step_id].status != engine.SUCCEEDED:
        raise PlanRefused(f"no inventory of {host}")
    return sorted(o.name for o in report.objects if o.type.value in ("filesystem", "volume"))


def handover(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """``demote-plan``: demote, final snapshot, inventories, plan. ``handover``: the bump."""
    config = parse_config(store.config_text(job), source=str(job.options.get("source", "<job>")))
    jc, fo = failover_config(config, job.name)
    old, to = str(job.options["old"]), str(job.options["to"])
    epoch = int(job.options["epoch"])
    if step.id == "demote-plan":
        root = str(replica_root(jc, old))
        names = [n for n in _datasets(store, job, old, "inventory-old")
                 if n == root or n.startswith(root + "/")]  # fmt: skip
        job.options["old_datasets"] = names
        oj = oriented(jc, old, skip=job.options.get("skip", ()))
        snap = str(job.options["final_snapshot"])
        stops = containerhooks.stop_steps(containerhooks.running_on(store.r, old, names), old)
        job.options["containers_stopped"] = [s.args.name for s in stops
                                             if isinstance(s.args, ContainerStopArgs)]
        steps = [
            *stops,
            StepPlan(id="demote-old", host=old, deps=tuple(s.id for s in stops),
                     args=DemoteArgs(datasets=tuple(names), epoch=epoch)),
            StepPlan(id="snapshot-old", host=old, deps=("demote-old",),
                     args=SnapshotArgs(names=(f"{root}@{snap}",), recursive=jc.recursive)),
        ]  # fmt: skip
        inv = [StepPlan(id=f"inventory-{h}", host=h, args=InventoryArgs(roots=tuple(r)),
                        deps=("snapshot-old",)) for h, r in sorted(host_roots(oj).items())]
        steps += inv
        steps.append(StepPlan(id="plan", host=None, args=PlanArgs(),
                              deps=tuple(s.id for s in inv)))  # fmt: skip
        add_steps(job, steps, after=step.id)
        return {"datasets": len(names), "containers_stopped": len(stops)}
    # "handover": every replica has the final snapshot
    bump = RoleStore(store.r).hand_over(jc, seen=int(job.options["seen_epoch"]), to=to,
                                        request=job.id, old_out=None)  # fmt: skip
    if not bump.won:
        raise StaleEpoch(f"job {job.name}: the epoch moved to {bump.epoch} during the "
                         "switchover; the old primary stays read-only, nothing was promoted",
                         seen=int(job.options["seen_epoch"]), current=bump.epoch)  # fmt: skip
    job.options.update(epoch=bump.epoch, primary=to)
    names = list(job.options["old_datasets"])
    mapped = [placements(jc, old, names)[n][to] for n in names]
    # The old primary stays mounted, read-only: unmounting its children would rewrite their
    # mountpoint directories in the parents (zfs#12580), which then refuse the next incremental.
    steps = [
        StepPlan(id="promote-new", host=to,
                 args=PromoteArgs(datasets=tuple(mapped), epoch=bump.epoch)),
    ]  # fmt: skip
    where = {n: placements(jc, old, names)[n][to] for n in names}
    got = (container_records.get(store.r, n) for n in job.options.get("containers_stopped", ()))
    gone = [r for r in got if r is not None]
    specs, left = containerhooks.moving(gone, where)
    if left:
        job.report["containers_left_stopped"] = left  # a dataset of theirs is not in the job
    specs += [r.spec for r in containerhooks.held_on(store.r, to, mapped)]
    starts = containerhooks.start_steps(specs, to, deps=("promote-new",))
    steps += starts
    last: tuple[str, ...] = ("promote-new", *(s.id for s in starts))
    if fo.promote_hook:
        steps.append(StepPlan(id="hook-promote", host=to, deps=("promote-new",),
                              args=HookArgs(argv=fo.promote_hook, epoch=bump.epoch)))  # fmt: skip
        last = (*last, "hook-promote")
    steps.append(StepPlan(id="record", host=None, args=RecordArgs(), deps=last))
    add_steps(job, steps, after=step.id)
    log.info("switchover.handed_over", job_id=job.id, job=job.name, old=old, to=to,
             epoch=bump.epoch)  # fmt: skip
    return {"epoch": bump.epoch}


def plan(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """The sync planner from the old primary; any refusal stops the switchover here (the old
    primary stays read-only, the operator decides), else ``handover`` waits for every step."""
    p = plan_job(store, job)
    if p.refusals:
        raise PlanRefused("; ".join(str(r) for r in p.refusals))
    kept = dict(job.report)
    expand(job, p)
    job.report = {**kept, **job.report}
    last = tuple(s.id for s in p.steps) or (step.id,)
    add_steps(job, [StepPlan(id="handover", host=None, args=HandoverArgs(), deps=last)])
    return {"steps": len(p.steps), "estimate": p.estimate}


def record(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    promote = job.steps["promote-new"]
    writable_at = promote.reported_at or promote.finished_at or time.time()
    moved = sum(int(s.result.get("bytes") or 0) for s in job.steps.values()
                if s.kind == "transfer")  # fmt: skip
    took = max(0.0, writable_at - float(job.options["received_at"]))
    job.report.update(primary=job.options["to"], old_primary=job.options["old"],
                      epoch=job.options["epoch"], data_loss_window=0.0, final_bytes=moved,
                      final_snapshot=job.options["final_snapshot"],
                      time_to_writable=took,
                      containers=containerhooks.settle(store.r, job))  # fmt: skip
    return {"time_to_writable_ms": round(took * 1000), "bytes": moved}


SWITCHOVER: Final = register(JobKind(
    name=KIND, local_steps={HandoverArgs.KIND: handover, PlanArgs.KIND: plan,
                            RecordArgs.KIND: record},
    description="planned: final increment to every replica, old primary read-only, new writable",
))  # fmt: skip
