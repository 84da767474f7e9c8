"""Record sets from real OpenZFS 2.3.2 send streams (tests/fixtures/zfs-streams)."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import StreamError, StreamFormatError
from tests.conftest import FIXTURES
from workers.dedup import RECORD, analyze, summarize_all
from workers.dedup.lz4block import lz4_block
from workers.dedup.streams import read_streams

STREAMS = FIXTURES / "zfs-streams"


def _records(*names: str) -> dict[str, object]:
    found = read_streams([str(STREAMS / f"{n}.zstream") for n in names])
    return {d.dataset: d for d in found}


def _set(*names: str) -> dict[int, int]:
    return _records(*names)["fx/base"].records.sizes  # type: ignore[attr-defined, no-any-return]


def test_full_stream_holds_the_recipes_files() -> None:
    # make-fixtures.sh: hello.txt, random.bin (300,000 B), zeros.bin (holes), 20 conf files,
    # numbers.txt (seq 1 20000: 108,894 B)
    base = _records("full-s1")["fx/base"]
    records = base.records  # type: ignore[attr-defined]
    assert base.snapshot == "fx/base@s1"  # type: ignore[attr-defined]
    assert records.records == 1 + 3 + 20 + 1
    tail = 300_000 - 2 * RECORD
    assert records.unique == 512 + 2 * RECORD + -(-tail // 512) * 512 + 20 * 512 + 109_056


@pytest.mark.parametrize(
    "variant", ["full-s1-compressed", "full-s1-largeblock-embed", "full-s1-props"]
)
def test_compressed_embedded_and_props_streams_match_the_plain_one(variant: str) -> None:
    assert _set(variant) == _set("full-s1")


def test_incrementals_apply_as_a_receive_would() -> None:
    s1, s2 = _set("full-s1"), _set("full-s1", "incr-s1-s2")
    # conf3 removed, the first record of random.bin rewritten, hello.txt appended (still 512 B)
    assert len(s2) == len(s1) - 1
    assert len(set(s1) & set(s2)) == len(s1) - 3
    s3 = _set("full-s1", "incr-I-s1-s3")
    assert len(s3) == len(s2) + 1  # new.txt
    assert _set("replicate-R-base-s3") == s3  # -R of s3 leaves what -I s1..s3 leaves


def test_clone_stream_after_its_origin() -> None:
    found = _records("full-s1", "incr-s1-s2", "clone-app-from-base-s2")
    base = found["fx/base"].records  # type: ignore[attr-defined]
    app = found["fx/app"].records  # type: ignore[attr-defined]
    assert set(app.sizes) - set(base.sizes) and set(base.sizes) <= set(app.sizes)
    result = analyze(
        summarize_all(
            [(d.dataset, d.snapshot, d.records) for d in found.values()],  # type: ignore[attr-defined]
            method="exact",
            k=64,
            count=2,
        )
    )
    p = result.proposal
    assert p.bytes_now == base.unique + app.unique
    assert p.bytes_after == p.lower_bound == app.unique  # app is base + app.txt
    # either could be the base (each shares the same bytes with the other): the first is
    assert len(p.clusters) == 1 and p.clusters[0].base == "fx/base"


def test_volume_stream_keeps_its_16k_blocks() -> None:
    vol = _records("zvol-v1")["fx/vol"].records  # type: ignore[attr-defined]
    assert vol.records == 16 and vol.unique == 16 * 16384  # 4 x 64 KiB of random data


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["raw-encrypted-e1"], "raw"),
        (["resumed-from-token"], "resumed"),
        (["clone-app-from-base-s2"], "no earlier stream"),
    ],
)
def test_partial_or_ciphertext_streams_are_refused(names: list[str], message: str) -> None:
    with pytest.raises(StreamFormatError, match=message):
        _records(*names)


def test_damaged_or_missing_streams_are_clear_errors(tmp_path: Path) -> None:
    cut = tmp_path / "cut.zstream"
    cut.write_bytes((STREAMS / "full-s1.zstream").read_bytes()[:100_000])
    with pytest.raises(StreamError, match=r"cut\.zstream: stream ends inside"):
        read_streams([str(cut)])
    with pytest.raises(StreamFormatError, match="cannot read"):
        read_streams([str(tmp_path / "absent")])


def test_lz4_rejects_a_bad_offset() -> None:
    with pytest.raises(StreamFormatError, match="offset"):
        lz4_block(bytes([0x10, 0x41, 0x05, 0x00]), 32)  # one literal, then a match 5 back
