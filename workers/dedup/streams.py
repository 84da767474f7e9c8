"""Fingerprints from ZFS send streams: each dataset's records as a receive would leave them.

A stream file may hold one full send, a chain (full, then incrementals), a ``-I`` or ``-R``
compound stream, or a clone sent incrementally from its origin. Rather than count every WRITE
(an incremental's WRITEs are only the change), the records are applied the way ``zfs receive``
applies them, to a map (object, offset) -> record per dataset: WRITE and WRITE_EMBEDDED set
records, FREE and FREEOBJECTS remove them, a clone starts from its origin's records. What is left
after the last substream of a dataset is its content.

Only file and volume data count (object types 19 and 23): metadata (directories, the master
node, system attributes) differs between any two datasets and is not what a rebase shares. An
incremental whose base no earlier substream provides, a resumed send (``-t``) and a raw send of
an encrypted dataset (``-w``: ciphertext) are refused with a clear error: each would give a
partial or meaningless record set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from protocol.errors import StreamError, StreamFormatError
from protocol.stream.reader import Readable, read_records
from protocol.stream.record import Record
from protocol.stream.types import DrrType, Feature

from .lz4block import zfs_lz4
from .records import RECORD, RecordSet, record_key

DATA_TYPES: Final = frozenset({19, 23})  # DMU_OT_PLAIN_FILE_CONTENTS, DMU_OT_ZVOL
COMPRESS_LZ4: Final = 15  # enum zio_compress
FREE_TO_END: Final = (1 << 64) - 1

Blocks = dict[int, dict[int, tuple[int, int]]]  # object -> offset -> (fingerprint, size)


@dataclass(frozen=True)
class StreamDataset:
    """One dataset's content as a stream leaves it."""

    dataset: str
    snapshot: str  # the last snapshot received for it (full name)
    records: RecordSet


class _Receiver:
    """Applies substreams to per-dataset record maps, keyed by snapshot guid for bases."""

    def __init__(self) -> None:
        self.source = "stream"
        self.by_guid: dict[int, tuple[str, Blocks]] = {}  # snapshot guid -> (dataset, map)
        self.last: dict[str, tuple[str, Blocks]] = {}  # dataset -> (snapshot, map)
        self.blocks: Blocks = {}
        self.types: dict[int, int] = {}
        self.toname = ""
        self.toguid = 0

    def begin(self, record: Record) -> None:
        fields = record.fields
        features = Feature(fields["features"])
        name = fields["toname"]
        if features & Feature.RAW:
            raise StreamFormatError(
                f"{self.source}: {name} is a raw (-w) send: its records are ciphertext and "
                "match nothing else; send it without -w"
            )
        if features & Feature.RESUMING:
            raise StreamFormatError(
                f"{self.source}: {name} is a resumed send (-t): it holds only the rest of a "
                "stream; analyse the whole send"
            )
        fromguid = int(fields["fromguid"])
        if fromguid == 0:
            self.blocks = {}
        else:
            base = self.by_guid.get(fromguid)
            if base is None:
                raise StreamFormatError(
                    f"{self.source}: {name} is incremental from a snapshot (guid {fromguid:x}) "
                    "that no earlier stream holds; give its base stream first or send it full"
                )
            # a clone (or a branch) starts from a copy; a chain on one dataset may go on in place
            self.blocks = {obj: dict(offsets) for obj, offsets in base[1].items()}
        self.types = {}
        self.toname = name
        self.toguid = int(fields["toguid"])

    def end(self) -> None:
        if not self.toname:
            return  # the END after a compound stream's header BEGIN
        dataset = self.toname.split("@", 1)[0]
        self.by_guid[self.toguid] = (dataset, self.blocks)
        self.last[dataset] = (self.toname, self.blocks)
        self.toname = ""

    def object(self, record: Record) -> None:
        fields = record.fields
        obj = int(fields["object"])
        kind = int(fields["type"])
        if self.types.get(obj, kind) != kind:
            self.blocks.pop(obj, None)  # a freed and reused object number starts empty
        self.types[obj] = kind

    def free(self, record: Record) -> None:
        fields = record.fields
        offsets = self.blocks.get(int(fields["object"]))
        if not offsets:
            return
        start = int(fields["offset"])
        length = int(fields["length"])
        stop = FREE_TO_END if length == FREE_TO_END else start + length
        for offset in [o for o in offsets if start <= o < stop]:
            del offsets[offset]

    def freeobjects(self, record: Record) -> None:
        fields = record.fields
        first = int(fields["firstobj"])
        stop = first + int(fields["numobjs"])
        for obj in [o for o in self.blocks if first <= o < stop]:
            del self.blocks[obj]

    def data(self, obj: int, offset: int, data: bytes, kind: int | None) -> None:
        if (kind if kind is not None else self.types.get(obj)) not in DATA_TYPES:
            return
        offsets = self.blocks.setdefault(obj, {})
        for pos in range(0, max(len(data), 1), RECORD):
            found = record_key(data[pos : pos + RECORD])
            if found is None:
                offsets.pop(offset + pos, None)  # zeros written over data: a hole now
            else:
                offsets[offset + pos] = found

    def write(self, record: Record) -> None:
        fields = record.fields
        size = int(fields["logical_size"])
        compression = int(fields["compressiontype"])
        if compression == 0:
            data = record.payload
        elif compression == COMPRESS_LZ4:
            data = zfs_lz4(record.payload, size)
        else:
            raise StreamFormatError(
                f"{self.source}: a WRITE record is compressed with zio compression "
                f"{compression}; only lz4 is decoded: send without -c"
            )
        self.data(int(fields["object"]), int(fields["offset"]), data, int(fields["type"]))

    def embedded(self, record: Record) -> None:
        fields = record.fields
        if int(fields["compression"]) != COMPRESS_LZ4 or int(fields["etype"]) != 0:
            raise StreamFormatError(
                f"{self.source}: an embedded record uses compression {fields['compression']} "
                f"/ type {fields['etype']}; only lz4 data is decoded: send without -e"
            )
        data = zfs_lz4(record.payload[: int(fields["psize"])], int(fields["lsize"]))
        self.data(int(fields["object"]), int(fields["offset"]), data, None)


