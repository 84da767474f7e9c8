"""Throughput of a zfleet transfer over loopback against the pipeline users build by hand.

    .venv/bin/python bench/transfer.py [--size-mib 128] [--runs 3] [--level 1]

Makes a simulated dataset of mixed files (incompressible, text-like, sparse) and sends it once
(`zfs send` of the simulated backend) into a file; then, on those same stream bytes and in the
same run, measures (medians of --runs, each in a fresh child process):

- hand: ``zstd -1 -T0 | socat - TCP`` into ``socat TCP-LISTEN - | zstd -d > /dev/null``
- zfleet: push_transfer -> StreamServer (framed, compressed on several threads, digested) into a
  receive that discards, both ends in one child process
- the same with mutual TLS (fleet CA certificates made for the run)
- zfleet fan-out to two peers at once (one send, two streams)
- for scale: simulated send -> zfleet -> simulated receive (the simulation's own cost included)
- compression alone: zstandard's own threaded compressor vs zfleet's pool of per-frame
  compressors (what the data plane uses: frames stay independent)

Prints MB/s of stream bytes, the ratio against the hand pipeline, CPU seconds per GB (all
processes of a pipeline; both ends for zfleet), and the child's peak RSS with how much of it
the transfer added (bounded queues keep that flat whatever the stream's size).
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
from protocol.stream import parse_begin, read_records  # noqa: E402
from workers.zfs.base import ReceiveResult, ReceiveSpec, SendSpec, ZfsObject  # noqa: E402

SECRET = b"bench-secret-0123456789abcdef"
FILE = 4 << 20


def make_stream(path: Path, sim_root: Path, size: int, seed: int = 7) -> None:
    """A full send stream of about ``size`` bytes from a simulated dataset with mixed content.

    The dataset ``bench/src@s1`` stays in ``sim_root`` for the end-to-end runs.
    """
    from workers.zfs.sim import SimBackend

    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b" etaoinshrdlucmfwypvbgkjqxz0123456789\n,.", dtype=np.uint8)
    weights = np.linspace(3.0, 0.2, len(alphabet))
    weights /= weights.sum()
    sim = SimBackend(sim_root)
    sim.create_pool("bench")
    sim.create("bench/src")
    root = Path(sim.mountpoint("bench/src") or "")
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
        (root / f"f{index:04d}").write_bytes(data)
    sim.snapshot(["bench/src@s1"])
    stream = sim.send(SendSpec("bench/src@s1"))
    with path.open("wb") as fh:
        while chunk := stream.read(1 << 20):
            fh.write(chunk)
    stream.close()


def stream_guids(path: Path) -> tuple[int, int]:
    """The (fromguid, toguid) of the stream in ``path``, for its grants."""
    with path.open("rb") as fh:
        begin = parse_begin(next(read_records(fh, verify=False)))
    return begin.fromguid, begin.toguid


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
    from app.cli.ca import init_ca, issue_host
    from workers.dataplane.sender import SendOptions, push_transfer
    from workers.dataplane.server import StreamServer
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
    targets = grants_for(servers, stream_guids(path))
    baseline = rss_mib()
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
        "maxrss_mib": peak_rss_mib(),
        "baseline_mib": baseline,
        "wire": float(report.targets[0].wire_bytes),
    }


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM): unlike ru_maxrss, not inherited from the
    parent that forked it."""
    return _status_mib("VmHWM")


def rss_mib() -> float:
    """This process's resident set now (the baseline before a transfer)."""
    return _status_mib("VmRSS")


def grants_for(servers: list[Any], guids: tuple[int, int]) -> list[Any]:
    """A granted peer target per server, each into its own dataset."""
    from workers.dataplane.targets import PeerTarget

    targets = []
    for i, server in enumerate(servers):
        grant = new_grant(
            transfer_id=f"bench-{i}",
            host="beta",
            dataset=f"bench/dst{i}",
            fromguid=guids[0],
            toguid=guids[1],
            ttl=600,
        )
        targets.append(
            PeerTarget(
                "beta", server.address, ReceiveSpec(f"bench/dst{i}"), sign_grant(SECRET, grant)
            )
        )
    return targets


