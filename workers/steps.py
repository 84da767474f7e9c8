"""What each step kind does on a host: plain functions over a ZFS backend, each idempotent.

Every function checks before it acts, so running a step twice has the effect of running it once:
a snapshot that exists is not taken again, a hold already placed is not placed again, a transfer
whose target already received it is not sent again, a prune skips what is gone or still needed.
Arguments arrive as the step kind's own typed message (protocol/steps.py), decoded and checked by
the codec before a single ZFS command runs; ``run_step`` dispatches on the message's type, and a
step kind this worker has no handler for is a MessageError. New kinds register a handler with
:func:`handles`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import structlog

from protocol.errors import (
    DatasetExists,
    DatasetNotFound,
    HasDependentClones,
    MessageError,
    RetryableError,
    TransferCancelled,
    TransferError,
    TransferInterrupted,
    ZfleetError,
)
from protocol.messages import ResultValue
from protocol.steps import (
    HoldArgs,
    InventoryArgs,
    PruneArgs,
    ReleaseArgs,
    RollbackArgs,
    SnapshotArgs,
    StepArgs,
    StoreRef,
    TransferArgs,
    TransferTarget,
)
from protocol.zfs import InventoryReport, ObjType, ReceiveSpec, ZfsObject
from workers.zfs.base import ZfsBackend

log = structlog.get_logger(__name__)

Result = dict[str, ResultValue]
# Errors a target reports for a stream it already has; with the job's dataset lock held, only an
# earlier attempt of this very step can have put it there (the planner saw it absent).
ALREADY_RECEIVED: Final = frozenset({"DatasetExists"})


@dataclass
class StepContext:
    """What a step may use on this host; built by the task, faked by tests."""

    host: str
    backend: ZfsBackend
    job_id: str = ""
    step_id: str = ""
    attempt: int = 0
    cancelled: Callable[[], bool] = lambda: False
    save_inventory: Callable[[InventoryReport], None] = lambda report: None
    peer_address: Callable[[str], tuple[str, int]] | None = None
    delivered: Callable[[str], bool] = lambda target: False
    mark_delivered: Callable[[str], None] = lambda target: None
    progress: Callable[[str, int, int | None], None] = lambda target, done, total: None
    push: Callable[..., Any] | None = None  # workers.dataplane.push_transfer, injected
    open_store: Callable[[StoreRef], Any] | None = None  # a workers.cloud Repository
    # keeps a result too large for the step's event (bus.records.put_step_record)
    save_record: Callable[[Any], None] = lambda data: None
    extra: dict[str, Any] = field(default_factory=dict)


# -- the steps --------------------------------------------------------------------------------


def inventory(ctx: StepContext, args: InventoryArgs) -> Result:
    """List the roots (absent ones count as empty; none means every pool) and store the report
    for the planner."""
    roots = list(args.roots)
    objects = []
    seen: set[str] = set()
    listed: list[str | None] = [*roots] or [None]
    for root in listed:
        try:
            rows = ctx.backend.list(root)
        except DatasetNotFound:
            continue
        for row in rows:
            if row.name not in seen:
                seen.add(row.name)
                objects.append(row)
    report = InventoryReport(host=ctx.host, taken_at=time.time(), objects=tuple(objects),
                             root=roots[0] if len(roots) == 1 else None)  # fmt: skip
    ctx.save_inventory(report)
    for ref in args.stores:
        ctx.save_inventory(store_inventory(ctx, ref))
    return {"objects": len(objects), "stores": len(args.stores)}


def store_inventory(ctx: StepContext, desc: StoreRef) -> InventoryReport:
    """What an object store holds, as inventory rows: each stored stream's snapshots, by guid."""
    from workers.cloud import manifest as mf

    if ctx.open_store is None:
        raise TransferError("this worker cannot open object stores")
    repo = ctx.open_store(desc)
    manifests, _broken = mf.load_all(repo.target, repo.crypto)
    rows: dict[str, ZfsObject] = {}
    order = 0
    for m in manifests:
        if m.resuming:
            continue
        parts = m.substreams or (mf.Substream(m.snapshot, m.toguid, m.fromguid),)
        for sub in parts:
            dataset = sub.toname.split("@", 1)[0]
            order += 1
            rows.setdefault(dataset, ZfsObject(
                name=dataset, type=ObjType.FILESYSTEM, guid=0, createtxg=0, creation=0))
            rows.setdefault(sub.toname, ZfsObject(
                name=sub.toname, type=ObjType.SNAPSHOT, guid=sub.toguid, createtxg=order,
                creation=int(m.created)))  # fmt: skip
    return InventoryReport(host=f"store:{desc.name}", taken_at=time.time(),
                           objects=tuple(rows.values()))  # fmt: skip