def read_stream(
    fp: Readable, source: str = "stream", receiver: _Receiver | None = None
) -> list[StreamDataset]:
    """The datasets a stream leaves behind, in the order they were first received.

    Pass one ``receiver`` to several calls when a stream's base (a clone's origin) came in an
    earlier one; the result then covers everything received so far.
    """
    receiver = receiver if receiver is not None else _Receiver()
    receiver.source = source
    handlers: dict[DrrType, Callable[[Record], None]] = {
        DrrType.OBJECT: receiver.object,
        DrrType.FREE: receiver.free,
        DrrType.FREEOBJECTS: receiver.freeobjects,
        DrrType.WRITE: receiver.write,
        DrrType.WRITE_EMBEDDED: receiver.embedded,
    }
    try:
        _apply(read_records(fp), receiver, handlers)
    except StreamError as exc:
        if str(exc).startswith(source):
            raise
        raise type(exc)(f"{source}: {exc}") from exc
    if receiver.toname:
        raise StreamFormatError(f"{source}: the stream of {receiver.toname} has no END record")
    return [
        StreamDataset(ds, snap, _record_set(blocks)) for ds, (snap, blocks) in receiver.last.items()
    ]


def _apply(
    records: Iterator[Record],
    receiver: _Receiver,
    handlers: dict[DrrType, Callable[[Record], None]],
) -> None:
    for record in records:
        if record.type == DrrType.BEGIN:
            if record.fields["hdrtype"] == 1:  # a substream; a compound header carries no data
                receiver.begin(record)
        elif record.type == DrrType.END:
            receiver.end()
        elif record.type == DrrType.WRITE_BYREF:
            raise StreamFormatError(
                "a deduplicated (-D) stream's WRITE_BYREF records are not supported"
            )
        else:
            handler = handlers.get(record.type)
            if handler is not None:
                handler(record)


def _record_set(blocks: Blocks) -> RecordSet:
    out = RecordSet()
    for offsets in blocks.values():
        for key, size in offsets.values():
            out.add_key(key, size)
    return out


def read_streams(paths: Iterable[str]) -> list[StreamDataset]:
    """Every dataset of several stream files, read in order (bases before what builds on them);
    a dataset received twice keeps its last state."""
    receiver = _Receiver()
    found: list[StreamDataset] = []
    for path in paths:
        try:
            with open(path, "rb") as fp:
                found = read_stream(fp, path, receiver)
        except OSError as exc:
            raise StreamFormatError(f"cannot read {path}: {exc.strerror}") from exc
    return found
