"""Conformance scenarios about streams: send and receive as OpenZFS does them."""

from __future__ import annotations

import os

import pytest

from protocol.errors import (
    DestinationModified,
    NoCommonSnapshot,
    StreamIncomplete,
    ZfleetError,
)
from tests.conformance.target import Subject, transfer
from workers.zfs.base import ObjType, ReceiveSpec, SendSpec

PAYLOAD = 256 * 1024


def _source(t: Subject, name: str = "src") -> str:
    src = t.ds(name)
    t.backend.create(src)
    return src


def full_send(t: Subject) -> None:
    """A full stream recreates the snapshot elsewhere: same bytes, same guid."""
    src, dst = _source(t), t.ds("dst")
    data = os.urandom(PAYLOAD)
    t.files.write(src, "data/blob.bin", data)
    t.backend.snapshot([f"{src}@s1"])
    estimate = t.backend.estimate(SendSpec(f"{src}@s1"))
    result = transfer(t.backend, SendSpec(f"{src}@s1"), t.backend, ReceiveSpec(dst))
    assert t.files.read(dst, "data/blob.bin") == data
    assert t.obj(f"{dst}@s1").guid == t.obj(f"{src}@s1").guid
    # -nP is an estimate, but it must be the right order of magnitude
    assert result.bytes_received / 2 <= estimate <= result.bytes_received * 2


def incremental_send(t: Subject) -> None:
    """``-i``: only the change travels, and the target ends up at the new snapshot."""
    src, dst = _source(t), t.ds("dst")
    t.files.write(src, "a.txt", b"first\n")
    t.files.write(src, "big.bin", os.urandom(PAYLOAD))
    t.backend.snapshot([f"{src}@s1"])
    transfer(t.backend, SendSpec(f"{src}@s1"), t.backend, ReceiveSpec(dst))
    t.files.write(src, "a.txt", b"second\n")
    t.backend.snapshot([f"{src}@s2"])
    incr = SendSpec(f"{src}@s2", from_snap=f"{src}@s1")
    full_size = t.backend.estimate(SendSpec(f"{src}@s2"))
    assert t.backend.estimate(incr) < full_size / 2
    transfer(t.backend, incr, t.backend, ReceiveSpec(dst))
    assert t.files.read(dst, "a.txt") == b"second\n"
    assert t.obj(f"{dst}@s2").guid == t.obj(f"{src}@s2").guid


def intermediate_send(t: Subject) -> None:
    """``-I``: every snapshot between the two arrives, each with its own guid."""
    src, dst = _source(t), t.ds("dst")
    for n in (1, 2, 3):
        t.files.write(src, "n.txt", f"{n}\n".encode())
        t.backend.snapshot([f"{src}@s{n}"])
    transfer(t.backend, SendSpec(f"{src}@s1"), t.backend, ReceiveSpec(dst))
    spec = SendSpec(f"{src}@s3", from_snap=f"{src}@s1", intermediates=True)
    transfer(t.backend, spec, t.backend, ReceiveSpec(dst))
    for n in (2, 3):
        assert t.obj(f"{dst}@s{n}").guid == t.obj(f"{src}@s{n}").guid
    assert t.files.read(dst, "n.txt") == b"3\n"


def clone_arrives_as_clone(t: Subject) -> None:
    """A clone sent incrementally from its origin is received as a clone of the copy."""
    base, app = _source(t, "base"), t.ds("app")
    t.files.write(base, "shared.bin", os.urandom(PAYLOAD))
    t.backend.snapshot([f"{base}@s1"])
    t.backend.clone(f"{base}@s1", app)
    t.files.write(app, "app.txt", b"app data\n")
    t.backend.snapshot([f"{app}@a1"])
    t.backend.create(t.ds("copy"))
    copy_base, copy_app = t.ds("copy/base"), t.ds("copy/app")
    transfer(t.backend, SendSpec(f"{base}@s1"), t.backend, ReceiveSpec(copy_base))
    spec = SendSpec(f"{app}@a1", from_snap=f"{base}@s1")
    transfer(t.backend, spec, t.backend, ReceiveSpec(copy_app, origin=f"{copy_base}@s1"))
    assert t.obj(copy_app).origin == f"{copy_base}@s1"
    assert t.files.read(copy_app, "app.txt") == b"app data\n"
    assert t.files.read(copy_app, "shared.bin") == t.files.read(base, "shared.bin")


