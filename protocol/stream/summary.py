"""Per-type record counts and payload bytes of a stream, counted as ``zstream dump`` does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol.stream.begin import BeginInfo, parse_begin
from protocol.stream.reader import Readable, read_records
from protocol.stream.types import RECORD_SIZE, DrrType


@dataclass
class TypeTotals:
    """How many records of one type, and their payload bytes."""

    count: int = 0
    payload_bytes: int = 0


@dataclass
class StreamSummary:
    """What a whole stream holds. ``records`` is keyed ``DRR_BEGIN`` ... ``DRR_REDACT``."""

    records: dict[str, TypeTotals] = field(
        default_factory=lambda: {t.wire_name: TypeTotals() for t in DrrType}
    )
    total_records: int = 0
    total_payload: int = 0
    total_length: int = 0
    begins: list[BeginInfo] = field(default_factory=list)
    end_checksums: list[tuple[int, int, int, int]] = field(default_factory=list)
    end_indices: list[int] = field(default_factory=list)  # record numbers of the ENDs
    checksums_verified: bool = False

    @property
    def header_overhead(self) -> int:
        """Bytes spent on 312-byte record headers."""
        return self.total_records * RECORD_SIZE

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``zfleet stream dump --json``."""
        return {
            "records": {
                k: {"count": v.count, "payload_bytes": v.payload_bytes}
                for k, v in self.records.items()
            },
            "total_records": self.total_records,
            "total_payload": self.total_payload,
            "header_overhead": self.header_overhead,
            "total_length": self.total_length,
            "checksum": "verified" if self.checksums_verified else "not checked",
            "begin": [b.as_dict() for b in self.begins],
        }


def summarize(fp: Readable, *, verify: bool = True) -> StreamSummary:
    """Read the whole stream from ``fp`` and count it. Raises the reader's StreamError subclasses
    (so a summary always describes a stream that read cleanly to its end)."""
    summary = StreamSummary(checksums_verified=verify)
    for record in read_records(fp, verify=verify):
        totals = summary.records[record.type.wire_name]
        totals.count += 1
        totals.payload_bytes += len(record.payload)
        summary.total_records += 1
        summary.total_payload += len(record.payload)
        summary.total_length = record.offset + record.size
        if record.type == DrrType.BEGIN:
            summary.begins.append(parse_begin(record))
        elif record.type == DrrType.END:
            summary.end_checksums.append(record.fields["checksum"])
            summary.end_indices.append(record.index)
    return summary
