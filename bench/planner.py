"""Planning time and memory for a synthetic fleet, against a naive baseline in the same run.

    .venv/bin/python bench/planner.py [--hosts 1000] [--datasets 100000] [--snapshots 1000000]
                                      [--runs 3] [--kinds]

The fleet: half the hosts are sources, half are their replicas. Each source host has its share of
the datasets (a tenth of them clones of a sibling's snapshot), the replicas hold the same datasets
lagging a few snapshots behind (same guids), so every pair plans an incremental. Snapshots are
split 60/40 between sources and replicas to total --snapshots. One job per source host.

Figures (medians of --runs where timed):
- graph + plan, untraced: the graph's build and the planning of every job, each timed without
  tracemalloc (which slows every allocation several times over), against the issue's goal
  (< 10 s at 1,000 hosts x 100,000 datasets x 1 M snapshots);
- planning: time per job and per dataset, against a naive planner that finds each pair's newest
  common snapshot by scanning ``ZfsObject`` lists with a guid set (same run);
- memory, in separate child processes so nothing else is alive in them: a traced run (graph
  build, then every job planned, under tracemalloc: its peak against the goal, < 2 GiB) and an
  untraced one (its peak RSS, interpreter included);
- bytes per snapshot held by the compact graph (tracemalloc), against the straightforward
  representation (a list of ``ZfsObject`` per host, what ``zfs list`` parses to).

``--kinds`` also times planning with the default kind policies (what every job of a parsed fleet
config carries: each dataset routed by its kind, coordinator/kinds.py) against none.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coordinator.config import DatasetRef, JobConfig, JobTarget  # noqa: E402
from coordinator.graph import Dataset, FleetGraph, HostInventory  # noqa: E402
from coordinator.kinds import default_policies  # noqa: E402
from coordinator.planner import plan_sync  # noqa: E402
from workers.zfs.base import ObjType, ZfsObject  # noqa: E402

LAG = 3  # snapshots each replica is behind


def shape(hosts: int, datasets: int, snapshots: int) -> tuple[int, int, int, int]:
    sources = hosts // 2
    per_host = max(1, datasets // hosts)  # datasets per host (sources and replicas alike)
    src_snaps = max(LAG + 2, round(snapshots * 0.6 / (sources * per_host)))
    dst_snaps = max(1, src_snaps - LAG)
    return sources, per_host, src_snaps, dst_snaps


def guid(host: int, ds: int, snap: int) -> int:
    return (host * 1_000_003 + ds * 1_009 + snap) * 2_654_435_761 % (2**63) + 1


def build_compact(hosts: int, datasets: int, snapshots: int) -> FleetGraph:
    sources, per_host, src_snaps, dst_snaps = shape(hosts, datasets, snapshots)
    rnd = random.Random(7)
    g = FleetGraph()
    for h in range(sources):
        src, dst = f"h{h:04d}", f"h{h + sources:04d}"
        sd: dict[str, Dataset] = {}
        dd: dict[str, Dataset] = {}
        for d in range(per_host):
            name = f"tank/ds{d:04d}"
            origin = None
            if d % 10 == 9:  # a clone of an earlier sibling's second snapshot
                origin = f"tank/ds{rnd.randrange(0, d):04d}@s0001"
            s = Dataset(src, name, guid=guid(h, d, 0), origin=origin)
            for i in range(src_snaps):
                s.add_snapshot(f"s{i:04d}", guid(h, d, i + 1), 10 + i, written=4096,
                               referenced=4096 * (i + 1), creation=1_700_000_000 + i)  # fmt: skip
            sd[name] = s
            tname = f"bk/{src}/ds{d:04d}"
            torigin = f"bk/{src}/{origin.split('/', 1)[1]}" if origin else None
            t = Dataset(dst, tname, guid=guid(h + sources, d, 0), origin=torigin)
            for i in range(dst_snaps):
                t.add_snapshot(f"s{i:04d}", guid(h, d, i + 1), 10 + i)
            dd[tname] = t
        g.put_host(HostInventory(src, sd))
        g.put_host(HostInventory(dst, dd))
    return g


def build_naive(hosts: int, datasets: int, snapshots: int) -> dict[str, list[ZfsObject]]:
    """The same fleet as plain ZfsObject rows per host."""
    sources, per_host, src_snaps, dst_snaps = shape(hosts, datasets, snapshots)
    out: dict[str, list[ZfsObject]] = {}
    for h in range(sources):
        src, dst = f"h{h:04d}", f"h{h + sources:04d}"
        rows: list[ZfsObject] = []
        trows: list[ZfsObject] = []
        for d in range(per_host):
            name = f"tank/ds{d:04d}"
            rows.append(ZfsObject(name, ObjType.FILESYSTEM, guid(h, d, 0), 1, 0))
            rows += [ZfsObject(f"{name}@s{i:04d}", ObjType.SNAPSHOT, guid(h, d, i + 1), 10 + i,
                               1_700_000_000 + i, written=4096, referenced=4096 * (i + 1))
                     for i in range(src_snaps)]  # fmt: skip
            tname = f"bk/{src}/ds{d:04d}"
            trows.append(ZfsObject(tname, ObjType.FILESYSTEM, guid(h + sources, d, 0), 1, 0))
            trows += [ZfsObject(f"{tname}@s{i:04d}", ObjType.SNAPSHOT, guid(h, d, i + 1), 10 + i, 0)
                      for i in range(dst_snaps)]  # fmt: skip
        out[src], out[dst] = rows, trows
    return out


def jobs(hosts: int) -> list[JobConfig]:
    sources = hosts // 2
    return [
        JobConfig(name=f"j{h:04d}", sources=(DatasetRef(f"h{h:04d}", "tank"),),
                  targets=(JobTarget(host=f"h{h + sources:04d}", dataset=f"bk/h{h:04d}"),))
        for h in range(sources)
    ]  # fmt: skip


def naive_plan(rows: dict[str, list[ZfsObject]], job: JobConfig) -> int:
    """Per dataset: the newest common snapshot by guid, scanning rows; returns pairs planned."""
    src, tgt = job.sources[0], job.targets[0]
    assert tgt.host is not None and tgt.dataset is not None
    by_ds: dict[str, list[ZfsObject]] = {}
    for o in rows[src.host]:
        if o.type is ObjType.SNAPSHOT:
            by_ds.setdefault(o.dataset, []).append(o)
    tby: dict[str, list[ZfsObject]] = {}
    for o in rows[tgt.host]:
        if o.type is ObjType.SNAPSHOT:
            tby.setdefault(o.dataset, []).append(o)
    planned = 0
    for name, snaps in by_ds.items():
        tname = tgt.dataset + name[len(src.dataset):]
        have = {o.guid for o in tby.get(tname, [])}
        common = max((o for o in snaps if o.guid in have), key=lambda o: o.createtxg, default=None)
        planned += common is not None
    return planned


def timed(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def traced(fn: Callable[[], object]) -> tuple[object, int, int]:
    """``fn``'s result, the bytes it left allocated and its tracemalloc peak."""
    gc.collect()
    tracemalloc.start()
    result = fn()
    size, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, size, peak


