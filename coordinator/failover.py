"""The ``failover`` job kind: an unplanned hand-over of a replication job from a dead primary.

The DAG: a fresh inventory of every live replica host, then the coordinator-side ``choose`` step,
which builds the fleet graph from them (plus the dead primary's last inventory, to know how far
behind each replica is), picks the successor with :func:`coordinator.roles.choose_candidate`,
bumps the job's fencing epoch with the compare-and-set (two racing failovers: one wins, the other
fails with nothing changed), cancels the job's running syncs (their steps are fenced off anyway)
and appends ``promote`` on the successor under the new epoch, then ``container-start`` for the
containers recorded there on the promoted datasets (coordinator/containerhooks.py), then the
promote hook, then ``record``, which writes the data-loss window and the time from trigger to
writable into the job's report.

:func:`submit_failover` is the one entry (CLI and the Alertmanager webhook): it checks the host
really is the job's primary, that its worker heartbeat has expired (unless ``force``), the policy
and the flap protection (``coordinator.roles.gate``), and answers a repeat with the failover
already running. Nothing here runs ``zfs``.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any, Final

import structlog

from bus import records
from coordinator import containerhooks, engine
from coordinator.config import FleetConfig, JobConfig, parse_config
from coordinator.engine import Job, Step, StepPlan, add_steps
from coordinator.graph import FleetGraph
from coordinator.jobkinds import JobKind, register
from coordinator.jobstore import JobStore
from coordinator.roles import Decision, gate
from coordinator.rolestate import JobRoles, RoleStore, placements, primary_names, replica_root
from coordinator.syncjob import new_job_id, report_objects
from protocol.errors import ConfigError, JobError, PlanRefused, StaleEpoch
from protocol.messages import ResultValue
from protocol.steps import ChooseArgs, HookArgs, InventoryArgs, PromoteArgs, RecordArgs

log = structlog.get_logger(__name__)

KIND: Final = "failover"


class FailoverRefused(JobError):
    """A failover that may not start now (policy, flap protection, a live primary...)."""


@dataclass(frozen=True)
class Submitted:
    """What a request to fail over one job led to: a new job, the one already running, or a
    refusal (``job_id`` None) and why."""

    job: str
    job_id: str | None
    created: bool
    reason: str


# -- building -------------------------------------------------------------------------------------


def failover_config(config: FleetConfig, name: str) -> tuple[JobConfig, Any]:
    jc = config.job(name)
    if jc.failover is None:
        raise ConfigError(f"{config.source}: job {name} has no [jobs.{name}.failover] table")
    return jc, jc.failover


def replica_hosts(jc: JobConfig, primary: str, out: Collection[str]) -> list[str]:
    """The job's hosts that hold a replica while ``primary`` is primary (former ones out)."""
    hosts = {jc.sources[0].host, *(t.host for t in jc.targets if t.host)}
    return sorted(h for h in hosts if h != primary and h not in out)


def new_failover_job(
    config_text: str,
    config: FleetConfig,
    name: str,
    failed_host: str,
    roles: JobRoles,
    *,
    failed_at: float,
    received_at: float,
    down: Collection[str] = (),
    trigger: str = "cli",
    job_id: str | None = None,
) -> Job:
    """Inventories of the live replica hosts, then ``choose``."""
    jc, _ = failover_config(config, name)
    if roles.primary != failed_host:
        raise FailoverRefused(f"{failed_host} is not the primary of job {name} "
                              f"(its primary is {roles.primary})")  # fmt: skip
    hosts = [h for h in replica_hosts(jc, failed_host, roles.out) if h not in down]
    job = Job(
        id=job_id or new_job_id(), name=name, kind=KIND, created=received_at,
        options={"config": config_text, "source": config.source, "trigger": trigger,
                 "failed_host": failed_host, "failed_at": failed_at, "received_at": received_at,
                 "seen_epoch": roles.epoch, "epoch": roles.epoch, "fence": name,
                 "down": sorted(down), "skip": list(roles.out)},
    )  # fmt: skip
    steps = [
        StepPlan(id=f"inventory-{h}", host=h,
                 args=InventoryArgs(roots=(str(replica_root(jc, h)),)))
        for h in hosts
    ]  # fmt: skip
    # always: a replica host whose inventory failed is simply not eligible
    steps.append(StepPlan(id="choose", host=None, args=ChooseArgs(),
                          deps=tuple(s.id for s in steps), always=True))  # fmt: skip
    add_steps(job, steps)
    return job