def snapshot(ctx: StepContext, args: SnapshotArgs) -> Result:
    """Take the job's snapshots atomically; those that exist already are left as they are."""
    names = list(args.names)
    missing = [n for n in names if not ctx.backend.exists(n)]
    if missing:
        ctx.backend.snapshot(missing, recursive=args.recursive)
    return {"taken": len(missing), "existed": len(names) - len(missing)}


def _guid(backend: ZfsBackend, name: str) -> int | None:
    try:
        value = backend.get(name, ["guid"]).get("guid")
    except DatasetNotFound:
        return None
    return int(value.value) if value is not None else None


def hold(ctx: StepContext, args: HoldArgs) -> Result:
    """Hold the snapshots a transfer depends on (checked by guid), once."""
    tag = args.tag
    placed = 0
    for name, guid in args.snapshots:
        found = _guid(ctx.backend, name)
        if found is None:
            raise DatasetNotFound(f"cannot hold {name}: it no longer exists")
        if found != guid:
            raise DatasetNotFound(f"cannot hold {name}: it was replaced (guid {found:#x})")
        if tag not in ctx.backend.holds(name):
            ctx.backend.hold(tag, [name])
            placed += 1
    return {"held": placed}


def release(ctx: StepContext, args: ReleaseArgs) -> Result:
    """Release the job's holds; a snapshot that is gone or not held is fine."""
    tag = args.tag
    released = 0
    for name, _ in args.snapshots:
        try:
            if tag in ctx.backend.holds(name):
                ctx.backend.release(tag, [name])
                released += 1
        except DatasetNotFound:
            continue
    return {"released": released}


def prune(ctx: StepContext, args: PruneArgs) -> Result:
    """Destroy old snapshots, skipping any that is gone, replaced, held or a clone's origin."""
    destroyed = kept = 0
    for name, guid in args.destroy:
        found = _guid(ctx.backend, name)
        if found is None:
            continue
        if found != guid or ctx.backend.holds(name):
            kept += 1
            continue
        try:
            ctx.backend.destroy(name)
            destroyed += 1
        except (HasDependentClones, DatasetExists) as exc:
            log.info("prune.kept", snapshot=name, reason=str(exc))
            kept += 1
    return {"destroyed": destroyed, "kept": kept}


def rollback(ctx: StepContext, args: RollbackArgs) -> Result:
    """Roll a diverged target back to its newest common snapshot (force_rollback jobs only)."""
    name = args.snapshot
    found = _guid(ctx.backend, name)
    if found != args.guid:
        raise DatasetNotFound(f"cannot roll back to {name}: it is gone or was replaced")
    ctx.backend.rollback(name, destroy_newer=True)
    return {"rolled_back": True}


