"""Resume tokens: the real OpenZFS token decodes to what `zfs send -nvt` printed, and back."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import TokenError
from protocol.stream import ResumeToken, decode_resume_token, encode_resume_token
from tests.conftest import ZFS_STREAMS

TOKEN = (ZFS_STREAMS / "resume-token.txt").read_text().strip()


def _printed_token_fields() -> dict[str, str]:
    text = (ZFS_STREAMS / "cli-samples.txt").read_text()
    block = text.split("resume token contents:", 1)[1]
    return dict(re.findall(r"^\t(\w+) = (\S+)$", block, re.MULTILINE))


def test_fixture_token_decodes_to_the_values_openzfs_printed() -> None:
    printed = _printed_token_fields()
    token = decode_resume_token(TOKEN)
    assert token.object == int(printed["object"], 16)
    assert token.offset == int(printed["offset"], 16)
    assert token.bytes == int(printed["bytes"], 16)
    assert token.toguid == int(printed["toguid"], 16)
    assert token.toname == printed["toname"]
    assert token.fromguid == 0 and not token.incremental
    assert not (token.compressok or token.rawok or token.largeblockok or token.embedok)


def test_fixture_token_round_trips_exactly() -> None:
    assert encode_resume_token(decode_resume_token(TOKEN)) == TOKEN


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**64 - 1),
    st.integers(1, 2**64 - 1),
    st.from_regex(r"[a-z][a-z0-9/_.-]{0,40}@[a-z0-9 _.-]{1,20}", fullmatch=True),
    st.integers(0, 2**64 - 1),
    st.booleans(),
    st.booleans(),
)
def test_encode_decode_round_trip(
    fromguid: int, toguid: int, name: str, nbytes: int, compressok: bool, rawok: bool
) -> None:
    token = ResumeToken(
        toguid=toguid,
        toname=name,
        object=5,
        offset=1 << 17,
        bytes=nbytes,
        fromguid=fromguid,
        compressok=compressok,
        rawok=rawok,
    )
    text = encode_resume_token(token)
    assert re.fullmatch(r"1-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+", text)
    assert decode_resume_token(text) == token


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "malformed"),
        ("hello", "malformed"),
        ("2-" + TOKEN[2:], "version 2"),
        # the checksum covers whole 32-bit words only, so losing the last byte shows in zlib
        (TOKEN[:-2], "does not decompress"),
        (TOKEN[:-8], "checksum"),
        (TOKEN[:-1], "odd number"),
        (TOKEN.replace("-b8-", "-b9-"), "header says"),
        (TOKEN[:30] + ("0" if TOKEN[30] != "0" else "1") + TOKEN[31:], "checksum"),
    ],
)
def test_corrupt_tokens_get_a_clear_token_error(token: str, why: str) -> None:
    with pytest.raises(TokenError, match=why):
        decode_resume_token(token)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_garbage_tokens_raise_token_error_only(text: str) -> None:
    with contextlib.suppress(TokenError):
        decode_resume_token(text)