def active_job(store: JobStore, kind: str, name: str) -> Job | None:
    """A running job of ``kind`` for the replication job ``name``, if any."""
    for job_id in store.active_ids():
        try:
            job = store.load(job_id)
        except JobError:
            continue
        if job.kind == kind and job.name == name and not job.done:
            return job
    return None


def submit_failover(
    store: JobStore,
    config_text: str,
    config: FleetConfig,
    host: str,
    *,
    jobs: Collection[str] = (),
    from_alert: bool = False,
    failed_at: float | None = None,
    force: bool = False,
    trigger: str = "cli",
) -> list[Submitted]:
    """Start a failover of every failover-configured job whose current primary is ``host``
    (only those in ``jobs`` when given); one result per job, refusals included."""
    now = time.time()
    roles_store = RoleStore(store.r)
    names = list(jobs) or sorted(n for n, j in config.jobs.items() if j.failover is not None)
    out: list[Submitted] = []
    for name in names:
        jc, fo = failover_config(config, name)
        roles = roles_store.read(jc)
        if roles.primary != host:
            if jobs:
                why = f"{host} is not its primary ({roles.primary} is)"
                out.append(Submitted(name, None, False, why))
            continue
        running = active_job(store, KIND, name)
        if running is not None:
            out.append(Submitted(name, running.id, False, "a failover is already running"))
            continue
        if not force and records.get_beat(store.r, host) is not None:
            out.append(Submitted(name, None, False, f"the worker of {host} still heartbeats: "
                                 "not failing over a live primary (switchover is the planned "
                                 "way; --force overrides)"))  # fmt: skip
            continue
        verdict = gate(fo, last_failover_at=roles.changed_at, now=now, from_alert=from_alert)
        if not verdict.allowed:
            out.append(Submitted(name, None, False, verdict.reason))
            continue
        replicas = replica_hosts(jc, host, roles.out)
        down = {h for h in replicas if records.get_beat(store.r, h) is None}
        job = new_failover_job(config_text, config, name, host, roles,
                               failed_at=now if failed_at is None else failed_at,
                               received_at=now, down=down, trigger=trigger)  # fmt: skip
        store.create(job)
        log.info("failover.submitted", job_id=job.id, job=name, host=host, trigger=trigger)
        out.append(Submitted(name, job.id, True, "started"))
    if not out:
        raise FailoverRefused(f"{host} is the primary of no failover-configured job")
    return out


# -- coordinator-side steps ----------------------------------------------------------------------


def job_graph(store: JobStore, job: Job, *, also: Collection[str] = ()) -> FleetGraph:
    """The graph of the job's own inventories, plus the latest inventory of hosts ``also``."""
    graph = FleetGraph()
    for host in also:
        report = store.inventory(host)
        if report is not None:
            graph.add_inventory(host, report_objects(report), report.taken_at)
    for step in job.steps.values():
        if not isinstance(step.args, InventoryArgs) or step.host is None:
            continue
        if step.status != engine.SUCCEEDED:
            continue
        report = store.inventory(step.host, job.id)
        if report is not None:
            graph.add_inventory(step.host, report_objects(report), report.taken_at)
    return graph


def decision_report(decision: Decision) -> dict[str, Any]:
    return {
        "chosen": decision.chosen, "reason": decision.reason,
        "data_loss_window": decision.data_loss_window,
        "considered": [{"host": c.host, "eligible": c.eligible, "reason": c.reason,
                        "behind": c.behind} for c in decision.considered],
        "replicas": [asdict(r) for r in decision.replicas],
    }  # fmt: skip


def cancel_syncs(store: JobStore, name: str) -> list[str]:
    """Ask the replication job's running syncs to stop (planned under the old epoch)."""
    cancelled = []
    for job_id in store.active_ids():
        try:
            other = store.load(job_id)
        except JobError:
            continue
        if other.kind == "sync" and other.name == name and not other.done:
            store.request_cancel(job_id)
            cancelled.append(job_id)
    return cancelled


