"""Planning for the short verbs (``zfleet send|clone|destroy``): pure, over the fleet graph.

- ``send`` reuses the sync planner: a transient :class:`JobConfig` made from the two addresses,
  on a graph whose source snapshots stop at the one asked for, so clones stay clones, the newest
  common snapshot is the incremental base, and a cut-off receive resumes, exactly as in a sync.
- ``clone`` across hosts sends the origin snapshot first when the other host holds no snapshot of
  that guid (next to the new clone, through the same planner), then clones it there.
- ``destroy`` refuses a snapshot that is the newest common snapshot of the dataset with a replica
  on another host or store (its next incremental base), unless forced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from coordinator.config import DatasetRef, JobConfig, JobTarget
from coordinator.engine import StepPlan
from coordinator.graph import Dataset, FleetGraph
from coordinator.planner import Plan, Refusal, plan_sync
from protocol.addresses import Address
from protocol.errors import JobError
from protocol.names import parent, pool_of
from protocol.steps import CloneArgs, DestroyArgs, TransferArgs
from protocol.zfs import ObjType, ZfsObject


def objects_until(
    objects: Iterable[ZfsObject], root: str, createtxg: int, *, recursive: bool
) -> list[ZfsObject]:
    """Inventory rows with the snapshots and bookmarks under ``root`` taken after ``createtxg``
    left out (a txg is pool-wide, so one cut fits every dataset below ``root``)."""
    out = []
    for obj in objects:
        if obj.type in (ObjType.SNAPSHOT, ObjType.BOOKMARK) and obj.createtxg > createtxg:
            ds = obj.dataset
            if ds == root or (recursive and ds.startswith(root + "/")):
                continue
        out.append(obj)
    return out


def find_snapshot(graph: FleetGraph, addr: Address) -> tuple[Dataset, int]:
    """The dataset ``addr`` names and the index of its snapshot; a JobError naming what is
    missing otherwise."""
    ds = graph.dataset(addr.host, addr.dataset)
    if ds is None:
        raise JobError(f"{addr.host}:{addr.dataset} does not exist")
    i = ds.index_of_short(addr.snapshot or "")
    if i < 0:
        have = ", ".join(s.short for s in ds.snapshots()[-5:]) or "none"
        raise JobError(f"{addr} does not exist (newest snapshots: {have})")
    return ds, i


def send_job_config(
    src: Address, dst: Address, *, recursive: bool, force: bool = False, mount: bool = False
) -> JobConfig:
    """The transient replication job one ``zfleet send`` stands for (no [jobs] entry needed)."""
    target = (JobTarget(store=dst.store) if dst.is_store
              else JobTarget(host=dst.host, dataset=dst.dataset))  # fmt: skip
    return JobConfig(
        name=f"send {src.host}:{src.dataset} {dst}", sources=(DatasetRef(src.host, src.dataset),),
        targets=(target,), recursive=recursive, force_rollback=force, incremental="I",
        mount_targets=mount,
    )  # fmt: skip


def plan_send(graph: FleetGraph, job: JobConfig, *, job_id: str) -> Plan:
    """The sync planner's plan for the transient job (a thin name for readers of this room)."""
    return plan_sync(graph, job, job_id=job_id)


def origin_home(src: Address, dst: Address) -> str:
    """Where the origin lands on the clone's host when it is not there: next to the clone,
    named after the source dataset (its parent exists, since the clone's must)."""
    above = parent(dst.dataset)
    if above is None:
        raise JobError(f"{dst}: a clone cannot be a pool's root dataset")
    home = f"{above}/{src.dataset.rsplit('/', 1)[-1]}"
    if home == dst.dataset:
        home += "-origin"
    return home


@dataclass(frozen=True)
class ClonePlan:
    plan: Plan
    origin: str  # the snapshot on the clone's host the clone is made from


