"""A push parser over send-stream records, for the store's sink.

The store is pushed bytes (by the data plane's fan-out sender), while ``protocol.stream``'s
reader pulls them from a file-like object. Rather than a pipe and a thread per sink feeding that
reader, this small parser takes whatever bytes arrive and hands out whole records; memory stays
bounded by one record, and no thread hand-off sits on the hot path. The record rules (types,
payload sizes, fletcher-4) are ``protocol.stream``'s own, so there is one codec of the format.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from protocol.errors import StreamFormatError, StreamTruncated
from protocol.stream import DrrType, Feature, Fletcher4, HeaderType
from protocol.stream.record import payload_size
from protocol.stream.types import (
    CHECKSUM_OFFSET,
    DMU_BACKUP_MAGIC,
    MAX_BEGIN_PAYLOAD,
    RECORD_SIZE,
)

HEADER_SIZE: Final = RECORD_SIZE
CKSUM_OFFSET: Final = CHECKSUM_OFFSET  # drr_checksum: the last 32 bytes of every record but BEGIN
CKSUM_SIZE: Final = 32
MAX_PAYLOAD: Final = MAX_BEGIN_PAYLOAD
FEATURE_RESUMING: Final = int(Feature.RESUMING)
HDRTYPE_COMPOUND: Final = int(HeaderType.COMPOUNDSTREAM)
Drr = DrrType

_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")


def _u32(h: bytes | bytearray | memoryview, off: int) -> int:
    return int(_U32.unpack_from(h, off)[0])


def _u64(h: bytes, off: int) -> int:
    return int(_U64.unpack_from(h, off)[0])


@dataclass(frozen=True)
class Begin:
    """The fields of a BEGIN record the store keeps as stream metadata."""

    toname: str
    toguid: int
    fromguid: int
    flags: int
    features: int
    hdrtype: int
    creation_time: int

    @property
    def compound(self) -> bool:
        return self.hdrtype == HDRTYPE_COMPOUND

    @property
    def resuming(self) -> bool:
        return bool(self.features & FEATURE_RESUMING)


def parse_begin(header: bytes, offset: int = 0) -> Begin:
    """Decode a BEGIN header; :class:`StreamFormatError` when the magic is wrong."""
    if _u64(header, 8) == int.from_bytes(DMU_BACKUP_MAGIC.to_bytes(8, "little"), "big"):
        raise StreamFormatError(
            "a big-endian stream: the store keeps little-endian streams only", offset=offset
        )
    if _u64(header, 8) != DMU_BACKUP_MAGIC:
        raise StreamFormatError("not a ZFS send stream (bad BEGIN magic)", offset=offset)
    versioninfo = _u64(header, 16)
    name = header[56:312].split(b"\0", 1)[0]
    return Begin(
        toname=name.decode("utf-8", "replace"),
        toguid=_u64(header, 40),
        fromguid=_u64(header, 48),
        flags=_u32(header, 36),
        features=versioninfo >> 2,
        hdrtype=versioninfo & 3,
        creation_time=_u64(header, 24),
    )


@dataclass
class Batch:
    """What one :meth:`Framer.split` found: whole records, as ``(type, start, end)`` places in
    ``view`` (contiguous, one after another from 0); ``offset``/``record``: the stream offset
    and number of the first; ``error``: what stopped the batch early, if anything."""

    view: memoryview
    records: list[tuple[int, int, int]]
    offset: int
    record: int
    error: StreamFormatError | None


class Framer:
    """A push parser: feed bytes, take whole records out.

    Holds at most one incomplete record. ``offset`` counts the bytes consumed so far.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.offset = 0
        self.records = 0
        self._need: int | None = None  # payload size of the record being assembled

    def split(self, data: bytes | memoryview) -> Batch:
        """Add bytes; every record now complete, as places in one contiguous buffer.

        Records are found in ``data`` itself when nothing is pending (no copy); only the
        incomplete tail is kept, so a chunk is never shifted once per record. A malformed
        record ends the batch: the records before it are returned, with the error to raise
        once they are dealt with (as a record-by-record parser would have).
        """
        if self._buf:
            self._buf += data
            src: bytes | bytearray | memoryview = self._buf
        else:
            src = data
        base = self.offset
        first = self.records
        pos = 0
        found: list[tuple[int, int, int]] = []
        error: StreamFormatError | None = None
        try:
            while True:
                avail = len(src) - pos
                if self._need is None:
                    if avail < HEADER_SIZE:
                        break
                    kind = _u32(src, pos)
                    if self.records == 0 and kind != Drr.BEGIN:
                        raise StreamFormatError(
                            "stream does not start with BEGIN", offset=self.offset
                        )
                    if kind > DrrType.REDACT:
                        raise StreamFormatError(
                            f"unknown record type {kind}", offset=self.offset, record=self.records
                        )
                    self._need = payload_size(DrrType(kind), bytes(src[pos : pos + HEADER_SIZE]))
                    if self._need > MAX_PAYLOAD:
                        raise StreamFormatError(
                            f"payload of {self._need} bytes is impossible",
                            offset=self.offset,
                            record=self.records,
                        )
                total = HEADER_SIZE + self._need
                if avail < total:
                    break
                found.append((_u32(src, pos), pos, pos + total))
                pos += total
                self._need = None
                self.offset += total
                self.records += 1
        except StreamFormatError as e:
            error = e
        view = memoryview(src)[:pos]
        self._buf = bytearray(src[pos:])
        return Batch(view, found, base, first, error)

    def feed(self, data: bytes | memoryview) -> Iterator[tuple[int, bytes]]:
        """Add bytes; yields ``(type, record)`` for each record now complete.

        ``record`` is the header and its payload, contiguous (312 bytes, then the payload).
        """
        batch = self.split(data)
        for kind, start, end in batch.records:
            yield kind, bytes(batch.view[start:end])
        batch.view.release()
        if batch.error is not None:
            raise batch.error

    def close(self) -> None:
        """Raise :class:`StreamTruncated` when a record is still incomplete."""
        if self._buf:
            raise StreamTruncated(
                "stream ends inside a record", offset=self.offset, record=self.records
            )


# -- fletcher-4 --------------------------------------------------------------------------------

Fletcher = tuple[int, int, int, int]
ZERO: Final[Fletcher] = (0, 0, 0, 0)


def fletcher4(data: bytes | memoryview, state: Fletcher = ZERO) -> Fletcher:
    """Continue OpenZFS's fletcher-4 over ``data`` from ``state`` (protocol.stream's code)."""
    f = Fletcher4(state=state)
    f.update(data)
    return f.value


def pack_cksum(state: Fletcher) -> bytes:
    """The 32 on-disk bytes of a checksum state."""
    return struct.pack("<4Q", *state)
