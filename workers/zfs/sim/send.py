"""``zfs send`` for simulated pools: real OpenZFS record streams from manifests.

A send is planned first, from metadata only (which objects changed between the two manifests,
which of their records differ), then emitted lazily as the reader pulls bytes. The plan knows
every record's size, so ``estimate`` (``send -nP``) is exact without reading a block, and an
incremental costs what changed, not what exists.

emit.py turns the plan into records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from protocol.errors import (
    DatasetNotFound,
    InvalidOperation,
    KeyNotLoaded,
    ProtocolError,
    ResumeTokenStale,
    TokenError,
)
from protocol.stream import Feature, decode_resume_token
from workers.zfs.base import SendSpec, SendStream

from . import emit
from .nodes import Manifest, Node
from .pool import Bookmark, Dataset, Pool, Snapshot

if TYPE_CHECKING:
    from .backend import SimBackend

log = structlog.get_logger(__name__)


@dataclass
class Substream:
    """One BEGIN..END: a snapshot, full or from a base."""

    snap: Snapshot
    fromguid: int
    clone: bool
    kind: str  # filesystem | volume
    new: Manifest
    old: Manifest
    raw: bool
    master: bytes | None
    sealed: bool  # the source's data is stored encrypted (raw receive never unlocked)
    crypt: dict[str, Any] | None
    features: int
    resume_object: int = 0
    resume_offset: int = 0
    nodes: dict[bytes, Node] = field(default_factory=dict)

    def changed(self) -> list[int]:
        return sorted(o for o, d in self.new.items() if self.old.get(o) != d)

    def freed(self) -> list[int]:
        return sorted(o for o in self.old if o not in self.new)

    def load(self, pool: Pool) -> None:
        """Read the changed objects' metadata now, so emitting touches only block files (and
        may run on another thread than the one that opened the send)."""
        changed = self.changed()
        wanted = {self.new[o] for o in changed} | {self.old[o] for o in changed if o in self.old}
        self.nodes = pool.objects.get_many(wanted) if wanted else {}


@dataclass
class Plan:
    """The streams to emit: a compound wrapper (with an nvlist) or one plain substream."""

    subs: list[Substream]
    compound: bool
    toname: str
    nvlist: dict[str, Any] | None = None


def parse_from(pool: Pool, snap: Snapshot, from_snap: str) -> Snapshot | Bookmark:
    """The incremental source named by ``-i``/``-I`` (``@s1``, ``pool/a@s1`` or ``pool/a#b``)."""
    if from_snap.startswith("@"):
        return pool.snapshot(snap.dataset_name + from_snap)
    if from_snap.startswith("#"):
        return pool.bookmark(snap.dataset_name + from_snap)
    if "#" in from_snap:
        return pool.bookmark(from_snap)
    return pool.snapshot(from_snap)


def lineage(pool: Pool, ds: Dataset) -> list[int]:
    """The dataset's id and its origins' dataset ids, nearest first."""
    chain = [ds.id]
    current = ds
    while current.origin is not None:
        origin = pool.snapshot_by_id(current.origin)
        chain.append(origin.dataset)
        current = pool.dataset_by_id(origin.dataset)
    return chain


def build_plan(pool: Pool, spec: SendSpec) -> Plan:
    if spec.resume_token:
        return _resume_plan(pool, spec)
    snap = pool.snapshot(spec.snapshot)
    if spec.replicate:
        from .replicate import replication_plan

        return replication_plan(pool, snap, spec)
    base: Snapshot | Bookmark | None = None
    if spec.from_snap:
        base = parse_from(pool, snap, spec.from_snap)
        check_source(pool, snap, base)
    subs: list[Substream] = []
    if spec.intermediates and base is not None:
        chain = intermediate_snaps(pool, snap, base)
        previous: Snapshot | Bookmark = base
        for step in chain:
            subs.append(substream(pool, step, previous, spec))
            previous = step
        nvl = _props_nvlist(pool, snap, spec, base) if spec.props else None
        return Plan(subs, True, snap.name, nvl)
    subs.append(substream(pool, snap, base, spec))
    if spec.props:
        return Plan(subs, True, snap.name, _props_nvlist(pool, snap, spec, base))
    return Plan(subs, False, snap.name)


def check_source(pool: Pool, snap: Snapshot, base: Snapshot | Bookmark) -> None:
    """OpenZFS's refusal of a bad incremental source: not strictly before ``snap`` in its history.

    The snapshot itself (``send -i @s1 fs@s1``) and a bookmark of it are refused too, as the
    kernel does (dsl_dataset_is_before wants a smaller txg); libzfs words all cases alike.
    """
    if not _is_before(pool, base, snap):
        raise InvalidOperation(
            f"warning: cannot send '{snap.name}': not an earlier snapshot from the same fs"
        )


def _is_before(pool: Pool, base: Snapshot | Bookmark, snap: Snapshot) -> bool:
    """``base`` is older than ``snap`` in its dataset, or at or before the origin of a clone."""
    dataset, newest = snap.dataset, snap.createtxg - 1  # strictly before snap itself
    while True:
        if base.createtxg > newest:
            return False
        if base.dataset == dataset:
            return True
        origin = pool.dataset_by_id(dataset).origin
        if origin is None:
            return False
        found = pool.snapshot_by_id(origin)
        dataset, newest = found.dataset, found.createtxg  # the origin itself may be the base


def intermediate_snaps(pool: Pool, snap: Snapshot, base: Snapshot | Bookmark) -> list[Snapshot]:
    """Snapshots after ``base`` up to ``snap`` that ``-I`` sends, oldest first."""
    ds = pool.dataset_by_id(snap.dataset)
    mine = [s for s in pool.snapshots(ds.id) if s.createtxg <= snap.createtxg]
    if base.dataset == ds.id:
        return [s for s in mine if s.createtxg > base.createtxg]
    return mine  # base is an origin: every snapshot of the clone up to snap


def substream(
    pool: Pool, snap: Snapshot, base: Snapshot | Bookmark | None, spec: SendSpec
) -> Substream:
    ds = pool.dataset_by_id(snap.dataset)
    sealed = bool(ds.crypt and ds.crypt.get("sealed"))
    master: bytes | None = None
    if ds.crypt:
        if spec.raw:
            master = bytes.fromhex(ds.crypt["loaded"]) if ds.crypt.get("loaded") else None
            if master is None and not sealed:
                raise KeyNotLoaded(f"cannot send '{snap.name}': encryption key not loaded")
        else:
            loaded = ds.crypt.get("loaded")
            if not loaded or sealed:
                raise KeyNotLoaded(
                    f"cannot send '{snap.name}': encryption key not loaded; use -w for a raw send"
                )
    features = int(Feature.SA_SPILL)
    if spec.compressed or spec.raw:
        features |= Feature.COMPRESSED | Feature.LZ4
    if spec.large_blocks:
        features |= Feature.LARGE_BLOCKS
    if spec.embedded:
        features |= Feature.EMBED_DATA
    if spec.raw and ds.crypt:
        features |= Feature.RAW
    return Substream(
        snap=snap,
        fromguid=base.guid if base is not None else 0,
        clone=base is not None and base.dataset != ds.id,
        kind=ds.kind,
        new=snap.manifest,
        old=base.manifest if base is not None else {},
        raw=bool(spec.raw and ds.crypt),
        master=master,
        sealed=sealed,
        crypt=ds.crypt,
        features=features,
    )


def _props_nvlist(
    pool: Pool, snap: Snapshot, spec: SendSpec, base: Snapshot | Bookmark | None
) -> dict[str, Any]:
    from .replicate import fs_entry

    ds = pool.dataset_by_id(snap.dataset)
    out: dict[str, Any] = {}
    if base is not None:
        out["fromsnap"] = base.name.split("@")[-1].split("#")[-1]
    out["tosnap"] = snap.short
    out["not_recursive"] = True
    out["fss"] = {f"0x{ds.guid:x}": fs_entry(pool, ds, snap, spec)}
    return out


def _resume_plan(pool: Pool, spec: SendSpec) -> Plan:
    assert spec.resume_token is not None
    try:
        token = decode_resume_token(spec.resume_token)
    except ProtocolError as exc:
        raise TokenError(f"cannot resume send: resume token is corrupt ({exc})") from exc
    try:
        snap = pool.snapshot(token.toname)
    except DatasetNotFound:
        snap = _snapshot_by_guid(pool, token.toguid)
    if snap.guid != token.toguid:
        raise ResumeTokenStale(
            f"cannot resume send: '{token.toname}' used in the initial send no longer exists"
        )
    base: Snapshot | Bookmark | None = None
    if token.fromguid:
        base = _source_by_guid(pool, snap, token.fromguid)
    resumed = SendSpec(
        snapshot=snap.name,
        raw=token.rawok,
        compressed=token.compressok,
        large_blocks=token.largeblockok,
        embedded=token.embedok,
    )
    sub = substream(pool, snap, base, resumed)
    sub.features |= Feature.RESUMING
    sub.resume_object = token.object
    sub.resume_offset = token.offset
    return Plan([sub], False, snap.name)


def _snapshot_by_guid(pool: Pool, guid: int) -> Snapshot:
    for snap in pool.snapshots():
        if snap.guid == guid:
            return snap
    raise ResumeTokenStale(f"cannot resume send: snapshot with guid {guid:#x} no longer exists")


def _source_by_guid(pool: Pool, snap: Snapshot, guid: int) -> Snapshot | Bookmark:
    chain = lineage(pool, pool.dataset_by_id(snap.dataset))
    candidates: list[Snapshot | Bookmark] = [*pool.snapshots(), *pool.bookmarks()]
    for cand in candidates:
        if cand.guid == guid and cand.dataset in chain:
            return cand
    raise ResumeTokenStale("cannot resume send: incremental source no longer exists")


def _planned(backend: SimBackend, spec: SendSpec) -> tuple[Pool, Plan]:
    """The pool and the loaded plan of a send (a token names its own snapshot)."""
    name = spec.snapshot
    if spec.resume_token:
        try:
            name = decode_resume_token(spec.resume_token).toname
        except ProtocolError as exc:
            raise TokenError(f"cannot resume send: resume token is corrupt ({exc})") from exc
    pool = backend.pool(name)
    plan = build_plan(pool, spec)
    for sub in plan.subs:
        sub.load(pool)
    return pool, plan


def estimate_send(backend: SimBackend, spec: SendSpec) -> int:
    """``zfs send -nP``: the exact size, from metadata only."""
    pool, plan = _planned(backend, spec)
    return emit.plan_size(pool, plan)


def open_send(backend: SimBackend, spec: SendSpec) -> SendStream:
    """Plan the send now (so naming errors surface at once) and stream it lazily."""
    pool, plan = _planned(backend, spec)
    log.info(
        "sim.send.started",
        snapshot=plan.toname,
        from_snap=spec.from_snap,
        substreams=len(plan.subs),
        raw=spec.raw,
        resumed=bool(spec.resume_token),
    )
    return emit.SimSendStream(emit.emit(pool, plan))