def transfer(ctx: StepContext, args: TransferArgs) -> Result:
    """One send fanned out to every target that does not have it yet (resuming where cut)."""
    from workers.dataplane.targets import Outcome, PeerTarget

    if ctx.cancelled():
        raise TransferCancelled("job cancelled before the transfer started")
    todo = [t for t in args.targets if not ctx.delivered(t.label)]
    if not todo:
        return {"bytes": 0, "wire_bytes": 0, "targets": 0, "skipped": len(args.targets)}
    if ctx.push is None or ctx.peer_address is None:
        raise TransferError("this worker has no data plane to send with")
    if any(t.is_store and t.store is None for t in todo):
        raise MessageError("a store target came without its store's location")
    peers: list[Any] = []
    for t in todo:
        if t.store is not None:
            peers.append(_store_target(ctx, t.store))
            continue
        peers.append(
            PeerTarget(
                host=t.host,
                address=t.address or ctx.peer_address(t.host),
                receive=ReceiveSpec(
                    target=t.dataset, force=t.force, origin=t.origin, no_mount=t.no_mount,
                    # noauto: a reboot's `zfs mount -a` leaves the replica unmounted as well
                    set_props={"canmount": "noauto"} if t.no_mount else {},
                ),
                grant=t.grant,
            )
        )
    report = ctx.push(ctx.backend, args.send, peers, progress=_progress_cb(ctx, todo))
    failures: list[str] = []
    retryable = True
    moved = wire = resumed = 0
    for t, r in zip(todo, report.targets, strict=True):
        moved += r.stream_bytes
        wire += r.wire_bytes
        resumed += 1 if r.resumed else 0
        if r.outcome is Outcome.OK or r.error_type in ALREADY_RECEIVED:
            ctx.mark_delivered(t.label)
            continue
        if r.outcome is Outcome.CANCELLED:
            raise TransferCancelled(f"{t.label}: transfer cancelled")
        failures.append(f"{t.label}: {r.error_type}: {r.error}")
        retryable = retryable and r.retryable
    if failures:
        msg = "; ".join(failures)
        raise TransferInterrupted(msg) if retryable else TransferError(msg)
    return {"bytes": moved, "wire_bytes": wire, "targets": len(todo), "resumed": resumed}


def _store_target(ctx: StepContext, desc: StoreRef) -> Any:
    """A data-plane target that uploads the stream into the object store, record-aware."""
    from workers.cloud.ingest import StreamIngest
    from workers.dataplane.targets import StoreTarget

    if ctx.open_store is None:
        raise TransferError("this worker cannot open object stores")
    repo = ctx.open_store(desc)
    return StoreTarget(name=desc.name, open=lambda spec: StreamIngest(repo, host=ctx.host))


def _progress_cb(ctx: StepContext, todo: Sequence[TransferTarget]) -> Callable[[Any], None]:
    label = ",".join(t.label for t in todo)

    def on_progress(event: Any) -> None:
        ctx.progress(label, int(event.stream_bytes), event.estimate)

    return on_progress


A = TypeVar("A", bound=StepArgs)
Handler = Callable[[StepContext, Any], Result]
# step message class -> the function that runs it on this host
HANDLERS: Final[dict[type[StepArgs], Handler]] = {}


def handles(cls: type[A]) -> Callable[[Callable[[StepContext, A], Result]], Handler]:
    """Register the decorated function as the handler of step messages of type ``cls``."""

    def register(fn: Callable[[StepContext, A], Result]) -> Handler:
        if cls in HANDLERS and HANDLERS[cls] is not fn:
            raise TypeError(f"step {cls.KIND!r} already has a handler")
        HANDLERS[cls] = fn
        return fn

    return register


for _cls, _fn in ((InventoryArgs, inventory), (SnapshotArgs, snapshot), (HoldArgs, hold),
                  (ReleaseArgs, release), (TransferArgs, transfer), (PruneArgs, prune),
                  (RollbackArgs, rollback)):  # fmt: skip
    handles(_cls)(_fn)  # type: ignore[arg-type]


def run_step(ctx: StepContext, args: StepArgs) -> Result:
    """Run one step; raises a ZfleetError (``RetryableError`` when another attempt may help)."""
    fn = HANDLERS.get(type(args))
    if fn is None:
        raise MessageError(f"this worker cannot run {args.KIND!r} steps")
    return fn(ctx, args)


def is_retryable(exc: ZfleetError) -> bool:
    return isinstance(exc, RetryableError)

# The role-change, short-verb, container, kind and group-key handlers register themselves
# (each in its own room).
from workers import adhoc as _adhoc  # noqa: E402,F401
from workers import containersteps as _containersteps  # noqa: E402,F401
from workers import keysteps as _keysteps  # noqa: E402,F401
from workers import kindsteps as _kindsteps  # noqa: E402,F401
from workers import rebasesteps as _rebasesteps  # noqa: E402,F401
from workers import rolesteps as _rolesteps  # noqa: E402,F401
