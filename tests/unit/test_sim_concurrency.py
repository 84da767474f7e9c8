"""Many writers on one simulated pool at once: threads with their own SimBackend, and processes.

Each worker replicates its own source dataset (a full stream, then incrementals) into fresh
datasets of one target pool, snapshots, sends and destroys there, while the others do the same.
Separate SimBackend instances share no lock, so only the pool's own mechanisms (SQLite txgs,
the block store, leases) keep them apart. Afterwards every snapshot must send a stream that reads
back, and every replica must equal its source.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from protocol.stream import read_records
from tests.unit.sim_helpers import mnt, new_sim, send_bytes, snapshot_tree
from workers.zfs.base import ObjType, ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend
from workers.zfs.sim.blocks import BlockStore, digest
from workers.zfs.sim.nodes import decode_manifest, encode_manifest

REPO = Path(__file__).resolve().parents[2]
SNAPS = 3  # source snapshots per worker: one full stream, then incrementals
ROUNDS = 2  # replicas each worker makes (all but the last are destroyed again)
CHUNK = 1 << 16
FILES = 60  # small files per source


def make_sources(sim: SimBackend, workers: int, seed: int) -> None:
    """``src/d<k>@s0..`` for each worker: shared, changed, deleted and new files between them."""
    rng = random.Random(seed)
    shared = rng.randbytes(300_000)  # the same records in every source: one block, many writers
    for k in range(workers):
        name = f"src/d{k}"
        sim.create(name)
        root = mnt(sim, name)
        for i in range(SNAPS):
            (root / "shared.bin").write_bytes(shared)
            (root / f"new-{i}.bin").write_bytes(rng.randbytes(rng.randint(1, 200_000)))
            # Many objects: big manifests, so their encoding and decoding overlap between workers.
            for j in rng.sample(range(FILES), FILES // 4 if i else FILES):
                sub = root / "dir" / str(j % 16)
                sub.mkdir(parents=True, exist_ok=True)
                (sub / f"f{j}").write_bytes(rng.randbytes(rng.randint(0, 300)))
            if i:
                (root / f"new-{i - 1}.bin").unlink()
            sim.snapshot([f"{name}@s{i}"])


def receive(sim: SimBackend, stream: bytes, target: str) -> None:
    sink = sim.receive(ReceiveSpec(target))
    for i in range(0, len(stream), CHUNK):
        sink.write(stream[i : i + CHUNK])
    sink.finish()


def check_stream(stream: bytes) -> None:
    """The stream parses to its END record (checksums verified)."""
    records = list(read_records(_Reader(stream)))
    assert records, "empty stream"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else min(len(self.data), self.pos + n)
        out = bytes(self.data[self.pos : end])
        self.pos = end
        return out


def work(root: Path, k: int) -> None:
    """One worker, with its own SimBackend: replicate ``src/d<k>`` into ``dst`` ROUNDS times."""
    sim = SimBackend(root)
    for r in range(ROUNDS):
        target = f"dst/w{k}-{r}"
        for i in range(SNAPS):
            spec = SendSpec(f"src/d{k}@s{i}", from_snap=f"@s{i - 1}" if i else None)
            stream = send_bytes(sim, spec)
            check_stream(stream)
            receive(sim, stream, target)
            assert f"{target}@s{i}" in {o.name for o in sim.list(target)}
        # Work on the replica as a user would: a local snapshot, sent and read back, destroyed.
        sim.snapshot([f"{target}@local"])
        check_stream(send_bytes(sim, SendSpec(f"{target}@local", from_snap=f"@s{SNAPS - 1}")))
        sim.destroy(f"{target}@local")
        if r:
            sim.destroy(f"dst/w{k}-{r - 1}", recursive=True)


def check_pool(sim: SimBackend, workers: int) -> None:
    """Every snapshot sends a stream that reads back; each last replica equals its source."""
    for snap in sim.list("dst", types=[ObjType.SNAPSHOT]):
        check_stream(send_bytes(sim, SendSpec(snap.name)))
    names = {o.name for o in sim.list("dst")}
    for k in range(workers):
        last = f"dst/w{k}-{ROUNDS - 1}"
        assert last in names and f"{last}@s{SNAPS - 1}" in names
        assert not any(n.startswith(f"dst/w{k}-{r}") for r in range(ROUNDS - 1) for n in names)
        assert snapshot_tree(mnt(sim, last)) == snapshot_tree(mnt(sim, f"src/d{k}"))
    pool = sim.pool("dst")
    assert pool.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Nothing a snapshot or live dataset needs is garbage, even with no grace period.
    pool.sweep_blocks(grace=0)
    for snap in sim.list("dst", types=[ObjType.SNAPSHOT]):
        check_stream(send_bytes(sim, SendSpec(snap.name)))


def _pools(tmp_path: Path, workers: int, seed: int) -> SimBackend:
    sim = new_sim(tmp_path, ["src", "dst"])
    make_sources(sim, workers, seed)
    return sim


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3])
def test_threads_with_their_own_backend_keep_one_pool_consistent(tmp_path: Path, seed: int) -> None:
    workers = 3
    sim = _pools(tmp_path, workers, seed)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            work(sim.root, k)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    def watch() -> None:
        # What a planner does meanwhile: inventory with space figures, read from the manifests.
        own = SimBackend(sim.root)
        try:
            while any(t.is_alive() for t in threads):
                own.list("dst")
                own.list("src")
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(workers)]
    watchers = [threading.Thread(target=watch) for _ in range(2)]
    for t in threads + watchers:
        t.start()
    for t in threads + watchers:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads + watchers), "a worker hung"
    assert not errors, errors
    check_pool(SimBackend(sim.root), workers)


WORKER = (
    "import sys; from pathlib import Path; "
    "from tests.unit.test_sim_concurrency import work; work(Path(sys.argv[1]), int(sys.argv[2]))"
)


@pytest.mark.slow
def test_processes_keep_one_pool_consistent(tmp_path: Path) -> None:
    workers = 2
    sim = _pools(tmp_path, workers, seed=7)
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(sim.root), str(k)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for k in range(workers)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=max(1.0, 90 - (time.monotonic() - started)))
        assert proc.returncode == 0, err
    check_pool(SimBackend(sim.root), workers)


def hammer_manifests(seed: int) -> None:
    """Encode and decode big manifests on several threads at once; each must round-trip."""
    rng = random.Random(seed)
    manifests = [{obj: rng.randbytes(32) for obj in range(rng.randint(1, 3000))} for _ in range(8)]
    blobs = [encode_manifest(m) for m in manifests]
    failures: list[object] = []

    def run(k: int) -> None:
        for i in range(400):
            j = (k + i) % len(manifests)
            try:
                ok = decode_manifest(encode_manifest(manifests[j])) == manifests[j]
                ok = ok and decode_manifest(blobs[j]) == manifests[j]
            except Exception as exc:  # reported below
                failures.append(exc)
            else:
                if not ok:
                    failures.append(f"manifest {j} changed")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]


def test_manifests_encode_and_decode_on_many_threads_at_once() -> None:
    # A shared zstd context used by two threads garbles manifests or crashes the interpreter
    # ("snapshot manifest is damaged", malloc aborts): run it where a crash is a failed test.
    code = "from tests.unit.test_sim_concurrency import hammer_manifests; hammer_manifests(5)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_threads_storing_the_same_blocks_never_tear_one(tmp_path: Path) -> None:
    # Writers of one block used to share a temporary name per process: one truncated the
    # other's file and a torn block was renamed into place (or the second rename failed).
    store = BlockStore(tmp_path / "blocks")
    rng = random.Random(11)
    datas = [rng.randbytes(rng.randint(60_000, 131_072)) for _ in range(150)]
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        start.wait()
        try:
            for data in datas:
                store.put(data)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    for data in datas:
        assert store.get(digest(data)) == data
    assert not [p for p in store.root.rglob(".*")], "temporary files left behind"
