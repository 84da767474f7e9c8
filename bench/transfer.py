"""Throughput of a zfleet transfer over loopback against the pipeline users build by hand.

    .venv/bin/python bench/transfer.py [--size-mib 128] [--runs 3] [--level 1]

Builds one valid send stream (mixed content: incompressible, text-like and sparse blocks), then,
on those same bytes and in the same run, measures (medians of --runs):

- hand: ``zstd -1 -T0 | socat - TCP`` into ``socat TCP-LISTEN - | zstd -d > /dev/null``
- zfleet: push_transfer -> StreamServer (framed, compressed on several threads, digested) into a
  receive that discards, both ends in one child process
- the same with mutual TLS (fleet CA certificates made for the run)
- zfleet fan-out to two peers at once (one send, two streams), with the child's peak RSS
- compression alone: zstandard's own threaded compressor vs zfleet's pool of per-frame
  compressors (what the data plane uses: frames stay independent)

Prints MB/s, CPU seconds per GB and the ratio against the hand pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.errors import DatasetNotFound  # noqa: E402
from protocol.grants import new_grant, sign_grant  # noqa: E402
from protocol.stream import StreamWriter  # noqa: E402
from workers.zfs.base import ReceiveResult, ReceiveSpec, SendSpec, ZfsObject  # noqa: E402

SECRET = b"bench-secret-0123456789abcdef"
TOGUID = 0x1234_5678_9ABC_DEF0
BLOCK = 128 * 1024


def make_stream(path: Path, size: int, seed: int = 7) -> None:
    """A valid full send stream of about ``size`` bytes with realistic, mixed content."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b" etaoinshrdlucmfwypvbgkjqxz0123456789\n,.", dtype=np.uint8)
    weights = np.linspace(3.0, 0.2, len(alphabet))
    weights /= weights.sum()
    with path.open("wb") as fh:
        writer = StreamWriter(fh)
        writer.begin(TOGUID, 0, "bench/src@s1")
        writer.object(2)
        for index in range(size // BLOCK):
            kind = index % 3
            if kind == 0:  # already-compressed media
                data = rng.bytes(BLOCK)
            elif kind == 1:  # text and logs
                data = rng.choice(alphabet, BLOCK, p=weights).tobytes()
            else:  # sparse: mostly zeros, a few records
                buf = np.zeros(BLOCK, dtype=np.uint8)
                spots = rng.integers(0, BLOCK - 64, 64)
                for spot in spots:
                    buf[spot : spot + 64] = rng.integers(0, 256, 64, dtype=np.uint8)
                data = buf.tobytes()
            writer.write(2, index * BLOCK, data)
        writer.end()


# -- the child processes ------------------------------------------------------------------------


class _FileStream:
    def __init__(self, path: Path) -> None:
        self._fh = path.open("rb")

    def read(self, n: int = -1) -> bytes:
        return self._fh.read(n)

    def close(self) -> None:
        self._fh.close()

    def cancel(self) -> None:
        self._fh.close()


class FileSource:
    """`zfs send` stand-in: the prepared stream file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, spec: SendSpec) -> _FileStream:
        return _FileStream(self.path)

    def estimate(self, spec: SendSpec) -> int:
        return self.path.stat().st_size


class _Discard:
    def __init__(self, spec: ReceiveSpec) -> None:
        self.spec = spec
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)

    def finish(self) -> ReceiveResult:
        return ReceiveResult(self.spec.target, None, self.bytes)

    def abort(self) -> None:
        pass


class DiscardBackend:
    """`zfs receive` stand-in that throws the bytes away (the bench measures the data plane)."""

    def receive(self, spec: ReceiveSpec) -> _Discard:
        return _Discard(spec)

    def list(self, root: str | None = None, **_: Any) -> list[ZfsObject]:
        raise DatasetNotFound(f"{root} does not exist")


def child_zfleet(path: Path, level: int, peers: int, tls: bool) -> dict[str, float]:
    from coordinator.cli.ca import init_ca, issue_host
    from workers.dataplane.sender import SendOptions, push_transfer
    from workers.dataplane.server import StreamServer
    from workers.dataplane.targets import PeerTarget
    from workers.tls import TlsConfig, client_context

    options = SendOptions()
    server_tls = None
    if tls:
        ca_dir = Path(tempfile.mkdtemp(prefix="zfleet-bench-ca-"))
        init_ca(ca_dir)
        issue_host(ca_dir, "alpha")
        issue_host(ca_dir, "beta")
        server_tls = TlsConfig.for_host(ca_dir, "beta")
        options = SendOptions(tls=client_context(TlsConfig.for_host(ca_dir, "alpha")))
    servers = [
        StreamServer(
            DiscardBackend(), host="beta", bind=("127.0.0.1", 0), secret=SECRET, tls=server_tls
        )
        for _ in range(peers)
    ]
    for server in servers:
        server.start()
    targets = []
    for i, server in enumerate(servers):
        grant = new_grant(
            transfer_id=f"bench-{i}",
            host="beta",
            dataset=f"bench/dst{i}",
            fromguid=0,
            toguid=TOGUID,
            ttl=600,
        )
        targets.append(
            PeerTarget(
                "beta", server.address, ReceiveSpec(f"bench/dst{i}"), sign_grant(SECRET, grant)
            )
        )
    cpu0, t0 = time.process_time(), time.perf_counter()
    report = push_transfer(
        FileSource(path),
        SendSpec("bench/src@s1"),
        targets,
        compression_level=level,
        options=options,
    )
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    for server in servers:
        server.stop()
    if tls:
        shutil.rmtree(ca_dir)
    if not report.ok:
        raise SystemExit(f"transfer failed: {report}")
    return {
        "seconds": seconds,
        "cpu": cpu,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wire": float(report.targets[0].wire_bytes),
    }


def child_compress(path: Path, level: int, limit: int) -> dict[str, float]:
    import zstandard

    from protocol.frames import compress_payload
    from workers.dataplane.compress import ParallelCompressor, default_threads

    data = path.read_bytes()[:limit]
    threads = default_threads()
    chunks = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    t0 = time.perf_counter()
    zstandard.ZstdCompressor(level=level, threads=threads).compress(data)
    own = time.perf_counter() - t0
    pool = ParallelCompressor(lambda b: compress_payload(b, level), threads=threads)
    t0 = time.perf_counter()
    for _ in pool.map(chunks):
        pass
    ours = time.perf_counter() - t0
    return {"zstd_threads": own, "frame_pool": ours, "threads": threads, "bytes": len(data)}


# -- the hand-made pipeline -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_hand(path: Path, level: int) -> dict[str, float]:
    port = _free_port()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    receiver = subprocess.Popen(
        f"socat -u TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr - | zstd -d -c > /dev/null",
        shell=True,
    )
    t0 = time.perf_counter()
    sender = subprocess.Popen(
        f"zstd -{level} -T0 -q -c {path} | socat -u - TCP:127.0.0.1:{port},retry=100,interval=0.02",
        shell=True,
    )
    if sender.wait(300) or receiver.wait(300):
        raise SystemExit("hand pipeline failed")
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu": cpu}


def run_child(*args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
        kind, path = args.child[0], Path(args.child[1])
        if kind == "zfleet":
            result = child_zfleet(path, args.level, int(args.child[2]), args.child[3] == "tls")
        else:
            result = child_compress(path, args.level, int(args.child[2]))
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="zfleet-bench-") as tmp:
        path = Path(tmp) / "stream.zstream"
        make_stream(path, args.size_mib << 20)
        size = path.stat().st_size
        gb = size / 1e9
        print(
            f"stream: {size / 1e6:.1f} MB, zstd level {args.level}, {args.runs} runs, "
            f"{os.cpu_count()} cores"
        )
        hand, one, two, tls = [], [], [], []
        for _ in range(args.runs):  # interleaved so that load from others hits all alike
            hand.append(run_hand(path, args.level))
            level = ("--level", str(args.level))
            one.append(run_child("zfleet", str(path), "1", "plain", *level))
            two.append(run_child("zfleet", str(path), "2", "plain", *level))
            tls.append(run_child("zfleet", str(path), "1", "tls", *level))

        def med(rows: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in rows)

        base = size / 1e6 / med(hand, "seconds")
        print(f"{'pipeline':34} {'MB/s':>8} {'ratio':>6} {'CPU s/GB':>9} {'peak RSS':>9}")
        print(
            f"{'hand: zstd -T0 | socat | zstd -d':34} {base:8.0f} {1.0:6.2f} "
            f"{med(hand, 'cpu') / gb:9.2f} {'-':>9}"
        )
        for name, rows in (
            ("zfleet, 1 peer", one),
            ("zfleet, 1 peer, mutual TLS", tls),
            ("zfleet, fan-out to 2 peers", two),
        ):
            rate = size / 1e6 / med(rows, "seconds")
            print(
                f"{name:34} {rate:8.0f} {rate / base:6.2f} {med(rows, 'cpu') / gb:9.2f} "
                f"{med(rows, 'maxrss_mib'):7.0f}Mi"
            )
        print(f"wire bytes / stream bytes: {one[0]['wire'] / size:.3f}")
        comp = [
            run_child("compress", str(path), str(64 << 20), "--level", str(args.level))
            for _ in range(args.runs)
        ]
        mb = comp[0]["bytes"] / 1e6
        own, ours = mb / med(comp, "zstd_threads"), mb / med(comp, "frame_pool")
        print(
            f"compression only, {int(comp[0]['threads'])} threads: zstandard threaded "
            f"{own:.0f} MB/s, frame pool {ours:.0f} MB/s (ratio {ours / own:.2f})"
        )


if __name__ == "__main__":
    main()
