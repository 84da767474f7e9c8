"""Dedup analysis on the simulated backend: record sets from trees, snapshots and sends agree,
and the figures of small look-alike collections come out exactly."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from protocol.errors import DatasetNotFound, InvalidOperation
from tests.unit.sim_helpers import mnt, new_sim, send_bytes
from workers.dedup import RECORD, analyze, summarize_all
from workers.dedup.records import RecordSet
from workers.dedup.sources import Source, expand, read_live, read_sent, read_sim_snapshot
from workers.dedup.streams import read_stream
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

SECTOR = 512


def _rand(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def _collection(tmp_path: Path) -> tuple[SimBackend, dict[str, bytes]]:
    """Three images sharing a 1 MiB base file plus one own file each, and an unrelated one."""
    rng = random.Random(13)
    sim = new_sim(tmp_path, ["tank"], ["tank/img", "tank/img/a", "tank/img/b", "tank/img/c"])
    sim.create("tank/img/d")
    base = _rand(rng, 8 * RECORD)  # 8 full records
    own = {n: _rand(rng, 2 * RECORD + 1000) for n in "abc"}  # 2 records + a 1,024-byte tail
    for n in "abc":
        (mnt(sim, f"tank/img/{n}") / "base.bin").write_bytes(base)
        (mnt(sim, f"tank/img/{n}") / "own.bin").write_bytes(own[n])
    (mnt(sim, "tank/img/d") / "other.bin").write_bytes(_rand(rng, 3 * RECORD))
    sim.snapshot(["tank/img/a@s1", "tank/img/b@s1", "tank/img/c@s1", "tank/img/d@s1"])
    return sim, own


def test_tree_snapshot_and_send_give_the_same_records(tmp_path: Path) -> None:
    sim, _own = _collection(tmp_path)
    root = mnt(sim, "tank/img/a")
    (root / "sub").mkdir()
    (root / "sub" / "small.txt").write_bytes(b"hello\n")
    os.link(root / "base.bin", root / "sub" / "again.bin")  # a hard link: one object
    os.symlink("base.bin", root / "link")
    (root / "sparse").write_bytes(bytes(3 * RECORD) + b"x")  # holes, then one short record
    sim.snapshot(["tank/img/a@s2"])
    live = read_live(sim, "tank/img/a")
    snap = read_sim_snapshot(sim, "tank/img/a@s2")
    sent = read_sent(sim, "tank/img/a@s2")
    assert live.sizes == snap.sizes == sent.sizes
    assert live.records == snap.records == sent.records == 8 + 3 + 1 + 1 + 1
    # base 8 records, own 2 + tail, small.txt, the link target, the sparse file's last record
    assert live.unique == 8 * RECORD + 2 * RECORD + 1024 + SECTOR + SECTOR + SECTOR


def test_a_parent_tree_leaves_out_child_datasets(tmp_path: Path) -> None:
    sim, _own = _collection(tmp_path)
    (mnt(sim, "tank/img") / "note").write_bytes(b"parent only")
    assert read_live(sim, "tank/img").records == 1


def test_a_dataset_with_children_stands_for_its_leaves_and_a_leaf_for_itself(
    tmp_path: Path,
) -> None:
    sim, _own = _collection(tmp_path)
    assert [s.dataset for s in expand(sim, ["tank/img"])] == [
        "tank/img/a", "tank/img/b", "tank/img/c", "tank/img/d"
    ]  # fmt: skip
    assert [s.dataset for s in expand(sim, ["tank/img/b"])] == ["tank/img/b"]


def test_small_collection_figures_are_exact(tmp_path: Path) -> None:
    sim, _own = _collection(tmp_path)
    sources = expand(sim, ["tank"])
    assert [s.dataset for s in sources] == ["tank/img/a", "tank/img/b", "tank/img/c", "tank/img/d"]
    items = [(s.dataset, s.snapshot, read_live(sim, s.dataset)) for s in sources]
    result = analyze(summarize_all(items, method="auto", k=64, count=len(items)))
    p = result.proposal
    image = 8 * RECORD + 2 * RECORD + 1024
    other = 3 * RECORD
    assert p.method == "exact"
    assert p.bytes_now == 3 * image + other
    # the base image whole, each member only its own file
    assert p.bytes_after == image + 2 * (2 * RECORD + 1024) + other
    assert p.lower_bound == p.bytes_after  # nothing else is shared
    assert len(p.clusters) == 2
    first = p.clusters[0]
    assert first.base == "tank/img/a"  # ties go to the first
    assert [m.dataset for m in first.members] == ["tank/img/b", "tank/img/c"]
    assert all(m.shared_with_base == 8 * RECORD for m in first.members)
    assert p.clusters[1].base == "tank/img/d" and not p.clusters[1].members


def test_lower_bound_counts_records_shared_outside_a_cluster(tmp_path: Path) -> None:
    """c shares a file with d but is clustered with a and b: the rebase keeps two copies of that
    file, the lower bound one."""
    sim, _own = _collection(tmp_path)
    shared = (mnt(sim, "tank/img/d") / "other.bin").read_bytes()
    (mnt(sim, "tank/img/c") / "from-d.bin").write_bytes(shared[:RECORD])
    names = ["tank/img/a", "tank/img/b", "tank/img/c", "tank/img/d"]
    items = [(n, None, read_live(sim, n)) for n in names]
    p = analyze(summarize_all(items, method="exact", k=64, count=4)).proposal
    assert p.lower_bound == p.bytes_after - RECORD


def test_snapshot_sources_carry_their_snapshot_into_the_proposal(tmp_path: Path) -> None:
    sim, _own = _collection(tmp_path)
    sources = expand(sim, ["tank/img/a@s1", "tank/img/b@s1"])
    assert sources == [Source("tank/img/a", "tank/img/a@s1"), Source("tank/img/b", "tank/img/b@s1")]
    items = [(s.dataset, s.snapshot, read_sim_snapshot(sim, str(s.snapshot))) for s in sources]
    p = analyze(summarize_all(items, method="exact", k=64, count=2)).proposal
    assert p.clusters[0].base_snapshot == "tank/img/a@s1"
    assert p.clusters[0].members[0].snapshot == "tank/img/b@s1"


def test_clone_stream_after_its_origin_gives_the_clone_content(tmp_path: Path) -> None:
    sim, _own = _collection(tmp_path)
    sim.clone("tank/img/a@s1", "tank/img/e")
    (mnt(sim, "tank/img/e") / "own.bin").unlink()
    (mnt(sim, "tank/img/e") / "e.bin").write_bytes(b"e" * 5000)
    sim.snapshot(["tank/img/e@s1"])
    full = send_bytes(sim, SendSpec("tank/img/a@s1"))
    incr = send_bytes(sim, SendSpec("tank/img/e@s1", from_snap="tank/img/a@s1"))
    from workers.dedup.streams import _Receiver

    receiver = _Receiver()
    read_stream(io.BytesIO(full), "a", receiver)
    found = {d.dataset: d.records for d in read_stream(io.BytesIO(incr), "e", receiver)}
    assert found["tank/img/e"].sizes == read_live(sim, "tank/img/e").sizes
    assert found["tank/img/a"].sizes == read_sim_snapshot(sim, "tank/img/a@s1").sizes


def test_pool_takes_unmounted_replicas_and_volumes_by_their_newest_snapshot(
    tmp_path: Path,
) -> None:
    sim, _own = _collection(tmp_path)
    sim.create("tank/vol", volsize=1 << 20)
    sim.snapshot(["tank/vol@v1"])
    sink = sim.receive(ReceiveSpec("tank/copy", no_mount=True))
    sink.write(send_bytes(sim, SendSpec("tank/img/a@s1")))
    sink.finish()
    sources = {s.dataset: s.snapshot for s in expand(sim, ["tank"])}
    assert sources["tank/vol"] == "tank/vol@v1"
    assert sources["tank/copy"] == "tank/copy@s1"
    assert sources["tank/img/a"] is None
    copy = read_sim_snapshot(sim, "tank/copy@s1")
    assert copy.sizes == read_sim_snapshot(sim, "tank/img/a@s1").sizes


def test_bad_names_are_clear_errors(tmp_path: Path) -> None:
    sim, _own = _collection(tmp_path)
    with pytest.raises(DatasetNotFound, match="tank/img/zz"):
        expand(sim, ["tank/img/zz"])
    with pytest.raises(DatasetNotFound, match="tank/img/a@nope"):
        expand(sim, ["tank/img/a@nope"])
    with pytest.raises(InvalidOperation, match="named twice"):
        expand(sim, ["tank/img/a", "tank/img/a@s1"])
    sim.create("tank/vol", volsize=1 << 20)
    with pytest.raises(InvalidOperation, match="no snapshot"):
        expand(sim, ["tank"])


def test_record_set_of_counts_repetition(tmp_path: Path) -> None:
    records = RecordSet()
    records.add_object(b"z" * RECORD * 2)  # two identical records: one distinct
    assert (records.records, len(records.sizes), records.unique) == (2, 1, RECORD)
