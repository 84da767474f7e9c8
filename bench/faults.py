"""Fault figures: transfers cut at random points, every one resumed, the bytes sent twice counted.

For each transfer kind (a full stream, an incremental, a clone as an incremental from its origin,
a raw send of an encrypted dataset, and an upload to the object store) the harness cuts the
transfer at ``--cuts`` random points (seeded), runs it again the way the worker does (the peer's
resume token gives ``zfs send -t``; the store keeps what it already stored) and checks the
result: the replica has the snapshot's guid and the source's files (the raw replica: its guid),
the store restores the stream byte for byte. Per cut it records the bytes sent again: what both
attempts sent minus the stream's size (for the store: pack bytes stored beyond a clean upload's).

Peers are real stream servers on 127.0.0.1 over simulated pools, cut by a TCP proxy that closes
both sides after N bytes; the store is a local repository whose upload fails after N bytes.

    python bench/faults.py                       # 5 cuts per kind, about a minute
    python bench/faults.py --cuts 100 --json     # the figure
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.errors import StoreUnavailable  # noqa: E402
from protocol.grants import new_grant, sign_grant  # noqa: E402
from protocol.log import configure_logging  # noqa: E402
from tests.services.dataplane import faulty_proxy  # noqa: E402
from workers.cloud import manifest as mf  # noqa: E402
from workers.cloud.blobstore import LocalBlobStore  # noqa: E402
from workers.cloud.ingest import StreamIngest  # noqa: E402
from workers.cloud.repo import RepoKey, Repository  # noqa: E402
from workers.cloud.restore import restore_stream  # noqa: E402
from workers.dataplane.sender import CHUNK_SIZE, SendOptions, push_transfer  # noqa: E402
from workers.dataplane.server import StreamServer  # noqa: E402
from workers.dataplane.sinks import LinkOptions  # noqa: E402
from workers.dataplane.targets import Outcome, PeerTarget, StoreTarget, TransferReport  # noqa: E402
from workers.zfs.base import ObjType, ReceiveSpec, SendSpec  # noqa: E402
from workers.zfs.sim import SimBackend  # noqa: E402

SECRET = b"fleet-secret-for-the-fault-bench-0123"
# zfleet's own chunk size (a frame is the unit a cut loses); stalls noticed sooner than on a LAN
LINK = LinkOptions(heartbeat_interval=0.2, stall_timeout=3.0)
KINDS = ("full", "incremental", "clone", "raw", "store")
STORE_PACK = 256 * 1024  # small packs, so that a cut upload has stored some before the cut
MIB = 1024 * 1024
RETRIES = 5


@dataclass(frozen=True)
class Kind:
    """One kind of transfer: what is sent, where it lands, how the target is reset after."""

    name: str
    send: SendSpec
    receive: ReceiveSpec | None  # None: the object store
    source: str  # the dataset whose files the replica must have ("" for raw and the store)
    reset: Callable[[], None]


@dataclass
class Figures:
    kind: str
    stream: int
    clean: int = 0  # wire bytes (peers) or pack bytes (store) of a transfer without a cut
    resent: list[int] = field(default_factory=list)
    resumed_from_token: int = 0
    done_before_retry: int = 0
    retries: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "cuts": len(self.resent), "stream_bytes": self.stream,
            "clean_bytes": self.clean,
            "resent_median": int(statistics.median(self.resent)) if self.resent else 0,
            "resent_max": max(self.resent, default=0),
            "resent_median_pct": round(100 * statistics.median(self.resent) / self.stream, 2)
            if self.resent else 0.0,
            "resent_max_pct": round(100 * max(self.resent, default=0) / self.stream, 2),
            "resumed_from_token": self.resumed_from_token,
            "complete_before_retry": self.done_before_retry, "retries": self.retries,
        }  # fmt: skip


def _guid(backend: SimBackend, name: str) -> int:
    return int(backend.get(name, ["guid"])["guid"].value)


def _token(backend: SimBackend, dataset: str) -> str | None:
    if not backend.exists(dataset):
        return None
    rows = backend.list(dataset, recursive=False, types=(ObjType.FILESYSTEM, ObjType.VOLUME))
    return next((r.receive_resume_token for r in rows if r.name == dataset), None)


def _files(backend: SimBackend, dataset: str) -> str:
    root = Path(backend.mountpoint(dataset) or "")
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _write(backend: SimBackend, dataset: str, name: str, size: int, rng: random.Random) -> None:
    Path(backend.mountpoint(dataset) or "", name).write_bytes(rng.randbytes(size))


def build_source(alpha: SimBackend, size: int, rng: random.Random) -> None:
    """tank/src@s1 (full), @s2 (an increment), tank/cl@c1 (a clone of @s1), tank/enc@e1 (raw)."""
    alpha.create_pool("tank")
    alpha.create("tank/src")
    for i in range(4):
        _write(alpha, "tank/src", f"f{i}", size // 4, rng)
    alpha.snapshot(["tank/src@s1"])
    _write(alpha, "tank/src", "f1", size // 4, rng)
    _write(alpha, "tank/src", "new", size // 8, rng)
    alpha.snapshot(["tank/src@s2"])
    alpha.clone("tank/src@s1", "tank/cl")
    _write(alpha, "tank/cl", "own", size // 2, rng)
    alpha.snapshot(["tank/cl@c1"])
    alpha.create("tank/enc", key=b"bench-passphrase-0123",
                 props={"encryption": "on", "keyformat": "passphrase"})  # fmt: skip
    _write(alpha, "tank/enc", "secret", size // 2, rng)
    alpha.snapshot(["tank/enc@e1"])


def stream_bytes(backend: SimBackend, spec: SendSpec) -> tuple[int, str]:
    """The exact size and sha256 of a send stream."""
    h, n = hashlib.sha256(), 0
    stream = backend.send(spec)
    try:
        while chunk := stream.read(MIB):
            h.update(chunk)
            n += len(chunk)
    finally:
        stream.close()
    return n, h.hexdigest()


def grant_for(alpha: SimBackend, kind: Kind) -> str:
    assert kind.receive is not None
    fromguid = _guid(alpha, kind.send.from_snap) if kind.send.from_snap else 0
    toguid = _guid(alpha, kind.send.snapshot)
    grant = new_grant(transfer_id=uuid.uuid4().hex, host="beta", dataset=kind.receive.target,
                      fromguid=fromguid, toguid=toguid, ttl=600)  # fmt: skip
    return sign_grant(SECRET, grant)


def send_clean(alpha: SimBackend, server: StreamServer, snapshot: str, target: str,
               opts: SendOptions) -> None:  # fmt: skip
    """A transfer without faults (the bases the increment and the clone need on the target)."""
    kind = Kind("base", SendSpec(snapshot), ReceiveSpec(target), "", lambda: None)
    peer = PeerTarget("beta", server.address, ReceiveSpec(target), grant_for(alpha, kind))
    if not push_transfer(alpha, kind.send, [peer], options=opts).ok:
        raise AssertionError(f"the clean transfer of {snapshot} failed")


def upload(alpha: SimBackend, spec: SendSpec, repo: Repository, opts: SendOptions,
           at: int | None = None) -> TransferReport:  # fmt: skip
    """One upload of ``spec`` to ``repo``, cut after ``at`` bytes when given."""

    def writer(_spec: SendSpec) -> StreamIngest | CutUpload:
        ingest = StreamIngest(repo, max_inflight=0)  # packs uploaded in order, one at a time
        return ingest if at is None else CutUpload(ingest, at)

    return push_transfer(alpha, spec, [StoreTarget("vault", writer)], options=opts)


def _wire(report: TransferReport) -> int:
    return sum(t.wire_bytes for t in report.targets)


def cut_peer(alpha: SimBackend, beta: SimBackend, server: StreamServer, kind: Kind, at: int,
             figures: Figures, expect: str, opts: SendOptions) -> None:  # fmt: skip
    """One cut after ``at`` wire bytes, the retry, the checks, and the target reset.

    Re-sent: the bytes that reached the target before the cut plus those of the retries, less
    what a transfer without a cut puts on the wire.
    """
    assert kind.receive is not None
    target = kind.receive.target
    grant = grant_for(alpha, kind)
    with faulty_proxy(server.address, cut_after=at) as proxy:
        first = push_transfer(alpha, kind.send, [PeerTarget("beta", proxy.address, kind.receive,
                                                            grant)], options=opts)  # fmt: skip
    if first.ok:
        raise AssertionError(f"{kind.name}: the cut at {at} did not cut")
    delivered = proxy.forwarded[0] if proxy.forwarded else 0
    toguid = _guid(alpha, kind.send.snapshot)
    snap = f"{target}@{kind.send.snapshot.split('@', 1)[1]}"

    def arrived() -> bool:
        return beta.exists(snap) and _guid(beta, snap) == toguid

    # the receiver notices the cut and keeps its partial state (none when cut before any data)
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline and _token(beta, target) is None and not arrived():
        time.sleep(0.02)
    sent = delivered
    if arrived():
        figures.done_before_retry += 1  # the cut came after the receive had all it needed
    for attempt in range(RETRIES if not arrived() else 0):
        # as the runner does: try again, with a short backoff while the target is still busy
        again = push_transfer(alpha, kind.send, [PeerTarget("beta", server.address, kind.receive,
                                                            grant)], options=opts)  # fmt: skip
        [report] = again.targets
        sent += _wire(again)
        if report.outcome is Outcome.OK:
            figures.resumed_from_token += int(report.resumed)
            figures.retries += attempt + 1
            break
        time.sleep(0.25 * (attempt + 1))
    else:
        if not arrived():
            raise AssertionError(f"{kind.name}: cut at {at} did not resume: {report}")
    if _guid(beta, snap) != toguid:
        raise AssertionError(f"{kind.name}: cut at {at}: {snap} has another guid")
    if expect and _files(beta, target) != expect:
        raise AssertionError(f"{kind.name}: cut at {at}: {target}'s files differ")
    figures.resent.append(max(sent - figures.clean, 0))
    kind.reset()


class CutUpload:
    """An upload to the store that fails (as a lost connection to S3 does) after ``at`` bytes."""

    def __init__(self, inner: StreamIngest, at: int) -> None:
        self.inner, self.left = inner, at

    def write(self, data: bytes) -> None:
        if len(data) >= self.left:
            self.inner.write(data[: self.left])
            self.left = 0
            raise StoreUnavailable("the store went away (fault injected by bench/faults.py)")
        self.left -= len(data)
        self.inner.write(data)

    def finish(self) -> object:
        return self.inner.finish()

    def abort(self) -> None:
        self.inner.abort()


def _pack_bytes(repo_dir: Path) -> int:
    return sum(p.stat().st_size for p in (repo_dir / "data").rglob("*") if p.is_file())


def _new_repo(path: Path) -> Repository:
    return Repository.init(LocalBlobStore(path), RepoKey(passphrase="bench"), scrypt_n=2**10,
                           pack_size=STORE_PACK)  # fmt: skip


def cut_store(alpha: SimBackend, spec: SendSpec, at: int, work: Path, clean: int,
              digest: str, figures: Figures, opts: SendOptions) -> None:  # fmt: skip
    repo_dir = work / f"repo-{uuid.uuid4().hex[:8]}"
    repo = _new_repo(repo_dir)
    if upload(alpha, spec, repo, opts, at).ok:
        raise AssertionError(f"store: the cut at {at} did not cut")
    # the retry is another process: it opens the repository afresh
    again = Repository.open(LocalBlobStore(repo_dir), RepoKey(passphrase="bench"))
    second = upload(alpha, spec, again, opts)
    if not second.ok:
        raise AssertionError(f"store: cut at {at} did not complete: {second.targets}")
    stored, broken = mf.load_all(again.target, again.crypto)
    if broken or len(stored) != 1:
        raise AssertionError(f"store: cut at {at}: manifests {stored} {broken}")
    h = hashlib.sha256()
    for chunk in restore_stream(again, stored[0]):
        h.update(chunk)
    if h.hexdigest() != digest:
        raise AssertionError(f"store: cut at {at}: the restored stream differs")
    figures.resent.append(max(_pack_bytes(repo_dir) - clean, 0))
    shutil.rmtree(repo_dir)


def run(cuts: int, seed: int, size: int, kinds: tuple[str, ...], chunk: int = CHUNK_SIZE
        ) -> list[dict[str, Any]]:  # fmt: skip
    """Every kind's cuts; one summary per kind (printed as it completes)."""
    rng = random.Random(seed)
    opts = SendOptions(chunk_size=chunk, link=LINK)
    with tempfile.TemporaryDirectory(prefix="zfleet-faults-") as tmp:
        work = Path(tmp)
        alpha, beta = SimBackend(work / "alpha"), SimBackend(work / "beta")
        build_source(alpha, size, rng)
        beta.create_pool("tank")
        server = StreamServer(beta, host="beta", bind=("127.0.0.1", 0), secret=SECRET,
                              stall_timeout=3.0, heartbeat_interval=0.2)  # fmt: skip
        results = []
        with server:
            send_clean(alpha, server, "tank/src@s1", "tank/base", opts)
            send_clean(alpha, server, "tank/src@s1", "tank/inc", opts)

            def destroy(name: str) -> Callable[[], None]:
                return lambda: beta.destroy(name, recursive=True)

            def back_to_s1() -> None:
                beta.destroy("tank/inc@s2")
                beta.rollback("tank/inc@s1")

            table = {
                "full": Kind("full", SendSpec("tank/src@s1"), ReceiveSpec("tank/full"),
                             "tank/base", destroy("tank/full")),
                "incremental": Kind("incremental", SendSpec("tank/src@s2", from_snap="tank/src@s1"),
                                    ReceiveSpec("tank/inc"), "tank/src", back_to_s1),
                "clone": Kind("clone", SendSpec("tank/cl@c1", from_snap="tank/src@s1"),
                              ReceiveSpec("tank/bcl", origin="tank/base@s1"), "tank/cl",
                              destroy("tank/bcl")),
                "raw": Kind("raw", SendSpec("tank/enc@e1", raw=True), ReceiveSpec("tank/raw"), "",
                            destroy("tank/raw")),
                "store": Kind("store", SendSpec("tank/src@s1"), None, "", lambda: None),
            }  # fmt: skip
            for name in kinds:
                kind = table[name]
                total, digest = stream_bytes(alpha, kind.send)
                figures = Figures(name, total)
                started = time.monotonic()
                if kind.receive is None:
                    if not upload(alpha, kind.send, _new_repo(work / "clean"), opts).ok:
                        raise AssertionError("the clean upload failed")
                    clean = figures.clean = _pack_bytes(work / "clean")
                    for _ in range(cuts):
                        cut_store(alpha, kind.send, rng.randrange(1, total), work, clean, digest,
                                  figures, opts)  # fmt: skip
                else:
                    # s1's files are the clean copy's (the source moved on to s2)
                    holder = beta if kind.source == "tank/base" else alpha
                    expect = _files(holder, kind.source) if kind.source else ""
                    assert kind.receive is not None
                    peer = PeerTarget("beta", server.address, kind.receive, grant_for(alpha, kind))
                    clean_run = push_transfer(alpha, kind.send, [peer], options=opts)
                    if not clean_run.ok:
                        raise AssertionError(f"{name}: the transfer without a cut failed")
                    figures.clean = _wire(clean_run)
                    kind.reset()
                    for _ in range(cuts):
                        cut_peer(alpha, beta, server, kind, rng.randrange(1, total), figures,
                                 expect, opts)  # fmt: skip
                summary = figures.summary()
                summary["seconds"] = round(time.monotonic() - started, 1)
                results.append(summary)
                print_row(summary)
        return results