def resume_after_truncated_receive(t: Subject) -> None:
    """A cut receive with ``-s`` leaves a token; ``send -t`` finishes it with full content."""
    src, dst = _source(t), t.ds("dst")
    data = os.urandom(4 * PAYLOAD)
    t.files.write(src, "blob.bin", data)
    t.backend.snapshot([f"{src}@s1"])
    size = t.backend.estimate(SendSpec(f"{src}@s1"))
    with pytest.raises(StreamIncomplete) as cut:
        transfer(
            t.backend,
            SendSpec(f"{src}@s1"),
            t.backend,
            ReceiveSpec(dst, resumable=True),
            cut_at=size // 2,
        )
    listed = t.obj(dst).receive_resume_token
    assert listed is not None
    assert cut.value.token in (None, listed)
    resume = SendSpec(f"{src}@s1", resume_token=listed)
    transfer(t.backend, resume, t.backend, ReceiveSpec(dst, resumable=True))
    assert t.files.read(dst, "blob.bin") == data
    assert t.obj(f"{dst}@s1").guid == t.obj(f"{src}@s1").guid
    assert t.obj(dst).receive_resume_token is None


def divergence_detected_and_forced(t: Subject) -> None:
    """A target changed since its snapshot refuses an incremental; ``-F`` rolls it back."""
    src, dst = _source(t), t.ds("dst")
    t.files.write(src, "f.txt", b"one\n")
    t.backend.snapshot([f"{src}@s1"])
    transfer(t.backend, SendSpec(f"{src}@s1"), t.backend, ReceiveSpec(dst))
    t.files.write(dst, "local-change.txt", b"written on the target\n")
    t.files.write(src, "f.txt", b"two\n")
    t.backend.snapshot([f"{src}@s2"])
    incr = SendSpec(f"{src}@s2", from_snap=f"{src}@s1")
    with pytest.raises(DestinationModified):
        transfer(t.backend, incr, t.backend, ReceiveSpec(dst))
    assert f"{dst}@s2" not in t.names(dst)
    transfer(t.backend, incr, t.backend, ReceiveSpec(dst, force=True))
    assert t.files.read(dst, "f.txt") == b"two\n"
    assert t.obj(f"{dst}@s2").guid == t.obj(f"{src}@s2").guid


def _replicated_once(t: Subject) -> tuple[str, str, SendSpec]:
    """src@s1 copied to dst, then src@s2 taken: the incremental the next scenarios try."""
    src, dst = _source(t), t.ds("dst")
    t.files.write(src, "f.txt", b"one\n")
    t.backend.snapshot([f"{src}@s1"])
    transfer(t.backend, SendSpec(f"{src}@s1"), t.backend, ReceiveSpec(dst))
    t.files.write(src, "f.txt", b"two\n")
    t.backend.snapshot([f"{src}@s2"])
    return src, dst, SendSpec(f"{src}@s2", from_snap=f"{src}@s1")


def diverged_target_snapshot_forced(t: Subject) -> None:
    """Subject changes kept in a snapshot of its own: refused as modified; ``-F`` destroys it.

    OpenZFS finds the incremental source anywhere in the target's history and refuses only
    because the target changed since then (dmu_recv's ETXTBSY, "has been modified").
    """
    _, dst, incr = _replicated_once(t)
    t.files.write(dst, "local-change.txt", b"written on the target\n")
    t.backend.snapshot([f"{dst}@local"])
    with pytest.raises(DestinationModified):
        transfer(t.backend, incr, t.backend, ReceiveSpec(dst))
    transfer(t.backend, incr, t.backend, ReceiveSpec(dst, force=True))
    names = t.names(dst)
    assert f"{dst}@local" not in names
    assert f"{dst}@s2" in names
    assert t.files.read(dst, "f.txt") == b"two\n"