def plan_every(graph: FleetGraph, all_jobs: list[JobConfig]) -> int:
    """Plan every job; the number of steps."""
    return sum(len(plan_sync(graph, j, job_id="bench").steps) for j in all_jobs)


def child(mode: str, hosts: int, datasets: int, snapshots: int) -> None:
    """One graph + plan in this fresh process; prints its memory as JSON."""
    all_jobs = jobs(hosts)

    def both() -> int:
        return plan_every(build_compact(hosts, datasets, snapshots), all_jobs)

    if mode == "traced":
        t = time.perf_counter()
        _, _, peak = traced(both)
        print(json.dumps({"peak": peak, "seconds": time.perf_counter() - t}))
    else:
        both()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"rss": rss}))


def in_child(mode: str, a: argparse.Namespace) -> dict[str, float]:
    argv = [sys.executable, __file__, "--child", mode, "--hosts", str(a.hosts),
            "--datasets", str(a.datasets), "--snapshots", str(a.snapshots)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=1800)
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--datasets", type=int, default=100_000)
    ap.add_argument("--snapshots", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kinds", action="store_true", help="also plan with the kind policies")
    ap.add_argument("--child", choices=("traced", "rss"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.hosts, a.datasets, a.snapshots)
        return
    sources, per_host, src_snaps, dst_snaps = shape(a.hosts, a.datasets, a.snapshots)
    n_ds = 2 * sources * per_host
    n_snaps = sources * per_host * (src_snaps + dst_snaps)
    print(f"fleet: {a.hosts} hosts, {n_ds:,} datasets, {n_snaps:,} snapshots "
          f"({src_snaps} per source dataset, replicas {LAG} behind)")  # fmt: skip

    # Untraced: the figures the goal is about.
    graphs: list[FleetGraph] = []

    def build() -> None:
        graphs[:] = [build_compact(a.hosts, a.datasets, a.snapshots)]

    build_s = timed(build, a.runs)
    all_jobs = jobs(a.hosts)
    steps = [0]

    def plan_all() -> None:
        steps[0] = plan_every(graphs[0], all_jobs)

    plan_s = timed(plan_all, a.runs)
    rows = [build_naive(a.hosts, a.datasets, a.snapshots)]

    def naive_all() -> None:
        for j in all_jobs:
            naive_plan(rows[0], j)

    naive_s = timed(naive_all, a.runs)
    pairs = sources * per_host
    total = build_s + plan_s
    print(f"graph build: {build_s:.2f} s untraced (median of {a.runs})")
    print(f"planning {len(all_jobs)} jobs ({pairs:,} dataset pairs, {steps[0]:,} steps): "
          f"{plan_s:.2f} s, {plan_s / len(all_jobs) * 1000:.1f} ms/job, "
          f"{plan_s / pairs * 1e6:.0f} us/dataset (median of {a.runs})")
    print(f"naive newest-common scan over ZfsObject rows: {naive_s:.2f} s; "
          f"planner/naive time ratio {plan_s / naive_s:.2f} (the planner also orders clones, "
          f"holds, fans out and builds the DAG)")
    if a.kinds:
        # alternated, run for run, so that a busy machine slows both alike
        policies = default_policies()
        kinded = [replace(j, kinds=policies) for j in all_jobs]
        pairs_s = [(timed(plan_all, 1), timed(lambda: plan_every(graphs[0], kinded), 1))
                   for _ in range(max(a.runs, 5))]  # fmt: skip
        bare_s = statistics.median(p[0] for p in pairs_s)
        kinds_s = statistics.median(p[1] for p in pairs_s)
        print(f"planning with the kind policies: {kinds_s:.2f} s against {bare_s:.2f} s without "
              f"(x{kinds_s / bare_s:.2f}, medians of {len(pairs_s)} alternated runs)")
    graphs.clear()
    rows.clear()
    naive_bytes = traced(lambda: build_naive(a.hosts, a.datasets, a.snapshots))[1]
    compact_bytes = traced(lambda: build_compact(a.hosts, a.datasets, a.snapshots))[1]
    print(f"graph memory: {compact_bytes / n_snaps:.0f} B/snapshot ({compact_bytes / 2**20:.0f} "
          f"MiB) vs ZfsObject rows {naive_bytes / n_snaps:.0f} B/snapshot "
          f"({naive_bytes / 2**20:.0f} MiB): ratio {compact_bytes / naive_bytes:.2f}")

    # Memory: each in a process of its own, graph + plan and nothing else.
    traced_run = in_child("traced", a)
    rss = in_child("rss", a)["rss"]
    peak = traced_run["peak"]
    print(f"graph build untraced {build_s:.2f} s + planning {plan_s:.2f} s = "
          f"{total:.2f} s untraced (goal < 10 s: x{total / 10:.2f} of it)")
    print(f"separate traced run (graph + plan, {traced_run['seconds']:.1f} s under tracemalloc): "
          f"tracemalloc peak {peak / 2**30:.2f} GiB (goal < 2 GiB: x{peak / 2**31:.2f} of it)")
    print(f"peak RSS: {rss / 2**20:.0f} MiB (separate untraced run of graph + plan, "
          f"interpreter included)")


if __name__ == "__main__":
    main()
