"""Messages survive the trip through msgpack and JSON, and bad messages get clear MessageErrors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import MessageError
from protocol.messages import (
    StepEvent,
    StepState,
    decode,
    encode,
    from_dict,
    kind_of,
    message,
    to_dict,
)
from protocol.zfs import InventoryReport, ObjType, ReceiveSpec, SendSpec, ZfsObject

GUID_MAX = 2**64 - 1


@message("test.progress", version=1)
@dataclass(frozen=True)
class ProgressEvent:
    """A small flat test message (the shape of a transfer's progress)."""

    job_id: str
    step_id: str
    transfer_id: str
    bytes_done: int
    bytes_total: int | None
    target: str


@message("test.blob", version=1)
@dataclass(frozen=True)
class Blob:
    """A test message exercising the less common field types."""

    digest: bytes
    pair: tuple[int, str]
    tags: list[str] = field(default_factory=list)
    score: float = 0.0


@message("test.blob", version=2)
@dataclass(frozen=True)
class BlobV2:
    digest: bytes
    size: int


def _inventory() -> InventoryReport:
    return InventoryReport(
        host="alpha",
        taken_at=1_764_300_000.5,
        objects=(
            ZfsObject("tank/a", ObjType.FILESYSTEM, GUID_MAX, 10, 1_764_000_000),
            ZfsObject(
                "tank/a@s 1",
                ObjType.SNAPSHOT,
                12_345_678_901_234_567_890,
                11,
                1_764_000_001,
                user_props={"zfleet:job": "j1"},
            ),
        ),
        root="tank",
    )


def test_every_first_message_round_trips_through_msgpack_and_json() -> None:
    msgs: list[object] = [
        StepEvent(
            "j1",
            "s1",
            2,
            "alpha",
            StepState.FAILED,
            error_type="DestinationModified",
            error_message="cannot receive",
            retryable=False,
            result={"guid": GUID_MAX, "ok": True, "name": "tank/a@s1", "none": None},
        ),
        ProgressEvent("j1", "s1", "t1", 1 << 40, None, "beta"),
        _inventory(),
        SendSpec("tank/a@s2", from_snap="tank/a#b1", raw=True),
        ReceiveSpec("tank/b", set_props={"readonly": "on"}, exclude_props=("mountpoint",)),
        Blob(b"\x00\xff" * 8, (GUID_MAX, "x"), ["a"], 1.5),
    ]
    for msg in msgs:
        assert decode(encode(msg)) == msg
        # What Celery's JSON serializer would do to the plain dict.
        assert from_dict(json.loads(json.dumps(to_dict(msg)))) == msg


def test_guids_keep_all_64_bits() -> None:
    report = decode(encode(_inventory()), expect=InventoryReport)
    assert report.objects[0].guid == GUID_MAX
    assert isinstance(report.objects, tuple)
    assert report.objects[1].type is ObjType.SNAPSHOT


def test_wire_shape_is_a_flat_map_with_kind_and_version() -> None:
    raw = msgpack.unpackb(encode(ProgressEvent("j", "s", "t", 5, 10, "beta")))
    assert raw["kind"] == "test.progress"
    assert raw["v"] == 1
    assert raw["bytes_done"] == 5


def test_unknown_kind_is_named() -> None:
    data = msgpack.packb({"kind": "nope.event", "v": 1})
    with pytest.raises(MessageError, match=r"unknown message kind 'nope.event'"):
        decode(data)


def test_unknown_version_lists_known_versions() -> None:
    data = msgpack.packb({"kind": "step.event", "v": 9, "job_id": "j"})
    with pytest.raises(MessageError, match=r"'step.event' has unknown version 9 \(known: 1\)"):
        decode(data)


def test_missing_required_field_is_named() -> None:
    plain = to_dict(ProgressEvent("j", "s", "t", 5, 10, "beta"))
    del plain["target"]
    with pytest.raises(MessageError, match=r"'test.progress': missing field 'target'"):
        from_dict(plain)


def test_missing_nested_field_names_its_path() -> None:
    plain = to_dict(_inventory())
    del plain["objects"][1]["guid"]
    with pytest.raises(MessageError, match=r"missing field 'objects\[1\]\.guid'"):
        from_dict(plain)


def test_missing_optional_field_takes_its_default() -> None:
    plain = to_dict(StepEvent("j", "s", 1, "h", StepState.STARTED))
    for key in ("error_type", "retryable", "result", "at"):
        del plain[key]
    event = from_dict(plain, expect=StepEvent)
    assert event.retryable is False
    assert event.result == {}


def test_unknown_extra_fields_are_ignored_for_forward_compatibility() -> None:
    plain = to_dict(ProgressEvent("j", "s", "t", 5, 10, "beta"))
    plain["added_in_a_later_release"] = [1, 2, 3]
    assert from_dict(plain) == ProgressEvent("j", "s", "t", 5, 10, "beta")


@pytest.mark.parametrize(
    ("field_name", "value", "message"),
    [
        ("attempt", "2", "field 'attempt' must be an int, not str"),
        ("attempt", True, "field 'attempt' must be an int, not bool"),
        ("retryable", 1, "field 'retryable' must be a bool"),
        ("state", "exploded", "field 'state' must be one of 'started'"),
        ("result", {"k": [1]}, r"field 'result\['k'\]' must be str \| int \| bool \| null"),
        ("attempt", 2**64, "field 'attempt' is out of range"),
    ],
)
def test_wrong_types_are_named(field_name: str, value: object, message: str) -> None:
    plain = to_dict(StepEvent("j", "s", 1, "h", StepState.STARTED))
    plain[field_name] = value
    with pytest.raises(MessageError, match=message):
        from_dict(plain)


def test_encode_refuses_a_message_with_a_wrong_type() -> None:
    bad = ProgressEvent("j", "s", "t", "five", 10, "beta")  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="field 'bytes_done' must be an int"):
        encode(bad)


