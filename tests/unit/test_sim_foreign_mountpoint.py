"""The simulation never replaces files it did not put at a mountpoint outside its pools.

OpenZFS mounts over a non-empty directory and hides what is there; the simulation materialises a
dataset's files in the directory itself, so it would have to delete them. It refuses instead (as
OpenZFS does with overlay=off), and a pool's destruction leaves an unmounted dataset's directory
alone. Each case uses a directory of its own holding a sentinel file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import ZfsError
from tests.unit.sim_helpers import mnt, new_sim, send_bytes
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    return new_sim(tmp_path, ["tank"], ["tank/a"])


def _occupied(tmp_path: Path) -> Path:
    place = tmp_path / "someone-elses"
    (place / "sub").mkdir(parents=True)
    (place / "keep.txt").write_text("mine\n")
    (place / "sub" / "deep.txt").write_text("also mine\n")
    return place


def _intact(place: Path) -> bool:
    return (place / "keep.txt").read_text() == "mine\n" and (
        place / "sub" / "deep.txt"
    ).read_text() == "also mine\n"


def test_create_onto_an_occupied_directory_is_refused(sim: SimBackend, tmp_path: Path) -> None:
    place = _occupied(tmp_path)
    with pytest.raises(ZfsError, match="directory is not empty"):
        sim.create("tank/b", props={"mountpoint": str(place)})
    assert _intact(place)


def test_moving_a_mountpoint_onto_an_occupied_directory_is_refused(
    sim: SimBackend, tmp_path: Path
) -> None:
    (mnt(sim, "tank/a") / "data.txt").write_text("dataset's\n")
    place = _occupied(tmp_path)
    with pytest.raises(ZfsError, match="is not empty"):
        sim.set("tank/a", {"mountpoint": str(place)})
    assert _intact(place)


def test_a_received_mountpoint_never_replaces_files(sim: SimBackend, tmp_path: Path) -> None:
    (mnt(sim, "tank/a") / "data.txt").write_text("dataset's\n")
    sim.set("tank/a", {"mountpoint": str(tmp_path / "elsewhere")})
    sim.snapshot(["tank/a@s1"])
    stream = send_bytes(sim, SendSpec(snapshot="tank/a@s1", props=True))
    place = _occupied(tmp_path)
    other = new_sim(tmp_path / "other", ["pool"])
    sink = other.receive(ReceiveSpec("pool/b", set_props={"mountpoint": str(place)}))
    with pytest.raises(ZfsError, match="directory is not empty"):
        sink.write(stream)
        sink.finish()
    assert _intact(place)


def test_an_empty_directory_outside_the_pools_is_mounted(sim: SimBackend, tmp_path: Path) -> None:
    place = tmp_path / "empty"
    place.mkdir()
    sim.create("tank/b", props={"mountpoint": str(place)})
    (place / "new.txt").write_text("into the dataset\n")
    sim.snapshot(["tank/b@s1"])
    assert sim.mountpoint("tank/b") == str(place)


def test_destroying_the_pool_leaves_an_unmounted_datasets_directory(
    sim: SimBackend, tmp_path: Path
) -> None:
    place = tmp_path / "mine"
    place.mkdir()
    sim.create("tank/b", props={"mountpoint": str(place)})
    sim.unmount("tank/b")
    place.mkdir(exist_ok=True)
    (place / "after.txt").write_text("written after the unmount\n")
    sim.destroy_pool("tank")
    assert (place / "after.txt").read_text() == "written after the unmount\n"
