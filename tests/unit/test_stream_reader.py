"""read_records and parse_begin on real OpenZFS 2.3.2 streams."""

from __future__ import annotations

import io
import struct
from collections import Counter
from pathlib import Path

import pytest

from protocol.errors import StreamChecksumError, StreamFormatError, StreamTruncated
from protocol.stream import DrrType, Feature, Record, parse_begin, read_records
from protocol.stream.reader import Readable
from tests.conftest import ZFS_STREAMS
from tests.unit.test_stream_fixtures import COMPOUND, STREAM_IDS, STREAMS, dump_of


@pytest.mark.parametrize("stream", STREAMS, ids=STREAM_IDS)
def test_counts_and_bytes_equal_zstream_dump(stream: Path) -> None:
    facts = dump_of(stream)
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    with stream.open("rb") as fp:
        records = list(read_records(fp))
    for r in records:
        counts[r.type.wire_name] += 1
        sizes[r.type.wire_name] += len(r.payload)
    for name, (count, size) in facts.records.items():
        assert (counts[name], sizes[name]) == (count, size), name
    assert len(records) == facts.total_records
    unlisted = facts.total_records - sum(c for c, _ in facts.records.values())
    assert counts["DRR_OBJECT_RANGE"] + counts["DRR_REDACT"] == unlisted
    assert sum(sizes.values()) == facts.total_payload
    assert records[-1].offset + records[-1].size == facts.total_length
    assert [r.index for r in records] == list(range(len(records)))


@pytest.mark.parametrize("stream", STREAMS, ids=STREAM_IDS)
def test_begin_fields_equal_zstream_dump(stream: Path) -> None:
    facts = dump_of(stream)
    with stream.open("rb") as fp:
        begins = [parse_begin(r) for r in read_records(fp) if r.type == DrrType.BEGIN]
    assert len(begins) == len(facts.begins)
    for got, want in zip(begins, facts.begins, strict=True):
        assert got.hdrtype == int(want["hdrtype"])
        assert got.features == int(want["features"], 16)
        assert got.magic == int(want["magic"], 16)
        assert got.creation_time == int(want["creation_time"], 16)
        assert got.type == int(want["type"])
        assert got.flags == int(want["flags"], 16)
        assert got.toguid == int(want["toguid"], 16)
        assert got.fromguid == int(want["fromguid"], 16)
        assert got.toname == want["toname"]
        assert len(got.payload) == int(want["payloadlen"])
        assert (got.nvlist is not None) == (len(got.payload) > 0)
    assert begins[0].compound == (stream.stem in COMPOUND)


@pytest.mark.parametrize("stream", STREAMS, ids=STREAM_IDS)
def test_end_checksums_equal_zstream_dump(stream: Path) -> None:
    with stream.open("rb") as fp:
        ends = [r.fields["checksum"] for r in read_records(fp) if r.type == DrrType.END]
    assert ends == dump_of(stream).end_checksums


def test_feature_bits_of_special_streams() -> None:
    def first_begin(name: str) -> object:
        with (ZFS_STREAMS / f"{name}.zstream").open("rb") as fp:
            return parse_begin(next(iter(read_records(fp))))

    raw = first_begin("raw-encrypted-e1")
    assert raw.raw and raw.compressed and raw.has(Feature.SA_SPILL)  # type: ignore[attr-defined]
    assert "raw" in raw.feature_names  # type: ignore[attr-defined]
    assert raw.nvlist["crypt_keydata"]["DSL_CRYPTO_SUITE"] == 8  # type: ignore[attr-defined]
    comp = first_begin("full-s1-compressed")
    assert comp.compressed and comp.has(Feature.LZ4)  # type: ignore[attr-defined]
    large = first_begin("full-s1-largeblock-embed")
    # no block over 128 KiB in the pool, so -L sets no LARGE_BLOCKS bit; -e sets EMBED_DATA
    assert large.embed_data and not large.large_blocks  # type: ignore[attr-defined]
    resumed = first_begin("resumed-from-token")
    assert resumed.resuming  # type: ignore[attr-defined]
    assert dict(resumed.nvlist) == {"resume_object": 0x24, "resume_offset": 0}  # type: ignore[attr-defined]
    clone = first_begin("clone-app-from-base-s2")
    assert clone.is_clone and clone.incremental  # type: ignore[attr-defined]


def test_compound_replication_stream_nvlist_names_every_snapshot() -> None:
    with (ZFS_STREAMS / "replicate-R-base-s3.zstream").open("rb") as fp:
        begins = [parse_begin(r) for r in read_records(fp) if r.type == DrrType.BEGIN]
    outer = begins[0]
    assert outer.compound and outer.nvlist is not None
    (fs,) = outer.nvlist["fss"].values()
    assert fs["name"] == "fx/base"
    # the snapshot guids in the nvlist are the toguids of the sub-streams
    assert sorted(fs["snaps"].values()) == sorted(b.toguid for b in begins[1:])


def test_write_fields_decode() -> None:
    with (ZFS_STREAMS / "full-s1-compressed.zstream").open("rb") as fp:
        writes = [r for r in read_records(fp) if r.type == DrrType.WRITE]
    compressed = [w for w in writes if w.fields["compressiontype"]]
    assert compressed, "a -c stream keeps lz4 blocks compressed"
    for w in compressed:
        assert len(w.payload) == w.fields["compressed_size"] < w.fields["logical_size"]


