"""The ``container`` job kind: create, checkpoint, restore and send containers on datasets.

``zfleet container create|checkpoint|restore|send`` each submit a job of this kind; the record of
which container uses which datasets (``bus/containers.py``) is written by its last step.

- create: an inventory of the host, then ``plan`` checks the image snapshot and the mounted
  datasets are there and the root is not, and appends ``container-create`` and ``record``.
- checkpoint / restore: the step on the container's host, then ``record``.
- send (cold): ``freeze`` (stop, one atomic snapshot of every dataset, the source started again
  unless ``--stop-source``), inventories, then ``plan`` runs the sync planner over the image and
  the container's datasets (clone-aware: the root goes as an incremental from the image, and only
  what the target lacks moves), ``adopt`` (``container-restore`` on the target) and ``record``.
- send ``--live``: a pre-copy snapshot and its transfers while the container runs; then
  ``freeze`` (a CRIU checkpoint, or a stop when CRIU cannot work, said in the report), fresh
  inventories and ``plan-final``, which sends only the increments since the pre-copy, then
  ``adopt`` restores the CRIU image (or starts cold). ``record`` reports the frozen time (from
  the freeze to the target running: the downtime), its parts (the checkpoint on the source,
  the restore on the target) and the bytes moved while frozen.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import structlog

from bus import containers as records
from coordinator.config import DatasetRef, FleetConfig, JobConfig, JobTarget, parse_config
from coordinator.engine import Job, Step, StepPlan, add_steps
from coordinator.graph import FleetGraph
from coordinator.jobkinds import JobKind, register
from coordinator.jobstore import JobStore
from coordinator.kindjob import mounted_by_policy, replica_roots, with_policy_mounts
from coordinator.planner import plan_sync
from coordinator.rolestate import RoleStore, roles_of
from coordinator.syncjob import new_job_id
from protocol.addresses import parse_address
from protocol.containersteps import (
    DEFAULT_PATHS,
    ContainerCheckpointArgs,
    ContainerCreateArgs,
    ContainerMount,
    ContainerPrepareArgs,
    ContainerRestoreArgs,
    ContainerSpec,
)
from protocol.errors import AddressError, ConfigError, JobError, NameError_, PlanRefused
from protocol.messages import ResultValue
from protocol.names import pool_of, validate_component, validate_dataset
from protocol.steps import InventoryArgs, PlanArgs, RecordArgs, SnapshotArgs, TransferArgs

log = structlog.get_logger(__name__)

KIND: Final = "container"
OPS: Final = ("create", "checkpoint", "restore", "send")
DEFAULT_COMMAND: Final = ("/sbin/init",)  # what runs when `zfleet container create` names none
HOME: Final = "zfleet-containers"  # <pool>/zfleet-containers/<name>/{root,checkpoints}
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # podman's and ZFS's rules both


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not a container name (letters, digits, '_', '.', '-'; "
                          "at most 63, starting with a letter or digit)")  # fmt: skip
    return name


def _valid(check: Callable[..., str], text: str, what: str) -> str:
    """A name rule broken in the request is bad input (exit code 2), named in the message."""
    try:
        return check(text)
    except NameError_ as exc:
        raise ConfigError(f"{what}: {exc}") from exc


def stamp(prefix: str, now: float) -> str:
    return prefix + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def make_spec(
    name: str, image: str, *, home: str | None = None, shared: str | None = None,
    log_ds: str | None = None, command: Sequence[str] = (), network: str = "none",
) -> ContainerSpec:  # fmt: skip
    """A new container's spec: root and checkpoints under ``<image pool>/zfleet-containers``."""
    check_name(name)
    base = f"{pool_of(image)}/{HOME}/{name}"
    mounts = []
    for kind, ds in (("home", home), ("shared", shared), ("log", log_ds)):
        if ds:
            _valid(validate_dataset, ds, f"--{kind}")
            mounts.append(ContainerMount(kind=kind, dataset=ds, path=DEFAULT_PATHS[kind]))
    return ContainerSpec(name=name, image=image, root=f"{base}/root",
                         checkpoints=f"{base}/checkpoints", mounts=tuple(mounts),
                         command=tuple(command or DEFAULT_COMMAND), network=network)  # fmt: skip


