"""summarize() counts every fixture as OpenZFS's own `zstream dump` did."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.stream import DrrType, summarize
from tests.unit.test_stream_fixtures import STREAM_IDS, STREAMS, dump_of


@pytest.mark.parametrize("stream", STREAMS, ids=STREAM_IDS)
def test_summary_equals_zstream_dump(stream: Path) -> None:
    facts = dump_of(stream)
    with stream.open("rb") as fp:
        summary = summarize(fp)
    for name, (count, size) in facts.records.items():
        assert summary.records[name].count == count, name
        assert summary.records[name].payload_bytes == size, name
    assert summary.total_records == facts.total_records
    assert summary.total_payload == facts.total_payload
    assert summary.total_length == facts.total_length
    assert summary.header_overhead == facts.total_records * 312
    assert summary.end_checksums == facts.end_checksums
    assert [b.toname for b in summary.begins] == [b["toname"] for b in facts.begins]
    assert summary.checksums_verified


def test_summary_json_shape_has_every_type_and_the_begins() -> None:
    stream = next(s for s in STREAMS if s.stem == "replicate-R-base-s3")
    with stream.open("rb") as fp:
        data = summarize(fp).as_dict()
    assert set(data["records"]) == {t.wire_name for t in DrrType}
    assert all(set(v) == {"count", "payload_bytes"} for v in data["records"].values())
    assert data["total_length"] == stream.stat().st_size
    begins = data["begin"]
    assert len(begins) == dump_of(stream).records["DRR_BEGIN"][0]
    assert {"toguid", "fromguid", "toname", "flags", "features"} <= set(begins[0])
    # each sub-stream of the -R stream continues from the previous snapshot
    assert [b["fromguid"] for b in begins[2:]] == [b["toguid"] for b in begins[1:-1]]