def child_e2e(sim_root: Path, stream: Path, level: int) -> dict[str, float]:
    """Simulated send -> data plane -> simulated receive, both hosts in this process."""
    from workers.dataplane.sender import push_transfer
    from workers.dataplane.server import StreamServer
    from workers.zfs.sim import SimBackend

    source = SimBackend(sim_root)
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-target-") as tmp:
        target = SimBackend(Path(tmp))
        target.create_pool("bench")
        server = StreamServer(target, host="beta", bind=("127.0.0.1", 0), secret=SECRET)
        with server:
            baseline = rss_mib()
            cpu0, t0 = time.process_time(), time.perf_counter()
            report = push_transfer(
                source,
                SendSpec("bench/src@s1"),
                grants_for([server], stream_guids(stream)),
                compression_level=level,
            )
            seconds = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
    if not report.ok:
        raise SystemExit(f"transfer failed: {report}")
    return {
        "seconds": seconds,
        "cpu": cpu,
        "maxrss_mib": peak_rss_mib(),
        "baseline_mib": baseline,
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
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"bench child {args[0]} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import structlog

    # the figures are the output: only errors from the parts under test
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    if args.child:
        kind, path = args.child[0], Path(args.child[1])
        if kind == "zfleet":
            result = child_zfleet(path, args.level, int(args.child[2]), args.child[3] == "tls")
        elif kind == "e2e":
            result = child_e2e(path, Path(args.child[2]), args.level)
        else:
            result = child_compress(path, args.level, int(args.child[2]))
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="zfleet-bench-") as tmp:
        path, sim_root = Path(tmp) / "stream.zstream", Path(tmp) / "sim"
        make_stream(path, sim_root, args.size_mib << 20)
        size = path.stat().st_size
        gb = size / 1e9
        print(
            f"stream: {size / 1e6:.1f} MB, zstd level {args.level}, {args.runs} runs, "
            f"{os.cpu_count()} cores"
        )
        hand, one, two, tls, e2e = [], [], [], [], []
        for _ in range(args.runs):  # interleaved so that load from others hits all alike
            hand.append(run_hand(path, args.level))
            level = ("--level", str(args.level))
            one.append(run_child("zfleet", str(path), "1", "plain", *level))
            two.append(run_child("zfleet", str(path), "2", "plain", *level))
            tls.append(run_child("zfleet", str(path), "1", "tls", *level))
            e2e.append(run_child("e2e", str(sim_root), str(path), *level))

        def med(rows: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in rows)

        base = size / 1e6 / med(hand, "seconds")
        print(
            f"{'pipeline':34} {'MB/s':>8} {'ratio':>6} {'CPU s/GB':>9} {'peak RSS':>9} "
            f"{'(+transfer)':>11}"
        )
        print(
            f"{'hand: zstd -T0 | socat | zstd -d':34} {base:8.0f} {1.0:6.2f} "
            f"{med(hand, 'cpu') / gb:9.2f} {'-':>9}"
        )
        for name, rows in (
            ("zfleet, 1 peer", one),
            ("zfleet, 1 peer, mutual TLS", tls),
            ("zfleet, fan-out to 2 peers", two),
            ("sim send -> zfleet -> sim receive", e2e),
        ):
            rate = size / 1e6 / med(rows, "seconds")
            grown = med(rows, "maxrss_mib") - med(rows, "baseline_mib")
            print(
                f"{name:34} {rate:8.0f} {rate / base:6.2f} {med(rows, 'cpu') / gb:9.2f} "
                f"{med(rows, 'maxrss_mib'):7.0f}Mi {grown:+9.0f}Mi"
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
