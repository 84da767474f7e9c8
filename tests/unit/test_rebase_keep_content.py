"""Representation-only rebase: a full copy becomes a clone of a base, its files byte-identical."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol.errors import RebaseError
from tests.unit.rebase_helpers import (
    ROOT_USER,
    T0,
    copy_tree,
    fill_base,
    listing,
    mount,
    names,
    stamp_tree,
    used,
)
from workers.rebase import rebase, undo
from workers.rebase.swap import stamp
from workers.zfs.sim import SimBackend

NOW = 1_780_000_000.0


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    backend = SimBackend(tmp_path / "pools")
    backend.create_pool("tank")
    backend.create("tank/img")
    backend.create("tank/img/base")
    fill_base(mount(backend, "tank/img/base"))
    backend.snapshot(["tank/img/base@v1"])
    return backend


def make_full_copy(sim: SimBackend, name: str) -> Path:
    """An image imported as a full copy of the base, with its own additions and edits."""
    sim.create(name)
    root = mount(sim, name)
    copy_tree(mount(sim, "tank/img/base"), root)
    (root / "usr" / "bin" / "tool-alias").unlink()  # the import kept the base's hard link
    os.link(root / "usr" / "bin" / "tool", root / "usr" / "bin" / "tool-alias")
    (root / "srv").mkdir()
    (root / "srv" / "app.bin").write_bytes(os.urandom(300_000))
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost app\n")  # same size class, new bytes
    (root / "usr" / "lib" / "libbig.so").unlink()  # the image removed a base file
    os.link(root / "srv" / "app.bin", root / "srv" / "app-hardlink")
    os.symlink("/srv/app.bin", root / "usr" / "bin" / "app")
    os.mkfifo(root / "srv" / "control")
    os.setxattr(root / "srv" / "app.bin", "user.origin", b"built-here")
    os.setxattr(root / "etc", "user.dir-attr", b"\x00\x01binary")
    (root / "srv" / "app.bin").chmod(0o4750)
    with open(root / "srv" / "sparse", "wb") as fp:  # a hole, then data
        fp.seek(3 * 128 * 1024)
        fp.write(b"tail")
    if ROOT_USER:
        os.lchown(root / "srv" / "app.bin", 1234, 5678)
        os.lchown(root / "usr" / "bin" / "app", 4321, 8765)
    stamp_tree(root)
    os.utime(root / "etc" / "hosts", ns=(T0 + 5, T0 + 5))
    return root


def test_keep_content_rebase_keeps_every_file_and_its_metadata(sim: SimBackend) -> None:
    root = make_full_copy(sim, "tank/img/app")
    before = listing(root)
    sim.set(
        "tank/img/app",
        {"zfleet:role": "web", "user:owner": "team-a", "quota": "1G", "compression": "zstd"},
    )
    report = rebase(sim, "tank/img/app", "tank/img/base@v1", keep_content=True)

    after = listing(mount(sim, "tank/img/app"))
    assert after == before  # sha256 of every file, modes, owners, mtimes, xattrs, links, fifo
    assert sim.get("tank/img/app", ["origin"])["origin"].value == "tank/img/base@v1"
    assert report.method == "keep-content" and report.verified == len(before)
    props = sim.get("tank/img/app", ["zfleet:role", "user:owner", "quota", "compression"])
    assert {k: (v.value, v.source) for k, v in props.items()} == {
        "zfleet:role": ("web", "local"),
        "user:owner": ("team-a", "local"),
        "quota": (str(1 << 30), "local"),
        "compression": ("zstd", "local"),
    }
    # only the image's own bytes were written, not the shared base files
    assert report.bytes_written < 400_000
    assert report.backup is not None and listing(mount(sim, report.backup)) == before


def test_keep_content_shares_the_base_blocks(sim: SimBackend) -> None:
    make_full_copy(sim, "tank/img/app")
    sim.snapshot(["tank/img/app@s"])  # the full copy's own figures, settled
    full = used(sim, "tank/img/app")
    report = rebase(sim, "tank/img/app", "tank/img/base@v1", keep_content=True, drop_old=True)
    assert report.dropped and report.backup is None
    assert "tank/img/app@s" not in names(sim, "tank")  # gone with the old image
    # own blocks: app.bin (300 kB), the sparse tail, the edited hosts file, metadata
    assert report.used_after < 0.5 * full
    assert report.used_after > 300_000


def test_undo_swaps_the_old_image_back(sim: SimBackend) -> None:
    root = make_full_copy(sim, "tank/img/app")
    before = listing(root)
    report = rebase(sim, "tank/img/app", "tank/img/base@v1", keep_content=True)
    done = undo(sim, "tank/img/app")
    assert done["restored_from"] == report.backup
    assert sim.get("tank/img/app", ["origin"])["origin"].value in ("-", "")
    assert listing(mount(sim, "tank/img/app")) == before
    assert done["rebased"] is not None and sim.exists(done["rebased"])
    assert report.backup is not None and not sim.exists(report.backup)
    with pytest.raises(RebaseError, match="no rebase backup"):
        undo(sim, "tank/img/app")


def test_an_explicit_mountpoint_stays_with_the_name(sim: SimBackend, tmp_path: Path) -> None:
    where = tmp_path / "srv-app"
    sim.create("tank/img/app", props={"mountpoint": str(where)})
    copy_tree(mount(sim, "tank/img/base"), where)
    before = listing(where)
    report = rebase(sim, "tank/img/app", "tank/img/base@v1", keep_content=True)
    assert sim.get("tank/img/app", ["mountpoint"])["mountpoint"].value == str(where)
    assert listing(where) == before
    assert report.backup is not None
    assert sim.mountpoint(report.backup) == f"{where}.pre-rebase-{report.backup.rsplit('-', 1)[1]}"
    undo(sim, "tank/img/app", drop_rebased=True)
    assert sim.mountpoint("tank/img/app") == str(where)
    assert listing(where) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("srv-app")) == ["srv-app"]


def test_already_a_clone_of_the_base_is_left_alone(sim: SimBackend) -> None:
    sim.clone("tank/img/base@v1", "tank/img/app")
    listed = names(sim, "tank")
    report = rebase(sim, "tank/img/app", "tank/img/base@v1", keep_content=True)
    assert report.method == "none"
    assert names(sim, "tank") == listed


def test_a_directory_where_the_clone_would_mount_is_left_alone(sim: SimBackend) -> None:
    make_full_copy(sim, "tank/img/app")
    stray = Path(f"{mount(sim, 'tank/img/app')}.rebase-{stamp(NOW)}")
    stray.mkdir()
    (stray / "notes.txt").write_text("not zfleet's")
    report = rebase(sim, "tank/img/app", "tank/img/base@v1", keep_content=True, now=lambda: NOW)
    assert (stray / "notes.txt").read_text() == "not zfleet's"
    assert report.backup is not None
