"""``zfs receive`` for simulated pools.

The sink checks the first BEGIN against the target as soon as it has arrived, so a stream
meant for another state is refused before the sender has pushed much. Then, as ``zfs receive``
reads a pipe while ``zfs send`` writes it, a thread of the sink reads the records from a bounded
in-memory pipe (pipe.py) while they arrive, verifying every checksum, and applies each
substream: objects are rebuilt on top of the base snapshot's, records go into the block store,
and at each END one txg creates the snapshot (keeping the sender's guid) and brings the live
data up to it. The stream is never spooled whole: memory stays flat and no byte is written twice.
The backend's lock is taken only around metadata reads and the txgs, never while waiting for
data, so other work on the backend goes on during a long transfer; the END's txg plans the
target again and refuses to commit if it changed meanwhile.

A stream that stops early leaves nothing, unless ``-s``: then the objects received so far are
saved with a position, and ``receive_resume_token`` says where ``send -t`` must restart.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import structlog

from protocol.errors import (
    InvalidOperation,
    ProtocolError,
    StreamChecksumError,
    StreamFormatError,
    StreamIncomplete,
    StreamTruncated,
    ZfsError,
)
from protocol.log import context_thread
from protocol.stream import (
    BeginInfo,
    DrrType,
    Feature,
    Record,
    ResumeToken,
    encode_resume_token,
    parse_begin,
    read_records,
)
from workers.zfs.base import ReceiveResult, ReceiveSink, ReceiveSpec

from . import crypto, db
from .blocks import HOLE, BlockWriter
from .datasets import record_snapshot
from .landing import Landing, ensure_dataset, plan_target, resume_state
from .nodes import RECORD, Manifest, Meta, Node
from .partial import PartialObject, PartialState
from .pipe import BytePipe
from .pool import Dataset, Pool
from .replicate_recv import CompoundReceiver

if TYPE_CHECKING:
    from .backend import SimBackend

log = structlog.get_logger(__name__)

HEADER: Final = 312
FREE_TO_END: Final = (1 << 64) - 1
ZERO: Final = bytes(RECORD)


def token_for(state_blob: bytes) -> str:
    """The receive_resume_token of a saved partial receive."""
    state = PartialState.decode(state_blob)
    return encode_resume_token(
        ResumeToken(
            toguid=state.toguid,
            toname=state.toname,
            object=state.object,
            offset=state.offset,
            bytes=state.nbytes,
            fromguid=state.fromguid,
            rawok=state.raw,
            largeblockok=True,
            embedok=True,
            compressok=True,
        )
    )


class _Apply:
    """Applies one substream's records to a PartialState."""

    def __init__(
        self,
        pool: Pool,
        state: PartialState,
        base: Manifest,
        master: bytes | None,
        sealed_target: bool,
        *,
        lock: threading.RLock,
    ) -> None:
        self.pool = pool
        self.lock = lock
        self.state = state
        self.base = base
        self.master = master
        self.sealed = sealed_target  # store ciphertext as it came (raw, key not loaded)
        self.base_nodes: dict[bytes, Node] = {}
        self.blocks = BlockWriter(pool.blocks)  # flushed before anything names the blocks

    def _base_node(self, obj: int) -> Node | None:
        digest = self.base.get(obj)
        if digest is None or obj in self.state.freed:
            return None
        if digest not in self.base_nodes:
            with self.lock:
                self.base_nodes[digest] = self.pool.objects.get(digest)
        return self.base_nodes[digest]

    def record(self, rec: Record) -> None:
        f = rec.fields
        st = self.state
        if rec.type == DrrType.OBJECT:
            obj = int(f["object"])
            length = int(f["bonuslen"])
            bonus = rec.payload[:length]
            if self.state.raw and not self.sealed:
                assert self.master is not None
                bonus = crypto.unseal(self.master, bonus)
            if not (self.state.raw and self.sealed):
                try:
                    Meta.decode(bonus)
                except ZfsError as exc:
                    raise InvalidOperation(
                        f"cannot receive: object {obj} is not in the simulation's format "
                        f"({exc}); the simulation receives streams it sent itself"
                    ) from exc
            existing = st.objects.get(obj)
            if existing is None:
                base = self._base_node(obj)
                blocks = list(base.blocks) if base is not None else []
                st.objects[obj] = PartialObject(bonus, blocks, int(f["type"]))
            else:
                existing.bonus = bonus
            st.freed.discard(obj)
            st.object, st.offset = obj, 0
        elif rec.type == DrrType.FREE:
            self._free(int(f["object"]), int(f["offset"]), int(f["length"]))
        elif rec.type == DrrType.WRITE:
            self._write(int(f["object"]), int(f["offset"]), int(f["logical_size"]), rec.payload)
        elif rec.type == DrrType.FREEOBJECTS:
            first, count = int(f["firstobj"]), int(f["numobjs"])
            for obj in [o for o in {*self.base, *st.objects} if first <= o < first + count]:
                st.objects.pop(obj, None)
                if obj in self.base:
                    st.freed.add(obj)
        elif rec.type in (DrrType.WRITE_EMBEDDED, DrrType.WRITE_BYREF, DrrType.SPILL):
            raise InvalidOperation(
                f"cannot receive: stream has {rec.type.wire_name} records, which the "
                "simulation does not produce or apply"
            )

    def _object(self, obj: int) -> PartialObject:
        found = self.state.objects.get(obj)
        if found is None:
            raise InvalidOperation(
                f"cannot receive: stream writes to object {obj} before "
                "describing it (invalid stream)"
            )
        return found

    def _free(self, obj: int, offset: int, length: int) -> None:
        part = self._object(obj)
        first = -(-offset // RECORD)
        if length == FREE_TO_END:
            del part.blocks[first:]
        else:
            last = min(len(part.blocks), (offset + length) // RECORD)
            for i in range(first, last):
                part.blocks[i] = HOLE
            if length and offset % RECORD == 0 and len(part.blocks) > first and last == first:
                part.blocks[first] = HOLE  # a small object's one block freed
        self.state.object = obj

    def _write(self, obj: int, offset: int, logical: int, payload: bytes) -> None:
        part = self._object(obj)
        index = offset // RECORD
        data = payload[:logical]
        store = self.blocks
        if self.state.raw and self.sealed:
            block = store.put(data)
        else:
            if self.state.raw:
                assert self.master is not None
                data = crypto.unseal(self.master, data)
            else:
                size = _size_of(part.bonus)
                data = data[: max(0, min(RECORD, size - index * RECORD))]
            # a whole record compares with ZERO as it is (memcmp stops at the first non-zero
            # byte); only a short last record needs a slice of it
            zero = data == (ZERO if len(data) == RECORD else ZERO[: len(data)])
            block = HOLE if zero else store.put(data)
        while len(part.blocks) <= index:
            part.blocks.append(HOLE)
        part.blocks[index] = block
        self.state.object, self.state.offset = obj, offset + logical

    def manifest(self) -> Manifest:
        """The base manifest with this stream's objects applied (stores the new nodes; the
        blocks are on disk by then)."""
        self.blocks.flush()
        out = {o: d for o, d in self.base.items() if o not in self.state.freed}
        for obj, part in self.state.objects.items():
            node = Node(part.bonus, tuple(part.blocks))
            if not (self.state.raw and self.sealed):
                node = Node(part.bonus, tuple(part.blocks[: -(-_size_of(part.bonus) // RECORD)]))
            out[obj] = self.pool.objects.put(node, node.allocated())
        return out


def _size_of(bonus: bytes) -> int:
    return Meta.decode(bonus).size


class SimReceiveSink:
    """``zfs receive`` into a simulated pool; see the module docstring."""

    def __init__(self, backend: SimBackend, pool: Pool, spec: ReceiveSpec) -> None:
        self.backend = backend
        self.pool = pool
        self.spec = spec
        self.lock = backend._lock
        self.pipe = BytePipe()
        self.head = b""  # the first bytes, until the BEGIN has been checked
        self.size = 0
        self.checked = False
        self.closed = False
        self.aborted = False
        self._thread: threading.Thread | None = None
        self._result: ReceiveResult | None = None
        self._error: BaseException | None = None

    def write(self, data: bytes) -> int:
        if self.closed:
            if self._error is not None:
                raise self._error
            raise InvalidOperation("cannot receive: the receive has already finished")
        if not self.checked:
            self.head += bytes(data[: HEADER - len(self.head)])
            if len(self.head) >= HEADER:
                self.checked = True
                self._precheck()
                self._start()
        if not self.pipe.write(data) and self._error is not None:
            # the applying thread stopped on an error: say it now, as a receive that died
            # makes the sender's next write fail, instead of taking the rest of the stream
            self._join()
            raise self._error
        self.size += len(data)
        return len(data)

    def _precheck(self) -> None:
        """Refuse early a stream that cannot apply (bad magic, wrong base)."""
        head = self.head[:HEADER]
        try:
            rec = Record(DrrType(int.from_bytes(head[:4], "little")), head, b"", 0, 0)
            info = parse_begin(rec)
        except (ProtocolError, ValueError):
            self.closed = True
            raise StreamFormatError("cannot receive: invalid stream (bad magic number)") from None
        if info.compound:
            return
        try:
            with self.lock:
                self._plan_target(info, self.spec.target)
        except ZfsError:
            self.closed = True
            raise

    def _start(self) -> None:
        if self._thread is None:
            self._thread = context_thread(
                self._consume, name=f"zfleet-sim-receive-{self.spec.target}", daemon=True
            )
            self._thread.start()

    def _consume(self) -> None:
        """The applying thread: the whole receive, reading the stream from the pipe."""
        try:
            with contextlib.ExitStack() as stack:
                with self.lock:
                    stack.enter_context(self._lease())
                self._result = self._run()
        except BaseException as exc:  # handed to the writer: write() or finish() raises it
            self._error = exc
        finally:
            self.pipe.stop()

    @contextlib.contextmanager
    def _lease(self) -> Iterator[None]:
        """The pool's receive lease (keeps block sweeps away), its txgs under the lock."""
        lease = self.pool.receiving()
        lease.__enter__()
        try:
            yield
        finally:
            with self.lock:
                lease.__exit__(None, None, None)

    def _join(self) -> None:
        self.closed = True
        self.pipe.close()
        if self._thread is not None:
            self._thread.join()

    def abort(self) -> None:
        self.aborted = True
        if not self.closed:
            with contextlib.suppress(ZfsError):
                self.finish()

    def finish(self) -> ReceiveResult:
        if self.closed and self._error is None:
            raise InvalidOperation("cannot receive: the receive has already finished")
        self._start()  # a stream shorter than a header: the thread reports it
        self._join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    # -- the work (on the applying thread) ---------------------------------------------------
    def _run(self) -> ReceiveResult:
        records = read_records(self.pipe)
        last: str | None = None
        try:
            first = next(records)
        except StopIteration:
            raise StreamIncomplete("cannot receive: failed to read from stream") from None
        except StreamTruncated:
            raise StreamIncomplete("cannot receive: failed to read from stream") from None
        except ProtocolError:
            raise StreamFormatError("cannot receive: invalid stream (bad magic number)") from None
        info = parse_begin(first)
        if info.compound:
            last = self._compound(records, info)
        else:
            last = self._substream(records, info, self.spec.target, first)
        return ReceiveResult(self.spec.target.split("@")[0], last, self.size)

    def _compound(self, records: Iterator[Record], info: BeginInfo) -> str | None:
        return CompoundReceiver(self, info).run(records)

    def _plan_target(self, info: BeginInfo, target: str) -> Landing:
        return plan_target(self.pool, info, target, self.spec)

    def _substream(
        self, records: Iterator[Record], info: BeginInfo, target: str, first: Record
    ) -> str | None:
        """Apply one BEGIN..END; returns the full name of the snapshot it made."""
        with self.lock:
            where = self._plan_target(info, target)
            ds_name = where.dataset
            if not where.skip:
                raw = info.has(Feature.RAW)
                state, base_manifest = resume_state(self.pool, info, where, raw)
                target_ds = self.pool.find(ds_name)
        if where.skip:
            for rec in records:
                if rec.type == DrrType.END:
                    return f"{ds_name}@{where.snapshot}"
            raise StreamIncomplete("cannot receive: incomplete stream")
        master = None
        sealed = False
        if raw:
            crypt = target_ds.crypt if target_ds is not None else None
            master = bytes.fromhex(crypt["loaded"]) if crypt and crypt.get("loaded") else None
            sealed = master is None
        applier = _Apply(self.pool, state, base_manifest, master, sealed, lock=self.lock)
        try:
            return self._apply(records, info, (target, first), where, applier, target_ds=target_ds)
        finally:
            applier.blocks.close()

    def _apply(
        self,
        records: Iterator[Record],
        info: BeginInfo,
        at: tuple[str, Record],
        where: Landing,
        applier: _Apply,
        *,
        target_ds: Dataset | None,
    ) -> str:
        """The records of one substream, then its END's txg (see :meth:`_substream`)."""
        (target, first), ds_name, state = at, where.dataset, applier.state
        raw = info.has(Feature.RAW)
        kind = "incremental" if info.fromguid else "new filesystem"
        position = first.offset + first.size
        try:
            for rec in records:
                if rec.type == DrrType.END:
                    break
                applier.record(rec)
                position = rec.offset + rec.size
                state.nbytes = position if not info.resuming else state.nbytes + rec.size
            else:
                raise StreamTruncated("stream ended before its END record", offset=position)
        except (StreamTruncated, StreamChecksumError) as exc:
            if isinstance(exc, StreamChecksumError) and not self.spec.resumable:
                raise StreamChecksumError(
                    f"cannot receive {kind} stream: checksum mismatch"
                ) from exc
            if self.spec.resumable:
                applier.blocks.flush()  # the saved state names them
            return self._cut(where, info, state, kind)
        except ProtocolError as exc:
            raise StreamFormatError(
                f"cannot receive {kind} stream: invalid stream ({exc})"
            ) from exc
        applier.blocks.flush()  # before the lock: other work goes on while the files are made
        with self.lock, db.txg(self.pool.conn) as txg:
            if _plan_key(self._plan_target(info, target)) != _plan_key(where):
                raise InvalidOperation(
                    f"cannot receive {kind} stream: destination {ds_name} changed during the "
                    "receive"
                )
            manifest = applier.manifest()
            ds = ensure_dataset(self.pool, where, info, txg, raw=raw, spec=self.spec)
            if raw and target_ds is not None and info.nvlist and "crypt_keydata" in info.nvlist:
                from .keys import update_from_stream
                from .landing import crypt_from_stream

                update_from_stream(self.pool, ds, crypt_from_stream(info, ds.name))
                ds = self.pool.dataset_by_id(ds.id)
            snap = record_snapshot(
                self.pool,
                ds,
                where.snapshot,
                txg,
                guid=info.toguid,
                manifest=manifest,
                creation=info.creation_time or None,
            )
            self.pool.conn.execute("DELETE FROM partial WHERE dataset=?", (ds.id,))
            self.pool.conn.execute("UPDATE datasets SET inconsistent=0 WHERE id=?", (ds.id,))
            fresh = self.pool.dataset_by_id(ds.id)
            locked = bool(fresh.crypt and not fresh.crypt.get("loaded"))
            self.pool.install(fresh, manifest, mount=not self.spec.no_mount and not locked)
            self.pool.collect()
        log.info("sim.receive.snapshot", snapshot=snap.name, guid=snap.guid)
        return snap.name

    def _cut(self, where: Landing, info: BeginInfo, state: PartialState, kind: str) -> str:
        if not self.spec.resumable:
            raise StreamIncomplete(f"cannot receive {kind} stream: incomplete stream")
        with self.lock, db.txg(self.pool.conn) as txg:
            ds = self.pool.find(where.dataset)
            if ds is None:
                ds = ensure_dataset(
                    self.pool,
                    where,
                    info,
                    txg,
                    raw=info.has(Feature.RAW),
                    spec=self.spec,
                    inconsistent=True,
                )
            self.pool.conn.execute(
                "INSERT OR REPLACE INTO partial(dataset, state) VALUES(?, ?)",
                (ds.id, state.encode()),
            )
        token = token_for(state.encode())
        raise StreamIncomplete(
            f"cannot receive {kind} stream: checksum mismatch or incomplete stream.\n"
            "Partially received snapshot is saved.\n"
            "A resuming stream can be generated on the sending system by running:\n"
            f"    zfs send -t {token}",
            token=token,
        )


def _plan_key(where: Landing) -> tuple[object, ...]:
    """What a receive's work was built on: the same key at its END means it still applies."""
    return (
        where.dataset,
        where.snapshot,
        where.base.id if where.base is not None else None,
        where.create,
        where.origin.id if where.origin is not None else None,
        where.rollback_to.id if where.rollback_to is not None else None,
        where.skip,
    )


def open_receive(backend: SimBackend, spec: ReceiveSpec) -> ReceiveSink:
    """Start a receive into ``spec.target`` (its pool must exist)."""
    pool = backend.pool(spec.target)
    return SimReceiveSink(backend, pool, spec)


def abort_partial(pool: Pool, target: str) -> None:
    """``zfs receive -A``: drop the saved state (and a dataset that only it created)."""
    with db.txg(pool.conn):
        ds = pool.dataset(target)
        row = pool.conn.execute("SELECT 1 FROM partial WHERE dataset=?", (ds.id,)).fetchone()
        if row is None:
            raise InvalidOperation(f"'{target}' does not have any resumable receive state to abort")
        pool.conn.execute("DELETE FROM partial WHERE dataset=?", (ds.id,))
        if ds.inconsistent:
            pool.conn.execute("DELETE FROM datasets WHERE id=?", (ds.id,))
            pool.remove_live(ds)
        pool.collect()
    pool.sweep_blocks()