def new_container_job(
    config_text: str,
    config: FleetConfig,
    op: str,
    params: Mapping[str, Any],
    record: records.ContainerRecord | None,
    *,
    now: float | None = None,
    job_id: str | None = None,
) -> Job:
    """The first steps of one container operation; ConfigError/AddressError for a request that
    cannot be right, before anything exists."""
    if op not in OPS:
        raise JobError(f"unknown container operation {op!r} (known: {', '.join(OPS)})")
    when = time.time() if now is None else now
    name = check_name(str(params.get("name", "")))
    p = dict(params)
    steps: list[StepPlan] = []
    if op == "create":
        if record is not None:
            raise ConfigError(f"container {name!r} exists already (on {record.host})")
        image = parse_address(str(p.get("image", "")), snapshot=True, hosts=set(config.hosts))
        host = str(p.get("host") or image.host)
        if host not in config.hosts:
            raise AddressError(f"--on {host!r}: unknown host (hosts: {', '.join(config.hosts)})")
        if image.host != host:
            raise AddressError(f"{image}: the image must be on {host} (send it there first: "
                               f"zfleet send {image} {host}:{image.dataset})")  # fmt: skip
        spec = make_spec(name, image.full, home=p.get("home"), shared=p.get("shared"),
                         log_ds=p.get("log"), command=p.get("command") or (),
                         network=str(p.get("network") or "none"))  # fmt: skip
        roots = tuple(sorted({spec.image_dataset, *(m.dataset for m in spec.mounts)}))
        if mounted_by_policy(config, name):
            roots = ()  # the whole host: the plan looks for the datasets its kinds mount in

        steps += [StepPlan(id=f"inventory-{host}", host=host, args=InventoryArgs(roots=roots)),
                  StepPlan(id="plan", host=None, args=PlanArgs(), deps=(f"inventory-{host}",))]
    else:
        if record is None:
            raise ConfigError(f"no container {name!r} (zfleet container ls lists them)")
        spec, host = record.spec, record.host
        if host not in config.hosts:
            raise ConfigError(f"container {name!r} is on {host}, which the fleet config lacks")
    if op == "checkpoint":
        short = _valid(validate_component, str(p.get("checkpoint") or stamp("ckpt-", when)),
                       "checkpoint")
        p["checkpoint"] = short
        steps += [StepPlan(id="checkpoint", host=host, writes=_writes(host, spec),
                           args=ContainerCheckpointArgs(spec=spec, snapshot=short,
                                                        cold=bool(p.get("cold")))),
                  StepPlan(id="record", host=None, args=RecordArgs(), deps=("checkpoint",))]
    elif op == "restore":
        short = _valid(validate_component, str(p.get("checkpoint") or ""), "checkpoint")
        assert record is not None
        known = [c.name for c in record.checkpoints]
        if short not in known:
            raise ConfigError(f"{name}@{short}: no such checkpoint (known: "
                              f"{', '.join(known) or 'none'})")  # fmt: skip
        steps += [StepPlan(id="restore", host=host, writes=_writes(host, spec),
                           args=ContainerRestoreArgs(spec=spec, snapshot=short)),
                  StepPlan(id="record", host=None, args=RecordArgs(), deps=("restore",))]
    elif op == "send":
        dst = str(p.get("to") or "")
        if dst not in config.hosts:
            raise AddressError(f"--to {dst!r}: unknown host (hosts: {', '.join(config.hosts)})")
        if dst == host:
            raise AddressError(f"container {name!r} runs on {dst} already")
        p["from"] = host
        steps += _send_start(spec, host, dst, p, when)
    job = Job(
        id=job_id or new_job_id(), name=f"container {op} {name}", kind=KIND, created=when,
        options={"config": config_text, "source": config.source, "trigger": "cli", "op": op,
                 "params": p, "host": host, "spec": records.spec_to_data(spec)},
    )  # fmt: skip
    add_steps(job, steps)
    return job


