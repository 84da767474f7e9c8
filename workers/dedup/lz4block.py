"""Decompress OpenZFS's LZ4 blocks, so compressed send streams (``-c``, ``-e``) fingerprint alike.

A block that ``zfs send -c`` keeps compressed, or that ``-e`` embeds in its block pointer, holds
OpenZFS's LZ4 layout: a 4-byte big-endian length, then one raw LZ4 block (no frame). Fingerprints
are taken over the uncompressed record, so without this a compressed stream would share nothing
with the same data sent plain. No LZ4 library ships here; the block format is small enough to
decode directly (literal runs and back-references), at a few tens of MB/s, which is fine for
analysis of compressed streams, the uncommon case.
"""

from __future__ import annotations

from typing import Final

from protocol.errors import StreamFormatError

_HEADER: Final = 4
_MIN_MATCH: Final = 4


def _length(data: bytes, pos: int, base: int) -> tuple[int, int]:
    """A run length whose 4-bit start was 15: add bytes until one is below 255."""
    if base != 15:
        return base, pos
    while True:
        if pos >= len(data):
            raise StreamFormatError("LZ4 block ends inside a length")
        byte = data[pos]
        pos += 1
        base += byte
        if byte != 255:
            return base, pos


def lz4_block(data: bytes, size: int) -> bytes:
    """Decode one raw LZ4 block to exactly ``size`` bytes (the record's logical size)."""
    out = bytearray()
    pos = 0
    end = len(data)
    while pos < end:
        token = data[pos]
        pos += 1
        literals, pos = _length(data, pos, token >> 4)
        if pos + literals > end:
            raise StreamFormatError("LZ4 literals run past the block")
        out += data[pos : pos + literals]
        pos += literals
        if pos == end:
            break  # the last sequence holds literals only
        if pos + 2 > end:
            raise StreamFormatError("LZ4 block ends inside a match offset")
        offset = data[pos] | data[pos + 1] << 8
        pos += 2
        match, pos = _length(data, pos, token & 15)
        match += _MIN_MATCH
        if offset == 0 or offset > len(out):
            raise StreamFormatError(f"LZ4 match offset {offset} points before the block")
        start = len(out) - offset
        if offset >= match:
            out += out[start : start + match]
        else:
            # an overlapping match repeats the last `offset` bytes
            pattern = bytes(out[start:])
            out += (pattern * (match // offset + 1))[:match]
        if len(out) > size:
            raise StreamFormatError(f"LZ4 block gives more than {size} bytes")
    if len(out) != size:
        raise StreamFormatError(f"LZ4 block gives {len(out)} bytes, not {size}")
    return bytes(out[:size])


def zfs_lz4(payload: bytes, size: int) -> bytes:
    """Decode an OpenZFS LZ4 block (length header + raw block) to ``size`` bytes."""
    if len(payload) < _HEADER:
        raise StreamFormatError("LZ4 block is shorter than its header")
    length = int.from_bytes(payload[:_HEADER], "big")
    if length > len(payload) - _HEADER:
        raise StreamFormatError(f"LZ4 block claims {length} bytes, has {len(payload) - _HEADER}")
    return lz4_block(payload[_HEADER : _HEADER + length], size)
