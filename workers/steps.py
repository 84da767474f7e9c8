"""What each step kind does on a host: plain functions over a ZFS backend, each idempotent.

Every function checks before it acts, so running a step twice has the effect of running it once:
a snapshot that exists is not taken again, a hold already placed is not placed again, a transfer
whose target already received it is not sent again, a prune skips what is gone or still needed.
Arguments arrive as JSON (``StepCall.args_json``) and are read into typed records here; anything
malformed is a MessageError before a single ZFS command runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

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
from protocol.messages import InventoryReport, ObjectType, ResultValue, ZfsObjectRecord
from workers.zfs.base import ReceiveSpec, SendSpec, ZfsBackend

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
    open_store: Callable[[Mapping[str, Any]], Any] | None = None  # a workers.cloud Repository
    extra: dict[str, Any] = field(default_factory=dict)


# -- argument records ---------------------------------------------------------------------------


def _obj(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise MessageError(f"step arguments are not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MessageError("step arguments must be a JSON object")
    return data


def _str(d: Mapping[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise MessageError(f"step argument {key!r} must be a non-empty string")
    return v


def _opt_str(d: Mapping[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise MessageError(f"step argument {key!r} must be a string or null")
    return v


def _int(d: Mapping[str, Any], key: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise MessageError(f"step argument {key!r} must be a non-negative integer")
    return v


def _bool(d: Mapping[str, Any], key: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise MessageError(f"step argument {key!r} must be true or false")
    return v


def _list(d: Mapping[str, Any], key: str) -> list[Any]:
    v = d.get(key)
    if not isinstance(v, list):
        raise MessageError(f"step argument {key!r} must be a list")
    return v


def _named_guids(d: Mapping[str, Any], key: str) -> list[tuple[str, int]]:
    out = []
    for item in _list(d, key):
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or not isinstance(item[1], int)):  # fmt: skip
            raise MessageError(f"step argument {key!r} must be a list of [name, guid]")
        out.append((item[0], item[1]))
    return out


@dataclass(frozen=True)
class TransferTarget:
    host: str
    dataset: str
    force: bool
    origin: str | None
    grant: str
    address: tuple[str, int] | None
    store: Mapping[str, Any] | None = None
    no_mount: bool = False  # absent in messages from before mount_targets: mount, as then

    @property
    def label(self) -> str:
        return f"{self.host}:{self.dataset}"


@dataclass(frozen=True)
class TransferArgs:
    source: str
    send: SendSpec
    to_guid: int
    from_guid: int
    targets: tuple[TransferTarget, ...]

    @classmethod
    def parse(cls, raw: str) -> TransferArgs:
        d = _obj(raw)
        send = d.get("send")
        if not isinstance(send, dict):
            raise MessageError("step argument 'send' must be an object")
        spec = SendSpec(
            snapshot=_str(send, "snapshot"),
            from_snap=_opt_str(send, "from_snap"),
            intermediates=_bool(send, "intermediates"),
        )
        targets = []
        for t in _list(d, "targets"):
            if not isinstance(t, dict):
                raise MessageError("each transfer target must be an object")
            addr = t.get("address")
            address = None
            if addr is not None:
                if (not isinstance(addr, list) or len(addr) != 2 or not isinstance(addr[0], str)
                        or not isinstance(addr[1], int)):  # fmt: skip
                    raise MessageError("a target address must be [host, port]")
                address = (addr[0], addr[1])
            store = t.get("store")
            if store is not None and not (isinstance(store, dict) and isinstance(
                    store.get("url"), str) and isinstance(store.get("name"), str)):  # fmt: skip
                raise MessageError("a store target needs {name, url}")
            targets.append(
                TransferTarget(host=_str(t, "host"), dataset=_str(t, "dataset"),
                               force=_bool(t, "force"), origin=_opt_str(t, "origin"),
                               grant=_opt_str(t, "grant") or "", address=address, store=store,
                               no_mount=_bool(t, "no_mount"))
            )  # fmt: skip
        if not targets:
            raise MessageError("a transfer needs at least one target")
        return cls(_str(d, "source"), spec, _int(d, "to_guid"), _int(d, "from_guid"),
                   tuple(targets))  # fmt: skip


# -- the steps --------------------------------------------------------------------------------


def inventory(ctx: StepContext, raw: str) -> Result:
    """List the roots (absent ones count as empty) and store the report for the planner."""
    roots = [r for r in _list(_obj(raw), "roots") if isinstance(r, str)]
    objects = []
    seen: set[str] = set()
    for root in roots:
        try:
            rows = ctx.backend.list(root)
        except DatasetNotFound:
            continue
        for row in rows:
            if row.name not in seen:
                seen.add(row.name)
                objects.append(ZfsObjectRecord.from_object(row))
    report = InventoryReport(host=ctx.host, taken_at=time.time(), objects=tuple(objects),
                             root=roots[0] if len(roots) == 1 else None)  # fmt: skip
    ctx.save_inventory(report)
    stores = _obj(raw).get("stores") or []
    for desc in stores:
        ctx.save_inventory(store_inventory(ctx, desc))
    return {"objects": len(objects), "stores": len(stores)}


def store_inventory(ctx: StepContext, desc: Mapping[str, Any]) -> InventoryReport:
    """What an object store holds, as inventory rows: each stored stream's snapshots, by guid."""
    from workers.cloud import manifest as mf

    if ctx.open_store is None:
        raise TransferError("this worker cannot open object stores")
    repo = ctx.open_store(desc)
    manifests, _broken = mf.load_all(repo.target, repo.crypto)
    rows: dict[str, ZfsObjectRecord] = {}
    order = 0
    for m in manifests:
        if m.resuming:
            continue
        parts = m.substreams or (mf.Substream(m.snapshot, m.toguid, m.fromguid),)
        for sub in parts:
            dataset = sub.toname.split("@", 1)[0]
            order += 1
            rows.setdefault(dataset, ZfsObjectRecord(
                name=dataset, type=ObjectType.FILESYSTEM, guid=0, createtxg=0, creation=0))
            rows.setdefault(sub.toname, ZfsObjectRecord(
                name=sub.toname, type=ObjectType.SNAPSHOT, guid=sub.toguid, createtxg=order,
                creation=int(m.created)))  # fmt: skip
    return InventoryReport(host=f"store:{desc['name']}", taken_at=time.time(),
                           objects=tuple(rows.values()))  # fmt: skip


