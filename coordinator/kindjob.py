"""The ``kind`` job kind: ``zfleet kind set|show HOST:DATASET [KIND]`` as a one-off job.

Its first step is an inventory of the dataset's pool on its host; then the coordinator-side
``plan`` step reads it, checks the request against what is there (the dataset must exist; a new
kind must not break the compartments, coordinator/kinds.layout_problems: no home inside an
image's tree, no image made from a clone of a home) and appends one ``set-property`` step (or,
for ``show``, one ``get-property`` step, which says whether the kind is set there or inherited),
followed by a fresh inventory so that ``zfleet status`` groups the dataset under its new kind.
A refused request changes nothing and exits 3, as a refused sync does.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any, Final

import structlog

from coordinator.config import FleetConfig, parse_config
from coordinator.engine import Job, Step, add_steps
from coordinator.graph import Dataset, FleetGraph
from coordinator.jobkinds import JobKind, register
from coordinator.jobstore import JobStore
from coordinator.kinds import layout_problems, mounts_for
from coordinator.planner import Plan, Refusal, StepPlan
from coordinator.rolestate import first_primary, replica_root
from coordinator.syncjob import expand, new_job_id
from protocol.addresses import Address, parse_address
from protocol.containersteps import ContainerMount, ContainerSpec
from protocol.errors import ConfigError, JobError
from protocol.kinds import KIND_PROPERTY, Kind, parse_kind
from protocol.kindsteps import GetPropertyArgs, SetPropertyArgs
from protocol.messages import ResultValue
from protocol.names import parent, pool_of
from protocol.steps import InventoryArgs, PlanArgs

log = structlog.get_logger(__name__)

KIND: Final = "kind"
ACTIONS: Final = ("set", "show")


def new_kind_job(
    config_text: str,
    config: FleetConfig,
    action: str,
    address: str,
    kind: str | None = None,
    *,
    force: bool = False,
    dry_run: bool = False,
    now: float | None = None,
    job_id: str | None = None,
) -> Job:
    """The first steps of a ``kind`` job; ConfigError (AddressError) for a request that cannot be
    right, before any job exists. ``kind`` None with ``set`` clears the dataset's own kind (it
    inherits its parent's again)."""
    if action not in ACTIONS:
        raise JobError(f"unknown kind action {action!r} (actions: {', '.join(ACTIONS)})")
    addr = parse_address(address, snapshot=False, hosts=set(config.hosts))
    if action == "set" and kind is not None:
        kind = parse_kind(kind).value
    label = f"kind {action} {addr}" + (f" {kind or '--inherit'}" if action == "set" else "")
    job = Job(
        id=job_id or new_job_id(), name=label, kind=KIND,
        created=time.time() if now is None else now,
        options={"config": config_text, "source": config.source, "dry_run": dry_run,
                 "trigger": "cli", "action": action, "address": str(addr), "value": kind,
                 "force": force},
    )  # fmt: skip
    inv = f"inventory-{addr.host}"
    add_steps(job, [
        StepPlan(id=inv, host=addr.host, args=InventoryArgs(roots=(pool_of(addr.dataset),))),
        StepPlan(id="plan", host=None, args=PlanArgs(), deps=(inv,)),
    ])  # fmt: skip
    return job


def submit_kind(store: JobStore, config_path: str, action: str, address: str,
                kind: str | None = None, **kw: Any) -> Job:  # fmt: skip
    """Read the fleet config, build the ``kind`` job and hand it to the coordinator."""
    with open(config_path, encoding="utf-8") as fh:
        text = fh.read()
    job = new_kind_job(text, parse_config(text, source=config_path), action, address, kind, **kw)
    store.create(job)
    return job


def relabel(graph: FleetGraph, host: str, dataset: str, new: str | None) -> list[Dataset]:
    """Give ``dataset`` the kind ``new`` in ``graph``, and every descendant that inherited its
    old one (the inventory lists values, not sources: a descendant with the same value is taken
    to inherit it). Returns the datasets changed."""
    top = graph.dataset(host, dataset)
    if top is None:
        return []
    if new is None:  # inheriting: the parent's kind, or none
        above = parent(dataset)
        up = graph.dataset(host, above) if above else None
        new = up.kind if up is not None else None
    old = top.kind
    changed = [d for d in graph.subtree(host, dataset) if d is top or d.kind == old]
    for d in changed:
        d.kind = new
    return changed


def plan_kind(store: JobStore, job: Job) -> Plan:
    """The request checked against the job's inventory: its one property step, or refusals."""
    config = parse_config(store.config_text(job), source=str(job.options.get("source", "<job>")))
    addr = parse_address(str(job.options["address"]), snapshot=False, hosts=set(config.hosts))
    report = store.inventory(addr.host, job.id)
    if report is None:
        raise JobError(f"no inventory from {addr.host} for this job")
    graph = FleetGraph()
    graph.add_inventory(addr.host, list(report.objects), report.taken_at)
    value = job.options.get("value")
    return plan_request(graph, addr, str(job.options["action"]), str(value) if value else None,
                        force=bool(job.options.get("force")), name=job.name)  # fmt: skip


