"""Conformance scenarios for mistakes the simulation once let through, and for mounts.

Each was a divergence found by comparing the simulation with OpenZFS 2.3.2 (issue 18): a full
stream onto an existing dataset was accepted, ``send -i`` from a snapshot to itself succeeded.
Run on every backend, and in the lab on real OpenZFS, they keep the two in agreement.
"""

from __future__ import annotations

import pytest

from protocol.errors import DatasetExists, DestinationHasSnapshots, ZfleetError
from tests.conformance.target import Subject, transfer
from workers.zfs.base import ReceiveSpec, SendSpec


def _source(t: Subject) -> str:
    src = t.ds("src")
    t.backend.create(src)
    t.files.write(src, "f.txt", b"source\n")
    t.backend.snapshot([f"{src}@s1"])
    return src


def full_stream_onto_existing_refused(t: Subject) -> None:
    """Without -F a full stream never lands on an existing dataset, not even its own."""
    src, dst = _source(t), t.ds("dst")
    t.backend.create(dst)
    t.files.write(dst, "mine.txt", b"target's own\n")
    before = t.names(t.root)
    for target in (dst, src):
        with pytest.raises(DatasetExists):
            transfer(t.backend, SendSpec(f"{src}@s1"), t.backend, ReceiveSpec(target))
    assert t.names(t.root) == before
    assert t.files.read(dst, "mine.txt") == b"target's own\n"


def forced_full_stream_needs_no_snapshots(t: Subject) -> None:
    """-F replaces a dataset without snapshots; one with snapshots is refused, untouched."""
    src, dst, kept = _source(t), t.ds("dst"), t.ds("kept")
    t.backend.create(dst)
    t.files.write(dst, "lost.txt", b"overwritten\n")
    transfer(t.backend, SendSpec(f"{src}@s1"), t.backend, ReceiveSpec(dst, force=True))
    assert t.files.read(dst, "f.txt") == b"source\n"
    assert t.obj(f"{dst}@s1").guid == t.obj(f"{src}@s1").guid
    t.backend.create(kept)
    t.backend.snapshot([f"{kept}@old"])
    with pytest.raises(DestinationHasSnapshots):
        transfer(t.backend, SendSpec(f"{src}@s1"), t.backend, ReceiveSpec(kept, force=True))
    assert t.names(kept) == {kept, f"{kept}@old"}


def send_from_itself_refused(t: Subject) -> None:
    """``send -i @s1 fs@s1`` and a source newer than the snapshot are refused."""
    src = _source(t)
    t.backend.snapshot([f"{src}@s2"])
    for source, snapshot in (("@s1", f"{src}@s1"), (f"{src}@s2", f"{src}@s1")):
        with pytest.raises(ZfleetError) as info:
            t.backend.estimate(SendSpec(snapshot, from_snap=source))
        assert "not an earlier snapshot" in str(info.value)
    assert t.backend.estimate(SendSpec(f"{src}@s2", from_snap="@s1")) > 0


def unmount_and_mount_keep_the_files(t: Subject) -> None:
    """An unmounted filesystem is listed as such and its files come back when mounted."""
    src = _source(t)

    def mounted() -> str:
        return t.backend.get(src, ["mounted"])["mounted"].value

    assert mounted() == "yes"
    assert src in {name for name, _ in t.backend.mounted()}
    t.backend.unmount(src)
    assert mounted() == "no"
    assert src not in {name for name, _ in t.backend.mounted()}
    with pytest.raises(ZfleetError):
        t.backend.unmount(src)
    t.backend.mount(src)
    assert mounted() == "yes"
    assert t.files.read(src, "f.txt") == b"source\n"
    with pytest.raises(ZfleetError):
        t.backend.mount(src)
