"""One send-stream record as read from (or written to) the wire, and its decoded fields."""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any, Final

from protocol.stream.types import (
    CHECKSUM_BE,
    CHECKSUM_LE,
    CHECKSUM_OFFSET,
    FEATURE_MASK,
    FEATURE_SHIFT,
    LAYOUTS,
    MAXNAMELEN,
    RECORD_SIZE,
    UNION_OFFSET,
    DrrType,
)

_ZERO_CHECKSUM: Final = bytes(RECORD_SIZE - CHECKSUM_OFFSET)


@dataclass(frozen=True)
class Record:
    """A record: its 312 header bytes exactly as on the wire (checksum included), its payload,
    the stream offset of its header and its number in the stream (from 0)."""

    type: DrrType
    header: bytes
    payload: bytes
    offset: int
    index: int
    byteswapped: bool = False

    @functools.cached_property
    def fields(self) -> dict[str, Any]:
        """The typed header fields, named as in zfs_ioctl.h without ``drr_`` (``toguid``,
        ``logical_size``...), plus ``payloadlen`` and, except for BEGIN, ``record_checksum``."""
        return decode_fields(self.type, self.header, byteswapped=self.byteswapped)

    @property
    def size(self) -> int:
        """Bytes this record takes in the stream, header and payload."""
        return RECORD_SIZE + len(self.payload)

    @property
    def stored_checksum(self) -> tuple[int, int, int, int]:
        """The 32 bytes at the end of the header read as a checksum (a name tail for BEGIN)."""
        st = CHECKSUM_BE if self.byteswapped else CHECKSUM_LE
        a, b, c, d = st.unpack_from(self.header, CHECKSUM_OFFSET)
        return (a, b, c, d)

    @property
    def normalized_header(self) -> bytes:
        """The header with its running checksum zeroed, the same whichever stream holds it.

        A BEGIN keeps all its bytes: its name runs into the checksum's place.
        :meth:`StreamWriter.write_raw` turns this back into the exact original bytes.
        """
        if self.type == DrrType.BEGIN:
            return self.header
        return self.header[:CHECKSUM_OFFSET] + _ZERO_CHECKSUM


def decode_fields(drr_type: DrrType, header: bytes, *, byteswapped: bool = False) -> dict[str, Any]:
    """Decode a 312-byte header's type-specific fields into a dict."""
    layout = LAYOUTS[drr_type]
    st = layout.be if byteswapped else layout.le
    values = st.unpack_from(header, UNION_OFFSET)
    order = ">" if byteswapped else "<"
    fields: dict[str, Any] = {"payloadlen": struct.unpack_from(order + "I", header, 4)[0]}
    i = 0
    for name, width in zip(layout.names, layout.groups, strict=True):
        fields[name] = values[i] if width == 1 else tuple(values[i : i + width])
        i += width
    if drr_type == DrrType.BEGIN:
        raw_name = bytes(fields["toname"])[:MAXNAMELEN]
        fields["toname"] = raw_name.split(b"\0", 1)[0].decode(errors="replace")
        fields["hdrtype"] = fields["versioninfo"] & 3
        fields["features"] = (fields["versioninfo"] >> FEATURE_SHIFT) & FEATURE_MASK
    else:
        checksum = CHECKSUM_BE if byteswapped else CHECKSUM_LE
        fields["record_checksum"] = checksum.unpack_from(header, CHECKSUM_OFFSET)
    return fields


def payload_size(drr_type: DrrType, header: bytes, *, byteswapped: bool = False) -> int:
    """How many payload bytes follow this header, as OpenZFS's receive computes it."""
    o = ">" if byteswapped else "<"
    if drr_type == DrrType.BEGIN:
        return int(struct.unpack_from(o + "I", header, 4)[0])
    if drr_type == DrrType.WRITE:
        if header[50]:  # drr_compressiontype
            return int(struct.unpack_from(o + "Q", header, 96)[0])
        return int(struct.unpack_from(o + "Q", header, 32)[0])
    if drr_type == DrrType.OBJECT:
        bonuslen, raw_bonuslen = struct.unpack_from(o + "I4xI", header, 28)
        return int(raw_bonuslen) if raw_bonuslen else (int(bonuslen) + 7) & ~7
    if drr_type == DrrType.SPILL:
        length, compressed = struct.unpack_from(o + "Q16xQ", header, 16)
        return int(compressed) if compressed else int(length)
    if drr_type == DrrType.WRITE_EMBEDDED:
        return (int(struct.unpack_from(o + "I", header, 52)[0]) + 7) & ~7
    return 0
