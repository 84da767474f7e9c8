"""Turning a send plan into bytes: OpenZFS records through protocol.stream's writer.

Per object the records follow OpenZFS's order: OBJECT (bonus = the object's metadata), a FREE
from the end of its records to the end of the object, then WRITE per changed record and FREE per
record that became a hole. Deleted objects go out as FREEOBJECTS runs. The same walk, given a
:class:`SizeWriter`, sizes the stream exactly from metadata alone (``send -nP``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from protocol.errors import ZfsError
from protocol.stream import Feature, StreamWriter
from protocol.stream.nvlist import NV_ENCODE_NATIVE, NV_ENCODE_XDR, nvlist_encode
from protocol.stream.types import DMU_OST_ZFS, DMU_OST_ZVOL, DRR_FLAG_CLONE

from . import crypto
from .blocks import HOLE
from .nodes import RECORD, Kind, Node
from .pipe import Chunks
from .pool import Pool

if TYPE_CHECKING:
    from .send import Plan, Substream

FREE_TO_END: Final = (1 << 64) - 1
DRR_FLAGS: Final = 0x4 | 0x8  # FREERECORDS | SPILL_BLOCK, as OpenZFS 2.3 sets them
RECORD_HEADER: Final = 312
SEAL_OVERHEAD: Final = crypto.NONCE_LEN + 16
ZIO_COMPRESS_OFF: Final = 2  # a raw WRITE of an uncompressed block names "off", not inherit
OT_PLAIN: Final = 19
OT_DIRECTORY: Final = 20
OT_ZVOL: Final = 23
OT_SA: Final = 44


class _Sink(io.RawIOBase):
    """Collects what the writer writes, so the generator can hand it out as written (a record's
    header, then its payload: the block as read, never joined into a bigger buffer)."""

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

    def take(self) -> list[bytes]:
        out = self.parts
        self.parts = []
        self.size = 0
        return out


class SizeWriter:
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
    writer = SizeWriter()
    for _chunk in emit(pool, plan, writer):
        pass
    return writer.size


def emit(pool: Pool, plan: Plan, sizer: SizeWriter | None = None) -> Iterator[bytes]:
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
        yield from sink.take()
    for sub in plan.subs:
        yield from _emit_sub(pool, writer, sink, sub)
    if plan.compound:
        writer.end()
        yield from sink.take()


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
    yield from sink.take()
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
    yield from sink.take()


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
        if isinstance(writer, SizeWriter):
            writer.payload(_payload_len(store, sub, node, i, block))
            continue
        data = store.blocks.get(block)
        if sub.raw:
            sealed = data if sub.sealed else crypto.seal(_master(sub), data)
            # As a raw WRITE carries a block at its physical size: the payload is padded to 8
            # bytes (a stream's running fletcher-4 needs whole words), compressiontype "off"
            # makes compressed_size the payload's length, and logical_size keeps the sealed
            # length (the simulation's own use of it: the receiver cuts the padding off).
            writer.write(
                obj, offset, sealed + bytes(-len(sealed) % 8), type=_object_type(sub, node),
                checksumtype=7, logical_size=len(sealed), compressiontype=ZIO_COMPRESS_OFF,
            )  # fmt: skip
            yield from sink.take()
            continue
        pad = -len(data) % 512 if len(node.blocks) == 1 else RECORD - len(data)
        payload = data + bytes(pad) if pad else data
        writer.write(obj, offset, payload, type=_object_type(sub, node), checksumtype=7)
        yield from sink.take()
    if sink.size:
        yield from sink.take()


def _payload_len(store: Any, sub: Substream, node: Node, index: int, block: bytes) -> int:
    """The WRITE payload size of one record, from metadata alone (see _emit_object)."""
    if sub.raw and sub.sealed:
        return -(-os.path.getsize(store.blocks.path(block)) // 8) * 8
    length = node.record_len(index, node.meta.size)
    if sub.raw:
        return -(-(length + SEAL_OVERHEAD) // 8) * 8
    return -(-length // 512) * 512 if len(node.blocks) == 1 else RECORD


def _master(sub: Substream) -> bytes:
    assert sub.master is not None
    return sub.master


def _runs(objs: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Consecutive object ids as (first, count) runs, for FREEOBJECTS records."""
    run: list[int] = []
    for obj in objs:
        if run and obj != run[-1] + 1:
            yield run[0], len(run)
            run = []
        run.append(obj)
    if run:
        yield run[0], len(run)


class SimSendStream:
    """A running send: bytes are produced as they are read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = Chunks()
        self._done = False
        self._error: ZfsError | None = None

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or self._buf.size < n):
            try:
                self._buf.append(next(self._chunks))
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
        return self._buf.take(self._buf.size if n < 0 else n)

    def close(self) -> None:
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        self._done = True
        self._buf.clear()