def choose(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """Pick the successor, bump the epoch, append the promote step under the new epoch."""
    from coordinator.roles import choose_candidate

    config = parse_config(store.config_text(job), source=str(job.options.get("source", "<job>")))
    jc, fo = failover_config(config, job.name)
    failed = str(job.options["failed_host"])
    skip = set(job.options.get("skip", ()))
    graph = job_graph(store, job, also=[failed])
    hosts = [s.host for s in job.steps.values() if isinstance(s.args, InventoryArgs) and s.host]
    names = primary_names(graph, jc, failed, hosts)
    if not names:
        raise PlanRefused(f"no replica host reported any dataset of job {job.name}")
    datasets = {n: {h: d for h, d in p.items() if h not in skip}
                for n, p in placements(jc, failed, names).items()}  # fmt: skip
    down = {h for h in hosts if records.get_beat(store.r, h) is None} | set(job.options["down"])
    decision = choose_candidate(graph, fo, failed, datasets,
                                failed_at=float(job.options["failed_at"]), down=down)  # fmt: skip
    job.report["decision"] = decision_report(decision)
    if decision.chosen is None:
        raise PlanRefused(decision.reason)
    bump = RoleStore(store.r).hand_over(jc, seen=int(job.options["seen_epoch"]),
                                        to=decision.chosen, request=job.id,
                                        old_out=failed)  # fmt: skip
    if not bump.won:
        raise StaleEpoch(f"job {job.name}: another failover won (the epoch is now {bump.epoch}); "
                         "nothing was changed", seen=int(job.options["seen_epoch"]),
                         current=bump.epoch)  # fmt: skip
    job.options["epoch"] = bump.epoch
    job.options["primary"] = decision.chosen
    job.report["cancelled_syncs"] = cancel_syncs(store, job.name)
    promote = PromoteArgs(datasets=tuple(r.replica_dataset for r in decision.replicas),
                          epoch=bump.epoch)  # fmt: skip
    steps = [StepPlan(id="promote", host=decision.chosen, args=promote)]
    where = {r.primary_dataset: r.replica_dataset for r in decision.replicas}
    specs, left = containerhooks.moving(containerhooks.running_on(store.r, failed, list(where)),
                                        where)  # fmt: skip
    if left:
        job.report["containers_left_stopped"] = left  # a dataset of theirs is not in the job
    specs += [r.spec for r in containerhooks.held_on(store.r, decision.chosen, promote.datasets)]
    starts = containerhooks.start_steps(specs, decision.chosen, deps=("promote",))
    steps += starts
    if fo.promote_hook:
        steps.append(StepPlan(id="hook-promote", host=decision.chosen, deps=("promote",),
                              args=HookArgs(argv=fo.promote_hook, epoch=bump.epoch)))  # fmt: skip
    steps.append(StepPlan(id="record", host=None, args=RecordArgs(),
                          deps=("promote", *(s.id for s in starts)), always=True))  # fmt: skip
    add_steps(job, steps, after=step.id)
    log.info("failover.chosen", job_id=job.id, job=job.name, chosen=decision.chosen,
             epoch=bump.epoch, data_loss_window=decision.data_loss_window)  # fmt: skip
    window = decision.data_loss_window
    return {"chosen": decision.chosen, "epoch": bump.epoch,
            "data_loss_window_s": None if window is None else round(window)}  # fmt: skip


def record(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """The report: data-loss window, time from the trigger to writable, the new epoch."""
    promote = job.steps.get("promote")
    if promote is None or promote.status != engine.SUCCEEDED:
        raise JobError(f"the promote step did not succeed: {promote.error if promote else '-'}")
    writable_at = promote.reported_at or promote.finished_at or time.time()
    took = max(0.0, writable_at - float(job.options["received_at"]))
    job.report.update(primary=promote.host, epoch=job.options["epoch"], writable_at=writable_at,
                      time_to_writable=took,
                      data_loss_window=job.report.get("decision", {}).get("data_loss_window"),
                      promoted=dict(promote.result),
                      containers=containerhooks.settle(store.r, job))  # fmt: skip
    log.info("failover.writable", job_id=job.id, job=job.name, host=promote.host,
             time_to_writable=round(took, 3))  # fmt: skip
    return {"time_to_writable_ms": round(took * 1000)}


FAILOVER: Final = register(JobKind(
    name=KIND, local_steps={ChooseArgs.KIND: choose, RecordArgs.KIND: record},
    description="unplanned: the freshest replica of a dead primary becomes writable, epoch bumped",
))  # fmt: skip