def _writes(host: str, spec: ContainerSpec) -> tuple[str, ...]:
    return tuple(f"{host}:{d}" for d in spec.datasets)


def _inventories(spec: ContainerSpec, src: str, dst: str, deps: tuple[str, ...],
                 tag: str = "") -> list[StepPlan]:  # fmt: skip
    names = (spec.image_dataset, *spec.datasets)
    pools = tuple(sorted({pool_of(n) for n in names}))
    return [
        StepPlan(id=f"inventory{tag}-{src}", host=src, deps=deps,
                 args=InventoryArgs(roots=tuple(sorted(set(names))))),
        StepPlan(id=f"inventory{tag}-{dst}", host=dst, deps=deps, args=InventoryArgs(roots=pools)),
    ]  # fmt: skip


def _send_start(spec: ContainerSpec, src: str, dst: str, p: dict[str, Any],
                now: float) -> list[StepPlan]:  # fmt: skip
    final = stamp("send-", now)
    p["snapshot"] = final
    keep = not p.get("stop_source")
    if p.get("live"):
        pre = stamp("pre-", now)
        p["precopy"] = pre
        snap = StepPlan(id="precopy", host=src, writes=_writes(src, spec),
                        args=SnapshotArgs(names=tuple(f"{d}@{pre}" for d in spec.datasets)))
        return [snap, *_inventories(spec, src, dst, ("precopy",)),
                StepPlan(id="plan", host=None, args=PlanArgs(),
                         deps=(f"inventory-{src}", f"inventory-{dst}"))]  # fmt: skip
    freeze = StepPlan(id="freeze", host=src, writes=_writes(src, spec),
                      args=ContainerCheckpointArgs(spec=spec, snapshot=final, cold=True,
                                                   leave_running=keep))  # fmt: skip
    return [freeze, *_inventories(spec, src, dst, ("freeze",)),
            StepPlan(id="plan", host=None, args=PlanArgs(),
                     deps=(f"inventory-{src}", f"inventory-{dst}"))]  # fmt: skip


def submit_container(
    store: JobStore, config_path: str, op: str, params: Mapping[str, Any]
) -> Job:
    """Read the fleet config and the container's record, build the job, hand it over."""
    with open(config_path, encoding="utf-8") as fh:
        text = fh.read()
    config = parse_config(text, source=config_path)
    record = records.get(store.r, check_name(str(params.get("name", ""))))
    job = new_container_job(text, config, op, params, record)
    store.create(job)
    return job


# -- coordinator-side steps ----------------------------------------------------------------------


def job_graph(store: JobStore, job: Job, hosts: Sequence[str]) -> FleetGraph:
    graph = FleetGraph()
    for host in hosts:
        report = store.inventory(host, job.id)
        if report is not None:
            graph.add_inventory(host, list(report.objects), report.taken_at)
    return graph


def _plan_create(store: JobStore, job: Job, spec: ContainerSpec) -> dict[str, ResultValue]:
    host = str(job.options["host"])
    graph = job_graph(store, job, [host])
    image = graph.dataset(host, spec.image_dataset)
    short = spec.image.split("@", 1)[1]
    if image is None or image.index_of_short(short) < 0:
        raise PlanRefused(f"{host}:{spec.image} does not exist")
    missing = [f"{m.kind} {m.dataset}" for m in spec.mounts
               if graph.dataset(host, m.dataset) is None]  # fmt: skip
    if missing:
        raise PlanRefused(f"{host} lacks the datasets to mount: {', '.join(missing)}")
    config = parse_config(store.config_text(job), source=str(job.options.get("source", "<job>")))
    if mounted_by_policy(config, spec.name):  # homes and shared data by [kinds] (kindjob.py)
        spec = with_policy_mounts(spec, graph, config, host, replicas=replica_roots(
            config, roles_of(config.jobs, RoleStore(store.r))))
        job.options["spec"] = records.spec_to_data(spec)
    add_steps(job, [
        StepPlan(id="create", host=host, args=ContainerCreateArgs(spec=spec),
                 writes=_writes(host, spec)),
        StepPlan(id="record", host=None, args=RecordArgs(), deps=("create",)),
    ], after="plan")  # fmt: skip
    return {"steps": 2}


