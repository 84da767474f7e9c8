"""Coordination overhead per step, against raw Celery no-op round trips in the same run.

    .venv/bin/python bench/coordination.py [--datasets 100] [--rounds 10] [--noops 200] [--json]

A real redis-server, three `zfleet worker` processes (simulated hosts alpha, beta, gamma) and the
coordinator loop (in this process, on a thread). alpha holds --datasets small datasets, first
replicated to beta and gamma whole (not timed). Then --rounds times: a little data changes in every
dataset and the job runs again, so each round is --datasets small incremental fan-out transfers
(plus its snapshot, inventory, hold and release steps). Defaults: 1,000 transfers.

Figures:
- wall time of all rounds, transfers per second;
- per step, coordination overhead = (submitted - its last dependency finished) + (the coordinator
  applied its outcome - the worker reported it): median and p90, in ms; and the end-to-end time
  beyond the step's own run time (broker delivery and waiting for a free worker thread included);
- the coordinator thread's CPU time per step (its real cost: it grows with steps, not with waits);
- baseline: sequential round trips of a no-op Celery task to the same workers (send, run, result
  back through Redis), median ms; and the ratios of the overhead and CPU per step to it.

With --json the last line is every figure as one JSON object (bench/run_all.py reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coordinator import engine  # noqa: E402
from coordinator.jobstore import JobStore  # noqa: E402
from coordinator.runner import Coordinator, QueueSubmitter, wait_job  # noqa: E402
from coordinator.syncjob import submit_sync  # noqa: E402
from protocol.log import configure_logging  # noqa: E402
from tests.services.fleet import SECRET, running_fleet  # noqa: E402
from tests.services.redis import redis_binary, running_redis  # noqa: E402
from workers.celery_app import NOOP_TASK, make_app, queue_for  # noqa: E402

HOSTS = ("alpha", "beta", "gamma")
# issue 16's goals for this benchmark
TARGET_RATE = 100.0  # small incremental transfers per second
TARGET_OVERHEAD_MS = 5.0
TARGET_E2E_MS = 50.0
JOB = """
[jobs.bench]
source = "alpha:tank/b"
targets = ["beta:bk/b", "gamma:bk/b"]
snapshot = "r-%Y%m%dT%H%M%SZ"
"""


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes used so far, their reaped children included."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime stime cutime cstime: fields 14-17 of stat, 12-15 after the command's ")"
        total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--noops", type=int, default=200)
    ap.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    a = ap.parse_args()
    configure_logging(level="WARNING")  # the loop's own log lines would be part of what we time
    binary = redis_binary()
    if binary is None:
        sys.exit("no redis-server")
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-") as tmp, running_redis(binary) as srv, \
            running_fleet(Path(tmp), srv, HOSTS, JOB) as fleet:  # fmt: skip
        alpha = fleet.backend("alpha")
        alpha.create_pool("tank")
        alpha.create("tank/b")
        for i in range(a.datasets):
            alpha.create(f"tank/b/d{i:04d}")
            Path(alpha.mountpoint(f"tank/b/d{i:04d}") or "", "f").write_bytes(os.urandom(4096))
        for h in ("beta", "gamma"):
            fleet.backend(h).create_pool("bk")
        for h in HOSTS:
            fleet.start_worker(h)
        client = fleet.client()
        store = JobStore(client)
        os.environ["ZFLEET_FLEET_SECRET"] = SECRET
        app = make_app(srv.url)
        loop = Coordinator(client, QueueSubmitter(client), block_ms=100,
                           grant_secret=SECRET.encode())  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,), name="coordinator")
        thread.start()
        try:
            # baseline first, on idle workers: raw Celery round trips
            rtts = []
            for i in range(a.noops):
                t = time.perf_counter()
                app.send_task(NOOP_TASK, args=[i], queue=queue_for(HOSTS[i % 3])).get(timeout=30)
                rtts.append((time.perf_counter() - t) * 1000)
            base = statistics.median(rtts)

            first = submit_sync(store, str(fleet.config), "bench")
            done = wait_job(store, first.id, timeout=600)
            if done.status != engine.JOB_SUCCEEDED:
                sys.exit(f"initial replication failed: {done.error}\n{fleet.logs()}")
            cpu_clock = time.pthread_getcpuclockid(thread.ident or 0)
            cpu_before = time.clock_gettime(cpu_clock)
            worker_pids = [w.pid for w in fleet.workers.values()]
            workers_before = process_cpu(worker_pids)
            overheads: list[float] = []
            latencies: list[float] = []
            parts: dict[str, list[float]] = {"dispatch": [], "react": []}
            # per step kind: its own run, sent -> reported beyond the run (broker delivery,
            # waiting for a free worker thread, the worker's checks and reports), in ms
            kinds: dict[str, tuple[list[float], list[float]]] = {}
            transfers = steps = 0
            started = time.perf_counter()
            for _ in range(a.rounds):
                for i in range(a.datasets):
                    mp = alpha.mountpoint(f"tank/b/d{i:04d}") or ""
                    Path(mp, "f").write_bytes(os.urandom(512) + Path(mp, "f").read_bytes()[512:])
                time.sleep(1.0)  # a new snapshot name (one-second resolution)
                job = submit_sync(store, str(fleet.config), "bench")
                job = wait_job(store, job.id, timeout=600, poll=0.05)
                if job.status != engine.JOB_SUCCEEDED:
                    bad = [(s.id, s.error) for s in job.steps.values() if s.status != "succeeded"]
                    sys.exit(f"round failed: {job.error}: {bad}\n{fleet.logs()}")
                for s in job.steps.values():
                    if s.host is None or s.sent_at is None or s.finished_at is None:
                        continue
                    ready = max((job.steps[d].finished_at or 0.0 for d in s.deps), default=0.0)
                    dispatch = s.sent_at - ready if ready else 0.0
                    react = s.finished_at - (s.reported_at or s.finished_at)
                    overheads.append((dispatch + react) * 1000)
                    parts["dispatch"].append(dispatch * 1000)
                    parts["react"].append(react * 1000)
                    run = int(s.result.get("run_us") or 0) / 1e6
                    latencies.append((s.finished_at - max(ready, s.started_at or 0) - run) * 1000)
                    runs, waits = kinds.setdefault(s.kind, ([], []))
                    runs.append(run * 1000)
                    waits.append(((s.reported_at or s.finished_at) - s.sent_at - run) * 1000)
                    steps += 1
                    transfers += s.kind == "transfer"
            wall = time.perf_counter() - started - a.rounds * 1.0
            cpu = time.clock_gettime(cpu_clock) - cpu_before
            worker_cpu = process_cpu(worker_pids) - workers_before
        finally:
            stop.set()
            thread.join(30)
        med, p90 = statistics.median(overheads), pct(overheads, 0.9)
        e2e = statistics.median(latencies)
        print(json.dumps({"transfers": transfers, "steps": steps}))
        print(f"{transfers} incremental transfers ({steps} steps) over 3 workers in {wall:.1f} s "
              f"(excluding the 1 s pause per round): {transfers / wall:.1f} transfers/s "
              f"(target >= {TARGET_RATE:g}: {transfers / wall / TARGET_RATE:.2f}x)")
        for kind, (runs, waits) in sorted(kinds.items()):
            print(f"  {kind:<10} n={len(runs):<5} run median {statistics.median(runs):7.1f} ms; "
                  f"sent -> reported beyond the run median {statistics.median(waits):7.1f} ms, "
                  f"p90 {pct(waits, 0.9):7.1f} ms")
        print(f"coordination overhead per step (ready -> submitted, plus reported -> applied): "
              f"median {med:.1f} ms, p90 {p90:.1f} ms (ready -> submitted median "
              f"{statistics.median(parts['dispatch']):.1f} ms, reported -> applied median "
              f"{statistics.median(parts['react']):.1f} ms)")
        print(f"end to end per step beyond its own run time (adds broker delivery and waiting "
              f"for a free worker thread): median {statistics.median(latencies):.1f} ms, "
              f"p90 {pct(latencies, 0.9):.1f} ms")
        print(f"coordinator thread CPU per step: {cpu / steps * 1000:.2f} ms "
              f"({cpu:.2f} s for {steps} steps, {a.rounds} jobs)")
        print(f"the 3 workers' CPU per transfer (every step of the rounds included): "
              f"{worker_cpu / transfers * 1000:.1f} ms ({worker_cpu:.1f} s; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")
        print(f"baseline raw Celery no-op round trip: median {base:.1f} ms "
              f"(p90 {pct(rtts, 0.9):.1f} ms, n={len(rtts)})")
        print(f"ratios to the no-op round trip: overhead median {med / base:.2f}x, "
              f"end to end beyond the run {e2e / base:.2f}x, "
              f"coordinator CPU per step {cpu / steps * 1000 / base:.2f}x")
        print(f"targets: overhead median {med:.1f} ms / {TARGET_OVERHEAD_MS:g} ms = "
              f"{med / TARGET_OVERHEAD_MS:.2f}x; end to end beyond the run {e2e:.1f} ms / "
              f"{TARGET_E2E_MS:g} ms = {e2e / TARGET_E2E_MS:.2f}x (<= 1 meets it)")
        if a.json:
            print(json.dumps({
                "datasets": a.datasets, "rounds": a.rounds, "transfers": transfers,
                "steps": steps, "wall_s": wall, "transfers_per_s": transfers / wall,
                "overhead_median_ms": med, "overhead_p90_ms": p90,
                "dispatch_median_ms": statistics.median(parts["dispatch"]),
                "react_median_ms": statistics.median(parts["react"]),
                "e2e_median_ms": e2e,
                "e2e_p90_ms": pct(latencies, 0.9), "cpu_per_step_ms": cpu / steps * 1000,
                "worker_cpu_per_transfer_ms": worker_cpu / transfers * 1000,
                "noop_median_ms": base, "noop_p90_ms": pct(rtts, 0.9),
            }))  # fmt: skip


if __name__ == "__main__":
    main()
