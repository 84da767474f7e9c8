"""The pure planner: conflicts, policies, and the order of the replay."""

from __future__ import annotations

import pytest

from protocol.errors import RebaseConflict, RebaseError
from workers.rebase.plan import Change, RebasePlan, make_plan, relative

DIRS = {"", "etc", "usr", "usr/bin"}


def plan(
    image: list[Change],
    base: list[Change],
    prefer: str | None = None,
    same: frozenset[str] = frozenset(),
) -> RebasePlan:
    return make_plan(
        "tank/app",
        image,
        base,
        prefer="image" if prefer == "image" else "base" if prefer == "base" else None,
        is_dir=lambda p: p in DIRS,
        same_result=lambda p: p in same,
    )


def test_disjoint_changes_replay_in_order() -> None:
    p = plan(
        [
            Change("+", "usr/bin/new"),
            Change("-", "etc/old"),
            Change("M", "etc"),
            Change("R", "etc/a", "etc/b"),
            Change("+", "usr"),
        ],
        [Change("M", "etc/motd"), Change("M", "etc")],
    )
    assert p.conflicts == ()
    assert p.removes == ("etc/old",)
    assert p.renames == (("etc/a", "etc/b"),)
    assert p.copies == ("etc", "usr", "etc/b", "usr/bin/new")  # parents before children
    assert p.counts == {"added": 2, "modified": 1, "removed": 1, "renamed": 1}


def test_both_sides_changing_a_file_stops_naming_every_path() -> None:
    with pytest.raises(RebaseConflict) as caught:
        plan(
            [Change("M", "etc/hosts"), Change("-", "etc/motd"), Change("+", "x")],
            [Change("M", "etc/hosts"), Change("M", "etc/motd")],
        )
    assert caught.value.paths == ["etc/hosts", "etc/motd"]


def test_a_rename_conflicts_at_both_of_its_ends() -> None:
    with pytest.raises(RebaseConflict) as caught:
        plan([Change("R", "etc/a", "etc/b")], [Change("M", "etc/a"), Change("+", "etc/b")])
    assert caught.value.paths == ["etc/a", "etc/b"]


def test_prefer_base_drops_the_image_change_and_prefer_image_keeps_it() -> None:
    image = [Change("M", "etc/hosts"), Change("+", "srv/app")]
    base = [Change("M", "etc/hosts")]
    kept = plan(image, base, "image")
    assert kept.copies == ("etc/hosts", "srv/app")
    assert [(c.path, c.image, c.base, c.resolution) for c in kept.conflicts] == [
        ("etc/hosts", "M", "M", "image")
    ]
    dropped = plan(image, base, "base")
    assert dropped.copies == ("srv/app",)
    assert dropped.conflicts[0].resolution == "base"


def test_directories_and_identical_results_are_not_conflicts() -> None:
    p = plan(
        [Change("M", "usr/bin"), Change("M", "etc/hosts")],
        [Change("M", "usr/bin"), Change("M", "etc/hosts")],
        same=frozenset({"etc/hosts"}),
    )
    assert [(c.path, c.resolution) for c in p.conflicts] == [("etc/hosts", "same")]
    assert p.copies == ("usr/bin",)


def test_zfs_diff_paths_are_made_relative_to_the_mountpoint() -> None:
    assert relative("/mnt/app/etc/hosts", "/mnt/app/") == "etc/hosts"
    assert relative("/mnt/app", "/mnt/app") == ""
    with pytest.raises(RebaseError, match="not under"):
        relative("/mnt/other/x", "/mnt/app")
