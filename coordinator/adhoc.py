"""The ``adhoc`` job kind: the short fleet verbs as one-off jobs on the same DAG engine.

``zfleet snapshot|diff|clone|send|destroy|ls`` each submit a job of this kind. Its first steps
are inventories of the hosts involved (and, for ``send`` without ``@SNAP``, a fresh snapshot
before them); then the coordinator-side ``plan`` step reads those inventories, checks the
request against what is really there (a missing dataset or snapshot fails the job with its name;
a destroy that would take a replica's incremental base is refused) and appends the verb's steps
(see coordinator/adhocplan.py), followed by fresh inventories so that ``zfleet ls`` and
``zfleet status`` show the result. Transfers are the sync planner's, so they carry the same
grants, report the same progress and resume the same way. Only the hosts' (and, for stores,
the stores') section of the fleet config is needed: the request itself lives in the job.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import structlog

from coordinator.adhocplan import (
    find_snapshot,
    objects_until,
    plan_clone,
    plan_destroy,
    plan_send,
    send_job_config,
)
from coordinator.config import FleetConfig, parse_config, store_descriptor, store_ref
from coordinator.engine import Job, Step, add_steps
from coordinator.graph import FleetGraph
from coordinator.jobkinds import JobKind, register
from coordinator.jobstore import JobStore
from coordinator.planner import Plan, StepPlan
from coordinator.syncjob import expand, new_job_id
from protocol.addresses import Address, parse_address
from protocol.errors import AddressError, JobError
from protocol.messages import ResultValue
from protocol.names import pool_of, validate_component
from protocol.steps import DiffArgs, InventoryArgs, PlanArgs, SnapshotArgs, StoreRef
from protocol.zfs import ObjType

log = structlog.get_logger(__name__)

KIND: Final = "adhoc"
VERBS: Final = ("snapshot", "diff", "clone", "send", "destroy", "ls")
SNAPSHOT_PATTERN: Final = "zfleet-%Y%m%dT%H%M%SZ"


def auto_snapshot_name(now: float) -> str:
    return time.strftime(SNAPSHOT_PATTERN, time.gmtime(now))


def addresses(config: FleetConfig, params: Mapping[str, Any]) -> dict[str, Address]:
    """The request's addresses, parsed and checked against the fleet config's hosts/stores."""
    hosts, stores = set(config.hosts), set(config.stores)
    rules = {"src": (None, False), "dst": (None, True), "other": (True, False)}
    out = {}
    for key, (snap, store_ok) in rules.items():
        text = params.get(key)
        if text:
            out[key] = parse_address(str(text), snapshot=snap, hosts=hosts, stores=stores,
                                     allow_store=store_ok)  # fmt: skip
    return out


def new_adhoc_job(
    config_text: str,
    config: FleetConfig,
    verb: str,
    params: Mapping[str, Any],
    *,
    dry_run: bool = False,
    now: float | None = None,
    job_id: str | None = None,
) -> Job:
    """The first steps of one verb's job; AddressError for a request that cannot be right."""
    if verb not in VERBS:
        raise JobError(f"unknown verb {verb!r} (verbs: {', '.join(VERBS)})")
    when = time.time() if now is None else now
    p = dict(params)
    addr = addresses(config, p)
    src = addr.get("src")
    if verb != "ls" and src is None:
        raise AddressError(f"zfleet {verb} needs a HOST:DATASET address")
    steps: list[StepPlan] = []
    stores: dict[str, Any] = {}
    roots: dict[str, list[str]] = {}
    first: dict[str, tuple[str, ...]] = {}  # host -> steps its inventory waits for
    if verb == "snapshot":
        assert src is not None
        short = src.snapshot or auto_snapshot_name(when)
        validate_component(short)
        p["src"] = f"{src.host}:{src.dataset}@{short}"
        roots[src.host] = [src.dataset]
    elif verb in ("diff", "destroy"):
        assert src is not None
        if src.snapshot is None:
            raise AddressError(f"{src}: zfleet {verb} needs a snapshot (HOST:DATASET@SNAP)")
        other = addr.get("other")
        if other is not None and (other.host, other.dataset) != (src.host, src.dataset):
            raise AddressError(f"{other}: a diff compares two snapshots of {src.host}:"
                               f"{src.dataset}")  # fmt: skip
        roots[src.host] = [src.dataset]
    elif verb in ("clone", "send"):
        assert src is not None
        dst = addr.get("dst")
        if dst is None:
            raise AddressError(f"zfleet {verb} needs a destination address")
        if verb == "clone":
            if src.snapshot is None:
                raise AddressError(f"{src}: zfleet clone needs a snapshot (HOST:DATASET@SNAP)")
            if dst.is_store or dst.snapshot:
                raise AddressError(f"{dst}: a clone is a new HOST:DATASET")
        elif dst.snapshot:
            raise AddressError(f"{dst}: the destination is a dataset, not a snapshot")
        if not dst.is_store and dst.host == src.host and (
            dst.dataset == src.dataset or dst.dataset.startswith(src.dataset + "/")
            or src.dataset.startswith(dst.dataset + "/")
        ):  # fmt: skip
            raise AddressError(f"{dst} overlaps {src.host}:{src.dataset}")
        if dst.is_store and dst.dataset and dst.dataset != src.dataset:
            raise AddressError(f"{dst}: a store keeps the source's names (use {dst.host})")
        if dst.is_store and not dst.dataset:
            p["dst"] = f"{dst.host}:{src.dataset}"  # a store keeps the source's names
        if verb == "send" and src.snapshot is None and not p.get("no_snapshot") and not dry_run:
            short = auto_snapshot_name(when)
            p["src"] = f"{src.host}:{src.dataset}@{short}"
            steps.append(StepPlan(id=f"snapshot-{src.host}", host=src.host, args=SnapshotArgs(
                names=(f"{src.dataset}@{short}",), recursive=bool(p.get("recursive")))))
            first[src.host] = (f"snapshot-{src.host}",)
        roots.setdefault(src.host, []).append(src.dataset)
        if dst.is_store:
            name = dst.store or ""
            stores[name] = store_descriptor(config.stores[name])
        elif verb == "clone" and dst.host != src.host:
            roots.setdefault(dst.host, []).append(pool_of(dst.dataset))
        else:
            roots.setdefault(dst.host, []).append(dst.dataset)
    job = Job(
        id=job_id or new_job_id(), name=_job_name(verb, p), kind=KIND, created=when,
        options={"config": config_text, "source": config.source, "dry_run": dry_run,
                 "trigger": "cli", "verb": verb, "params": p, "stores": stores},
    )  # fmt: skip
    if verb == "ls":
        hosts = [p["host"]] if p.get("host") else sorted(config.hosts)
        every = tuple(store_ref(store_descriptor(s)) for _, s in sorted(config.stores.items()))
        for i, host in enumerate(hosts):
            steps.append(StepPlan(id=f"inventory-{host}", host=host,
                                  args=InventoryArgs(roots=(), stores=every if i == 0 else ())))
        add_steps(job, steps)
        return job
    inv_ids = []
    for host, r in sorted(roots.items()):
        refs: tuple[StoreRef, ...] = ()
        if stores and src is not None and host == src.host:
            refs = tuple(store_ref(d) for _, d in sorted(stores.items()))
        inv_ids.append(f"inventory-{host}")
        steps.append(StepPlan(id=f"inventory-{host}", host=host, deps=first.get(host, ()),
                              args=InventoryArgs(roots=tuple(sorted(set(r))), stores=refs)))
    steps.append(StepPlan(id="plan", host=None, args=PlanArgs(), deps=tuple(inv_ids)))
    add_steps(job, steps)
    return job


