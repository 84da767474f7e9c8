"""Throughput of the send-stream codec, each figure against a baseline measured in the same run.

    .venv/bin/python bench/codec.py [--size-mib 1024] [--runs 3]

- fletcher-4: the vectorised closed form (numpy) against the plain word-by-word definition
  (``fletcher4_reference``), MB/s, medians of --runs.
- read_records with checksum verification on a synthetic stream of --size-mib MiB written with
  StreamWriter to a temporary file (128 KiB WRITE records with OBJECT and FREE records between
  them), read back from disk one record at a time: records/s and MB/s, against plain 128 KiB
  ``read()`` calls on the same file and against read_records without verification.
- StreamWriter's MB/s while building the file, and the process's peak RSS (the stream is never
  held in memory, so it stays far below the stream size).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.stream import StreamWriter, read_records  # noqa: E402
from protocol.stream.fletcher4 import fletcher4, fletcher4_reference  # noqa: E402

MIB = 1024 * 1024
BLOCK = 128 * 1024


def _median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_fletcher(runs: int) -> None:
    rng = np.random.default_rng(7)
    big = rng.integers(0, 256, 64 * MIB, dtype=np.uint8).tobytes()
    small = big[: 2 * MIB]  # the reference is ~1000x slower: time it on less data
    fast = 64 / _median_seconds(lambda: fletcher4(big), runs)
    slow = 2 / _median_seconds(lambda: fletcher4_reference(small), runs)
    assert fletcher4(small) == fletcher4_reference(small)
    print(f"fletcher-4 numpy closed form : {fast:9.1f} MB/s (64 MiB buffer)")
    print(f"fletcher-4 word-by-word      : {slow:9.1f} MB/s (2 MiB buffer, baseline)")
    print(f"  ratio                      : {fast / slow:9.1f}x")


def build_stream(path: Path, size: int) -> tuple[int, float]:
    rng = np.random.default_rng(11)
    blocks = [rng.integers(0, 256, BLOCK, dtype=np.uint8).tobytes() for _ in range(8)]
    t = time.perf_counter()
    with path.open("wb", buffering=4 * MIB) as fp:
        w = StreamWriter(fp)
        w.begin(0x5EED, 0, "bench/ds@big", features=4, creation_time=1_700_000_000)
        obj = 1
        while w.offset < size:
            w.object(obj, bonus=b"b" * 168)
            for i in range(64):  # 8 MiB files
                w.write(obj, i * BLOCK, blocks[(obj + i) % len(blocks)])
            w.free(obj, 64 * BLOCK, (1 << 64) - 1)
            obj += 1
        w.end()
    return w.records, time.perf_counter() - t


def bench_reader(size_mib: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-") as tmp:
        path = Path(tmp) / "big.zstream"
        nrecords, build_s = build_stream(path, size_mib * MIB)
        total = path.stat().st_size
        mb = total / MIB
        print(f"synthetic stream             : {mb:9.1f} MiB, {nrecords} records")
        print(f"StreamWriter                 : {mb / build_s:9.1f} MB/s (one run)")

        def plain_read() -> None:
            with path.open("rb") as fp:
                while fp.read(BLOCK):
                    pass

        def records(verify: bool) -> Callable[[], None]:
            def run() -> None:
                n = 0
                with path.open("rb") as fp:
                    for _ in read_records(fp, verify=verify):
                        n += 1
                assert n == nrecords

            return run

        base = _median_seconds(plain_read, runs)
        unverified = _median_seconds(records(False), runs)
        verified = _median_seconds(records(True), runs)
        print(f"plain read() 128 KiB         : {mb / base:9.1f} MB/s (baseline)")
        print(f"read_records, no verify      : {mb / unverified:9.1f} MB/s")
        print(
            f"read_records, verified       : {mb / verified:9.1f} MB/s, "
            f"{nrecords / verified:,.0f} records/s"
        )
        print(f"  ratio verified / plain read: {base / verified:9.2f}x of baseline speed")
        print(f"  ratio verified / unverified: {unverified / verified:9.2f}x of unverified speed")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS                     : {peak:9.1f} MiB (stream {mb:.0f} MiB)")


def bench_small_records(count: int, runs: int) -> None:
    """Header-bound streams (metadata changes: OBJECT and FREE records, tiny payloads)."""
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-") as tmp:
        path = Path(tmp) / "small.zstream"
        with path.open("wb", buffering=4 * MIB) as fp:
            w = StreamWriter(fp)
            w.begin(0x5EED, 0, "bench/ds@meta")
            for obj in range(1, count // 2):
                w.object(obj, bonus=b"m" * 168)
                w.free(obj, 0, (1 << 64) - 1)
            w.end()
        n = w.records
        mb = path.stat().st_size / MIB

        def read(verify: bool) -> Callable[[], None]:
            def run() -> None:
                with path.open("rb") as fp:
                    for _ in read_records(fp, verify=verify):
                        pass

            return run

        unverified = _median_seconds(read(False), runs)
        verified = _median_seconds(read(True), runs)
        print(f"small-record stream          : {mb:9.1f} MiB, {n} records")
        print(f"read_records, no verify      : {n / unverified:11,.0f} records/s")
        print(
            f"read_records, verified       : {n / verified:11,.0f} records/s "
            f"({mb / verified:.1f} MB/s); ratio {unverified / verified:.2f}x of unverified"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small-records", type=int, default=200_000)
    args = parser.parse_args()
    print(f"cpu: {os.cpu_count()} cores visible; medians of {args.runs} runs")
    bench_reader(args.size_mib, args.runs)
    bench_small_records(args.small_records, args.runs)
    bench_fletcher(args.runs)


if __name__ == "__main__":
    main()
