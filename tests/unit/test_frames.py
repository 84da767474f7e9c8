"""Data-plane frames: round trips, and every kind of corruption is a FrameError."""

from __future__ import annotations

import dataclasses
import io
import os
import struct
from collections.abc import Callable

import blake3
import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import FrameError
from protocol.frames import (
    DIGEST_SIZE,
    MAX_PAYLOAD,
    PREAMBLE_SIZE,
    Codec,
    Frame,
    FrameDecoder,
    FrameKind,
    compress_payload,
    encode_frame,
    encode_frame_parts,
    payload_digest,
)

KEY = bytes(range(32))
COMPRESSIBLE = b"zfleet record payload " * 2000


def _conversation() -> list[Frame]:
    return [
        Frame(FrameKind.HELLO, 0, {"transfer": "t-1", "grant": b"\x01\x02", "guid": 2**64 - 1}),
        Frame(FrameKind.ACCEPT, 1, {"offset": 0}),
        Frame(FrameKind.DATA, 2, {"n": 0}, COMPRESSIBLE),
        Frame(FrameKind.DATA, 3, {"n": 1}, os.urandom(5000)),
        Frame(FrameKind.HEARTBEAT, 4),
        Frame(FrameKind.END, 5, {"bytes": len(COMPRESSIBLE) + 5000}),
        Frame(FrameKind.RESULT, 6, {"snapshot": "tank/a@s 1"}),
        Frame(FrameKind.ERROR, 7, {"type": "DestinationModified", "message": "nope"}),
    ]


def _wire(frames: list[Frame], *, key: bytes | None = None) -> bytes:
    return b"".join(encode_frame(f, compress=True, key=key) for f in frames)


def _raw_frame(
    *,
    magic: bytes = b"ZFLF",
    version: int = 1,
    kind: int = 3,
    flags: int = 0,
    reserved: int = 0,
    seq: int = 0,
    header: bytes | None = None,
    payload: bytes = b"",
    plain_len: int | None = None,
) -> bytes:
    """A frame built by hand (with a correct digest), to reach checks behind the digest."""
    header = msgpack.packb({}) if header is None else header
    pre = struct.pack(
        ">4sBBBBQIII",
        magic,
        version,
        kind,
        flags,
        reserved,
        seq,
        len(header),
        len(payload),
        len(payload) if plain_len is None else plain_len,
    )
    digest = blake3.blake3(pre + header + payload).digest(length=DIGEST_SIZE)
    return pre + header + payload + digest


def test_a_whole_conversation_round_trips() -> None:
    frames = _conversation()
    decoder = FrameDecoder()
    assert decoder.feed(_wire(frames)) == frames
    decoder.close()
    assert decoder.frames == len(frames)


def test_compression_shrinks_what_it_can_and_stores_the_rest_raw() -> None:
    squeezed = compress_payload(COMPRESSIBLE, 3)
    assert squeezed.codec is Codec.ZSTD
    assert len(squeezed.data) < len(COMPRESSIBLE) // 10
    noise = os.urandom(10_000)
    kept = compress_payload(noise, 3)
    assert kept.codec is Codec.RAW
    assert kept.data == noise
    compressed_wire = encode_frame(Frame(FrameKind.DATA, 0, {}, COMPRESSIBLE), compress=1)
    assert len(compressed_wire) < len(COMPRESSIBLE) // 10


def test_prepared_payloads_from_other_threads_decode_to_the_plain_bytes() -> None:
    chunks = [COMPRESSIBLE, os.urandom(3000), b""]
    wire = b"".join(
        encode_frame(Frame(FrameKind.DATA, i, {"i": i}), prepared=compress_payload(c, 1))
        for i, c in enumerate(chunks)
    )
    assert [f.payload for f in FrameDecoder().feed(wire)] == chunks


def test_payload_both_in_frame_and_prepared_is_refused() -> None:
    with pytest.raises(FrameError, match="either in the frame or prepared"):
        encode_frame(Frame(FrameKind.DATA, 0, {}, b"x"), prepared=compress_payload(b"y"))