def plan_request(
    graph: FleetGraph, addr: Address, action: str, value: str | None, *, force: bool = False,
    name: str = "kind",
) -> Plan:  # fmt: skip
    """Pure: ``show`` reads the property; ``set`` (``value`` None: inherit) sets it unless the
    new kind adds a layout problem (refused, unless ``force``)."""
    ds = graph.dataset(addr.host, addr.dataset)
    if ds is None:
        raise JobError(f"{addr} does not exist")
    if action == "show":
        step = StepPlan(id="get-property", host=addr.host,
                        args=GetPropertyArgs(dataset=addr.dataset, names=(KIND_PROPERTY,)))
        return Plan(job=name, steps=(step,))
    before = set(layout_problems(graph))
    old = ds.kind
    changed = relabel(graph, addr.host, addr.dataset, value)
    new = [p for p in layout_problems(graph) if p not in before]
    for d in changed:  # the caller's graph is left as it was
        d.kind = old
    if new and not force:
        refusals = tuple(Refusal(str(addr), str(addr), f"{p} (--force sets it anyway)")
                         for p in new)  # fmt: skip
        return Plan(job=name, steps=(), refusals=refusals)
    step = StepPlan(id="set-property", host=addr.host, writes=(f"{addr.host}:{addr.dataset}",),
                    args=SetPropertyArgs(dataset=addr.dataset, name=KIND_PROPERTY, value=value,
                                         guid=ds.guid))  # fmt: skip
    return Plan(job=name, steps=(step,), notes=tuple(f"{p} (set anyway: --force)" for p in new))


def replica_roots(
    config: FleetConfig, primaries: Mapping[str, str] | None = None
) -> set[tuple[str, str]]:
    """Every ``(host, root)`` a job replicates into: for a single-source job each of its hosts
    but the current primary (``primaries``: job -> host, from the role state; else the config's
    primary), for a job of several sources each target's roots."""
    out: set[tuple[str, str]] = set()
    for job in config.jobs.values():
        if len(job.sources) == 1:
            primary = (primaries or {}).get(job.name) or first_primary(job)
            for host in {job.sources[0].host, *(t.host for t in job.targets if t.host)}:
                root = replica_root(job, host)
                if host != primary and root is not None:
                    out.add((host, root))
            continue
        for tgt in job.targets:
            if tgt.host is not None:
                out.update((tgt.host, job.target_dataset(src, tgt, src.dataset))
                           for src in job.sources)  # fmt: skip
    return out


def mounted_by_policy(config: FleetConfig, container: str) -> bool:
    """Whether some kind's policy mounts datasets into ``container``."""
    return any(container in p.mounts for p in config.kinds.values())


def with_policy_mounts(
    spec: ContainerSpec, graph: FleetGraph, config: FleetConfig, host: str, *,
    replicas: Collection[tuple[str, str]] = (),
) -> ContainerSpec:  # fmt: skip
    """``spec`` with every dataset on ``host`` that its kinds' policies mount into the container
    (homes, shared and log datasets: ``kinds.mounts_for``) added to its mounts, after the ones the
    request named (a dataset named there is not mounted twice)."""
    named = {m.dataset for m in spec.mounts}
    extra = tuple(ContainerMount(kind=m.kind.value, dataset=m.dataset, path=m.target)
                  for m in mounts_for(graph, config.kinds, spec.name, host=host, replicas=replicas)
                  if m.dataset not in named)  # fmt: skip
    return replace(spec, mounts=spec.mounts + extra) if extra else spec


def kind_report(
    config: FleetConfig, graph: FleetGraph, host: str, dataset: str, *,
    replicas: Collection[tuple[str, str]] = (),
) -> dict[str, Any]:  # fmt: skip
    """What ``zfleet kind show`` prints besides the property: the kind's policy, the containers
    that mount the dataset, and layout problems that name it."""
    ds = graph.dataset(host, dataset)
    raw = ds.kind if ds is not None else None
    try:
        kind = parse_kind(raw) if raw else None
    except ConfigError:  # a value that is no kind: shown as it is, with no policy
        kind = None
    policy = config.kinds[kind].describe() if kind is not None else None
    mounted = sorted(
        c for c in (config.kinds[kind].mounts if kind is not None else ())
        if any(m.dataset == dataset
               for m in mounts_for(graph, config.kinds, c, host=host, replicas=replicas))
    )  # fmt: skip
    return {"address": f"{host}:{dataset}", "kind": raw, "valid": raw is None or kind is not None,
            "policy": policy, "mounted_in": mounted,
            "problems": [p for p in layout_problems(graph) if f"{host}:{dataset} " in p]}


def run_plan(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """The ``kind`` job's ``plan`` step: check the request, append its property step."""
    plan = plan_kind(store, job)
    expand(job, plan)
    log.info("kind.planned", job_id=job.id, action=job.options.get("action"),
             steps=len(plan.steps), refusals=len(plan.refusals))  # fmt: skip
    return {"steps": len(plan.steps), "refusals": len(plan.refusals)}


KIND_JOB: Final = register(JobKind(
    name=KIND, local_steps={PlanArgs.KIND: run_plan},
    description=f"set or show a dataset's kind ({', '.join(k.value for k in Kind)})",
))  # fmt: skip
