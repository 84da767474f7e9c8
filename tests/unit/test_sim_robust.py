"""A simulated pool survives a killed process and two processes working on it at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.unit.sim_helpers import new_sim
from workers.zfs.base import ObjType, SendSpec
from workers.zfs.sim import SimBackend

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from workers.zfs.sim import SimBackend
    root, tag, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sim = SimBackend(Path(root))
    base = Path(sim.mountpoint("fx/base"))
    for i in range(rounds):
        name = f"fx/{tag}-{i}"
        sim.create(name)
        (Path(sim.mountpoint(name)) / "data").write_bytes(os.urandom(20_000))
        (base / f"{tag}-{i}").write_bytes(os.urandom(5_000))
        sim.snapshot([f"{name}@s", f"fx/base@{tag}-{i}"])
        print(i, flush=True)
    """
)


def run_worker(root: Path, tag: str, rounds: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(root), tag, str(rounds)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def drain(sim: SimBackend, snapshot: str) -> int:
    stream = sim.send(SendSpec(snapshot))
    total = 0
    while chunk := stream.read(1 << 20):
        total += len(chunk)
    stream.close()
    return total


def check_invariants(sim: SimBackend) -> None:
    """Every snapshot is readable end to end, guids are unique, txgs never go back."""
    snaps = sim.list("fx", types=[ObjType.SNAPSHOT])
    assert len({s.guid for s in snaps}) == len(snaps)
    for snap in snaps:
        assert drain(sim, snap.name) > 0
    pool = sim.pool("fx")
    txg = pool.conn.execute("SELECT value FROM meta WHERE key='txg'").fetchone()[0]
    assert all(o.createtxg <= txg for o in sim.list("fx"))
    assert pool.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    return new_sim(tmp_path, ["fx"], ["fx/base"])


def test_two_processes_snapshotting_one_pool_stay_consistent(sim: SimBackend) -> None:
    workers = [run_worker(sim.root, tag, 8) for tag in ("a", "b")]
    for proc in workers:
        _out, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err
    names = {o.name for o in sim.list("fx")}
    for tag in ("a", "b"):
        for i in range(8):
            assert {f"fx/{tag}-{i}", f"fx/{tag}-{i}@s", f"fx/base@{tag}-{i}"} <= names
    # Each pair of snapshots was taken in one txg, and no two pairs share one.
    by_txg: dict[int, set[str]] = {}
    for snap in sim.list("fx", types=[ObjType.SNAPSHOT]):
        by_txg.setdefault(snap.createtxg, set()).add(snap.short)
    assert all(len(shorts) == 2 for shorts in by_txg.values())
    # The shared dataset's last snapshot holds every file both processes wrote before it.
    mnt = sim.mountpoint("fx/base")
    assert mnt is not None and len(os.listdir(mnt)) == 16
    check_invariants(sim)


def test_a_killed_process_leaves_a_usable_pool(sim: SimBackend) -> None:
    proc = run_worker(sim.root, "k", 200)
    assert proc.stdout is not None
    for _ in range(3):  # let it get going, then kill it mid-work
        proc.stdout.readline()
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()
    fresh = SimBackend(sim.root)
    check_invariants(fresh)
    pool = fresh.pool("fx")
    removed = pool.sweep_blocks(grace=0)
    assert removed >= 0
    check_invariants(fresh)  # nothing a snapshot needs was swept
    fresh.snapshot(["fx/base@after"])
    assert drain(fresh, "fx/base@after") > 0


def test_orphan_blocks_are_collected(sim: SimBackend) -> None:
    pool = sim.pool("fx")
    orphan = pool.blocks.put(os.urandom(1000))
    stray = pool.blocks.path(orphan).with_name(".stray.tmp")
    stray.write_bytes(b"torn")
    mnt = sim.mountpoint("fx/base")
    assert mnt is not None
    (Path(mnt) / "kept").write_bytes(os.urandom(50_000))
    sim.snapshot(["fx/base@s1"])
    assert pool.sweep_blocks(grace=0) == 2
    assert not pool.blocks.has(orphan) and not stray.exists()
    check_invariants(sim)


def test_blocks_of_a_receive_in_progress_are_never_swept(sim: SimBackend) -> None:
    pool = sim.pool("fx")
    pending = pool.blocks.put(os.urandom(1000))  # written by a receive, not committed yet
    with pool.receiving():
        assert SimBackend(sim.root).pool("fx").sweep_blocks(grace=0) == 0
        assert pool.blocks.has(pending)
    assert pool.sweep_blocks(grace=0) == 1
