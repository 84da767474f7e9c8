"""A collection of look-alike images, rebased around a medoid: space and bytes sent, before/after.

On the simulated backend, 8 images are generated deterministically (seeded): one common tree
(an OS-like minbase: many small files and a few large ones), plus per-image package sets drawn
from a pool (web server, database, python, build tools...), a few drifted common files (an
updated config, a newer library) and some bytes of their own. Each is created as an independent
dataset, a full copy, as images imported one by one are. Then:

- the medoid is chosen from 128 KiB record fingerprints (the image sharing the most bytes with
  the others), and every other image is rebased onto it with keep-content (drop-old);
- every image's tree is checked byte for byte against its listing from before the rebase;
- figures: the pool's allocated bytes and the collection's ``used`` before and after, the
  record-level lower bound (every distinct 128 KiB record once), and the bytes a second host
  needs: before, a full stream per image; after, the medoid in full and each other image as an
  incremental from the medoid's snapshot (sent and received for real on a second simulated host,
  whose trees are checked too).

    .venv/bin/python bench/rebase.py [--images 8] [--common-mib 24] [--seed 7]

With ``--sync`` the same collection goes through the fleet instead (real redis-server, a
``zfleet worker`` process per host, a coordinator): the sync job replicates the images to a
second host in full, then ``zfleet rebase --proposal FILE --on alpha --sync JOB --drop-old``
rebases the members onto the medoid and runs the sync again; the figures are the bytes the two
syncs sent (the transfer steps' stream bytes), and every replica's tree is checked afterwards.

    .venv/bin/python bench/rebase.py --sync [--images 8] [--common-mib 24]

Ratios are against the "before" figures measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import blake3
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import debimages  # noqa: E402

from workers.rebase.collection import Cluster, Proposal, rebase_collection  # noqa: E402
from workers.rebase.tree import fingerprint, tree_hash  # noqa: E402
from workers.zfs.base import ReceiveSpec, SendSpec, ZfsBackend  # noqa: E402
from workers.zfs.sim import SimBackend  # noqa: E402

MIB = 1 << 20
RECORD = 128 * 1024
PACKAGES = ("nginx", "postgres", "python3", "build-essential", "redis", "nodejs", "openjdk", "php")


def blob(rng: random.Random, size: int) -> bytes:
    """Incompressible bytes, but text-like files half the time (repeated lines)."""
    if rng.random() < 0.5:
        return rng.randbytes(size)
    line = rng.randbytes(48).hex().encode() + b"\n"
    return (line * (size // len(line) + 1))[:size]


def common_tree(seed: int, mib: int) -> dict[str, bytes]:
    """The minbase every image starts from: ~70 % of the bytes in a few large files."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    total = mib * MIB
    large = int(total * 0.7)
    for i in range(6):
        files[f"usr/lib/x86_64-linux-gnu/libcore{i}.so"] = blob(rng, large // 6)
    small = total - large
    i = 0
    while small > 0:
        size = min(small, rng.randint(200, 24_000))
        files[f"{rng.choice(('etc', 'usr/share/doc', 'usr/bin', 'var/lib/dpkg'))}/f{i:04d}"] = blob(
            rng, size
        )
        small -= size
        i += 1
    return files


def package(seed: int, name: str, mib: float) -> dict[str, bytes]:
    rng = random.Random(f"{seed}-{name}")
    size = int(mib * MIB)
    out = {f"usr/lib/{name}/lib{name}.so": blob(rng, size // 2)}
    for i in range(20):
        out[f"usr/share/{name}/data{i:02d}"] = blob(rng, size // 40)
    return out


def image_tree(seed: int, index: int, common: dict[str, bytes]) -> dict[str, bytes]:
    rng = random.Random(f"{seed}-image-{index}")
    files = dict(common)
    for name in rng.sample(PACKAGES, 3):
        files.update(package(seed, name, rng.choice((2.0, 3.0, 4.0))))
    for path in rng.sample(sorted(common), 6):  # drift: an updated config or library
        files[path] = blob(rng, len(common[path]))
    files[f"etc/hostname-{index}"] = f"image-{index}\n".encode()
    files[f"srv/app{index}/state.bin"] = rng.randbytes(256 * 1024)
    return files


def write_tree(root: Path, files: dict[str, bytes], seed: int) -> None:
    for rel, data in sorted(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        # package files keep their build time, as dpkg keeps the archive's mtimes
        mtime = 1_700_000_000 + int.from_bytes(hashlib.sha256(f"{seed}{rel}".encode()).digest()[:3])
        os.utime(path, (mtime, mtime))


def records(root: Path) -> dict[bytes, int]:
    """Distinct 128 KiB records of a tree's files (trailing zeros trimmed, holes skipped)."""
    out: dict[bytes, int] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as fp:
                while chunk := fp.read(RECORD):
                    trimmed = chunk.rstrip(b"\0")
                    if trimmed:
                        out[blake3.blake3(trimmed).digest(16)] = len(trimmed)
    return out


def medoid(sets: dict[str, dict[bytes, int]]) -> str:
    """The image whose records the others share most (bytes in common, summed)."""

    def shared(a: dict[bytes, int], b: dict[bytes, int]) -> int:
        return sum(size for key, size in a.items() if key in b)

    return max(sets, key=lambda n: sum(shared(sets[n], sets[m]) for m in sets if m != n))


def listing(root: Path) -> str:
    """One hash of the whole tree: every path's kind, mode, owner, mtime, xattrs, links, bytes."""
    return tree_hash(fingerprint(root))


def send(src: SimBackend, dst: SimBackend, spec: SendSpec, target: str) -> int:
    stream = src.send(spec)
    sink = dst.receive(ReceiveSpec(target))
    total = 0
    while chunk := stream.read(1 << 20):
        sink.write(chunk)
        total += len(chunk)
    stream.close()
    sink.finish()
    return total


def used(sim: SimBackend, name: str) -> int:
    return int(sim.get(name, ["used"])["used"].value)


def copy_tree(src: Path, dst: Path) -> None:
    """``src`` into ``dst`` as it is: owners, modes, times, xattrs, links, device nodes."""
    pack = subprocess.Popen(["tar", "-C", str(src), "--xattrs", "--numeric-owner", "-cf", "-", "."],
                            stdout=subprocess.PIPE)  # fmt: skip
    untar = ["tar", "-C", str(dst), "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"]
    untar.append("-")
    unpack = subprocess.run(untar, stdin=pack.stdout, check=False)
    assert pack.stdout is not None
    pack.stdout.close()
    if pack.wait() != 0 or unpack.returncode != 0:
        sys.exit(f"copying {src} into {dst} failed")


def build(alpha: SimBackend, args: argparse.Namespace) -> list[str]:
    """The collection on ``alpha``: ``tank/img/<name>``, each a full copy with ``@import``.

    Generated look-alikes, or with ``--debootstrap`` the Debian trees of bench/debimages.py."""
    if args.debootstrap:
        trees = debimages.ensure(args.only.split(",") if args.only else None)
        names = [f"tank/img/{n}" for n in trees]
        for name, src in zip(names, trees.values(), strict=True):
            alpha.create(name)
            where = alpha.mountpoint(name)
            assert where is not None
            copy_tree(src, Path(where))
            alpha.snapshot([f"{name}@import"])
        return names
    common = common_tree(args.seed, args.common_mib)
    names = [f"tank/img/i{i}" for i in range(args.images)]
    for i, name in enumerate(names):
        alpha.create(name)
        where = alpha.mountpoint(name)
        assert where is not None
        write_tree(Path(where), image_tree(args.seed, i, common), args.seed)
        alpha.snapshot([f"{name}@import"])
    return names


def optimize_plan(backend: ZfsBackend, names: list[str]) -> tuple[Proposal, dict[str, Any]]:
    """What ``zfleet rebase --optimize`` does first: the analysis, then a cluster per base."""
    from app.cli.dedup import analyze_names
    from app.cli.rebasefleet import proposal_pairs

    estimate = analyze_names(backend, names).proposal.to_dict()
    by_base: dict[str, list[str]] = {}
    for member, base in proposal_pairs(estimate):
        by_base.setdefault(base, []).append(member)
    return Proposal(tuple(Cluster(b, tuple(m)) for b, m in by_base.items())), estimate


SYNC_JOB = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:rep/img"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""


def sent_by(job: dict[str, object]) -> int:
    steps = job["step_list"]
    assert isinstance(steps, list)
    return sum(int(s["result"].get("bytes") or 0) for s in steps if s["kind"] == "transfer")


def main_sync(args: argparse.Namespace) -> None:
    """The collection replicated by the sync job, rebased by a fleet job, synced again."""
    from app.demo.verify import snapshot_files
    from tests.services.fleet import running_fleet
    from tests.services.redis import redis_binary, running_redis

    binary = redis_binary()
    if binary is None:
        sys.exit("--sync needs redis-server")
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-rebase-") as tmp, \
            running_redis(binary) as srv, \
            running_fleet(Path(tmp), srv, ("alpha", "beta"), SYNC_JOB) as fleet:  # fmt: skip
        alpha, beta = fleet.backend("alpha"), fleet.backend("beta")
        alpha.create_pool("tank", size=64 << 30)
        beta.create_pool("rep", size=64 << 30)
        alpha.create("tank/img")
        names = build(alpha, args)
        mounts = {n: Path(str(alpha.mountpoint(n))) for n in names}
        before_trees = {n: listing(mounts[n]) for n in names}
        base = medoid({n: records(mounts[n]) for n in names})
        for host in ("alpha", "beta"):
            fleet.start_worker(host)
        fleet.start_coordinator()

        def zfleet(*argv: str) -> dict[str, object]:
            out = fleet.cli(*argv, "--config", str(fleet.config), "--json", timeout=3600)
            if out.returncode != 0:
                sys.exit(f"zfleet {' '.join(argv)}: exit {out.returncode}\n{out.stderr}"
                         f"{out.stdout[-2000:]}\n{fleet.logs()}")  # fmt: skip
            return dict(json.loads(out.stdout))

        t0 = time.perf_counter()
        first = sent_by(zfleet("sync", "img", "--wait"))
        first_s = time.perf_counter() - t0
        time.sleep(1.1)  # the job's snapshot names have a resolution of one second
        proposal = Path(tmp) / "proposal.json"
        members = [n for n in names if n != base]
        proposal.write_text(json.dumps({"clusters": [{"base": base, "members": members}]}))
        t0 = time.perf_counter()
        done = zfleet("rebase", "--proposal", str(proposal), "--on", "alpha", "--sync", "img",
                      "--drop-old")  # fmt: skip
        rebase_s = time.perf_counter() - t0
        sync = done["sync"]
        assert isinstance(sync, dict)
        after = int(sync["sent_bytes"])
        for n in names:
            assert listing(mounts[n]) == before_trees[n], f"{n} changed"
            replica = n.replace("tank/", "rep/")
            snaps = [o for o in beta.list(replica) if o.name.startswith(replica + "@")]
            newest = max(snaps, key=lambda o: o.createtxg)
            with snapshot_files(beta, newest.name, "rep/scratch") as mp:
                assert listing(Path(mp)) == before_trees[n], f"{replica} differs"
        print(f"images: {args.images} (common tree {args.common_mib} MiB, seed {args.seed}); "
              f"medoid {base}; fleet: alpha -> beta, job img")  # fmt: skip
        print(f"first sync (every image whole)  : {first / MIB:9.1f} MiB  in {first_s:.1f} s")
        print(f"rebase + sync (deltas)          : {after / MIB:9.1f} MiB  ratio "
              f"{after / first:.3f}  in {rebase_s:.1f} s (rebase job and sync job)")  # fmt: skip
        print("every image on alpha and every replica on beta equals its tree from before")


def mib(n: float) -> str:
    return f"{n / MIB:9.1f} MiB"


def send_order(report: Any) -> list[tuple[str, str | None, str]]:
    """(snapshot, from_snap, target) for a fresh second host: bases whole, members after them."""
    rebased = {r.image: r for r in report.rebased}
    out: list[tuple[str, str | None, str]] = []
    seen: set[str] = set()
    for r in report.rebased:
        if r.onto not in seen and r.onto.split("@")[0] not in rebased:
            out.append((r.onto, None, r.onto.split("@")[0]))
            seen.add(r.onto)
    for r in report.rebased:
        out.append((r.snapshot, r.onto, r.image))
        seen.add(r.snapshot)
    return out


def main_debootstrap(args: argparse.Namespace) -> None:
    """The Debian collection on the simulated backend: --optimize, then a fresh second host."""
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-rebase-", dir=args.tmp) as tmp:
        alpha = SimBackend(Path(tmp) / "alpha")
        beta = SimBackend(Path(tmp) / "beta")
        alpha.create_pool("tank", size=256 << 30)
        beta.create_pool("rep", size=256 << 30)
        alpha.create("tank/img")
        beta.create("rep/img")
        t0 = time.perf_counter()
        names = build(alpha, args)
        built = time.perf_counter() - t0
        mounts = {n: Path(str(alpha.mountpoint(n))) for n in names}
        before_trees = {n: listing(mounts[n]) for n in names}
        full_each = {n: alpha.estimate(SendSpec(f"{n}@import")) for n in names}
        t0 = time.perf_counter()
        plan, estimate = optimize_plan(alpha, names)
        analyse_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = rebase_collection(alpha, plan, drop_old=True)
        rebase_s = time.perf_counter() - t0
        assert not report.failed, report.failed
        for n in names:
            assert listing(mounts[n]) == before_trees[n], f"{n} changed"
        sent: dict[str, int] = {}
        for snap, origin, image in send_order(report):
            target = image.replace("tank/", "rep/")
            sent[image] = send(alpha, beta, SendSpec(snap, from_snap=origin), target)
        rebased = {r.image for r in report.rebased}
        for n in names:
            if n not in sent:  # in no cluster: sent whole
                sent[n] = send(alpha, beta, SendSpec(f"{n}@import"), n.replace("tank/", "rep/"))
            where = beta.mountpoint(n.replace("tank/", "rep/"))
            assert where is not None and listing(Path(where)) == before_trees[n], f"{n} on beta"
        full_total = sum(full_each.values())
        after_total = sum(sent.values())
        full_members = sum(full_each[n] for n in rebased)
        sent_members = sum(sent[n] for n in rebased)
        lower, logical = int(estimate["lower_bound"]), int(estimate.get("logical") or 0)
        bases = sorted({r.onto for r in report.rebased})
        print(f"images: {len(names)} Debian {debimages.SUITE} trees by debootstrap (minbase + "
              f"package sets), loaded in {built:.0f} s; simulated backend")  # fmt: skip
        for n in names:
            print(f"  {n:22s} full stream {mib(full_each[n])}  sent after {mib(sent[n])}")
        print(f"--optimize bases                : {', '.join(bases)} "
              f"(analysis {analyse_s:.0f} s, rebase {rebase_s:.0f} s)")  # fmt: skip
        print(f"record-level lower bound        : {mib(lower)}  (each distinct 128 KiB once)")
        print(f"analysis estimate after         : {mib(int(estimate['bytes_after']))}")
        print(f"pool allocated  before          : {mib(report.allocated_before)}")
        print(f"pool allocated  after --optimize: {mib(report.allocated_after)}  ratio "
              f"{report.allocated_after / report.allocated_before:.3f}  "
              f"(x{report.allocated_after / lower:.2f} of the lower bound)")  # fmt: skip
        print(f"images' used    before / after  : {mib(report.used_before)} / "
              f"{mib(report.used_after)}")  # fmt: skip
        print(f"second host, fresh: before      : {mib(full_total)}  (a full stream per image)")
        print(f"second host, fresh: after       : {mib(after_total)}  ratio "
              f"{after_total / full_total:.3f}  (bases full + incrementals, received, checked)")
        print(f"second host holding the bases   : {mib(full_members)} -> {mib(sent_members)}  "
              f"ratio {sent_members / full_members:.3f}")
        print(f"every image on both hosts equals its tree from before"
              f"{'' if not logical else f' (logical {mib(logical).strip()})'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--common-mib", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sync", action="store_true",
                        help="through the fleet: sync, rebase job, sync (needs redis-server)")
    parser.add_argument("--debootstrap", action="store_true",
                        help="the Debian images of bench/debimages.py instead of generated ones")
    parser.add_argument("--only", help="--debootstrap: comma-separated image names")
    parser.add_argument("--lab", action="store_true",
                        help="the Debian images on real OpenZFS in two lab VMs: independent, "
                        "dedup=on, --optimize, bytes to the second VM (slow; the Debian trees)")
    parser.add_argument("--tmp", help="where the simulated pools live (default: $TMPDIR)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    if args.lab:
        import rebaselab

        rebaselab.main_lab(debimages.ensure(args.only.split(",") if args.only else None))
        return
    if args.debootstrap and not args.sync:
        main_debootstrap(args)
        return
    if args.sync:
        main_sync(args)
        return
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-rebase-") as tmp:
        alpha = SimBackend(Path(tmp) / "alpha")
        beta = SimBackend(Path(tmp) / "beta")
        alpha.create_pool("tank", size=64 << 30)
        beta.create_pool("rep", size=64 << 30)
        alpha.create("tank/img")
        beta.create("rep/img")
        t0 = time.perf_counter()
        names = build(alpha, args)
        built = time.perf_counter() - t0
        mounts = {n: Path(str(alpha.mountpoint(n))) for n in names}
        before_trees = {n: listing(mounts[n]) for n in names}
        sets = {n: records(mounts[n]) for n in names}
        lower = sum(
            size for key, size in {k: v for s in sets.values() for k, v in s.items()}.items()
        )
        logical = sum(sum(s.values()) for s in sets.values())
        base = medoid(sets)
        allocated_before = alpha.pools()[0].allocated
        used_before = sum(used(alpha, n) for n in names)
        full_each = {n: alpha.estimate(SendSpec(f"{n}@import")) for n in names}

        t0 = time.perf_counter()
        members = tuple(n for n in names if n != base)
        report = rebase_collection(alpha, Proposal((Cluster(base, members),)), drop_old=True)
        rebase_s = time.perf_counter() - t0
        assert not report.failed, report.failed
        for n in names:
            assert listing(mounts[n]) == before_trees[n], f"{n} changed"
        allocated_after = alpha.pools()[0].allocated
        used_after = sum(used(alpha, n) for n in names)

        base_snap = report.rebased[0].onto
        sent_base = send(alpha, beta, SendSpec(base_snap), base.replace("tank/", "rep/"))
        sent_members = 0
        for r in report.rebased:
            assert r.snapshot is not None
            target = r.image.replace("tank/", "rep/")
            sent_members += send(alpha, beta, SendSpec(r.snapshot, from_snap=base_snap), target)
            where = beta.mountpoint(target)
            assert where is not None and listing(Path(where)) == before_trees[r.image]
        full_total = sum(full_each.values())
        full_members = sum(full_each[n] for n in members)
        after_total = sent_base + sent_members

        def mib(n: float) -> str:
            return f"{n / MIB:9.1f} MiB"

        per_image = statistics.median(r.seconds for r in report.rebased)
        print(
            f"images: {args.images} (common tree {args.common_mib} MiB, seed {args.seed}), "
            f"built in {built:.1f} s; medoid {base}"
        )
        print(f"logical data (all files)        : {mib(logical)}")
        print(f"record-level lower bound        : {mib(lower)}  (each distinct 128 KiB once)")
        print(f"pool allocated  before          : {mib(allocated_before)}")
        print(
            f"pool allocated  after rebase    : {mib(allocated_after)}  "
            f"ratio {allocated_after / allocated_before:.3f}  "
            f"(x{allocated_after / lower:.2f} of the lower bound)"
        )
        print(f"images' used    before / after  : {mib(used_before)} / {mib(used_after)}")
        print(f"second host, fresh: before      : {mib(full_total)}  (a full stream per image)")
        print(
            f"second host, fresh: after       : {mib(after_total)}  ratio "
            f"{after_total / full_total:.3f}  (medoid full + incrementals, received and checked)"
        )
        print(
            f"second host holding the medoid  : {mib(full_members)} -> {mib(sent_members)}  "
            f"ratio {sent_members / full_members:.3f}"
        )
        print(
            f"rebase: {rebase_s:.1f} s for {len(members)} images (median {per_image:.2f} s each),"
            f" {mib(sum(r.bytes_written for r in report.rebased))} written, every tree verified"
        )


if __name__ == "__main__":
    main()