def transfer_steps(
    graph: FleetGraph, spec: ContainerSpec, src: str, dst: str, *, job_id: str, prefix: str
) -> tuple[list[StepPlan], list[str]]:
    """The sync planner's steps that bring the image and the container's datasets from ``src``
    to the same names on ``dst`` (only what ``dst`` lacks; the root as a clone of the image),
    their ids prefixed; and the notes. PlanRefused when a target diverged."""
    names = (spec.image_dataset, *spec.datasets)
    out: list[StepPlan] = []
    notes: list[str] = []
    for pool in sorted({pool_of(n) for n in names}):
        if graph.dataset(dst, pool) is None:
            raise PlanRefused(f"{dst} has no pool {pool!r} for {spec.name}'s datasets")
        include = tuple(n for n in names if pool_of(n) == pool)
        jc = JobConfig(name=f"container {spec.name} to {dst}", sources=(DatasetRef(src, pool),),
                       targets=(JobTarget(host=dst, dataset=pool),), recursive=True,
                       include=include, incremental="I", mount_targets=False)  # fmt: skip
        plan = plan_sync(graph, jc, job_id=job_id)
        if plan.refusals:
            raise PlanRefused("; ".join(str(r) for r in plan.refusals))
        notes.extend(plan.notes)
        ren = {s.id: f"{prefix}{pool}-{s.id}" for s in plan.steps}
        out += [replace(s, id=ren[s.id], deps=tuple(ren.get(d, d) for d in s.deps))
                for s in plan.steps]  # fmt: skip
    return out, notes


def _parents_to_create(graph: FleetGraph, spec: ContainerSpec, dst: str) -> tuple[str, ...]:
    sent = {spec.image_dataset, *spec.datasets}
    need: set[str] = set()
    for name in sent:
        parts = name.split("/")
        for i in range(2, len(parts)):
            above = "/".join(parts[:i])
            if above not in sent and graph.dataset(dst, above) is None:
                need.add(above)
    return tuple(sorted(need, key=lambda n: (n.count("/"), n)))


def _plan_send(store: JobStore, job: Job, spec: ContainerSpec, step: Step) -> dict[str, Any]:
    p = job.options["params"]
    src, dst = str(p["from"]), str(p["to"])
    live = bool(p.get("live"))
    final = step.id == "plan-final" or not live
    graph = job_graph(store, job, [src, dst])
    prefix = "final-" if final else "pre-"
    steps, notes = transfer_steps(graph, spec, src, dst, job_id=job.id, prefix=prefix)
    plans: list[StepPlan] = []
    parents = _parents_to_create(graph, spec, dst)
    roots: tuple[str, ...] = ()
    if parents:
        plans.append(StepPlan(id=f"{prefix}prepare", host=dst,
                              args=ContainerPrepareArgs(datasets=parents)))  # fmt: skip
        roots = (f"{prefix}prepare",)
    plans += [replace(s, deps=s.deps or roots or (step.id,)) for s in steps]
    moved = tuple(s.id for s in plans if isinstance(s.args, TransferArgs)) or (step.id,)
    after = tuple(s.id for s in plans) or (step.id,)
    keep = not p.get("stop_source")
    if final:
        plans += [
            StepPlan(id="adopt", host=dst, deps=moved, writes=_writes(dst, spec),
                     args=ContainerRestoreArgs(spec=spec, snapshot=str(p["snapshot"]),
                                               rollback=False)),
            StepPlan(id="record", host=None, args=RecordArgs(), deps=("adopt", *after)),
        ]  # fmt: skip
    else:
        plans += [
            StepPlan(id="freeze", host=src, deps=after, writes=_writes(src, spec),
                     args=ContainerCheckpointArgs(spec=spec, snapshot=str(p["snapshot"]),
                                                  leave_running=keep, cold_fallback=True)),
            *_inventories(spec, src, dst, ("freeze",), tag="-final"),
            StepPlan(id="plan-final", host=None, args=PlanArgs(),
                     deps=(f"inventory-final-{src}", f"inventory-final-{dst}")),
        ]  # fmt: skip
    add_steps(job, plans, after=step.id)
    job.report.setdefault("notes", []).extend(notes)
    log.info("container.send_planned", job_id=job.id, stage=prefix.rstrip("-"),
             steps=len(plans))  # fmt: skip
    return {"steps": len(plans), "transfers": len(moved)}