def test_parts_avoid_copying_the_payload() -> None:
    payload = os.urandom(1000)
    parts = encode_frame_parts(Frame(FrameKind.DATA, 0, {}, payload))
    assert parts[2] == payload
    assert len(parts[0]) == PREAMBLE_SIZE
    assert len(parts[3]) == DIGEST_SIZE


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4000), min_size=1, max_size=40))
def test_any_chunking_of_the_stream_gives_the_same_frames(cuts: list[int]) -> None:
    frames = _conversation()
    wire = _wire(frames)
    decoder = FrameDecoder()
    got: list[Frame] = []
    pos = 0
    for size in cuts:
        got += decoder.feed(wire[pos : pos + size])
        pos += size
    got += decoder.feed(wire[pos:])
    decoder.close()
    assert got == frames


def test_blocking_reader_reads_frames_then_a_clean_end() -> None:
    frames = _conversation()
    stream = io.BytesIO(_wire(frames))
    decoder = FrameDecoder()
    got = []
    while (frame := decoder.read_from(stream.read)) is not None:
        got.append(frame)
    assert got == frames


def test_blocking_reader_reports_a_cut_frame() -> None:
    wire = _wire(_conversation()[:3])
    stream = io.BytesIO(wire[:-5])
    decoder = FrameDecoder()
    assert decoder.read_from(stream.read) is not None
    assert decoder.read_from(stream.read) is not None
    with pytest.raises(FrameError, match="truncated inside frame 2"):
        decoder.read_from(stream.read)


def _filler(data: bytes, most: int) -> Callable[[memoryview], int]:
    """A ``recv_into`` over ``data`` that hands out at most ``most`` bytes a call."""
    stream = io.BytesIO(data)

    def fill(view: memoryview) -> int:
        with view[:most] as part:
            return stream.readinto(part)

    return fill


@pytest.mark.parametrize("most", [1, 7, 4096, 1 << 20])
def test_reader_into_its_own_buffer_gives_the_same_frames(most: int) -> None:
    frames = _conversation()
    fill = _filler(_wire(frames), most)
    decoder = FrameDecoder()
    got = []
    while (frame := decoder.read_into(fill)) is not None:
        got.append(frame)
    assert got == frames
    # payloads are the frames' own bytes, not views of the buffer the decoder reuses
    assert all(type(f.payload) is bytes for f in got)


def test_reader_into_its_own_buffer_reports_a_cut_or_corrupt_frame() -> None:
    wire = _wire(_conversation()[:3])
    decoder = FrameDecoder()
    fill = _filler(wire[:-5], 1000)
    assert decoder.read_into(fill) is not None
    assert decoder.read_into(fill) is not None
    with pytest.raises(FrameError, match="truncated inside frame 2"):
        decoder.read_into(fill)
    broken = bytearray(wire)
    broken[-20] ^= 0x10
    decoder = FrameDecoder()
    fill = _filler(bytes(broken), 1 << 20)
    decoder.read_into(fill)
    decoder.read_into(fill)
    with pytest.raises(FrameError, match="digest mismatch"):
        decoder.read_into(fill)
    with pytest.raises(FrameError, match="already failed"):
        decoder.read_into(fill)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_flipped_bit_is_detected(data: st.DataObject) -> None:
    frames = _conversation()[:4]
    wire = bytearray(_wire(frames))
    bit = data.draw(st.integers(0, len(wire) * 8 - 1))
    wire[bit // 8] ^= 1 << (bit % 8)
    decoder = FrameDecoder()
    got: list[Frame] = []
    with pytest.raises(FrameError):
        got += decoder.feed(bytes(wire))
        decoder.close()
    # Frames before the damaged one are intact; the damaged one is never delivered.
    assert got == frames[: len(got)]
    assert len(got) < len(frames)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncation_is_detected_unless_at_a_frame_boundary(data: st.DataObject) -> None:
    frames = _conversation()[:4]
    encoded = [encode_frame(f, compress=True) for f in frames]
    wire = b"".join(encoded)
    cut = data.draw(st.integers(0, len(wire) - 1))
    boundaries = {sum(len(e) for e in encoded[:i]): i for i in range(len(encoded))}
    decoder = FrameDecoder()
    got = decoder.feed(wire[:cut])
    assert got == frames[: len(got)]
    if cut in boundaries:
        decoder.close()
        assert len(got) == boundaries[cut]
    else:
        with pytest.raises(FrameError, match="truncated"):
            decoder.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_garbage_is_a_frame_error(garbage: bytes) -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(garbage)
        decoder.close()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=PREAMBLE_SIZE, max_size=PREAMBLE_SIZE), st.binary(max_size=200))
