"""StreamWriter: exact regeneration of real streams, and streams `zstream dump` accepts."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
from pathlib import Path

import pytest

from protocol.errors import StreamFormatError
from protocol.stream import DrrType, Feature, StreamWriter, parse_begin, read_records, summarize
from tests.conftest import need_binary
from tests.unit.test_stream_fixtures import STREAM_IDS, STREAMS, parse_dump


@pytest.mark.parametrize("stream", STREAMS, ids=STREAM_IDS)
def test_normalised_headers_regenerate_every_fixture_byte_for_byte(stream: Path) -> None:
    original = stream.read_bytes()
    out = io.BytesIO()
    writer = StreamWriter(out)
    with stream.open("rb") as fp:
        for record in read_records(fp):
            normal = record.normalized_header
            if record.type != DrrType.BEGIN:
                assert normal[280:] == bytes(32)  # what the object store keeps carries no checksum
            writer.write_raw(normal, record.payload)
    assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(original).hexdigest()


@pytest.mark.parametrize("stream", STREAMS, ids=STREAM_IDS)
def test_decoded_fields_written_back_give_the_same_stream(stream: Path) -> None:
    out = io.BytesIO()
    writer = StreamWriter(out)
    with stream.open("rb") as fp:
        for record in read_records(fp):
            writer.write_record(record.type, record.fields, record.payload)
    assert out.getvalue() == stream.read_bytes()


def _sample_stream(fp: io.BytesIO | object, *, compound: bool = False) -> None:
    w = StreamWriter(fp)  # type: ignore[arg-type]
    if compound:
        w.begin(0, 0, "pool/ds@b", compound=True, payload_nvlist={"tosnap": "b", "fss": {}})
        w.end()
    w.begin(0xA1, 0, "pool/ds@a", features=Feature.SA_SPILL, creation_time=1_700_000_000)
    w.object(1, bonus=b"bonus" * 33)
    w.write(1, 0, bytes(range(256)) * 512)
    w.write(1, 131072, b"z" * 4096, compressiontype=15, logical_size=131072)
    w.write_embedded(1, 262144, 512, b"tiny data")
    w.spill(1, b"s" * 512)
    w.free(1, 266240, (1 << 64) - 1)
    w.freeobjects(2, 30)
    w.end()
    if compound:
        w.begin(0xB2, 0xA1, "pool/ds@b")
        w.write(1, 0, b"b" * 512)
        w.end()
        w.end()


@pytest.mark.parametrize("compound", [False, True], ids=["plain", "compound"])
def test_generated_stream_passes_zstream_dump(tmp_path: Path, compound: bool) -> None:
    zstream = need_binary("zstream")
    path = tmp_path / "gen.zstream"
    with path.open("wb") as fp:
        _sample_stream(fp, compound=compound)
    done = subprocess.run(
        [zstream, "dump", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "checksum" not in done.stderr.lower()
    assert "Incorrect checksum" not in done.stdout and "differs" not in done.stdout
    dump_path = tmp_path / "gen.dump.txt"
    dump_path.write_text(done.stdout)
    facts = parse_dump(dump_path)
    with path.open("rb") as fp:
        ours = summarize(fp)
    for name, (count, size) in facts.records.items():
        assert (ours.records[name].count, ours.records[name].payload_bytes) == (count, size)
    assert ours.total_length == facts.total_length == path.stat().st_size


def test_generated_stream_reads_back_with_the_values_written() -> None:
    buf = io.BytesIO()
    _sample_stream(buf)
    records = list(read_records(io.BytesIO(buf.getvalue())))
    begin = parse_begin(records[0])
    assert (begin.toguid, begin.toname, begin.creation_time) == (0xA1, "pool/ds@a", 1_700_000_000)
    assert all(r.fields["toguid"] == 0xA1 for r in records[1:])
    obj = records[1]
    assert obj.fields["bonuslen"] == 165 and len(obj.payload) == 168
    write = records[2]
    assert write.payload == bytes(range(256)) * 512 and write.fields["logical_size"] == 131072
    assert records[3].fields["compressed_size"] == 4096
    embedded = records[4]
    assert embedded.fields["psize"] == 9 and embedded.payload[:9] == b"tiny data"


def test_writer_refuses_a_payload_its_header_contradicts() -> None:
    w = StreamWriter(io.BytesIO())
    w.begin(1, 0, "p/d@s")
    with pytest.raises(StreamFormatError, match="payload is 3 bytes"):
        w.write_record(DrrType.WRITE, {"object": 1, "offset": 0, "logical_size": 512}, b"abc")


def test_writer_refuses_records_out_of_place() -> None:
    w = StreamWriter(io.BytesIO())
    with pytest.raises(StreamFormatError, match="unexpected DRR_WRITE"):
        w.write(1, 0, b"x" * 512)
    w.begin(1, 0, "p/d@s")
    with pytest.raises(StreamFormatError, match="unexpected BEGIN"):
        w.begin(2, 0, "p/d@t")


def test_writer_refuses_unknown_fields_and_bad_values() -> None:
    w = StreamWriter(io.BytesIO())
    w.begin(1, 0, "p/d@s")
    with pytest.raises(StreamFormatError, match="no field"):
        w.write_record(DrrType.FREE, {"object": 1, "colour": 3})
    with pytest.raises(StreamFormatError, match="out of range"):
        w.free(-1, 0, 10)
    with pytest.raises(StreamFormatError, match="toname"):
        StreamWriter(io.BytesIO()).begin(1, 0, "p/" + "x" * 300)


def test_compound_stream_wrapper_ends_carry_no_record_checksum_as_libzfs_writes_them() -> None:
    buf = io.BytesIO()
    _sample_stream(buf, compound=True)
    records = list(read_records(io.BytesIO(buf.getvalue())))
    ends = [r for r in records if r.type == DrrType.END]
    assert [r.stored_checksum == (0, 0, 0, 0) for r in ends] == [True, False, False, True]
    assert re.match(r"^pool/ds@", parse_begin(records[0]).toname)


def test_every_record_type_round_trips_and_zstream_dump_accepts_it(tmp_path: Path) -> None:
    zstream = need_binary("zstream")
    path = tmp_path / "all.zstream"
    salt, iv, mac = b"S" * 8, b"I" * 12, b"M" * 16
    with path.open("wb") as fp:
        w = StreamWriter(fp)
        w.begin(7, 3, "p/all@x", features=Feature.RAW | Feature.LARGE_DNODE, flags=0xC)
        w.object_range(0, 32, flags=1, salt=salt, iv=iv, mac=mac)
        w.object(5, bonus=b"\x01" * 64, bonuslen=40, raw_bonuslen=64, nlevels=2, maxblkid=9)
        w.write(5, 0, b"c" * 4096, compressiontype=2, logical_size=4096, salt=salt, iv=iv, mac=mac)
        w.write_byref(5, 4096, 4096, refguid=3, refobject=5, refoffset=0)
        w.spill(5, b"p" * 512, compressed_size=512, salt=salt, iv=iv, mac=mac)
        w.redact(5, 8192, 4096)
        w.write_embedded(5, 12288, 4096, b"e" * 50, compression=15, etype=0, lsize=4096)
        w.free(5, 16384, 4096)
        w.freeobjects(6, 10)
        w.end()
    done = subprocess.run(
        [zstream, "dump", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "Incorrect" not in done.stdout, done.stdout + done.stderr
    with path.open("rb") as fp:
        records = list(read_records(fp))
    assert [r.type for r in records] == [
        DrrType.BEGIN, DrrType.OBJECT_RANGE, DrrType.OBJECT, DrrType.WRITE, DrrType.WRITE_BYREF,
        DrrType.SPILL, DrrType.REDACT, DrrType.WRITE_EMBEDDED, DrrType.FREE, DrrType.FREEOBJECTS,
        DrrType.END,
    ]  # fmt: skip
    by_type = {r.type: r for r in records}
    assert by_type[DrrType.OBJECT_RANGE].fields["mac"] == mac
    assert by_type[DrrType.OBJECT].fields["raw_bonuslen"] == 64
    assert len(by_type[DrrType.OBJECT].payload) == 64  # raw: the encrypted bonus, not padded
    assert by_type[DrrType.WRITE].fields["iv"] == iv
    assert by_type[DrrType.WRITE_BYREF].fields["refguid"] == 3
    assert by_type[DrrType.REDACT].fields["length"] == 4096
    assert by_type[DrrType.WRITE_EMBEDDED].fields["lsize"] == 4096
    assert by_type[DrrType.SPILL].payload == b"p" * 512
    # and the regenerated stream is the same bytes
    again = io.BytesIO()
    w2 = StreamWriter(again)
    for r in records:
        w2.write_raw(r.normalized_header[:280], r.payload)
    assert again.getvalue() == path.read_bytes()
