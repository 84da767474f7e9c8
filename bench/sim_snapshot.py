"""Snapshot and send cost in the simulated backend grow with the change, not the dataset.

Builds a dataset of many files, then measures (medians over several rounds, each on fresh random
data so the block store cannot deduplicate across rounds):

- the first (full) snapshot of the dataset: the baseline;
- a snapshot after 1 % of the files changed;
- a full send of a snapshot: the send baseline;
- an incremental send of the 1 % change.

Prints the figures and the ratios against the baselines measured in the same run.

    .venv/bin/python bench/sim_snapshot.py [--mib 64] [--files 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import structlog

from workers.zfs.base import SendSpec
from workers.zfs.sim import SimBackend


def fill(root: Path, files: int, size: int) -> list[Path]:
    paths = []
    for i in range(files):
        sub = root / f"d{i % 16}"
        sub.mkdir(exist_ok=True)
        path = sub / f"f{i}"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def drain(sim: SimBackend, spec: SendSpec) -> int:
    stream = sim.send(spec)
    total = 0
    while chunk := stream.read(1 << 20):
        total += len(chunk)
    stream.close()
    return total


def timed(fn: object) -> float:
    assert callable(fn)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="dataset size in MiB")
    parser.add_argument("--files", type=int, default=256, help="number of files")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    size = args.mib * (1 << 20) // args.files
    changed = max(1, args.files // 100)
    full_snap, incr_snap, full_send, incr_send = [], [], [], []
    full_bytes = incr_bytes = 0
    with tempfile.TemporaryDirectory(prefix="sim-bench-") as tmp:
        sim = SimBackend(Path(tmp))
        sim.create_pool("bench")
        for r in range(args.rounds):
            name = f"bench/ds{r}"
            sim.create(name)
            mnt = sim.mountpoint(name)
            assert mnt is not None
            paths = fill(Path(mnt), args.files, size)
            full_snap.append(timed(lambda n=name: sim.snapshot([f"{n}@full"])))
            for path in random.sample(paths, changed):
                path.write_bytes(os.urandom(size))
            incr_snap.append(timed(lambda n=name: sim.snapshot([f"{n}@incr"])))
            start = time.perf_counter()
            full_bytes = drain(sim, SendSpec(f"{name}@full"))
            full_send.append(time.perf_counter() - start)
            start = time.perf_counter()
            incr_bytes = drain(sim, SendSpec(f"{name}@incr", from_snap="@full"))
            incr_send.append(time.perf_counter() - start)
            sim.destroy(name, recursive=True)
    med = statistics.median
    print(
        f"dataset: {args.mib} MiB in {args.files} files; {changed} file(s) changed (1 %); "
        f"{args.rounds} rounds, medians"
    )
    print(f"snapshot, first (full):      {med(full_snap) * 1000:9.1f} ms  (baseline)")
    print(
        f"snapshot, after 1 % change:  {med(incr_snap) * 1000:9.1f} ms  "
        f"ratio {med(incr_snap) / med(full_snap):.3f}"
    )
    print(
        f"send, full:                  {med(full_send) * 1000:9.1f} ms  "
        f"{full_bytes / (1 << 20):.1f} MiB  (baseline)"
    )
    print(
        f"send, incremental 1 %:       {med(incr_send) * 1000:9.1f} ms  "
        f"{incr_bytes / (1 << 20):.2f} MiB  ratio {med(incr_send) / med(full_send):.3f}"
    )


if __name__ == "__main__":
    main()