def plan_clone(
    graph: FleetGraph, src: Address, dst: Address, *, job_id: str, origin_at: str | None = None
) -> ClonePlan:
    """Steps that leave ``dst`` a clone of ``src``'s snapshot on ``dst``'s host. ``graph``
    should show the source only up to that snapshot (:func:`objects_until`), so that the
    origin's replica gets what the clone needs and no more."""
    ds, i = find_snapshot(graph, src)
    snap = ds.snap(i)
    if graph.dataset(dst.host, dst.dataset) is not None:
        raise JobError(f"{dst} exists already")
    if dst.host == src.host:
        step = StepPlan(id="clone", host=dst.host,
                        args=CloneArgs(snapshot=snap.name, target=dst.dataset, guid=snap.guid),
                        writes=(f"{dst.host}:{dst.dataset}",))  # fmt: skip
        return ClonePlan(Plan(job=f"clone {src}", steps=(step,)), snap.name)
    there = [name for host, name in graph.locations(snap.guid)
             if host == dst.host and pool_of(name) == pool_of(dst.dataset)]  # a clone's pool
    notes: list[str] = []
    steps: list[StepPlan] = []
    refusals: tuple[Refusal, ...] = ()
    if there:
        origin = sorted(there)[0]
        notes.append(f"{dst.host} holds {src} already as {origin}: cloned from it")
    else:
        home = origin_at or origin_home(src, dst)
        if pool_of(home) != pool_of(dst.dataset):
            raise JobError(f"the origin ({home}) and the clone ({dst.dataset}) must share a pool")
        origin = f"{home}@{snap.short}"
        origin_addr = Address(host=dst.host, dataset=home)
        sent = plan_send(graph, send_job_config(src, origin_addr, recursive=False), job_id=job_id)
        steps.extend(sent.steps)
        refusals = sent.refusals
        notes.extend(sent.notes)
        notes.append(f"{src} goes to {dst.host}:{home} first (the clone's origin)")
    deps = tuple(s.id for s in steps if isinstance(s.args, TransferArgs))
    if not refusals:
        steps.append(StepPlan(id="clone", host=dst.host, deps=deps,
                              args=CloneArgs(snapshot=origin, target=dst.dataset, guid=snap.guid),
                              writes=(f"{dst.host}:{dst.dataset}",)))  # fmt: skip
    return ClonePlan(Plan(job=f"clone {src}", steps=tuple(steps), refusals=refusals,
                          notes=tuple(notes)), origin)  # fmt: skip


# -- destroy -----------------------------------------------------------------------------------


def newest_common(a: Dataset, b: Dataset) -> int | None:
    """The guid of the newest snapshot ``a`` and ``b`` both hold, or None."""
    mine = set(a.snap_guids)
    for k in range(len(b) - 1, -1, -1):
        if b.snap_guids[k] in mine:
            return int(b.snap_guids[k])
    return None


def needed_by(graph: FleetGraph, host: str, snapshot: str) -> list[str]:
    """Every ``host:dataset`` elsewhere whose newest common snapshot with ``snapshot``'s dataset
    is that snapshot: its next incremental needs it (a bookmark of it on ``host`` would do)."""
    name, _, short = snapshot.partition("@")
    ds = graph.dataset(host, name)
    if ds is None:
        return []
    i = ds.index_of_short(short)
    if i < 0:
        return []
    guid = ds.snap_guids[i]
    if ds.bookmark_with_guid(guid) is not None:
        return []
    out = []
    for other in graph:
        if other.host == host and other.name == name:
            continue
        if other.index_of_guid(guid) >= 0 and newest_common(ds, other) == guid:
            out.append(f"{other.host}:{other.name}")
    return sorted(out)


def plan_destroy(
    graph: FleetGraph, addr: Address, *, recursive: bool, force: bool
) -> Plan:
    """One destroy step, or refusals naming the replicas that still need the snapshot."""
    ds, _ = find_snapshot(graph, addr)
    targets: Sequence[Dataset] = (graph.subtree(addr.host, addr.dataset) if recursive
                                  else [ds])  # fmt: skip
    refusals: list[Refusal] = []
    notes: list[str] = []
    doomed: list[tuple[str, int]] = []
    for d in targets:
        k = d.index_of_short(addr.snapshot or "")
        if k < 0:
            continue
        name = f"{d.name}@{addr.snapshot}"
        doomed.append((name, int(d.snap_guids[k])))
        for holder in needed_by(graph, addr.host, name):
            why = f"the newest snapshot it shares with {holder}: that replica's next incremental"
            if force:
                notes.append(f"{addr.host}:{name} is {why} (destroyed anyway: --force)")
            else:
                refusals.append(Refusal(f"{addr.host}:{name}", holder,
                                        f"{why} needs it (--force destroys it anyway)"))
    if refusals:
        return Plan(job=f"destroy {addr}", steps=(), refusals=tuple(refusals), notes=tuple(notes))
    # -r destroys the snapshot in every descendant in one command; without it, just the one
    step = StepPlan(id="destroy", host=addr.host,
                    args=DestroyArgs(snapshots=tuple(doomed[:1]), recursive=recursive),
                    writes=tuple(f"{addr.host}:{n.split('@')[0]}" for n, _ in doomed))  # fmt: skip
    return Plan(job=f"destroy {addr}", steps=(step,), notes=tuple(notes))
