"""``zfs send`` for simulated pools: real OpenZFS record streams from manifests.

A send is planned first, from metadata only (which objects changed between the two manifests,
which of their records differ), then emitted lazily as the reader pulls bytes. The plan knows
every record's size, so ``estimate`` (``send -nP``) is exact without reading a block, and an
incremental costs what changed, not what exists.

Per object the records follow OpenZFS's order: OBJECT (bonus = the object's metadata), a FREE
from the end of its records to the end of the object, then WRITE per changed record and FREE per
record that became a hole. Deleted objects go out as FREEOBJECTS runs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from protocol.errors import (
    DatasetNotFound,
    InvalidOperation,
    KeyNotLoaded,
    ProtocolError,
    ResumeTokenStale,
    ZfsError,
)
from protocol.stream import Feature, StreamWriter, decode_resume_token
from protocol.stream.nvlist import NV_ENCODE_NATIVE, NV_ENCODE_XDR, nvlist_encode
from protocol.stream.types import DMU_OST_ZFS, DMU_OST_ZVOL, DRR_FLAG_CLONE
from workers.zfs.base import SendSpec, SendStream

from . import crypto
from .blocks import HOLE
from .nodes import RECORD, Kind, Manifest, Node
from .pool import Bookmark, Dataset, Pool, Snapshot

if TYPE_CHECKING:
    from .backend import SimBackend

FREE_TO_END: Final = (1 << 64) - 1
DRR_FLAGS: Final = 0x4 | 0x8  # FREERECORDS | SPILL_BLOCK, as OpenZFS 2.3 sets them
RECORD_HEADER: Final = 312
SEAL_OVERHEAD: Final = crypto.NONCE_LEN + 16
OT_PLAIN: Final = 19
OT_DIRECTORY: Final = 20
OT_ZVOL: Final = 23
OT_SA: Final = 44


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
    """OpenZFS's refusals for a bad incremental source."""
    ds = pool.dataset_by_id(snap.dataset)
    if base.dataset not in lineage(pool, ds):
        raise InvalidOperation(
            f"cannot send '{snap.name}': incremental source ({base.name}) is not in the "
            "same dataset or an origin of it"
        )
    if base.createtxg >= snap.createtxg and base.guid != snap.guid:
        raise InvalidOperation(
            f"cannot send '{snap.name}': incremental source ({base.name}) is not earlier than it"
        )


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
        raise InvalidOperation(f"cannot resume send: {exc}") from exc
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