def run_plan(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    spec = records.spec_from_data(job.options["spec"])
    op = job.options.get("op")
    if op == "create":
        return _plan_create(store, job, spec)
    if op == "send":
        return _plan_send(store, job, spec, step)
    raise JobError(f"container {op} has no plan step")


def _moved(job: Job, prefix: str) -> int:
    return sum(int(s.result.get("bytes") or 0) for s in job.steps.values()
               if s.kind == TransferArgs.KIND and s.id.startswith(prefix))  # fmt: skip


def run_record(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """Write the container's record, and for a send the report: frozen time and bytes."""
    spec = records.spec_from_data(job.options["spec"])
    op = str(job.options.get("op"))
    p = job.options["params"]
    host = str(job.options["host"])
    rec = records.get(store.r, spec.name)
    result: dict[str, ResultValue] = {"op": op}
    if op == "create":
        records.put(store.r, records.ContainerRecord(name=spec.name, host=host, spec=spec))
        return result
    if rec is None:
        raise JobError(f"container {spec.name!r} has no record any more")
    if op == "checkpoint":
        res = job.steps["checkpoint"].result
        cp = records.CheckpointRecord(name=str(p["checkpoint"]), mode=str(res.get("mode")),
                                      reason=str(res.get("reason") or ""), at=time.time())
        records.put(store.r, rec.with_checkpoint(cp))
        result.update(mode=cp.mode)
        return result
    if op == "restore":
        short = str(p["checkpoint"])
        names = [c.name for c in rec.checkpoints]
        kept = rec.checkpoints[: names.index(short) + 1] if short in names else rec.checkpoints
        records.put(store.r, replace(rec, state="running", checkpoints=kept,
                                     updated=time.time()))  # fmt: skip
        result.update(mode=str(job.steps["restore"].result.get("mode")))
        return result
    freeze, adopt = job.steps["freeze"].result, job.steps["adopt"].result
    dst = str(p["to"])
    mode, reason = str(freeze.get("mode")), str(freeze.get("reason") or "")
    frozen_ms = int(adopt.get("at_ms") or 0) - int(freeze.get("frozen_at_ms") or 0)
    report: dict[str, ResultValue] = {
        "mode": mode, "frozen_ms": frozen_ms, "freeze_bytes": _moved(job, "final-"),
        "precopy_bytes": _moved(job, "pre-"), "live": bool(p.get("live")), "from": host,
        "to": dst, "restored": str(adopt.get("mode")),
        "checkpoint_ms": int(freeze.get("frozen_ms") or 0),
        "restore_ms": int(adopt.get("restore_ms") or 0),
    }  # fmt: skip
    if p.get("live") and mode != "criu":
        job.report.setdefault("notes", []).append(
            f"CRIU cannot work on {host} ({reason}): {spec.name} went cold instead (pre-copy, "
            "stop, final snapshot and increment, started on the target afresh)")
    cp = records.CheckpointRecord(name=str(p["snapshot"]), mode=mode, reason=reason,
                                  at=time.time())  # fmt: skip
    moved = rec.with_checkpoint(cp)
    if p.get("stop_source"):
        moved = replace(moved, host=dst, copies=tuple(c for c in rec.copies if c != dst))
    else:
        moved = replace(moved, copies=tuple(sorted({*rec.copies, dst})))
    records.put(store.r, moved)
    job.report["container"] = report
    result.update(report)
    return result


CONTAINER: Final = register(JobKind(
    name=KIND, local_steps={PlanArgs.KIND: run_plan, RecordArgs.KIND: run_record},
    description="containers on datasets: create, checkpoint, restore, send to a co-worker",
))  # fmt: skip
