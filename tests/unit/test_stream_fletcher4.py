"""The vectorised fletcher-4 equals the word-by-word definition, and OpenZFS's own numbers."""

from __future__ import annotations

import io
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.stream import DrrType, Fletcher4, fletcher4, read_records
from protocol.stream.fletcher4 import BLOCK_WORDS, fletcher4_reference, piece_sums
from tests.conftest import ZFS_STREAMS


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000), st.booleans())
def test_closed_form_equals_the_definition(data: bytes, byteswap: bool) -> None:
    assert fletcher4(data, byteswap=byteswap) == fletcher4_reference(data, byteswap=byteswap)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 3000), max_size=6), st.binary(min_size=0, max_size=12000))
def test_incremental_updates_equal_one_pass(cuts: list[int], data: bytes) -> None:
    data = data[: len(data) // 4 * 4]
    bounds = sorted({c * 4 for c in cuts if c * 4 <= len(data)} | {0, len(data)})
    f = Fletcher4()
    for a, b in itertools.pairwise(bounds):
        f.update(data[a:b])
    assert f.value == fletcher4_reference(data)


def test_blocks_larger_than_one_vector_step_and_wraparound() -> None:
    data = b"\xff" * (BLOCK_WORDS * 4 * 3 + 40)  # sums overflow 64 bits: wrapping must match C
    assert fletcher4(data) == fletcher4_reference(data)


def test_matches_the_checksum_openzfs_stored_in_a_real_stream() -> None:
    raw = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
    second = list(read_records(io.BytesIO(raw)))[1]
    assert second.type == DrrType.OBJECT
    # the record stores the checksum of every byte before its last 32
    assert fletcher4(raw[: second.offset + 280]) == second.stored_checksum


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-2, BLOCK_WORDS * 3), max_size=12),
    st.integers(0, BLOCK_WORDS * 3),
    st.sampled_from([b"\xff", b"\x01\x80\xff\x7f", b"\x00\x00", b"zfs!"]),
)
def test_piece_sums_folded_give_the_running_checksum_at_every_cut(
    cuts: list[int], words: int, fill: bytes
) -> None:
    data = (fill * (words * 4 // len(fill) + 1))[: words * 4]
    data = bytes(b ^ (i * 37 & 0xFF) for i, b in enumerate(data[:4096])) + data[4096:]
    cuts += [BLOCK_WORDS, 2 * BLOCK_WORDS]  # on block boundaries too
    pieces = piece_sums(data, [c * 4 for c in cuts])
    f = Fletcher4()
    at = 0
    for piece in pieces:
        f.fold(piece)
        at += piece[0] * 4
        assert f.value == fletcher4(data[:at])
    assert at == len(data)
    assert f.value == fletcher4_reference(data)
    inner = {c for c in cuts if 0 < c < words}
    assert len(pieces) == len(inner) + len(range(0, words, BLOCK_WORDS)) - len(
        inner & set(range(0, words, BLOCK_WORDS))
    )