def noop_target_snapshot_accepted(t: Subject) -> None:
    """A snapshot taken on the target without changes does not block the next incremental."""
    src, dst, incr = _replicated_once(t)
    t.backend.snapshot([f"{dst}@local"])
    transfer(t.backend, incr, t.backend, ReceiveSpec(dst))
    assert {f"{dst}@s1", f"{dst}@local", f"{dst}@s2"} <= t.names(dst)
    assert t.obj(f"{dst}@s2").guid == t.obj(f"{src}@s2").guid
    assert t.files.read(dst, "f.txt") == b"two\n"


def incremental_source_missing_on_target(t: Subject) -> None:
    """An incremental whose source snapshot the target never had is refused, target intact."""
    src, dst, _ = _replicated_once(t)
    t.files.write(src, "f.txt", b"three\n")
    t.backend.snapshot([f"{src}@s3"])
    before = t.names(dst)
    skip_s2 = SendSpec(f"{src}@s3", from_snap=f"{src}@s2")
    with pytest.raises(NoCommonSnapshot):
        transfer(t.backend, skip_s2, t.backend, ReceiveSpec(dst))
    assert t.names(dst) == before
    assert t.files.read(dst, "f.txt") == b"one\n"


def bookmark_as_incremental_source(t: Subject) -> None:
    """An incremental from a bookmark works after the snapshot itself is gone."""
    src, dst = _source(t), t.ds("dst")
    t.files.write(src, "f.txt", b"one\n")
    t.backend.snapshot([f"{src}@s1"])
    t.backend.bookmark(f"{src}@s1", f"{src}#b1")
    transfer(t.backend, SendSpec(f"{src}@s1"), t.backend, ReceiveSpec(dst))
    t.backend.destroy(f"{src}@s1")
    bookmark = t.obj(f"{src}#b1")
    assert bookmark.type is ObjType.BOOKMARK
    assert bookmark.guid == t.obj(f"{dst}@s1").guid
    t.files.write(src, "f.txt", b"two\n")
    t.backend.snapshot([f"{src}@s2"])
    spec = SendSpec(f"{src}@s2", from_snap=f"{src}#b1")
    transfer(t.backend, spec, t.backend, ReceiveSpec(dst))
    assert t.files.read(dst, "f.txt") == b"two\n"


def raw_encrypted_send(t: Subject) -> None:
    """``-w`` carries an encrypted dataset as ciphertext: it arrives locked until load-key."""
    passphrase = b"correct horse battery staple\n"
    keyfile = t.files.scratch("conformance.key", passphrase)
    src, dst = t.ds("secret"), t.ds("dst")
    t.backend.create(
        src,
        props={
            "encryption": "on",
            "keyformat": "passphrase",
            "keylocation": f"file://{keyfile}",
        },
    )
    t.files.write(src, "s.txt", b"top secret\n")
    t.backend.snapshot([f"{src}@e1"])
    source_encryption = t.obj(src).encryption
    assert source_encryption not in (None, "off")
    transfer(t.backend, SendSpec(f"{src}@e1", raw=True), t.backend, ReceiveSpec(dst))
    received = t.obj(dst)
    assert received.encryption == source_encryption
    assert received.keystatus == "unavailable"
    with pytest.raises(ZfleetError):
        t.backend.load_key(dst, key=b"the wrong passphrase\n")
    assert t.obj(dst).keystatus == "unavailable"
    t.backend.load_key(dst, key=passphrase)
    assert t.obj(dst).keystatus == "available"
    assert t.obj(f"{dst}@e1").guid == t.obj(f"{src}@e1").guid