class _Trickle:
    """A reader that hands out at most 7 bytes per read, as a slow pipe might."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, n: int, /) -> bytes:
        return self._buf.read(min(n, 7))


def test_short_reads_from_a_pipe_give_the_same_records() -> None:
    data = (ZFS_STREAMS / "incr-I-s1-s3.zstream").read_bytes()
    trickle: Readable = _Trickle(data)
    assert [r.header + r.payload for r in read_records(trickle)] == [
        r.header + r.payload for r in read_records(io.BytesIO(data))
    ]


def _swap_stream(data: bytes) -> bytes:
    """The same stream as a big-endian machine would write it (checksums recomputed).

    Stored checksums are big-endian words, as OpenZFS's receive byteswaps them back
    (byteswap_record); `zstream dump` 2.3 compares them unswapped and so flags every such
    stream, which is why this test does not ask zstream's opinion.
    """
    from protocol.stream.fletcher4 import Fletcher4
    from protocol.stream.types import LAYOUTS

    out = bytearray()
    running = Fletcher4(byteswap=True)
    for r in read_records(io.BytesIO(data)):
        layout = LAYOUTS[r.type]
        union = layout.be.pack(*layout.le.unpack_from(r.header, 8))
        head = struct.pack(">II", r.type, struct.unpack_from("<I", r.header, 4)[0]) + union
        head += bytes(280 - len(head)) if len(head) < 280 else b""
        if r.type == DrrType.END:
            head = head[:8] + struct.pack(">4Q", *running.value) + head[40:]
        running.update(head[:280])
        tail = r.header[280:] if r.type == DrrType.BEGIN else struct.pack(">4Q", *running.value)
        if r.type != DrrType.BEGIN and r.stored_checksum == (0, 0, 0, 0):
            tail = bytes(32)
        head = head[:280] + tail
        running.update(head[280:])
        running.update(r.payload)
        out += head + r.payload
        if r.type == DrrType.END:
            running.reset()
    return bytes(out)


def test_byteswapped_stream_is_read_with_the_same_fields() -> None:
    data = (ZFS_STREAMS / "incr-s1-s2.zstream").read_bytes()
    swapped = _swap_stream(data)
    assert swapped != data
    native = list(read_records(io.BytesIO(data)))
    other = list(read_records(io.BytesIO(swapped)))
    assert all(r.byteswapped for r in other)

    # every field but the checksums (fletcher-4 of other-order words) reads the same
    def plain(records: list[Record]) -> list[dict[str, object]]:
        skip = ("record_checksum", "checksum")
        return [{k: v for k, v in r.fields.items() if k not in skip} for r in records]

    assert len(other) == len(native) and plain(other) == plain(native)


def test_truncated_at_a_record_boundary_names_the_offset() -> None:
    data = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
    records = list(read_records(io.BytesIO(data)))
    cut = records[5].offset
    with pytest.raises(StreamTruncated) as info:
        list(read_records(io.BytesIO(data[:cut])))
    assert info.value.offset == cut
    assert f"offset {cut}" in str(info.value)


def test_compound_stream_cut_between_substreams_is_truncated() -> None:
    data = (ZFS_STREAMS / "incr-I-s1-s3.zstream").read_bytes()
    records = list(read_records(io.BytesIO(data)))
    last = records[-1]
    assert last.type == DrrType.END
    with pytest.raises(StreamTruncated, match="final END") as info:
        list(read_records(io.BytesIO(data[: last.offset])))
    assert info.value.offset == last.offset


def test_empty_input_is_truncated_at_zero() -> None:
    with pytest.raises(StreamTruncated) as info:
        list(read_records(io.BytesIO(b"")))
    assert info.value.offset == 0


def test_bad_magic_is_a_format_error_not_a_crash() -> None:
    with pytest.raises(StreamFormatError, match="bad BEGIN magic"):
        list(read_records(io.BytesIO(b"\x00" * 1000)))


def test_corrupt_payload_is_caught_at_the_next_checksum() -> None:
    data = bytearray((ZFS_STREAMS / "full-s1.zstream").read_bytes())
    records = list(read_records(io.BytesIO(bytes(data))))
    write = next(r for r in records if r.type == DrrType.WRITE)
    data[write.offset + 312 + 100] ^= 0x10
    with pytest.raises(StreamChecksumError) as info:
        list(read_records(io.BytesIO(bytes(data))))
    assert info.value.record == write.index + 1
    # without verification the same bytes read through
    assert len(list(read_records(io.BytesIO(bytes(data)), verify=False))) == len(records)


def test_text_mode_input_is_a_clear_format_error(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("not binary")
    with path.open() as fp, pytest.raises(StreamFormatError, match="must give bytes"):
        list(read_records(fp))  # type: ignore[arg-type]


class _Counting:
    """Counts the bytes handed out, to show the reader never reads ahead of the record."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.consumed = 0

    def read(self, n: int, /) -> bytes:
        chunk = self._buf.read(n)
        self.consumed += len(chunk)
        return chunk


def test_records_stream_out_one_at_a_time() -> None:
    data = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
    source = _Counting(data)
    records = read_records(source)
    seen = 0
    for record in records:
        seen += 1
        # everything read so far is exactly this record and those before it
        assert source.consumed == record.offset + record.size
    assert seen > 100 and source.consumed == len(data)
