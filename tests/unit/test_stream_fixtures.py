"""The real OpenZFS fixtures the codec is checked against, and what `zstream dump` said of them.

Helpers here are shared by the other test_stream_* modules; the tests check that the fixture set
is complete, so that a missing dump file cannot silently shrink what the codec is tested on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ZFS_STREAMS

STREAMS = sorted(ZFS_STREAMS.glob("*.zstream"))
STREAM_IDS = [p.stem for p in STREAMS]
COMPOUND = {"incr-I-s1-s3", "full-s1-props", "replicate-R-base-s3"}


@dataclass(frozen=True)
class DumpFacts:
    """The numbers one `zstream dump` output states."""

    records: dict[str, tuple[int, int]]  # DRR_X -> (count, payload bytes)
    total_records: int
    total_payload: int
    total_length: int
    begins: list[dict[str, str]]  # BEGIN field name -> printed value
    end_checksums: list[tuple[int, int, int, int]]


def parse_dump(path: Path) -> DumpFacts:
    """Parse a `zstream dump` text output."""
    text = path.read_text()
    records = {
        name: (int(count), int(size))
        for name, count, size in re.findall(
            r"Total (DRR_\w+) records = (\d+) \((\d+) bytes\)", text
        )
    }
    begins = []
    for block in re.findall(r"BEGIN record\n((?:\t\w+ = .*\n)+)", text):
        begins.append(dict(re.findall(r"\t(\w+) = (.*)", block)))
    ends = [
        tuple(int(x, 16) for x in m.split("/"))
        for m in re.findall(r"END checksum = ([0-9a-f/]+)", text)
    ]

    def total(label: str) -> int:
        m = re.search(rf"Total {label} = (\d+)", text)
        assert m is not None, f"{path.name} lacks 'Total {label}'"
        return int(m.group(1))

    return DumpFacts(
        records=records,
        total_records=total("records"),
        total_payload=total("payload size"),
        total_length=total("stream length"),
        begins=begins,
        end_checksums=ends,  # type: ignore[arg-type]
    )


def dump_of(stream: Path) -> DumpFacts:
    return parse_dump(stream.with_suffix(".dump.txt"))


def test_every_fixture_stream_has_a_zstream_dump_with_a_summary() -> None:
    assert len(STREAMS) >= 11
    for stream in STREAMS:
        facts = dump_of(stream)
        assert facts.total_length == stream.stat().st_size
        # zstream dump lists nine types; OBJECT_RANGE and REDACT only count in the total
        assert "DRR_WRITE" in facts.records and "DRR_OBJECT_RANGE" not in facts.records
        assert sum(c for c, _ in facts.records.values()) <= facts.total_records
