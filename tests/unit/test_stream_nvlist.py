"""Packed nvlists: every real payload round-trips byte for byte; garbage gets ProtocolError."""

from __future__ import annotations

import contextlib
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.stream import DataType, DrrType, nvlist_decode, nvlist_encode, read_records
from protocol.stream.nvlist import NV_ENCODE_NATIVE, NV_ENCODE_XDR
from tests.conftest import ZFS_STREAMS
from tests.unit.test_stream_fixtures import STREAMS


def _payloads() -> list[tuple[str, bytes]]:
    out = []
    for stream in STREAMS:
        with stream.open("rb") as fp:
            for r in read_records(fp):
                if r.type == DrrType.BEGIN and r.payload:
                    out.append((f"{stream.stem}#{r.index}", r.payload))
    token = (ZFS_STREAMS / "resume-token.txt").read_text().strip()
    out.append(("resume-token", zlib.decompress(bytes.fromhex(token.split("-")[3]))))
    return out


PAYLOADS = _payloads()


def test_fixtures_hold_both_encodings() -> None:
    assert {p[0] for _, p in PAYLOADS} == {NV_ENCODE_NATIVE, NV_ENCODE_XDR}


@pytest.mark.parametrize(("name", "packed"), PAYLOADS, ids=[n for n, _ in PAYLOADS])
def test_real_nvlists_round_trip_exactly(name: str, packed: bytes) -> None:
    decoded = nvlist_decode(packed)
    assert len(decoded) > 0
    assert nvlist_encode(decoded, encoding=packed[0]) == packed


def test_raw_stream_crypto_keys_decode_with_their_types() -> None:
    raw = dict(PAYLOADS)["raw-encrypted-e1#0"]
    keydata = nvlist_decode(raw)["crypt_keydata"]
    assert keydata.type_of("DSL_CRYPTO_MASTER_KEY_1") == DataType.UINT8_ARRAY
    assert len(keydata["DSL_CRYPTO_MASTER_KEY_1"]) == 32
    assert keydata["mdn_blksz"] == 0x4000


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), -1),
    st.text(alphabet=st.characters(blacklist_characters="\0", codec="utf-8"), max_size=20),
    st.binary(max_size=20),
    st.lists(st.integers(0, 2**64 - 1), max_size=4),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.dictionaries(st.text("abcdef", min_size=1, max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.text("xyz_", min_size=1, max_size=8), _values, max_size=6), st.booleans())
def test_encode_then_decode_gives_the_values_back(value: dict[str, Any], xdr: bool) -> None:
    packed = nvlist_encode(value, encoding=NV_ENCODE_XDR if xdr else NV_ENCODE_NATIVE)
    decoded = nvlist_decode(packed)

    def expect(v: Any) -> Any:
        if v is None:
            return True  # a BOOLEAN flag reads back as present
        if isinstance(v, dict):
            return {k: expect(x) for k, x in v.items()}
        return v

    def plain(v: Any) -> Any:
        return {k: plain(x) for k, x in v.items()} if hasattr(v, "type_of") else v

    assert plain(decoded) == expect(value)
    assert nvlist_encode(decoded, encoding=packed[0]) == packed


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_raises_protocol_error_only(data: bytes) -> None:
    for prefix in (b"", b"\x00\x01\x00\x00", b"\x01\x01\x00\x00"):
        with contextlib.suppress(ProtocolError):
            nvlist_decode(prefix + data)


@pytest.mark.parametrize(("name", "packed"), PAYLOADS, ids=[n for n, _ in PAYLOADS])
def test_every_truncation_of_a_real_nvlist_is_a_protocol_error(name: str, packed: bytes) -> None:
    for cut in range(0, len(packed) - 1, 7):
        with pytest.raises(ProtocolError):
            nvlist_decode(packed[:cut])


def test_unencodable_value_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="cannot encode"):
        nvlist_encode({"x": object()})
