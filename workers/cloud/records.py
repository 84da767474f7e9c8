"""Just enough of the ZFS send-stream record format for the store: framing and checksums.

The store is pushed bytes (by the data plane's fan-out sender), while a reader-based codec pulls
them; a small push parser over 312-byte headers avoids a pipe and a thread per sink, and keeps
memory bounded by one record. Payload sizes follow OpenZFS's ``DRR_*_PAYLOAD_SIZE`` rules
(``drr_payloadlen`` is only meaningful for BEGIN). Fletcher-4 is computed with numpy in blocks.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np

from protocol.errors import StreamFormatError, StreamTruncated

HEADER_SIZE: Final = 312
CKSUM_OFFSET: Final = 280  # drr_checksum: the last 32 bytes of every record but BEGIN
CKSUM_SIZE: Final = 32
MAX_PAYLOAD: Final = 64 * 1024 * 1024  # above SPA_MAXBLOCKSIZE (16 MiB) plus nvlists
BACKUP_MAGIC: Final = 0x2F5BACBAC
FEATURE_RESUMING: Final = 1 << 20  # DMU_BACKUP_FEATURE_RESUMING, in versioninfo >> 2
HDRTYPE_COMPOUND: Final = 2


class Drr(enum.IntEnum):
    BEGIN = 0
    OBJECT = 1
    FREEOBJECTS = 2
    WRITE = 3
    FREE = 4
    END = 5
    WRITE_BYREF = 6
    SPILL = 7
    WRITE_EMBEDDED = 8
    OBJECT_RANGE = 9
    REDACT = 10


_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")


def _u32(h: bytes | bytearray, off: int) -> int:
    return int(_U32.unpack_from(h, off)[0])


def _u64(h: bytes, off: int) -> int:
    return int(_U64.unpack_from(h, off)[0])


def payload_size(kind: int, header: bytes) -> int:
    """How many payload bytes follow ``header`` (OpenZFS's per-type rules)."""
    if kind == Drr.BEGIN:
        return _u32(header, 4)
    if kind == Drr.OBJECT:
        raw = _u32(header, 36)
        return raw if raw else (_u32(header, 28) + 7) & ~7
    if kind == Drr.WRITE:
        return _u64(header, 96) if header[50] else _u64(header, 32)
    if kind == Drr.SPILL:
        return _u64(header, 40) or _u64(header, 16)
    if kind == Drr.WRITE_EMBEDDED:
        return (_u32(header, 52) + 7) & ~7
    if kind > Drr.REDACT:
        raise StreamFormatError(f"unknown record type {kind}")
    return 0


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
    if _u64(header, 8) != BACKUP_MAGIC:
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


class Framer:
    """A push parser: feed bytes, take whole ``(header, payload)`` records out.

    Holds at most one incomplete record. ``offset`` counts the bytes consumed so far.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.offset = 0
        self.records = 0
        self._need: int | None = None  # payload size of the record being assembled

    def feed(self, data: bytes | memoryview) -> Iterator[tuple[int, bytes]]:
        """Add bytes; yields ``(type, record)`` for each record now complete.

        ``record`` is the header and its payload, contiguous (312 bytes, then the payload).
        """
        self._buf += data
        while True:
            if self._need is None:
                if len(self._buf) < HEADER_SIZE:
                    return
                kind = _u32(self._buf, 0)
                if self.records == 0 and kind != Drr.BEGIN:
                    raise StreamFormatError("stream does not start with BEGIN", offset=self.offset)
                try:
                    self._need = payload_size(kind, bytes(self._buf[:HEADER_SIZE]))
                except StreamFormatError as e:
                    raise StreamFormatError(str(e), offset=self.offset, record=self.records) from e
                if self._need > MAX_PAYLOAD:
                    raise StreamFormatError(
                        f"payload of {self._need} bytes is impossible",
                        offset=self.offset,
                        record=self.records,
                    )
            total = HEADER_SIZE + self._need
            if len(self._buf) < total:
                return
            record = bytes(self._buf[:total])
            del self._buf[:total]
            self._need = None
            self.offset += total
            self.records += 1
            yield _u32(record, 0), record

    def close(self) -> None:
        """Raise :class:`StreamTruncated` when a record is still incomplete."""
        if self._buf:
            raise StreamTruncated(
                "stream ends inside a record", offset=self.offset, record=self.records
            )


# -- fletcher-4 -------------------------------------------------------------------------------

_M64: Final = (1 << 64) - 1
_BLOCK: Final = 16384  # words per numpy step: keeps every coefficient product below 2**64
_K = np.arange(_BLOCK, 0, -1, dtype=np.uint64)
# Rows: the weight of word i (counted from the end of a block of n words) in a, b, c and d.
_COEF = np.stack(
    [np.ones(_BLOCK, dtype=np.uint64), _K, _K * (_K + 1) // 2, _K * (_K + 1) * (_K + 2) // 6]
)

Fletcher = tuple[int, int, int, int]
ZERO: Final[Fletcher] = (0, 0, 0, 0)


def fletcher4(data: bytes | memoryview, state: Fletcher = ZERO) -> Fletcher:
    """Continue OpenZFS's fletcher-4 over ``data`` (a multiple of 4 bytes) from ``state``.

    One integer matrix product per block of words gives the four weighted sums (uint64 wraps
    as fletcher-4 does); the start state is folded in with the closed-form block update.
    """
    a, b, c, d = state
    words = np.frombuffer(data, dtype="<u4")
    for start in range(0, len(words), _BLOCK):
        w = words[start : start + _BLOCK].astype(np.uint64)
        n = len(w)
        s1, s2, s3, s4 = (int(x) for x in _COEF[:, _BLOCK - n :] @ w)
        t2, t3 = n * (n + 1) // 2, n * (n + 1) * (n + 2) // 6
        a, b, c, d = (
            (a + s1) & _M64,
            (b + n * a + s2) & _M64,
            (c + n * b + t2 * a + s3) & _M64,
            (d + n * c + t2 * b + t3 * a + s4) & _M64,
        )
    return a, b, c, d


def pack_cksum(state: Fletcher) -> bytes:
    """The 32 on-disk bytes of a checksum state."""
    return struct.pack("<4Q", *state)