# -- emitting ---------------------------------------------------------------------------------
class _Sink(io.RawIOBase):
    """Collects what the writer writes, so the generator can hand it out in chunks."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.size += len(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return out


class _SizeWriter:
    """Counts the bytes StreamWriter would write, without data, checksums or block reads."""

    def __init__(self) -> None:
        self.size = 0

    def begin(
        self, *args: Any, compound: bool = False, payload_nvlist: Any = None, **kw: Any
    ) -> None:
        encoding = NV_ENCODE_XDR if compound else NV_ENCODE_NATIVE
        extra = len(nvlist_encode(payload_nvlist, encoding=encoding)) if payload_nvlist else 0
        self.size += RECORD_HEADER + extra

    def object(self, obj: int, *, bonus: bytes, **kw: Any) -> None:
        self.size += RECORD_HEADER + (kw.get("raw_bonuslen") or -(-len(bonus) // 8) * 8)

    def free(self, *args: Any) -> None:
        self.size += RECORD_HEADER

    freeobjects = end = free

    def payload(self, length: int) -> None:
        self.size += RECORD_HEADER + length


def plan_size(pool: Pool, plan: Plan) -> int:
    """The exact byte size :func:`emit` would produce (``zfs send -nP``)."""
    writer = _SizeWriter()
    for _chunk in emit(pool, plan, writer):
        pass
    return writer.size


def emit(pool: Pool, plan: Plan, sizer: _SizeWriter | None = None) -> Iterator[bytes]:
    """The stream's bytes, in chunks of about a record or an object; with ``sizer``, nothing
    is produced and the sizes are counted instead."""
    sink = _Sink()
    writer: Any = sizer if sizer is not None else StreamWriter(sink)
    if plan.compound:
        writer.begin(
            0,
            0,
            plan.toname,
            features=0,
            flags=0,
            type=0,
            compound=True,
            payload_nvlist=plan.nvlist,
        )
        writer.end()
        yield sink.take()
    for sub in plan.subs:
        yield from _emit_sub(pool, writer, sink, sub)
    if plan.compound:
        writer.end()
        yield sink.take()


def _begin_payload(sub: Substream) -> dict[str, Any] | None:
    payload: dict[str, Any] = {}
    if sub.features & Feature.RESUMING:
        payload["resume_object"] = sub.resume_object
        payload["resume_offset"] = sub.resume_offset
    if sub.raw and sub.crypt:
        payload["crypt_keydata"] = {
            "DSL_CRYPTO_SUITE": 8,
            "keyformat": {"raw": 1, "hex": 2, "passphrase": 3}.get(sub.crypt["keyformat"], 0),
            "pbkdf2iters": int(sub.crypt["iters"]),
            "pbkdf2salt": int.from_bytes(bytes.fromhex(sub.crypt["salt"]), "little"),
            "DSL_CRYPTO_MASTER_KEY_1": bytes.fromhex(sub.crypt["wrapped"]),
        }
    return payload or None


def _emit_sub(pool: Pool, writer: Any, sink: _Sink, sub: Substream) -> Iterator[bytes]:
    store = pool.objects
    changed = sub.changed()
    nodes = sub.nodes
    writer.begin(
        sub.snap.guid,
        sub.fromguid,
        sub.snap.name,
        features=sub.features,
        flags=DRR_FLAGS | (DRR_FLAG_CLONE if sub.clone else 0),
        creation_time=sub.snap.creation,
        type=DMU_OST_ZVOL if sub.kind == "volume" else DMU_OST_ZFS,
        payload_nvlist=_begin_payload(sub),
    )
    yield sink.take()
    for first, count in _runs(sub.freed()):
        if first + count > sub.resume_object:
            writer.freeobjects(first, count)
    for obj in changed:
        if obj < sub.resume_object:
            continue
        node = nodes[sub.new[obj]]
        old = nodes.get(sub.old.get(obj, b""))
        yield from _emit_object(store, writer, sink, sub, obj=obj, node=node, old=old)
    writer.end(sub.snap.guid)
    yield sink.take()


def _object_type(sub: Substream, node: Node) -> int:
    if sub.kind == "volume":
        return OT_ZVOL
    if not sub.sealed and node.meta.kind == Kind.DIR:
        return OT_DIRECTORY
    return OT_PLAIN


def _blksz(node: Node, size: int | None) -> int:
    if len(node.blocks) > 1 or size is None:
        return RECORD
    return max(512, -(-size // 512) * 512)


def _emit_object(
    store: Any,
    writer: Any,
    sink: _Sink,
    sub: Substream,
    *,
    obj: int,
    node: Node,
    old: Node | None,
) -> Iterator[bytes]:
    size = None if sub.sealed else node.meta.size
    blksz = _blksz(node, size)
    bonus = node.bonus
    if sub.raw and not sub.sealed:
        assert sub.master is not None
        bonus = crypto.seal(sub.master, bonus)
    fields: dict[str, Any] = {}
    if sub.raw:
        # The sealed bonus is not a multiple of 8: bonuslen keeps its true length.
        fields["bonuslen"] = len(bonus)
        fields["raw_bonuslen"] = -(-len(bonus) // 8) * 8
        bonus = bonus + bytes(fields["raw_bonuslen"] - len(bonus))
    writer.object(
        obj, type=_object_type(sub, node), bonustype=OT_SA, blksz=blksz, bonus=bonus, **fields
    )
    end = len(node.blocks) * RECORD if len(node.blocks) > 1 else len(node.blocks) * blksz
    writer.free(obj, end, FREE_TO_END)
    for i, block in enumerate(node.blocks):
        offset = i * RECORD
        if obj == sub.resume_object and offset < sub.resume_offset:
            continue
        before = old.blocks[i] if old is not None and i < len(old.blocks) else HOLE
        if block == before and old is not None:
            continue
        if block == HOLE:
            writer.free(obj, offset, blksz if len(node.blocks) == 1 else RECORD)
            continue
        if isinstance(writer, _SizeWriter):
            writer.payload(_payload_len(store, sub, node, i, block))
            continue
        data = store.blocks.get(block)
        if sub.raw and not sub.sealed:
            assert sub.master is not None
            payload = crypto.seal(sub.master, data)
        elif sub.raw:
            payload = data
        else:
            payload = data + bytes(
                -len(data) % 512 if len(node.blocks) == 1 else RECORD - len(data)
            )
        writer.write(obj, offset, payload, type=_object_type(sub, node), checksumtype=7)
        yield sink.take()
    if sink.size:
        yield sink.take()


def _payload_len(store: Any, sub: Substream, node: Node, index: int, block: bytes) -> int:
    """The WRITE payload size of one record, from metadata alone (see _emit_object)."""
    if sub.raw and sub.sealed:
        return os.path.getsize(store.blocks.path(block))
    length = node.record_len(index, node.meta.size)
    if sub.raw:
        return length + SEAL_OVERHEAD
    return -(-length // 512) * 512 if len(node.blocks) == 1 else RECORD


def _runs(objs: Sequence[int]) -> Iterator[tuple[int, int]]:
    start = prev = None
    for obj in objs:
        if start is None:
            start = prev = obj
        elif obj == prev + 1:  # type: ignore[operator]
            prev = obj
        else:
            yield start, prev - start + 1  # type: ignore[operator]
            start = prev = obj
    if start is not None:
        yield start, prev - start + 1  # type: ignore[operator]


class SimSendStream:
    """A running send: bytes are produced as they are read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()
        self._done = False
        self._error: ZfsError | None = None

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                self._done = True
            except ZfsError as exc:
                self._done = True
                self._error = exc
                raise
            except OSError as exc:
                self._done = True
                self._error = ZfsError(f"send failed: {exc}")
                raise self._error from exc
        if n < 0:
            out = bytes(self._buf)
            self._buf.clear()
        else:
            out = bytes(self._buf[:n])
            del self._buf[:n]
        return out

    def close(self) -> None:
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        self._done = True
        self._buf.clear()


def estimate_send(backend: SimBackend, spec: SendSpec) -> int:
    """``zfs send -nP``: the exact size, from metadata only."""
    pool = backend.pool(spec.snapshot)
    plan = build_plan(pool, spec)
    for sub in plan.subs:
        sub.load(pool)
    return plan_size(pool, plan)


def open_send(backend: SimBackend, spec: SendSpec) -> SendStream:
    """Plan the send now (so naming errors surface at once) and stream it lazily."""
    pool = backend.pool(spec.snapshot)
    plan = build_plan(pool, spec)
    for sub in plan.subs:
        sub.load(pool)
    return SimSendStream(emit(pool, plan))
