"""Host-side role changes on the simulated backend: promote, demote, fence, keep divergence."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from protocol.errors import DatasetNotFound, InvalidOperation, NoCommonSnapshot
from tests.unit.sim_helpers import mnt, new_sim, send_bytes
from workers.roles import (
    DivergenceReport,
    demote_readonly,
    fence,
    keep_diverged,
    preserve_divergence,
    promote_writable,
)
from workers.zfs.base import ObjType, ReceiveSpec, SendSpec, ZfsBackend
from workers.zfs.sim import SimBackend

_tmp = itertools.count()


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    return new_sim(tmp_path, ["src", "dst"], ["src/a"])


def prop(backend: ZfsBackend, name: str, key: str) -> str:
    return backend.get(name, [key])[key].value


def files(backend: SimBackend, snapshot: str) -> dict[str, str]:
    """The files of a snapshot, read through a temporary clone (the dataset may be unmounted)."""
    pool = snapshot.split("/", 1)[0]
    clone = f"{pool}/read{next(_tmp)}"
    backend.clone(snapshot, clone)
    try:
        root = mnt(backend, clone)
        return {
            str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()
        }
    finally:
        backend.destroy(clone)


def live(backend: SimBackend, name: str) -> dict[str, str]:
    root = mnt(backend, name)
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def replicate(sim: SimBackend, snap: str, target: str, from_snap: str | None = None) -> None:
    """Send ``snap`` into ``target`` the way a sync job does: unmounted, canmount=noauto."""
    spec = ReceiveSpec(target, no_mount=True, set_props={"canmount": "noauto", "readonly": "on"})
    sink = sim.receive(spec)
    sink.write(send_bytes(sim, SendSpec(snap, from_snap=from_snap)))
    sink.finish()


def test_promote_makes_an_unmounted_replica_writable_and_mounted(sim: SimBackend) -> None:
    (mnt(sim, "src/a") / "f").write_text("one")
    sim.snapshot(["src/a@s1"])
    replicate(sim, "src/a@s1", "dst/a")
    (mnt(sim, "src/a") / "f").write_text("two")
    sim.snapshot(["src/a@s2"])
    # an incremental cut short: resumable state stays on the replica
    stream = send_bytes(sim, SendSpec("src/a@s2", from_snap="src/a@s1"))
    sink = sim.receive(ReceiveSpec("dst/a", no_mount=True))
    sink.write(stream[: len(stream) // 2])
    sink.abort()
    assert sim.list("dst/a", recursive=False)[0].receive_resume_token
    assert prop(sim, "dst/a", "mounted") == "no"

    (report,) = promote_writable(sim, ["dst/a"])

    assert report.aborted_receive and report.made_writable and report.mounted
    assert not report.already_primary
    assert sim.list("dst/a", recursive=False)[0].receive_resume_token is None
    assert [prop(sim, "dst/a", k) for k in ("readonly", "canmount", "mounted", "zfleet:role")] == [
        "off", "on", "yes", "primary",
    ]  # fmt: skip
    assert live(sim, "dst/a") == {"f": "one"}


def test_promote_twice_keeps_what_users_wrote_in_between(sim: SimBackend) -> None:
    (mnt(sim, "src/a") / "f").write_text("one")
    sim.snapshot(["src/a@s1"])
    replicate(sim, "src/a@s1", "dst/a")
    promote_writable(sim, ["dst/a"])
    (mnt(sim, "dst/a") / "new").write_text("written after failover")

    (again,) = promote_writable(sim, ["dst/a"])

    assert again.already_primary
    assert (again.aborted_receive, again.rolled_back_to, again.made_writable, again.mounted) == (
        False, None, False, False,
    )  # fmt: skip
    assert live(sim, "dst/a") == {"f": "one", "new": "written after failover"}


def test_promote_rolls_a_touched_replica_back_to_its_newest_snapshot(sim: SimBackend) -> None:
    (mnt(sim, "src/a") / "f").write_text("one")
    sim.snapshot(["src/a@s1"])
    # received mounted and read-only, then touched by someone all the same
    sink = sim.receive(ReceiveSpec("dst/a", set_props={"readonly": "on"}))
    sink.write(send_bytes(sim, SendSpec("src/a@s1")))
    sink.finish()
    (mnt(sim, "dst/a") / "stray").write_text("not replicated")

    (report,) = promote_writable(sim, ["dst/a"])

    assert report.rolled_back_to == "dst/a@s1"
    assert live(sim, "dst/a") == {"f": "one"}


def test_promote_never_rolls_back_what_may_be_a_users_writes(sim: SimBackend) -> None:
    (mnt(sim, "src/a") / "f").write_text("one")
    sim.snapshot(["src/a@s1"])
    (mnt(sim, "src/a") / "draft").write_text("a user's unsnapshotted work")

    (report,) = promote_writable(sim, ["src/a"])  # mounted, writable, not marked a replica

    assert report.rolled_back_to is None
    assert live(sim, "src/a") == {"f": "one", "draft": "a user's unsnapshotted work"}


def test_promote_refuses_before_changing_anything_when_a_dataset_is_missing(
    sim: SimBackend,
) -> None:
    sim.snapshot(["src/a@s1"])
    replicate(sim, "src/a@s1", "dst/a")
    with pytest.raises(DatasetNotFound, match="dst/nope"):
        promote_writable(sim, ["dst/a", "dst/nope"])
    assert prop(sim, "dst/a", "readonly") == "on"
    assert prop(sim, "dst/a", "mounted") == "no"


def test_promote_mounts_parents_before_children(sim: SimBackend) -> None:
    sim.create("src/a/c")
    (mnt(sim, "src/a/c") / "inner").write_text("child")
    sim.snapshot(["src/a@s1", "src/a/c@s1"])
    replicate(sim, "src/a@s1", "dst/a")
    replicate(sim, "src/a/c@s1", "dst/a/c")

    reports = promote_writable(sim, ["dst/a/c", "dst/a"])

    assert [r.dataset for r in reports] == ["dst/a", "dst/a/c"]
    assert (mnt(sim, "dst/a") / "c" / "inner").read_text() == "child"


def test_demote_makes_read_only_and_unmounts_children_first(sim: SimBackend) -> None:
    sim.create("src/a/c")
    reports = demote_readonly(sim, ["src/a", "src/a/c"], unmount=True)

    assert [(r.dataset, r.made_readonly, r.unmounted) for r in reports] == [
        ("src/a", True, True), ("src/a/c", True, True),
    ]  # fmt: skip
    for name in ("src/a", "src/a/c"):
        got = sim.get(name, ["readonly", "canmount", "mounted", "zfleet:role"])
        assert {k: v.value for k, v in got.items()} == {
            "readonly": "on", "canmount": "noauto", "mounted": "no", "zfleet:role": "replica",
        }  # fmt: skip
        assert got["readonly"].source == "local"
    again = demote_readonly(sim, ["src/a", "src/a/c"], unmount=True)
    assert not any(r.made_readonly or r.unmounted for r in again)


def test_demote_unmounts_a_whole_tree_and_promote_mounts_it_back(sim: SimBackend) -> None:
    sim.create("src/a/c")
    (mnt(sim, "src/a") / "f").write_text("kept")
    (mnt(sim, "src/a/c") / "g").write_text("child")
    demote_readonly(sim, ["src/a", "src/a/c"], unmount=True)
    assert [name for name, _ in sim.mounted()] == ["dst", "src"]
    with pytest.raises(InvalidOperation, match="cannot unmount 'src/a': not currently mounted"):
        sim.unmount("src/a")
    promote_writable(sim, ["src/a", "src/a/c"])
    assert live(sim, "src/a") == {"f": "kept", "c/g": "child"}


def test_fence_sets_readonly_on_what_exists_and_reports_the_rest(sim: SimBackend) -> None:
    sim.create("src/a/c")
    sim.set("src/a", {"readonly": "on"})  # inherited by the child, not local there
    reports = fence(sim, ["src/a/c", "src/gone", "src/a"])

    assert [(r.dataset, r.present, r.made_readonly) for r in reports] == [
        ("src/a", True, False), ("src/gone", False, False), ("src/a/c", True, True),
    ]  # fmt: skip
    assert sim.get("src/a/c", ["readonly"])["readonly"].source == "local"
    assert not any(r.made_readonly for r in fence(sim, ["src/a", "src/a/c"]))


# -- divergence -------------------------------------------------------------------------------


def diverged_old_primary(sim: SimBackend) -> None:
    """src/a replicated to dst/a up to s2; then src/a (the old primary) gained s3 and more."""
    sim.create("src/a/c")
    (mnt(sim, "src/a") / "f").write_text("one")
    (mnt(sim, "src/a/c") / "g").write_text("child")
    sim.snapshot(["src/a@s1", "src/a/c@s1"])
    sim.clone("src/a@s1", "src/app")  # a clone of an older snapshot must stay a clone
    (mnt(sim, "src/a") / "f").write_text("two")
    sim.snapshot(["src/a@s2"])
    replicate(sim, "src/a@s1", "dst/a")
    replicate(sim, "src/a@s2", "dst/a", from_snap="src/a@s1")
    (mnt(sim, "src/a") / "after").write_text("snapshotted after the failover")
    sim.snapshot(["src/a@s3"])
    (mnt(sim, "src/a") / "loose").write_text("never snapshotted")


def test_divergence_is_kept_aside_and_the_dataset_takes_incrementals(sim: SimBackend) -> None:
    diverged_old_primary(sim)
    guids = {o.short: o.guid for o in sim.list("src/a", recursive=False, types=[ObjType.SNAPSHOT])}

    report = preserve_divergence(sim, "src/a", "src/a@s2", "t1")

    assert report == DivergenceReport(
        "src/a", "s2", True, "src/a.diverged-t1@zfleet-diverged-t1", "src/a.diverged-t1",
        ("s3", "zfleet-diverged-t1"),
    )  # fmt: skip
    main = sim.list("src/a", recursive=False, types=[ObjType.SNAPSHOT])
    assert [(o.short, o.guid) for o in main] == [("s1", guids["s1"]), ("s2", guids["s2"])]
    aside = sim.list("src/a.diverged-t1", recursive=False)
    assert aside[0].origin == "src/a@s2"
    assert files(sim, "src/a.diverged-t1@zfleet-diverged-t1") == {
        "f": "two", "after": "snapshotted after the failover", "loose": "never snapshotted",
    }  # fmt: skip
    assert sim.list("src/app", recursive=False)[0].origin == "src/a@s1"
    assert sim.exists("src/a/c@s1") and not sim.exists("src/a.diverged-t1/c")
    assert prop(sim, "src/a", "readonly") == "on"

    # the new primary (dst/a) moves on; only its increment since s2 is needed
    promote_writable(sim, ["dst/a"])
    (mnt(sim, "dst/a") / "f").write_text("three")
    sim.snapshot(["dst/a@s4"])
    sink = sim.receive(ReceiveSpec("src/a", no_mount=True))
    sink.write(send_bytes(sim, SendSpec("dst/a@s4", from_snap="dst/a@s2")))
    sink.finish()
    assert files(sim, "src/a@s4") == {"f": "three"}


def test_preserve_divergence_twice_or_after_a_crash_ends_the_same(sim: SimBackend) -> None:
    diverged_old_primary(sim)
    sim.snapshot(["src/a@zfleet-diverged-t1"])
    sim.unmount("src/a/c")
    sim.unmount("src/a")
    sim.rename("src/a", "src/a.diverged-t1")  # the crash came right after the rename

    first = preserve_divergence(sim, "src/a", "s2", "t1")
    second = preserve_divergence(sim, "src/a", "s2", "t1")

    assert first == second
    assert first.kept_snapshots == ("s3", "zfleet-diverged-t1")
    assert [o.short for o in sim.list("src/a", recursive=False, types=[ObjType.SNAPSHOT])] == [
        "s1", "s2",
    ]  # fmt: skip
    assert sim.exists("src/a/c@s1")


def test_nothing_diverged_changes_nothing(sim: SimBackend) -> None:
    sim.snapshot(["src/a@s1"])
    report = preserve_divergence(sim, "src/a", "s1", "t1")
    assert not report.diverged and report.aside is None
    assert not sim.exists("src/a.diverged-t1") and not sim.exists("src/a@zfleet-diverged-t1")


def test_preserve_needs_the_common_snapshot(sim: SimBackend) -> None:
    sim.snapshot(["src/a@s1"])
    with pytest.raises(NoCommonSnapshot, match="src/a@s9 does not exist"):
        preserve_divergence(sim, "src/a", "s9", "t1")
    with pytest.raises(NoCommonSnapshot, match="not a snapshot of"):
        preserve_divergence(sim, "src/a", "dst/a@s1", "t1")
    assert [o.name for o in sim.list("src")] == ["src", "src/a", "src/a@s1"]


def test_keep_diverged_makes_the_diverged_side_the_main_line(sim: SimBackend) -> None:
    diverged_old_primary(sim)
    preserve_divergence(sim, "src/a", "s2", "t1")
    sim.snapshot(["dst/a@s4"])
    sink = sim.receive(ReceiveSpec("src/a", no_mount=True))
    sink.write(send_bytes(sim, SendSpec("dst/a@s4", from_snap="dst/a@s2")))
    sink.finish()

    report = keep_diverged(sim, "src/a", "t1")
    again = keep_diverged(sim, "src/a", "t1")

    assert report == again
    assert (report.aside, report.common, report.kept_snapshots) == (
        "src/a.replaced-t1", "s2", ("s4",),
    )  # fmt: skip
    shorts = [o.short for o in sim.list("src/a", recursive=False, types=[ObjType.SNAPSHOT])]
    assert shorts == ["s1", "s2", "s3", "zfleet-diverged-t1"]
    assert sim.list("src/a", recursive=False)[0].origin is None
    assert sim.list("src/a.replaced-t1", recursive=False)[0].origin == "src/a@s2"
    assert sim.list("src/app", recursive=False)[0].origin == "src/a@s1"
    assert sim.exists("src/a/c@s1") and not sim.exists("src/a.replaced-t1/c")
    assert not sim.exists("src/a.diverged-t1")


def test_a_clone_keeps_its_origin_and_a_volume_is_kept_aside_too(sim: SimBackend) -> None:
    sim.create("src/base")
    (mnt(sim, "src/base") / "os").write_text("base image")
    sim.snapshot(["src/base@b1"])
    sim.clone("src/base@b1", "src/img")
    (mnt(sim, "src/img") / "app").write_text("v1")
    sim.snapshot(["src/img@s1"])
    (mnt(sim, "src/img") / "app").write_text("v2, diverged")
    sim.create("src/vol", volsize=1 << 20)
    sim.snapshot(["src/vol@s1"])
    sim.snapshot(["src/vol@s2"])

    img = preserve_divergence(sim, "src/img", "s1", "t1")
    vol = preserve_divergence(sim, "src/vol", "s1", "t1")

    assert sim.list("src/img", recursive=False)[0].origin == "src/base@b1"
    assert sim.list("src/img.diverged-t1", recursive=False)[0].origin == "src/img@s1"
    assert files(sim, "src/img@s1") == {"os": "base image", "app": "v1"}
    assert files(sim, img.snapshot or "") == {"os": "base image", "app": "v2, diverged"}
    assert vol.kept_snapshots == ("s2", "zfleet-diverged-t1")
    assert sim.get("src/vol", ["type"])["type"].value == "volume"
    assert [o.short for o in sim.list("src/vol", recursive=False, types=[ObjType.SNAPSHOT])] == [
        "s1"
    ]
