"""Rebase with the image's own changes replayed onto a new base, and the conflict policies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol.errors import InvalidOperation, RebaseConflict
from tests.unit.rebase_helpers import copy_tree, fill_base, listing, mount, names
from workers.rebase import rebase
from workers.zfs.sim import SimBackend


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    """base@v1 -> app (a clone, changed) and base@v2 (the base's own update)."""
    backend = SimBackend(tmp_path / "pools")
    backend.create_pool("tank")
    backend.create("tank/base")
    base = mount(backend, "tank/base")
    fill_base(base)
    (base / "etc" / "motd").write_text("v1\n")
    (base / "usr" / "share").mkdir()
    (base / "usr" / "share" / "doc").write_text("docs v1\n")
    backend.snapshot(["tank/base@v1"])
    backend.clone("tank/base@v1", "tank/app")
    app = mount(backend, "tank/app")
    (app / "srv").mkdir()
    (app / "srv" / "app.py").write_text("print('app')\n")  # added
    os.link(app / "srv" / "app.py", app / "srv" / "app-link.py")  # added, hard link
    (app / "etc" / "hosts").write_text("127.0.0.1 localhost app\n")  # modified
    (app / "usr" / "share" / "doc").unlink()  # removed
    os.rename(app / "etc" / "os-release", app / "etc" / "os-release.orig")  # renamed
    os.symlink("/srv/app.py", app / "usr" / "bin" / "app")  # added symlink
    os.setxattr(app / "srv" / "app.py", "user.note", b"mine")
    (app / "usr" / "bin" / "tool").chmod(0o700)  # metadata only
    (base / "etc" / "motd").write_text("v2\n")  # base-only change
    (base / "usr" / "lib" / "libnew.so").write_bytes(os.urandom(50_000))  # base-only addition
    backend.snapshot(["tank/base@v2"])
    return backend


def test_the_image_changes_are_replayed_onto_the_new_base(sim: SimBackend) -> None:
    app = mount(sim, "tank/app")
    mine = listing(app)
    report = rebase(sim, "tank/app", "tank/base@v2")
    after = listing(mount(sim, "tank/app"))
    assert report.method == "zfs-diff" and report.conflicts == ()
    assert sim.get("tank/app", ["origin"])["origin"].value == "tank/base@v2"
    for own in (
        "srv/app.py",
        "srv/app-link.py",
        "etc/hosts",
        "etc/os-release.orig",
        "usr/bin/app",
        "usr/bin/tool",
    ):
        assert after[own] == mine[own], own
    assert "usr/share/doc" not in after and "etc/os-release" not in after
    assert (app / "etc" / "motd").read_text() == "v2\n"
    assert (app / "usr" / "lib" / "libnew.so").exists()
    assert os.stat(app / "srv" / "app.py").st_ino == os.stat(app / "srv" / "app-link.py").st_ino
    assert report.counts["renamed"] >= 1 and report.counts["removed"] >= 1


def test_a_path_changed_on_both_sides_stops_and_changes_nothing(sim: SimBackend) -> None:
    base = mount(sim, "tank/base")
    (base / "etc" / "hosts").write_text("127.0.0.1 localhost base\n")
    sim.snapshot(["tank/base@v3"])
    listed = names(sim, "tank")
    before = listing(mount(sim, "tank/app"))
    with pytest.raises(RebaseConflict) as caught:
        rebase(sim, "tank/app", "tank/base@v3")
    assert caught.value.paths == ["etc/hosts"]
    assert "etc/hosts" in str(caught.value)
    assert names(sim, "tank") == listed
    assert listing(mount(sim, "tank/app")) == before
    assert sim.get("tank/app", ["origin"])["origin"].value == "tank/base@v1"


@pytest.mark.parametrize("prefer", ["image", "base"])
def test_prefer_decides_a_conflict(sim: SimBackend, prefer: str) -> None:
    base = mount(sim, "tank/base")
    (base / "etc" / "hosts").write_text("127.0.0.1 localhost base\n")
    sim.snapshot(["tank/base@v3"])
    report = rebase(
        sim, "tank/app", "tank/base@v3", prefer="image" if prefer == "image" else "base"
    )
    hosts = (mount(sim, "tank/app") / "etc" / "hosts").read_text()
    assert hosts == (
        "127.0.0.1 localhost app\n" if prefer == "image" else "127.0.0.1 localhost base\n"
    )
    assert [(c.path, c.resolution) for c in report.conflicts] == [("etc/hosts", prefer)]


def test_the_same_change_on_both_sides_is_no_conflict(sim: SimBackend) -> None:
    base = mount(sim, "tank/base")
    (base / "etc" / "hosts").write_text("127.0.0.1 localhost app\n")
    sim.snapshot(["tank/base@v3"])
    report = rebase(sim, "tank/app", "tank/base@v3")
    assert [(c.path, c.resolution) for c in report.conflicts] == [("etc/hosts", "same")]


def test_a_full_copy_is_compared_as_a_tree_against_its_old_base(
    sim: SimBackend, tmp_path: Path
) -> None:
    sim.create("tank/copy")
    copy = mount(sim, "tank/copy")
    # a copy of base@v1's tree (base@v1's files: clone it to read them)
    sim.clone("tank/base@v1", "tank/v1view")
    copy_tree(mount(sim, "tank/v1view"), copy)
    sim.destroy("tank/v1view")
    (copy / "opt").mkdir()
    (copy / "opt" / "extra").write_bytes(os.urandom(10_000))
    (copy / "etc" / "hosts").unlink()
    own = listing(copy)
    report = rebase(sim, "tank/copy", "tank/base@v2", old_base="tank/base@v1")
    after = listing(mount(sim, "tank/copy"))
    assert report.method == "tree"
    assert after["opt/extra"] == own["opt/extra"]
    assert "etc/hosts" not in after  # removed by the image
    assert (mount(sim, "tank/copy") / "etc" / "motd").read_text() == "v2\n"  # the base's edit
    assert not any(n.startswith("tank/copy.rebase-") for n in names(sim, "tank"))


def test_without_any_old_base_the_image_is_kept_as_it_is(sim: SimBackend) -> None:
    sim.create("tank/lone")
    lone = mount(sim, "tank/lone")
    (lone / "only-here").write_text("x")
    before = listing(lone)
    report = rebase(sim, "tank/lone", "tank/base@v2")
    assert report.method == "tree"
    assert listing(mount(sim, "tank/lone")) == before


def test_zfs_diff_reads_a_clone_against_its_origin_as_libzfs_does(sim: SimBackend) -> None:
    app = str(mount(sim, "tank/app"))
    entries = {
        (e.change.value, e.path[len(app) + 1 :]) for e in sim.diff("tank/base@v1", "tank/app")
    }
    assert ("+", "srv/app.py") in entries and ("-", "usr/share/doc") in entries
    assert ("M", "etc/hosts") in entries
    assert not any(p == "etc/motd" for _c, p in entries)  # the base's own later change
    sim.create("tank/other")
    with pytest.raises(InvalidOperation, match="Unable to obtain diffs"):
        sim.diff("tank/base@v1", "tank/other")
    sim.snapshot(["tank/base@v3"])
    sim.clone("tank/base@v1", "tank/early")
    with pytest.raises(InvalidOperation):  # branched off before v3: not a later state of it
        sim.diff("tank/base@v3", "tank/early")