def print_row(s: dict[str, Any]) -> None:
    print(f"{s['kind']:<12} {s['cuts']:>5} cuts, all resumed; stream {s['stream_bytes'] / MIB:6.2f}"
          f" MiB; re-sent per cut: median {s['resent_median'] / 1024:8.1f} KiB"
          f" ({s['resent_median_pct']:5.2f} %), max {s['resent_max'] / 1024:8.1f} KiB"
          f" ({s['resent_max_pct']:5.2f} %); from a token {s['resumed_from_token']},"
          f" complete before the retry {s['complete_before_retry']}; {s['seconds']} s",
          flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuts", type=int, default=5, help="cut points per kind (default 5)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--size", type=float, default=8.0, help="MiB in the full stream")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset")
    parser.add_argument("--chunk", type=int, default=CHUNK_SIZE,
                        help=f"bytes per frame (default zfleet's {CHUNK_SIZE})")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not 1 <= args.cuts <= 10_000 or not 0.25 <= args.size <= 256:
        parser.error(f"kinds from {KINDS}, 1..10000 cuts, 0.25..256 MiB (unknown: {unknown})")
    os.environ.setdefault("ZFLEET_LOG_LEVEL", "ERROR")
    configure_logging(level="ERROR")
    print(f"bench/faults.py: {args.cuts} random cuts per kind, seed {args.seed}, "
          f"{args.chunk // 1024} KiB frames, store packs of {STORE_PACK // 1024} KiB")
    results = run(args.cuts, args.seed, int(args.size * MIB), kinds, args.chunk)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
