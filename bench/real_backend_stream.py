"""RealBackend's send -> receive pump against a plain OS pipe between the same two programs.

    .venv/bin/python bench/real_backend_stream.py [--size-mib 256] [--runs 3]

`zfs` is a stand-in script (this machine has no ZFS): `send` writes --size-mib MiB of zeros with
`head`, `receive` discards its stdin with `cat`. So the figures are RealBackend's own cost: the
Python pump (1 MiB reads and writes through its pipes) and process handling.

- baseline: `head -c N /dev/zero | cat > /dev/null` joined by one OS pipe (no Python in the path);
- zfleet: RealBackend.send -> read(1 MiB) -> RealBackend.receive.write, then close/finish;
- MB/s medians of --runs, their ratio, and this process's peak RSS growth during the zfleet runs
  (the stream is never held in memory, so it stays a few MiB whatever the size).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.zfs.base import ReceiveSpec, SendSpec  # noqa: E402
from workers.zfs.real import RealBackend  # noqa: E402

CHUNK = 1 << 20


def shim(directory: Path) -> dict[str, str]:
    zfs = directory / "zfs"
    zfs.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  send) exec head -c "$BENCH_BYTES" /dev/zero ;;\n'
        "  receive) exec cat > /dev/null ;;\n"
        "esac\n"
    )
    zfs.chmod(0o755)
    return {**os.environ, "PATH": f"{directory}:{os.environ['PATH']}"}


def baseline(size: int) -> float:
    started = time.perf_counter()
    head = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    cat = subprocess.Popen(["cat"], stdin=head.stdout, stdout=subprocess.DEVNULL)
    assert head.stdout is not None
    head.stdout.close()
    cat.wait()
    head.wait()
    return time.perf_counter() - started


def pumped(backend: RealBackend) -> tuple[float, int]:
    started = time.perf_counter()
    stream = backend.send(SendSpec("bench/a@s1"))
    sink = backend.receive(ReceiveSpec("bench/b"))
    moved = 0
    while chunk := stream.read(CHUNK):
        sink.write(chunk)
        moved += len(chunk)
    stream.close()
    sink.finish()
    return time.perf_counter() - started, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory() as tmp:
        env = {**shim(Path(tmp)), "BENCH_BYTES": str(size)}
        backend = RealBackend(env=env)
        base = [baseline(size) for _ in range(args.runs)]
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ours = []
        for _ in range(args.runs):
            took, moved = pumped(backend)
            assert moved == size, f"moved {moved} of {size} bytes"
            ours.append(took)
        rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    mb = size / 1e6
    base_rate, our_rate = mb / statistics.median(base), mb / statistics.median(ours)
    print(f"stream size            {args.size_mib} MiB, {args.runs} runs (medians)")
    print(f"baseline OS pipe       {base_rate:8.0f} MB/s")
    print(f"RealBackend pump       {our_rate:8.0f} MB/s")
    print(f"ratio zfleet/baseline  {our_rate / base_rate:8.2f}")
    print(f"peak RSS growth        {rss_growth_kib / 1024:8.1f} MiB")


if __name__ == "__main__":
    main()
