"""Read a ZFS send stream record by record, verifying its running fletcher-4 checksums.

Memory stays bounded: one header and one payload (at most a 16 MiB block) at a time.

Layout handled (OpenZFS dmu_send.c and libzfs_sendrecv.c):

* a plain stream: BEGIN [nvlist payload], records..., END;
* a compound stream (``-R``, ``-I``, ``-p``): a BEGIN whose header type is COMPOUNDSTREAM with
  an XDR nvlist payload, an END, then sub-streams each BEGIN...END, then a final END;
* streams written on a machine of the other byte order (detected from the BEGIN magic);
* several streams one after another.

The running checksum restarts after every END. Each non-BEGIN record stores the checksum of
everything before its last 32 bytes; an END also stores the checksum of everything before it. A
stored checksum of zero means "none" (the END libzfs writes after a compound BEGIN), as OpenZFS
reads it. A BEGIN has no checksum of its own, so damage in it shows at the next record.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final, Protocol

from protocol.errors import StreamChecksumError, StreamFormatError, StreamTruncated
from protocol.stream.fletcher4 import Fletcher4
from protocol.stream.grammar import Grammar, Position
from protocol.stream.record import Record, payload_size
from protocol.stream.types import (
    CHECKSUM_BE,
    CHECKSUM_LE,
    CHECKSUM_OFFSET,
    DMU_BACKUP_MAGIC,
    EMPTY_CHECKSUM,
    MAX_BEGIN_PAYLOAD,
    MAX_BLOCK_PAYLOAD,
    RECORD_SIZE,
    DrrType,
)

_MAGIC_LE: Final = struct.pack("<Q", DMU_BACKUP_MAGIC)
_MAGIC_BE: Final = struct.pack(">Q", DMU_BACKUP_MAGIC)
_END_TAIL: Final = slice(48, CHECKSUM_OFFSET)  # after drr_end's checksum and toguid: all zero
_NUM_TYPES: Final = len(DrrType)


class Readable(Protocol):
    """Anything with a ``read(n)`` returning bytes (files, pipes, sockets' makefile, BytesIO)."""

    def read(self, n: int, /) -> bytes: ...


def _read_exact(fp: Readable, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at end of input (pipes may return short reads)."""
    data = fp.read(n)
    if not isinstance(data, bytes | bytearray | memoryview):
        # a text-mode file or a wrong object: say so instead of failing deep inside
        raise StreamFormatError(f"stream input must give bytes, not {type(data).__name__}")
    if len(data) == n or not data:
        return bytes(data)
    parts = [data]
    got = len(data)
    while got < n:
        more = fp.read(n - got)
        if not more:
            break
        if not isinstance(more, bytes | bytearray | memoryview):
            raise StreamFormatError(f"stream input must give bytes, not {type(more).__name__}")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def read_records(fp: Readable, *, verify: bool = True) -> Iterator[Record]:
    """Yield every record of the stream read from ``fp``, in order.

    With ``verify`` every stored checksum is checked against the running fletcher-4. Raises
    :class:`StreamTruncated` (offset of the cut), :class:`StreamChecksumError` (index and header
    offset of the record whose stored checksum disagrees; the message gives the span of bytes
    that holds the damage) or :class:`StreamFormatError`, and nothing else, whatever the bytes.
    """
    cursor = Grammar()
    offset = 0
    index = 0
    swapped = False
    running = Fletcher4()
    clean_upto = 0  # every byte before this offset is covered by a verified checksum

    while True:
        header = _read_exact(fp, RECORD_SIZE)
        if not header:
            if cursor.state is Position.TOP and index > 0:
                return
            what = {
                Position.TOP: "stream is empty",
                Position.OUTER: "compound stream ends after its BEGIN",
                Position.BETWEEN: "compound stream ends before its final END record",
                Position.SUB: "stream ends before its END record",
            }[cursor.state]
            raise StreamTruncated(what, offset=offset, record=index)
        if len(header) < RECORD_SIZE:
            raise StreamTruncated(
                f"stream ends inside a record header ({len(header)} of {RECORD_SIZE} bytes)",
                offset=offset + len(header),
                record=index,
            )

        if cursor.state is Position.TOP:
            magic = header[8:16]
            if magic == _MAGIC_LE:
                swapped = False
            elif magic == _MAGIC_BE:
                swapped = True
            else:
                raise StreamFormatError(
                    f"not a ZFS send stream: bad BEGIN magic 0x{magic.hex()}",
                    offset=offset,
                    record=index,
                )
            running = Fletcher4(byteswap=swapped)

        order = ">" if swapped else "<"
        raw_type, payloadlen = struct.unpack_from(order + "II", header)
        before = running.value
        if verify:
            running.update(memoryview(header)[:CHECKSUM_OFFSET])
            stored = (CHECKSUM_BE if swapped else CHECKSUM_LE).unpack_from(header, CHECKSUM_OFFSET)
            if raw_type == DrrType.BEGIN:
                # There the field is the tail of the name; it can only be a checksum (always
                # zero) when the name ends before it.
                check = stored != EMPTY_CHECKSUM and b"\0" in header[56:CHECKSUM_OFFSET]
            else:
                check = stored != EMPTY_CHECKSUM
            if check:
                if stored != running.value:
                    raise StreamChecksumError(
                        "checksum mismatch: the damage lies between stream offsets "
                        f"{clean_upto} and {offset + CHECKSUM_OFFSET}",
                        offset=offset,
                        record=index,
                    )
                clean_upto = offset + CHECKSUM_OFFSET
            running.update(memoryview(header)[CHECKSUM_OFFSET:])

        if raw_type >= _NUM_TYPES:
            raise StreamFormatError(f"unknown record type {raw_type}", offset=offset, record=index)
        drr = DrrType(raw_type)
        if drr == DrrType.END:
            _check_end(
                header,
                order=order,
                payloadlen=payloadlen,
                before=before if verify else None,
                offset=offset,
                index=index,
                toguid=cursor.expected_end_toguid(),
            )
        cursor.advance(drr, header, order=order, offset=offset, index=index)

        size = payload_size(drr, header, byteswapped=swapped)
        limit = MAX_BEGIN_PAYLOAD if drr == DrrType.BEGIN else MAX_BLOCK_PAYLOAD
        if size > limit:
            raise StreamFormatError(
                f"{drr.wire_name} payload of {size} bytes exceeds the {limit}-byte limit",
                offset=offset,
                record=index,
            )
        payload = _read_exact(fp, size) if size else b""
        if len(payload) < size:
            raise StreamTruncated(
                f"stream ends inside a {drr.wire_name} payload ({len(payload)} of {size} bytes)",
                offset=offset + RECORD_SIZE + len(payload),
                record=index,
            )
        if verify and size:
            running.update(payload)
        yield Record(drr, header, payload, offset, index, swapped)
        offset += RECORD_SIZE + size
        index += 1
        if drr == DrrType.END:
            running.reset()
            clean_upto = offset


def _check_end(
    header: bytes,
    *,
    order: str,
    payloadlen: int,
    before: tuple[int, int, int, int] | None,
    offset: int,
    index: int,
    toguid: int,
) -> None:
    """An END carries the checksum of its whole stream and the stream's toguid; the rest of it
    is zero (OpenZFS clears every record), which also guards an END that has no own checksum."""
    a, b, c, d, end_toguid = struct.unpack_from(order + "5Q", header, 8)
    if before is not None and (a, b, c, d) != before:
        raise StreamChecksumError(
            "END record's stream checksum does not match the stream", offset=offset, record=index
        )
    if payloadlen != 0 or any(header[_END_TAIL]):
        raise StreamFormatError(
            "END record has non-zero bytes where OpenZFS writes zeros", offset=offset, record=index
        )
    if end_toguid != toguid:
        raise StreamFormatError(
            f"END record's toguid {end_toguid:x} differs from its BEGIN's {toguid:x}",
            offset=offset,
            record=index,
        )
