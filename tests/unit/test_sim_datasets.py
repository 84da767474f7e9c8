"""The simulated backend's dataset lifecycle keeps OpenZFS's rules and messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol.errors import (
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    DestinationHasSnapshots,
    HasDependentClones,
    InvalidOperation,
    NameError_,
)
from tests.conftest import ZFS_STREAMS
from tests.unit.sim_helpers import mnt, new_sim
from workers.zfs.base import ObjType
from workers.zfs.sim import SimBackend


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    return new_sim(tmp_path, ["fx"], ["fx/base"])


def fixture_error(title: str) -> str:
    """The message OpenZFS printed for one scenario of cli-errors.txt."""
    text = (ZFS_STREAMS / "cli-errors.txt").read_text()
    block = text.split(f"## {title}\n", 1)[1]
    return block.split("\nexit=", 1)[0]


def test_mountpoint_is_a_real_directory_that_programs_write(sim: SimBackend) -> None:
    path = mnt(sim, "fx/base")
    (path / "a.txt").write_text("data")
    sim.snapshot(["fx/base@s1"])
    (path / "a.txt").write_text("changed")
    sim.rollback("fx/base@s1")
    assert (path / "a.txt").read_text() == "data"


def test_list_is_sorted_like_zfs_list(sim: SimBackend) -> None:
    sim.create("fx/a-b")
    sim.create("fx/base/child")
    sim.snapshot(["fx/base@s1"])
    sim.snapshot(["fx/base@s0"])
    names = [o.name for o in sim.list("fx")]
    assert names == ["fx", "fx/a-b", "fx/base", "fx/base@s1", "fx/base@s0", "fx/base/child"]
    assert [o.name for o in sim.list("fx/base", recursive=False)] == ["fx/base"]
    snaps = sim.list("fx/base", recursive=False, types=[ObjType.SNAPSHOT])
    assert [o.short for o in snaps] == ["s1", "s0"]


def test_snapshots_of_several_datasets_share_one_txg(sim: SimBackend) -> None:
    sim.create("fx/other")
    sim.snapshot(["fx/base@t", "fx/other@t"])
    txgs = {o.createtxg for o in sim.list("fx", types=[ObjType.SNAPSHOT])}
    assert len(txgs) == 1
    with pytest.raises(DatasetExists, match="cannot create snapshot 'fx/base@t'"):
        sim.snapshot(["fx/other@u", "fx/base@t"])
    assert not sim.exists("fx/other@u"), "a refused multi-snapshot must create none"


def test_recursive_snapshot_covers_descendants(sim: SimBackend) -> None:
    sim.create("fx/base/a/b", parents=True)
    sim.snapshot(["fx/base@r"], recursive=True)
    assert {o.name for o in sim.list("fx", types=[ObjType.SNAPSHOT])} == {
        "fx/base@r",
        "fx/base/a@r",
        "fx/base/a/b@r",
    }


def test_promote_moves_older_snapshots_as_openzfs_does(sim: SimBackend) -> None:
    for name in ("s1", "s2", "s3"):
        (mnt(sim, "fx/base") / name).write_text(name)
        sim.snapshot([f"fx/base@{name}"])
    sim.clone("fx/base@s2", "fx/app")
    assert sim.get("fx/app", ["origin"])["origin"].value == "fx/base@s2"
    sim.promote("fx/app")
    # As in cli-errors.txt's "promote": fx/app has no origin, fx/base's is fx/app@s2.
    rows = {o.name: o.origin for o in sim.list("fx", types=[ObjType.FILESYSTEM])}
    assert rows["fx/app"] is None
    assert rows["fx/base"] == "fx/app@s2"
    assert [o.short for o in sim.list("fx/app", recursive=False, types=[ObjType.SNAPSHOT])] == [
        "s1",
        "s2",
    ]
    assert [o.short for o in sim.list("fx/base", recursive=False, types=[ObjType.SNAPSHOT])] == [
        "s3"
    ]
    assert (mnt(sim, "fx/base") / "s3").exists()
    assert not (mnt(sim, "fx/app") / "s3").exists()
    with pytest.raises(InvalidOperation, match="not a cloned filesystem"):
        sim.promote("fx/app")


def test_destroy_refuses_snapshot_with_clones_in_openzfs_words(sim: SimBackend) -> None:
    sim.snapshot(["fx/base@s2"])
    sim.clone("fx/base@s2", "fx/app")
    sim.snapshot(["fx/app@a1"])
    with pytest.raises(HasDependentClones) as err:
        sim.destroy("fx/base@s2")
    assert str(err.value) == fixture_error_clone()


def fixture_error_clone() -> str:
    text = (ZFS_STREAMS / "cli-samples.txt").read_text()
    start = text.index("cannot destroy 'fx/base@s2'")
    return "\n".join(text[start:].splitlines()[:4])


def test_held_snapshot_cannot_be_destroyed_until_released(sim: SimBackend) -> None:
    sim.snapshot(["fx/base@s1"])
    sim.hold("keep", ["fx/base@s1"])
    assert sim.holds("fx/base@s1") == ["keep"]
    with pytest.raises(DatasetBusy) as err:
        sim.destroy("fx/base@s1")
    assert str(err.value) == (
        "cannot destroy snapshot fx/base@s1: it's being held. "
        "Run 'zfs holds -r fx/base@s1' to see holders."
    )
    with pytest.raises(DatasetExists, match="tag already exists"):
        sim.hold("keep", ["fx/base@s1"])
    sim.release("keep", ["fx/base@s1"])
    sim.destroy("fx/base@s1")
    assert not sim.exists("fx/base@s1")


def test_deferred_destroy_happens_when_the_last_hold_goes(sim: SimBackend) -> None:
    sim.snapshot(["fx/base@s1"])
    sim.hold("keep", ["fx/base@s1"])
    sim.destroy("fx/base@s1", defer=True)
    assert sim.get("fx/base@s1", ["defer_destroy"])["defer_destroy"].value == "on"
    sim.release("keep", ["fx/base@s1"])
    assert not sim.exists("fx/base@s1")


def test_deferred_destroy_waits_for_the_last_clone(sim: SimBackend) -> None:
    sim.snapshot(["fx/base@s1"])
    sim.clone("fx/base@s1", "fx/c")
    sim.destroy("fx/base@s1", defer=True)
    assert sim.exists("fx/base@s1")
    sim.destroy("fx/c")
    assert not sim.exists("fx/base@s1")


def test_rollback_needs_r_when_newer_snapshots_exist(sim: SimBackend) -> None:
    path = mnt(sim, "fx/base")
    for name in ("s1", "s2", "s3"):
        (path / "f").write_text(name)
        sim.snapshot([f"fx/base@{name}"])
    with pytest.raises(DestinationHasSnapshots) as err:
        sim.rollback("fx/base@s1")
    assert str(err.value).startswith(
        "cannot rollback to 'fx/base@s1': more recent snapshots or bookmarks exist\n"
        "use '-r' to force deletion of the following snapshots and bookmarks:\nfx/base@s2"
    )
    sim.rollback("fx/base@s1", destroy_newer=True)
    assert (path / "f").read_text() == "s1"
    assert [o.short for o in sim.list("fx/base", types=[ObjType.SNAPSHOT])] == ["s1"]


def test_rollback_refused_when_a_newer_snapshot_has_clones(sim: SimBackend) -> None:
    sim.snapshot(["fx/base@s1"])
    sim.snapshot(["fx/base@s2"])
    sim.clone("fx/base@s2", "fx/c")
    with pytest.raises(HasDependentClones, match="clones of previous snapshots exist"):
        sim.rollback("fx/base@s1", destroy_newer=True)
    assert sim.exists("fx/base@s2")


def test_destroy_dataset_with_children_needs_recursive(sim: SimBackend) -> None:
    sim.create("fx/base/kid")
    sim.snapshot(["fx/base@s1"])
    with pytest.raises(InvalidOperation, match="filesystem has children"):
        sim.destroy("fx/base")
    path = mnt(sim, "fx/base")
    sim.destroy("fx/base", recursive=True)
    assert not sim.exists("fx/base") and not sim.exists("fx/base/kid")
    assert not path.exists()


def test_rename_moves_children_snapshots_and_data(sim: SimBackend) -> None:
    sim.create("fx/base/kid")
    (mnt(sim, "fx/base/kid") / "k").write_text("kid")
    sim.snapshot(["fx/base/kid@s1"])
    sim.rename("fx/base", "fx/renamed")
    assert sim.exists("fx/renamed/kid@s1")
    assert (mnt(sim, "fx/renamed/kid") / "k").read_text() == "kid"
    sim.rename("fx/renamed/kid@s1", "fx/renamed/kid@first")
    assert sim.exists("fx/renamed/kid@first")
    with pytest.raises(InvalidOperation, match="within same pool"):
        sim.rename("fx/renamed", "other/x")


def test_bookmark_keeps_guid_and_createtxg(sim: SimBackend) -> None:
    sim.snapshot(["fx/base@s1"])
    sim.bookmark("fx/base@s1", "fx/base#b1")
    snap = sim.list("fx/base@s1")[0]
    mark = sim.list("fx/base#b1")[0]
    assert (mark.guid, mark.createtxg, mark.type) == (snap.guid, snap.createtxg, ObjType.BOOKMARK)
    sim.destroy("fx/base@s1")
    assert sim.exists("fx/base#b1")


def test_properties_inherit_with_sources_like_zfs_get(sim: SimBackend) -> None:
    sim.create("fx/base/kid")
    sim.set("fx/base", {"compression": "lz4", "zfleet:role": "image"})
    got = sim.get("fx/base/kid", ["compression", "zfleet:role", "recordsize", "guid"])
    assert got["compression"].value == "lz4"
    assert got["compression"].source == "inherited from fx/base"
    assert got["zfleet:role"].source == "inherited from fx/base"
    assert (got["recordsize"].value, got["recordsize"].source) == ("131072", "default")
    assert got["guid"].source == "-"
    sim.set("fx/base/kid", {"compression": "off"})
    assert sim.get("fx/base/kid", ["compression"])["compression"].source == "local"
    sim.inherit("fx/base/kid", "compression")
    assert sim.get("fx/base/kid", ["compression"])["compression"].value == "lz4"
    obj = sim.list("fx/base/kid")[0]
    assert obj.user_props == {"zfleet:role": "image"}


def test_bad_property_values_are_refused_with_the_rule(sim: SimBackend) -> None:
    with pytest.raises(InvalidOperation, match=r"'readonly' must be one of 'on \| off'"):
        sim.set("fx/base", {"readonly": "maybe"})
    with pytest.raises(InvalidOperation, match="'guid' is readonly"):
        sim.set("fx/base", {"guid": "1"})
    with pytest.raises(InvalidOperation, match="invalid property 'nosuch'"):
        sim.set("fx/base", {"nosuch": "1"})


def test_setting_a_mountpoint_moves_the_live_data(sim: SimBackend, tmp_path: Path) -> None:
    (mnt(sim, "fx/base") / "f").write_text("x")
    target = tmp_path / "elsewhere"
    sim.set("fx/base", {"mountpoint": str(target)})
    assert (target / "f").read_text() == "x"
    assert sim.get("fx/base", ["mountpoint"])["mountpoint"].source == "local"


@pytest.mark.parametrize(
    "name", ["fx/", "fx//a", "fx/a@b@c", "fx/bad*name", "", "fx/a/../b", "fx/" + "x" * 300]
)
def test_bad_names_are_refused_before_anything_runs(sim: SimBackend, name: str) -> None:
    before = [o.name for o in sim.list()]
    with pytest.raises(NameError_):
        sim.create(name)
    assert [o.name for o in sim.list()] == before


def test_missing_parent_and_existing_dataset(sim: SimBackend) -> None:
    with pytest.raises(DatasetNotFound, match="parent does not exist"):
        sim.create("fx/no/such")
    with pytest.raises(DatasetExists, match="dataset already exists"):
        sim.create("fx/base")
    with pytest.raises(DatasetNotFound, match="cannot open 'fx/nope': dataset does not exist"):
        sim.get("fx/nope")


def test_volume_is_a_sparse_file_snapshotted_like_a_filesystem(sim: SimBackend) -> None:
    sim.create("fx/vol", volsize=8 << 20)
    pool = sim.pool("fx")
    path = pool.volume_path(pool.dataset("fx/vol"))
    with open(path, "r+b") as fp:
        fp.seek(1 << 20)
        fp.write(os.urandom(4096))
    sim.snapshot(["fx/vol@v1"])
    obj = sim.list("fx/vol@v1")[0]
    # Only the one record written counts, not the 8 MiB of holes.
    assert 4096 <= obj.referenced <= 128 * 1024
    assert sim.list("fx/vol")[0].type == ObjType.VOLUME
    assert sim.mountpoint("fx/vol") is None


def test_pools_report_size_and_allocation(sim: SimBackend) -> None:
    (mnt(sim, "fx/base") / "f").write_bytes(os.urandom(100_000))
    sim.snapshot(["fx/base@s1"])
    (info,) = sim.pools()
    assert info.name == "fx" and info.health == "ONLINE"
    assert info.allocated >= 100_000
    assert info.free == info.size - info.allocated
    sim.destroy_pool("fx")
    assert sim.pools() == []


def test_volsize_reports_and_resizes_the_volume(sim: SimBackend) -> None:
    sim.create("fx/vol", volsize=4 << 20)
    assert sim.get("fx/vol", ["volsize"])["volsize"].value == str(4 << 20)
    sim.set("fx/vol", {"volsize": "8M"})
    assert sim.get("fx/vol", ["volsize"])["volsize"].value == str(8 << 20)
    with pytest.raises(InvalidOperation, match="does not apply to datasets of this type"):
        sim.set("fx/base", {"volsize": "1M"})


def test_holds_span_pools_and_bookmarks_cannot_be_renamed(sim: SimBackend) -> None:
    sim.create_pool("other")
    sim.snapshot(["fx/base@s1"])
    sim.snapshot(["other@s1"])
    sim.hold("both", ["fx/base@s1", "other@s1"])
    assert sim.holds("other@s1") == ["both"] and sim.holds("fx/base@s1") == ["both"]
    sim.release("both", ["fx/base@s1", "other@s1"])
    assert sim.holds("other@s1") == []
    sim.bookmark("fx/base@s1", "#b")
    with pytest.raises(InvalidOperation, match="bookmarks cannot be renamed"):
        sim.rename("fx/base#b", "fx/base#c")
