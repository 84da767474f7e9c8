"""used / referenced / written in the simulation behave as ZFS reports them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.sim_helpers import mnt, new_sim
from workers.zfs.sim import SimBackend

RECORD = 128 * 1024


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    return new_sim(tmp_path, ["fx"], ["fx/base"])


def row(sim: SimBackend, name: str) -> tuple[int, int, int]:
    obj = sim.list(name, recursive=False)[0]
    return obj.used, obj.referenced, obj.written


def test_written_counts_only_what_changed_since_the_previous_snapshot(sim: SimBackend) -> None:
    data = mnt(sim, "fx/base") / "data"
    data.write_bytes(os.urandom(10 * RECORD))
    sim.snapshot(["fx/base@s1"])
    with open(data, "r+b") as fp:
        fp.seek(3 * RECORD)
        fp.write(os.urandom(100))  # touches one record
    sim.snapshot(["fx/base@s2"])
    _used1, ref1, written1 = row(sim, "fx/base@s1")
    _used2, ref2, written2 = row(sim, "fx/base@s2")
    assert written1 == ref1 >= 10 * RECORD
    assert RECORD <= written2 < 2 * RECORD
    assert ref2 == ref1


def test_snapshot_used_is_what_only_it_holds(sim: SimBackend) -> None:
    data = mnt(sim, "fx/base") / "data"
    data.write_bytes(os.urandom(4 * RECORD))
    sim.snapshot(["fx/base@s1"])
    data.write_bytes(os.urandom(4 * RECORD))  # every record replaced
    sim.snapshot(["fx/base@s2"])
    used1, _, _ = row(sim, "fx/base@s1")
    used2, _, _ = row(sim, "fx/base@s2")
    assert used1 >= 4 * RECORD, "s1's records exist nowhere else"
    assert used2 < RECORD, "s2 shares its records with the live data"
    dataset_used = row(sim, "fx/base")[0]
    assert dataset_used >= 8 * RECORD
    sim.destroy("fx/base@s1")
    assert row(sim, "fx/base")[0] <= dataset_used - 4 * RECORD


def test_a_clone_charges_only_its_divergent_blocks(sim: SimBackend) -> None:
    (mnt(sim, "fx/base") / "image").write_bytes(os.urandom(20 * RECORD))
    sim.snapshot(["fx/base@s1"])
    sim.clone("fx/base@s1", "fx/app")
    used, referenced, _ = row(sim, "fx/app")
    assert referenced >= 20 * RECORD
    assert used < RECORD, "a fresh clone shares everything with its origin"
    with open(mnt(sim, "fx/app") / "image", "r+b") as fp:
        fp.write(os.urandom(RECORD))
    sim.snapshot(["fx/app@a1"])
    used, referenced, _ = row(sim, "fx/app")
    assert RECORD <= used < 3 * RECORD
    assert row(sim, "fx/app@a1")[2] < 3 * RECORD  # written since the origin


def test_pool_allocation_counts_shared_blocks_once(sim: SimBackend) -> None:
    (mnt(sim, "fx/base") / "image").write_bytes(os.urandom(10 * RECORD))
    sim.snapshot(["fx/base@s1"])
    before = sim.pools()[0].allocated
    for i in range(3):
        sim.clone("fx/base@s1", f"fx/c{i}")
    after = sim.pools()[0].allocated
    assert after - before < RECORD