def test_expect_refuses_another_kind() -> None:
    data = encode(ProgressEvent("j", "s", "t", 5, 10, "beta"))
    with pytest.raises(MessageError, match=r"expected message 'step.event'"):
        decode(data, expect=StepEvent)


def test_two_versions_of_one_kind_decode_to_their_own_classes() -> None:
    assert kind_of(BlobV2) == ("test.blob", 2)
    assert decode(encode(BlobV2(b"d", 3))) == BlobV2(b"d", 3)
    assert isinstance(decode(encode(Blob(b"d", (1, "a")))), Blob)


def test_bad_base64_in_a_bytes_field_is_named() -> None:
    plain = to_dict(BlobV2(b"d", 3))
    plain["digest"] = "not base64!"
    with pytest.raises(MessageError, match="field 'digest' is not valid base64"):
        from_dict(plain)


def test_registration_refuses_mutable_or_reserved() -> None:
    with pytest.raises(TypeError, match="frozen dataclass"):

        @message("test.mutable")
        @dataclass
        class Mutable:
            x: int

    with pytest.raises(TypeError, match="fields typed Any cannot be checked"):

        @message("test.untyped")
        @dataclass(frozen=True)
        class Untyped:
            x: Any

    with pytest.raises(TypeError, match="reserved"):

        @message("test.reserved")
        @dataclass(frozen=True)
        class Reserved:
            kind: str


def test_zfs_values_are_messages_and_specs_refuse_unknown_options() -> None:
    obj = ZfsObject("tank/a@s1", ObjType.SNAPSHOT, GUID_MAX, 5, 100, user_props={"zfleet:x": "1"})
    assert decode(encode(obj), ZfsObject) == obj
    send = SendSpec("tank/a@s2", from_snap="@s1", intermediates=True, compressed=True)
    assert from_dict(to_dict(send), SendSpec) == send
    recv = ReceiveSpec("tank/b", force=True, set_props={"a": "b"}, exclude_props=("x",))
    assert from_dict(to_dict(recv), ReceiveSpec) == recv
    # unlike ordinary messages, a spec refuses what it does not know instead of dropping it
    with pytest.raises(MessageError, match="'dedup'"):
        from_dict({**to_dict(send), "dedup": True}, SendSpec)
    with pytest.raises(MessageError, match="'heal'"):
        from_dict({**to_dict(recv), "heal": True}, ReceiveSpec)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x92\x01\x02", msgpack.packb({1: 2}), b"\xdd\xff\xff\xff\xff", b"\x81"],
)
def test_garbage_is_a_message_error(data: bytes) -> None:
    with pytest.raises(MessageError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_message_error(data: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode(data)


plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=12), plain_values, max_size=8),
    st.sampled_from(
        ["step.event", "test.progress", "inventory.report", "zfs.receive_spec", "test.blob"]
    ),
)
def test_random_fields_never_raise_anything_but_message_error(
    fields: dict[str, object], kind: str
) -> None:
    payload = {**fields, "kind": kind, "v": 1}
    with contextlib.suppress(MessageError):
        decode(msgpack.packb(payload, use_bin_type=True))


def test_mapping_field_values_are_plain_dicts() -> None:
    event = decode(encode(StepEvent("j", "s", 1, "h", StepState.SUCCEEDED, result={"a": 1})))
    assert isinstance(event, StepEvent)
    assert isinstance(event.result, Mapping)
    assert event.result["a"] == 1


guids = st.integers(0, GUID_MAX)
short_text = st.text(max_size=20)
records = st.builds(
    ZfsObject,
    name=short_text,
    type=st.sampled_from(ObjType),
    guid=guids,
    createtxg=guids,
    creation=st.integers(0, 2**40),
    origin=st.none() | short_text,
    used=guids,
    receive_resume_token=st.none() | short_text,
    user_props=st.dictionaries(short_text, short_text, max_size=3),
)


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        InventoryReport,
        host=short_text,
        taken_at=st.floats(allow_nan=False, allow_infinity=False),
        objects=st.lists(records, max_size=5).map(tuple),
        root=st.none() | short_text,
    ),
    st.builds(
        StepEvent,
        job_id=short_text,
        step_id=short_text,
        attempt=st.integers(0, 1000),
        host=short_text,
        state=st.sampled_from(StepState),
        error_message=st.none() | st.text(),
        retryable=st.booleans(),
        result=st.dictionaries(
            short_text, st.none() | st.booleans() | guids | st.integers(-(2**63), 0) | short_text
        ),
    ),
)
def test_any_valid_message_round_trips(report: InventoryReport, event: StepEvent) -> None:
    for msg in (report, event):
        assert decode(encode(msg)) == msg
        assert from_dict(json.loads(json.dumps(to_dict(msg)))) == msg


def test_optional_nested_errors_keep_their_path_and_long_values_are_cut() -> None:
    plain = to_dict(_inventory())
    plain["objects"][0]["origin"] = 5
    with pytest.raises(MessageError, match=r"'objects\[0\]\.origin' must be str \| null, not int"):
        from_dict(plain)
    plain = to_dict(StepEvent("j", "s", 1, "h", StepState.STARTED))
    plain["state"] = "x" * 10_000
    with pytest.raises(MessageError) as caught:
        from_dict(plain)
    assert len(str(caught.value)) < 300
