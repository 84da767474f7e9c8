"""Record fingerprints: what one 128 KiB record of a dataset is, whichever way it was read.

The same file read from a mountpoint, from a simulated snapshot's blocks or from a send stream
comes in different shapes: the tree gives a short last record, a stream pads it with zeros to
a 512-byte sector (a single-block file) or to the full record (a longer file), a compressed
stream carries LZ4. So a record is taken in one canonical form: its bytes with trailing zeros
removed (an all-zero record is a hole and is not counted, as ZFS with compression stores none).
Its fingerprint is the first 8 bytes of BLAKE3 of that form (64 bits: among a billion records
the chance of any collision is below 3 %, and one collision shifts the figures by one record),
its size those bytes rounded up to a 512-byte sector: what the record costs, give or take
compression, which is not modelled.

:class:`RecordSet` gathers one dataset's records: every distinct fingerprint once with its size,
plus the count and bytes with repetition (a file copied twice inside one image).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

import blake3

RECORD: Final = 128 * 1024  # fingerprints are taken per 128 KiB (ZFS's default recordsize)
SECTOR: Final = 512
KEY_BYTES: Final = 8  # 64-bit fingerprints: numpy's uint64, uniform over the key space
KEY_SPACE: Final = 1 << (8 * KEY_BYTES)


def record_key(data: bytes | memoryview) -> tuple[int, int] | None:
    """``(fingerprint, size)`` of one record, or None for a hole (all zeros)."""
    view = bytes(data).rstrip(b"\0")
    if not view:
        return None
    key = int.from_bytes(blake3.blake3(view).digest(length=KEY_BYTES), "big")
    return key, -(-len(view) // SECTOR) * SECTOR


def split_records(data: bytes, offset: int = 0) -> Iterator[bytes]:
    """``data`` (starting at byte ``offset`` of its object) cut on the 128 KiB grid."""
    pos = 0
    while pos < len(data):
        cut = RECORD - (offset + pos) % RECORD
        yield data[pos : pos + cut]
        pos += cut


@dataclass
class RecordSet:
    """One dataset's records: distinct fingerprints with their sizes, and totals."""

    sizes: dict[int, int] = field(default_factory=dict)
    records: int = 0  # records counted with repetition (holes excluded)
    logical: int = 0  # their bytes

    def add(self, data: bytes | memoryview) -> None:
        """Count one record (a hole is skipped)."""
        found = record_key(data)
        if found is not None:
            self.add_key(*found)

    def add_key(self, key: int, size: int) -> None:
        self.records += 1
        self.logical += size
        self.sizes[key] = size

    def add_object(self, data: bytes, offset: int = 0) -> None:
        """Count every record of a run of an object's bytes starting at ``offset``."""
        for part in split_records(data, offset):
            self.add(part)

    @property
    def unique(self) -> int:
        """Bytes of the distinct records: what this dataset alone needs with record dedup."""
        return sum(self.sizes.values())

    @classmethod
    def of(cls, sizes: Mapping[int, int]) -> RecordSet:
        """A set holding each of ``sizes`` once (for tests and synthetic collections)."""
        out = cls()
        for key, size in sizes.items():
            out.add_key(key, size)
        return out
