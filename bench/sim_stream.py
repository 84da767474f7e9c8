"""Throughput of the simulated backend's own send -> receive, against a pipe moving the same bytes.

    .venv/bin/python bench/sim_stream.py [--size-mib 256] [--runs 3] [--dir /dev/shm]

Makes a simulated dataset of mixed files (incompressible, text-like, sparse, as bench/transfer.py
does), then, in the same run, measures (medians of --runs):

- baseline: ``cat stream | cat > /dev/null`` of the very bytes the send produces (what moving
  them through a pipe costs on this machine);
- write once: ``cat stream > file`` beside the pools (what writing them once costs on this
  filesystem; a receive has to write the data at least that once);
- sim send alone (drained), sim receive alone (from the stream file), both unmounted;
- sim send -> sim receive, ``-u`` (how fleet jobs receive replicas) and mounted (the live
  files are written too): the send read in this thread and written into the receive, which
  applies records on its own thread as they arrive, as ``zfs send | zfs receive`` does.

Every receive verifies every checksum and stores every block in a fresh target pool, removed
after the run. Prints MB/s of stream bytes, and each figure's ratio to the pipe baseline and to
the issue's goal (250 MB/s), and for the simulation's rows the CPU seconds per GB this process
spent (all its threads: on a busy machine MB/s falls with the load, CPU per GB much less).
``--dir`` picks the filesystem the pools live on (default: the
system's temporary directory); on a tmpfs the figures are the simulation's own cost.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.zfs.base import ReceiveSpec, SendSpec  # noqa: E402
from workers.zfs.sim import SimBackend  # noqa: E402

GOAL_MBS = 250.0
FILE = 4 << 20
SNAP = "bench/src@s1"


def make_source(root: Path, size: int, seed: int = 7) -> SimBackend:
    """A pool with ``bench/src@s1``: about ``size`` bytes of mixed files."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b" etaoinshrdlucmfwypvbgkjqxz0123456789\n,.", dtype=np.uint8)
    weights = np.linspace(3.0, 0.2, len(alphabet))
    weights /= weights.sum()
    sim = SimBackend(root)
    sim.create_pool("bench")
    sim.create("bench/src")
    mnt = Path(sim.mountpoint("bench/src") or "")
    for index in range(max(1, size // FILE)):
        kind = index % 3
        if kind == 0:  # already-compressed media
            data = rng.bytes(FILE)
        elif kind == 1:  # text and logs
            data = rng.choice(alphabet, FILE, p=weights).tobytes()
        else:  # sparse: mostly zeros with scattered records
            buf = np.zeros(FILE, dtype=np.uint8)
            for spot in rng.integers(0, FILE - 64, FILE // 2048):
                buf[spot : spot + 64] = rng.integers(0, 256, 64, dtype=np.uint8)
            data = buf.tobytes()
        (mnt / f"f{index:04d}").write_bytes(data)
    sim.snapshot([SNAP])
    return sim


def drain(sim: SimBackend) -> int:
    stream = sim.send(SendSpec(SNAP))
    total = 0
    while chunk := stream.read(1 << 20):
        total += len(chunk)
    stream.close()
    return total


def send_into_file(sim: SimBackend, path: Path) -> int:
    stream = sim.send(SendSpec(SNAP))
    with path.open("wb") as fh:
        while chunk := stream.read(1 << 20):
            fh.write(chunk)
    stream.close()
    return path.stat().st_size


def fresh_target(work: Path, name: str) -> SimBackend:
    target = SimBackend(work / name)
    target.create_pool("bench")
    return target


def send_receive(source: SimBackend, work: Path, *, mount: bool) -> float:
    """Seconds for one send -> receive into a fresh pool (made and removed outside the clock)."""
    target = fresh_target(work, "dst")
    try:
        start = time.perf_counter()
        stream = source.send(SendSpec(SNAP))
        sink = target.receive(ReceiveSpec("bench/dst", no_mount=not mount))
        while chunk := stream.read(1 << 20):
            sink.write(chunk)
        stream.close()
        sink.finish()
        return time.perf_counter() - start
    finally:
        shutil.rmtree(work / "dst")


def receive_file(path: Path, work: Path) -> float:
    target = fresh_target(work, "dst")
    try:
        start = time.perf_counter()
        sink = target.receive(ReceiveSpec("bench/dst", no_mount=True))
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sink.write(chunk)
        sink.finish()
        return time.perf_counter() - start
    finally:
        shutil.rmtree(work / "dst")


def shell(command: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, shell=True, check=True)
    return time.perf_counter() - start


def cpu_s() -> float:
    """CPU seconds this process has used, every thread of it."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="dataset size in MiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the pools live (a tmpfs: no disk)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-sim-", dir=args.dir) as tmp:
        work = Path(tmp)
        source = make_source(work / "src", args.size_mib << 20)
        stream = work / "stream.zstream"
        size = send_into_file(source, stream)
        copy = work / "copy.zstream"
        rows: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}

        def sim_row(key: str, fn: Callable[[], float]) -> None:
            before = cpu_s()
            rows.setdefault(key, []).append(fn())
            cpu.setdefault(key, []).append(cpu_s() - before)

        for _ in range(args.runs):
            rows.setdefault("pipe", []).append(shell(f"cat '{stream}' | cat > /dev/null"))
            rows.setdefault("write", []).append(shell(f"cat '{stream}' > '{copy}'"))
            copy.unlink()
            sim_row("send", lambda: timed(lambda: drain(source)))
            sim_row("receive", lambda: receive_file(stream, work))
            sim_row("e2e_u", lambda: send_receive(source, work, mount=False))
            sim_row("e2e_mount", lambda: send_receive(source, work, mount=True))
    mbs = {key: size / 1e6 / statistics.median(values) for key, values in rows.items()}
    load = os.getloadavg()[0]
    print(
        f"stream: {size / 1e6:.1f} MB from {args.size_mib} MiB of mixed files; pools in "
        f"{args.dir or tempfile.gettempdir()}; medians of {args.runs} runs; load {load:.1f} on "
        f"{os.cpu_count()} cores"
    )
    labels = {
        "pipe": "cat | cat > /dev/null (baseline)",
        "write": "cat > file (write once)",
        "send": "sim send, drained",
        "receive": "sim receive -u, from a file",
        "e2e_u": "sim send -> sim receive -u",
        "e2e_mount": "sim send -> sim receive, mounted",
    }
    for key, label in labels.items():
        per_gb = ""
        if key in cpu:
            per_gb = f"   {statistics.median(cpu[key]) / (size / 1e9):.2f} CPU s/GB"
        print(
            f"  {label:<34} {mbs[key]:8.0f} MB/s   x{mbs[key] / mbs['pipe']:.3f} of the pipe"
            f"   x{mbs[key] / GOAL_MBS:.2f} of the {GOAL_MBS:.0f} MB/s goal{per_gb}"
        )


if __name__ == "__main__":
    main()
