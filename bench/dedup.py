"""`zfleet dedup analyze` at scale: 1,000 generated images, exact record sets against sketches.

    .venv/bin/python bench/dedup.py [--images 1000] [--files 250] [--families 8] [--k 32,128,1024]

The collection is real files on disk: --families base images, each a pool of "packages" (files of
512 B to 256 KiB, most under 2 KiB), with a few newer versions of each package shared by the images
that updated it; every image holds about 90 % of its family's packages (5 % of them updated)
plus a few files of its own. Shared files are hard links between images, so the disk holds the
distinct content only (bounded: tens of MiB), while each image's tree is read in full.

Printed, each a median of --runs where it is timed:
- reading (fingerprinting) every tree, once: images/s and MB/s;
- summarizing + analysing with exact record sets (the baseline) and with bottom-k sketches of
  each --k records: seconds, the bytes the summaries keep (with the collection's one union
  sketch of 65,536 records), the peak RSS of the process;
- agreement: the sketch plan's estimated "after" against what its bases really cost (measured
  with the exact overlaps) and against the exact plan; the lower bound; the error of every
  pairwise similarity; the Rand index of the two clusterings (1.0: the same pairs together);
- the second pass (workers/dedup/refine.py) that re-reads each cluster's best candidates and
  its members: seconds, and how close its plan comes to the exact one (its figures are exact).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.dedup import RecordSet, analyze, summarize_all  # noqa: E402
from workers.dedup.analyze import Analysis  # noqa: E402
from workers.dedup.refine import reread  # noqa: E402
from workers.dedup.sources import read_tree  # noqa: E402

MIB = 1024 * 1024
T = TypeVar("T")


def _size(rng: random.Random) -> int:
    """Mostly small files, as in an OS image: a few hundred records in a couple of MiB."""
    roll = rng.random()
    if roll < 0.8:
        return rng.randint(512, 2048)
    if roll < 0.99:
        return rng.randint(2048, 32 * 1024)
    return rng.randint(32 * 1024, 256 * 1024)


def build(where: Path, images: int, files: int, families: int, seed: int) -> list[Path]:
    """The collection under ``where``: content in ``pool/``, images as trees of hard links."""
    rng = random.Random(seed)
    pool = where / "pool"
    pool.mkdir()
    roots = []
    for f in range(families):
        # each package: a current version and three newer ones some images moved to
        versions = []
        for p in range(files):
            size = _size(rng)
            paths = []
            for v in range(4):
                path = pool / f"f{f}-p{p}-v{v}"
                path.write_bytes(rng.randbytes(size))
                paths.append(path)
            versions.append(paths)
        for i in range(images * (f + 1) // families - images * f // families):
            root = where / "images" / f"f{f}" / f"img{i}"
            (root / "usr").mkdir(parents=True)
            for p, paths in enumerate(versions):
                if rng.random() < 0.9:
                    version = paths[rng.randint(1, 3)] if rng.random() < 0.05 else paths[0]
                    os.link(version, root / "usr" / f"pkg{p}")
            for o in range(rng.randint(3, 8)):
                (root / f"own{o}").write_bytes(rng.randbytes(rng.randint(512, 8192)))
            roots.append(root)
    return roots


def _median(fn: Callable[[], T], runs: int) -> tuple[float, T]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    assert result is not None
    return statistics.median(times), result


def _rand_index(a: Analysis, b: Analysis) -> float:
    ca, cb = np.array(a.cluster_of()), np.array(b.cluster_of())
    same_a = ca[:, None] == ca[None, :]
    same_b = cb[:, None] == cb[None, :]
    n = len(ca)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    return float((same_a == same_b)[upper].mean())


def _true_after(plan: Analysis, exact: Analysis) -> float:
    """What ``plan``'s bases would really cost, measured with the exact overlaps."""
    unique = np.diag(exact.shared)
    return float(sum(
        unique[m] - (exact.shared[m, b] if m != b else 0.0) for m, b in enumerate(plan.bases)
    ))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--files", type=int, default=250, help="packages per family")
    ap.add_argument("--families", type=int, default=8)
    ap.add_argument("--k", default="32,128,1024", help="sketch sizes (records per dataset)")
    ap.add_argument("--threshold", type=float, default=0.25)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="zfleet-dedup-bench-") as tmp:
        start = time.perf_counter()
        roots = build(Path(tmp), args.images, args.files, args.families, args.seed)
        built = time.perf_counter() - start
        disk = sum(p.stat().st_size for p in (Path(tmp) / "pool").iterdir())
        print(f"collection: {len(roots)} images in {args.families} families, "
              f"{args.files} packages each; built in {built:.1f} s, {disk / MIB:.1f} MiB on disk")

        def read_all() -> list[tuple[str, str | None, RecordSet]]:
            return [(str(r.relative_to(tmp)), None, read_tree(r)) for r in roots]

        seconds, items = _median(read_all, 1)  # the slow part, and the page cache is warm after
        logical = sum(rs.logical for _n, _s, rs in items)
        records = sum(rs.records for _n, _s, rs in items)
        print(f"read trees           : {seconds:7.2f} s  {len(items) / seconds:8.0f} images/s  "
              f"{logical / MIB / seconds:7.1f} MB/s  ({records} records, "
              f"{logical / MIB:.0f} MiB, {records / len(items):.0f} records per image)")

        def run(method: str, k: int) -> tuple[Analysis, int]:
            collection = summarize_all(items, method=method, k=k, count=len(items))
            kept = sum(s.keys.nbytes + s.sizes.nbytes for s in collection.summaries)
            kept += collection.union.keys.nbytes + collection.union.sizes.nbytes
            return analyze(collection, threshold=args.threshold), kept

        t_exact, (exact, kept_exact) = _median(lambda: run("exact", 2), args.runs)
        e = exact.proposal
        print(f"analyze exact        : {t_exact:7.2f} s  summaries keep {kept_exact / MIB:7.2f} MiB"
              f"  (baseline)  peak RSS {_rss_mib():.0f} MiB")
        print(f"  now {e.bytes_now / MIB:.1f} MiB, after rebase {e.bytes_after / MIB:.1f} MiB "
              f"({e.bytes_now / e.bytes_after:.2f}x), lower bound {e.lower_bound / MIB:.1f} MiB "
              f"(after is {100 * (e.bytes_after - e.lower_bound) / e.lower_bound:.1f} % above), "
              f"{len(e.clusters)} clusters")
        off = ~np.eye(len(items), dtype=bool)
        for k in (int(v) for v in args.k.split(",")):
            t_sketch, (sketch, kept) = _median(lambda k=k: run("sketch", k), args.runs)  # type: ignore[misc]
            s = sketch.proposal
            error = np.abs(sketch.similarity - exact.similarity)[off]
            print(f"analyze sketch k={k:<5}: {t_sketch:7.2f} s  summaries keep "
                  f"{kept / MIB:7.2f} MiB  peak RSS {_rss_mib():.0f} MiB  "
                  f"time exact/sketch {t_exact / t_sketch:.2f}x  "
                  f"memory exact/sketch {kept_exact / kept:.2f}x")
            true = _true_after(sketch, exact)
            plan = 100 * (true - e.bytes_after) / e.bytes_after
            print(f"  after rebase: estimated {s.bytes_after / MIB:.1f} MiB, really "
                  f"{true / MIB:.1f} MiB (plan {plan:+.2f} % vs the exact plan, "
                  f"estimate {100 * (s.bytes_after - true) / true:+.2f} %)")
            print(f"  lower bound "
                  f"{s.lower_bound / MIB:.1f} MiB "
                  f"({100 * (s.lower_bound - e.lower_bound) / e.lower_bound:+.2f} %), "
                  f"similarity error mean {error.mean():.4f} p95 {np.percentile(error, 95):.4f} "
                  f"max {error.max():.4f}, {len(s.clusters)} clusters, "
                  f"Rand index {_rand_index(exact, sketch):.4f}")
            t_reread, again = _median(
                lambda sketch=sketch: reread(sketch, lambda i: read_tree(roots[i])), 1
            )
            true = _true_after(again, exact)
            plan = 100 * (true - e.bytes_after) / e.bytes_after
            print(f"  + reread pass      : {t_reread:7.2f} s  after rebase "
                  f"{again.proposal.bytes_after / MIB:.1f} MiB (exact figures; plan {plan:+.2f} % "
                  "vs the exact plan)")


if __name__ == "__main__":
    main()