def _job_name(verb: str, p: Mapping[str, Any]) -> str:
    parts = [str(p[k]) for k in ("src", "other", "dst") if p.get(k)]
    return " ".join([verb, *parts]) if parts else verb


def submit_adhoc(
    store: JobStore, config_path: str, verb: str, params: Mapping[str, Any], *,
    dry_run: bool = False,
) -> Job:  # fmt: skip
    """Read the fleet config, build the verb's job and hand it to the coordinator."""
    with open(config_path, encoding="utf-8") as fh:
        text = fh.read()
    config = parse_config(text, source=config_path)
    job = new_adhoc_job(text, config, verb, params, dry_run=dry_run)
    store.create(job)
    return job


# -- the coordinator-side plan step -------------------------------------------------------------


def job_graph(store: JobStore, job: Job, *, cut: Address | None, recursive: bool) -> FleetGraph:
    """The graph of this job's own inventories; the source cut at ``cut``'s snapshot."""
    graph = FleetGraph()
    hosts = [s.host for s in job.steps.values()
             if isinstance(s.args, InventoryArgs) and s.host is not None]  # fmt: skip
    hosts += [f"store:{name}" for name in job.options.get("stores", {})]
    for host in hosts:
        report = store.inventory(host, job.id)
        if report is None:
            continue
        objects = list(report.objects)
        if cut is not None and cut.snapshot and host == cut.host:
            at = next((o for o in objects if o.type is ObjType.SNAPSHOT and o.name == cut.full),
                      None)  # fmt: skip
            if at is None:
                raise JobError(f"{cut} does not exist")
            objects = objects_until(objects, cut.dataset, at.createtxg, recursive=recursive)
        graph.add_inventory(host, objects, report.taken_at)
    return graph