def snapshot(ctx: StepContext, raw: str) -> Result:
    """Take the job's snapshots atomically; those that exist already are left as they are."""
    d = _obj(raw)
    names = [n for n in _list(d, "names") if isinstance(n, str)]
    recursive = _bool(d, "recursive")
    missing = [n for n in names if not ctx.backend.exists(n)]
    if missing:
        ctx.backend.snapshot(missing, recursive=recursive)
    return {"taken": len(missing), "existed": len(names) - len(missing)}


def _guid(backend: ZfsBackend, name: str) -> int | None:
    try:
        value = backend.get(name, ["guid"]).get("guid")
    except DatasetNotFound:
        return None
    return int(value.value) if value is not None else None


def hold(ctx: StepContext, raw: str) -> Result:
    """Hold the snapshots a transfer depends on (checked by guid), once."""
    d = _obj(raw)
    tag = _str(d, "tag")
    placed = 0
    for name, guid in _named_guids(d, "snapshots"):
        found = _guid(ctx.backend, name)
        if found is None:
            raise DatasetNotFound(f"cannot hold {name}: it no longer exists")
        if found != guid:
            raise DatasetNotFound(f"cannot hold {name}: it was replaced (guid {found:#x})")
        if tag not in ctx.backend.holds(name):
            ctx.backend.hold(tag, [name])
            placed += 1
    return {"held": placed}


def release(ctx: StepContext, raw: str) -> Result:
    """Release the job's holds; a snapshot that is gone or not held is fine."""
    d = _obj(raw)
    tag = _str(d, "tag")
    released = 0
    for name, _ in _named_guids(d, "snapshots"):
        try:
            if tag in ctx.backend.holds(name):
                ctx.backend.release(tag, [name])
                released += 1
        except DatasetNotFound:
            continue
    return {"released": released}


def prune(ctx: StepContext, raw: str) -> Result:
    """Destroy old snapshots, skipping any that is gone, replaced, held or a clone's origin."""
    destroyed = kept = 0
    for name, guid in _named_guids(_obj(raw), "destroy"):
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


def rollback(ctx: StepContext, raw: str) -> Result:
    """Roll a diverged target back to its newest common snapshot (force_rollback jobs only)."""
    d = _obj(raw)
    name = _str(d, "snapshot")
    found = _guid(ctx.backend, name)
    if found != _int(d, "guid"):
        raise DatasetNotFound(f"cannot roll back to {name}: it is gone or was replaced")
    ctx.backend.rollback(name, destroy_newer=True)
    return {"rolled_back": True}


def transfer(ctx: StepContext, raw: str) -> Result:
    """One send fanned out to every target that does not have it yet (resuming where cut)."""
    from workers.dataplane.targets import Outcome, PeerTarget

    args = TransferArgs.parse(raw)
    if ctx.cancelled():
        raise TransferCancelled("job cancelled before the transfer started")
    todo = [t for t in args.targets if not ctx.delivered(t.label)]
    if not todo:
        return {"bytes": 0, "wire_bytes": 0, "targets": 0, "skipped": len(args.targets)}
    if ctx.push is None or ctx.peer_address is None:
        raise TransferError("this worker has no data plane to send with")
    if any(t.host.startswith("store:") and t.store is None for t in todo):
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


def _store_target(ctx: StepContext, desc: Mapping[str, Any]) -> Any:
    """A data-plane target that uploads the stream into the object store, record-aware."""
    from workers.cloud.ingest import StoreSink
    from workers.dataplane.targets import StoreTarget

    if ctx.open_store is None:
        raise TransferError("this worker cannot open object stores")
    repo = ctx.open_store(desc)
    return StoreTarget(name=str(desc["name"]), open=lambda spec: StoreSink(repo, host=ctx.host))


def _progress_cb(ctx: StepContext, todo: Sequence[TransferTarget]) -> Callable[[Any], None]:
    label = ",".join(t.label for t in todo)

    def on_progress(event: Any) -> None:
        ctx.progress(label, int(event.stream_bytes), event.estimate)

    return on_progress


STEPS: Final[dict[str, Callable[[StepContext, str], Result]]] = {
    "inventory": inventory,
    "snapshot": snapshot,
    "hold": hold,
    "release": release,
    "transfer": transfer,
    "prune": prune,
    "rollback": rollback,
}


def run_step(ctx: StepContext, kind: str, raw_args: str) -> Result:
    """Run one step; raises a ZfleetError (``RetryableError`` when another attempt may help)."""
    fn = STEPS.get(kind)
    if fn is None:
        raise MessageError(f"unknown step kind {kind!r}")
    return fn(ctx, raw_args)


def is_retryable(exc: ZfleetError) -> bool:
    return isinstance(exc, RetryableError)