def test_garbage_behind_a_valid_magic_is_a_frame_error(preamble: bytes, rest: bytes) -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(b"ZFLF\x01" + preamble[5:] + rest)
        decoder.close()


def test_oversized_lengths_are_refused_before_the_body_arrives() -> None:
    huge = struct.pack(">4sBBBBQIII", b"ZFLF", 1, 3, 0, 0, 0, 10, 2**32 - 1, 2**32 - 1)
    decoder = FrameDecoder()
    with pytest.raises(FrameError, match="exceeds the limit"):
        decoder.feed(huge)  # only the preamble: no waiting for 4 GiB
    big_header = struct.pack(">4sBBBBQIII", b"ZFLF", 1, 3, 0, 0, 0, 2**20, 0, 0)
    with pytest.raises(FrameError, match="header length 1048576 outside"):
        FrameDecoder().feed(big_header)
    with pytest.raises(FrameError, match="payload is too large"):
        encode_frame(Frame(FrameKind.DATA, 0, {}, bytes(MAX_PAYLOAD + 1)))


def _zeros_bomb(size: int) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(bytes(size))


def test_decompression_bombs_are_refused_before_expanding() -> None:
    bomb = _zeros_bomb(32 << 20)
    assert len(bomb) < 100_000
    lying = _raw_frame(flags=1, payload=bomb, plain_len=1000)
    with pytest.raises(FrameError, match="declares 33554432 bytes, the frame 1000"):
        FrameDecoder().feed(lying)
    honest = _raw_frame(flags=1, payload=bomb, plain_len=32 << 20)
    with pytest.raises(FrameError, match="exceeds the limit"):
        FrameDecoder(max_payload=1 << 20).feed(honest)
    not_zstd = _raw_frame(flags=1, payload=b"definitely not zstd", plain_len=10)
    with pytest.raises(FrameError, match="not a zstd frame"):
        FrameDecoder().feed(not_zstd)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"magic": b"HTTP"}, "bad magic"),
        ({"version": 3}, "unsupported frame version 3"),
        ({"flags": 0x02}, "unknown flags"),  # no-digest does not exist in version 1
        ({"kind": 99}, "unknown frame kind 99"),
        ({"flags": 0x80}, "unknown flags"),
        ({"reserved": 1}, "unknown flags"),
        ({"payload": b"abc", "plain_len": 4}, "raw payload lengths disagree"),
        ({"header": msgpack.packb([1, 2])}, "header must be a map"),
        ({"header": b"\xc1"}, "header is not valid msgpack"),
        ({"header": b""}, "header length 0"),
    ],
)
def test_malformed_frames_with_valid_digests_are_named(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(FrameError, match=message):
        FrameDecoder().feed(_raw_frame(**fields))  # type: ignore[arg-type]


def test_lost_repeated_or_reordered_frames_are_detected() -> None:
    a, b, c = (Frame(FrameKind.DATA, i, {}) for i in range(3))
    with pytest.raises(FrameError, match="sequence number 2, expected 1"):
        FrameDecoder().feed(encode_frame(a) + encode_frame(c))
    with pytest.raises(FrameError, match="sequence number 0, expected 1"):
        FrameDecoder().feed(encode_frame(a) + encode_frame(a))
    assert len(FrameDecoder(check_seq=False).feed(encode_frame(c) + encode_frame(b))) == 2
    assert FrameDecoder(first_seq=2).feed(encode_frame(c)) == [c]


def test_keyed_digests_refuse_frames_made_without_the_key() -> None:
    frames = _conversation()[:2]
    assert FrameDecoder(key=KEY).feed(_wire(frames, key=KEY)) == frames
    with pytest.raises(FrameError, match="digest mismatch"):
        FrameDecoder(key=KEY).feed(_wire(frames))
    with pytest.raises(FrameError, match="digest mismatch"):
        FrameDecoder(key=bytes(32)).feed(_wire(frames, key=KEY))
    with pytest.raises(FrameError, match="key must be 32 bytes"):
        FrameDecoder(key=b"short")


def test_a_failed_decoder_refuses_more_input() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(b"garbage that is long enough for a preamble")
    with pytest.raises(FrameError, match="already failed"):
        decoder.feed(_wire(_conversation()))


def test_unencodable_or_oversized_headers_are_frame_errors() -> None:
    with pytest.raises(FrameError, match="header cannot be encoded"):
        encode_frame(Frame(FrameKind.HELLO, 0, {"x": object()}))
    with pytest.raises(FrameError, match="header is too large"):
        encode_frame(Frame(FrameKind.HELLO, 0, {"x": "a" * 70_000}))
    with pytest.raises(FrameError, match="sequence number out of range"):
        encode_frame(Frame(FrameKind.HELLO, -1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_splices_never_deliver_a_damaged_frame(data: st.DataObject) -> None:
    frames = _conversation()[:5]
    wire = bytearray(_wire(frames))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(wire)))
        cut = data.draw(st.integers(0, 64))
        insert = data.draw(st.binary(max_size=16))
        wire[at : at + cut] = insert
    decoder = FrameDecoder()
    got: list[Frame] = []
    try:
        for start in range(0, len(wire), 4096):
            got += decoder.feed(bytes(wire[start : start + 4096]))
        decoder.close()
    except FrameError:
        pass
    # Whatever happened, only whole, unaltered frames of the original stream came out, in order.
    assert got == frames[: len(got)]


def test_version_1_frames_are_still_read() -> None:
    """Frames from a sender of the previous release (digest over the whole payload)."""
    old = [
        _raw_frame(seq=0, payload=b"raw stream bytes"),
        _raw_frame(seq=1, flags=1, payload=_zeros_bomb(5000), plain_len=5000),
    ]
    frames = FrameDecoder().feed(b"".join(old))
    assert [f.payload for f in frames] == [b"raw stream bytes", bytes(5000)]
    tampered = bytearray(old[0])
    tampered[PREAMBLE_SIZE + 3] ^= 0x01
    with pytest.raises(FrameError, match="digest mismatch"):
        FrameDecoder().feed(bytes(tampered))


def test_version_2_digest_stands_on_the_payload_digest_computed_once() -> None:
    prepared = compress_payload(COMPRESSIBLE, 1)
    assert prepared.digest == payload_digest(prepared.data)
    # two connections (different sequence numbers) share the payload's digest, not the frame's
    a = encode_frame_parts(Frame(FrameKind.DATA, 3, {}), prepared=prepared)
    b = encode_frame_parts(Frame(FrameKind.DATA, 4, {}), prepared=prepared)
    assert a[0][4] == 2 and a[2] is b[2] and a[3] != b[3]
    expected = blake3.blake3(a[0] + a[1] + payload_digest(a[2])).digest(length=DIGEST_SIZE)
    assert a[3] == expected
    # a Prepared whose digest does not match its data makes a frame the receiver refuses
    forged = dataclasses.replace(prepared, digest=payload_digest(b"other"))
    wire = encode_frame(Frame(FrameKind.DATA, 0, {}), prepared=forged)
    with pytest.raises(FrameError, match="digest mismatch"):
        FrameDecoder().feed(wire)


def test_frames_without_digest_only_on_an_authenticated_transport() -> None:
    frames = _conversation()
    wire = b"".join(encode_frame(f, compress=True, digest=False) for f in frames)
    assert len(wire) == len(_wire(frames)) - DIGEST_SIZE * len(frames)
    assert FrameDecoder(authenticated_transport=True).feed(wire) == frames
    with pytest.raises(FrameError, match="does not authenticate"):
        FrameDecoder().feed(wire)
    # and a digested stream still reads on an authenticated transport
    assert FrameDecoder(authenticated_transport=True).feed(_wire(frames)) == frames