def plan_verb(store: JobStore, job: Job) -> Plan:
    """What the verb asks for, checked against the inventories, as a plan of steps."""
    config = parse_config(store.config_text(job), source=str(job.options.get("source", "<job>")))
    verb = str(job.options["verb"])
    p: Mapping[str, Any] = job.options.get("params", {})
    addr = addresses(config, p)
    src = addr["src"]
    recursive = bool(p.get("recursive"))
    if verb == "snapshot":
        graph = job_graph(store, job, cut=None, recursive=False)
        if graph.dataset(src.host, src.dataset) is None:
            raise JobError(f"{src.host}:{src.dataset} does not exist")
        ds = graph.dataset(src.host, src.dataset)
        if ds is not None and ds.index_of_short(src.snapshot or "") >= 0:
            return Plan(job=job.name, steps=(), up_to_date=(str(src),),
                        notes=(f"{src} exists already",))  # fmt: skip
        step = StepPlan(id="snapshot", host=src.host,
                        args=SnapshotArgs(names=(src.full,), recursive=recursive))
        return Plan(job=job.name, steps=(step,))
    if verb == "diff":
        graph = job_graph(store, job, cut=None, recursive=False)
        ds, i = find_snapshot(graph, src)
        other = addr.get("other")
        if other is not None:
            _, k = find_snapshot(graph, other)
            if k <= i:
                raise JobError(f"{other} is not later than {src}")
        step = StepPlan(id="diff", host=src.host,
                        args=DiffArgs(snapshot=src.full, other=other.full if other else None))
        return Plan(job=job.name, steps=(step,))
    if verb == "destroy":
        graph = job_graph(store, job, cut=None, recursive=False)
        # the replicas: every other host's and store's latest inventory
        others = [*config.hosts, *(f"store:{s}" for s in config.stores)]
        for host in others:
            if host in graph.hosts:
                continue
            report = store.inventory(host)
            if report is not None:
                graph.add_inventory(host, list(report.objects), report.taken_at)
        return plan_destroy(graph, src, recursive=recursive, force=bool(p.get("force")))
    dst = addr["dst"]
    graph = job_graph(store, job, cut=src, recursive=recursive)
    if verb == "clone":
        origin_at = p.get("origin_at")
        return plan_clone(graph, src, dst, job_id=job.id,
                          origin_at=str(origin_at) if origin_at else None).plan  # fmt: skip
    if graph.dataset(src.host, src.dataset) is None:
        raise JobError(f"{src.host}:{src.dataset} does not exist")
    jc = send_job_config(src, dst, recursive=recursive, force=bool(p.get("force")),
                         mount=bool(p.get("mount")))  # fmt: skip
    return plan_send(graph, jc, job_id=job.id)


def run_plan(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """The adhoc kind's ``plan`` step: check and plan the verb, append its steps."""
    plan = plan_verb(store, job)
    expand(job, plan)
    log.info("adhoc.planned", job_id=job.id, verb=job.options.get("verb"),
             steps=len(plan.steps), refusals=len(plan.refusals))  # fmt: skip
    return {"steps": len(plan.steps), "estimate": plan.estimate, "refusals": len(plan.refusals)}


ADHOC: Final = register(JobKind(
    name=KIND, local_steps={PlanArgs.KIND: run_plan},
    description="one short fleet verb (snapshot, diff, clone, send, destroy, ls) as a job",
))  # fmt: skip
