"""The coordinator alone driving one fleet round of --datasets transfers, workers scripted.

    .venv/bin/python bench/coordinator_scale.py [--datasets 10000] [--threads 4] [--run-ms 0]

A real redis-server and the real coordinator loop (QueueSubmitter, grants signed) on a job shaped
like a sync round of bench/coordination.py: snapshot, one inventory per host, a hold per host,
the parent's transfer, then --datasets transfers fanned out to two targets each, releases and
inventories after; every transfer writes its two target datasets (locks). The workers are
scripted: --threads threads per host (alpha, beta, gamma) take task messages from the real host
queues (BRPOP), decode the StepCall the way a worker does, wait --run-ms, and publish STARTED and
SUCCEEDED events. No data moves, so every figure is the coordinator's and Redis's own cost: what
bench/coordination.py measures on a fleet small enough to run in a minute, here at the size of a
large fleet. (The real 10,000-dataset round: bench/coordination.py --datasets 10000 --rounds 1,
bench/run-all --big; its time is mostly the workers' transfers.)

Figures: the round's wall time and steps/s; overhead per step (ready -> submitted, plus reported
-> applied) median and p90; the coordinator thread's CPU per step; baseline: a scripted round trip
with no coordinator (LPUSH a message, a scripted thread takes it and publishes its event, the
event read back), median, and the ratio of the overhead to it.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bus import records, taskqueue  # noqa: E402
from bus.events import EventConsumer, publish  # noqa: E402
from bus.queues import queue_for  # noqa: E402
from coordinator import engine  # noqa: E402
from coordinator.engine import Job, StepPlan, add_steps  # noqa: E402
from coordinator.jobstore import JobStore  # noqa: E402
from coordinator.runner import Coordinator, QueueSubmitter, wait_job  # noqa: E402
from protocol.log import configure_logging  # noqa: E402
from protocol.messages import StepCall, StepEvent, StepState, from_dict  # noqa: E402
from protocol.steps import (  # noqa: E402
    HoldArgs,
    InventoryArgs,
    ReleaseArgs,
    SnapshotArgs,
    TransferArgs,
    TransferTarget,
)
from protocol.zfs import SendSpec  # noqa: E402
from tests.services.redis import redis_binary, running_redis  # noqa: E402

HOSTS = ("alpha", "beta", "gamma")
SECRET = b"bench-secret-" + b"x" * 32


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def round_job(n: int) -> Job:
    """A job with the shape of one incremental sync round over ``n`` datasets."""
    job = Job(id=f"scale-{n}", name="scale", created=time.time())
    roots = ("tank/b",)
    plans = [StepPlan("snapshot-alpha", "alpha", SnapshotArgs(names=("tank/b@r1",),
                                                               recursive=True))]  # fmt: skip
    first = {"alpha": ("snapshot-alpha",)}
    plans += [StepPlan(f"inventory-{h}", h, InventoryArgs(roots=roots), deps=first.get(h, ()))
              for h in HOSTS]  # fmt: skip
    plans += [StepPlan(f"hold-{h}", h, HoldArgs(tag="zfleet-scale", snapshots=()),
                       deps=tuple(f"inventory-{x}" for x in HOSTS)) for h in HOSTS]  # fmt: skip
    holds = tuple(f"hold-{h}" for h in HOSTS)

    def transfer(i: int | None) -> TransferArgs:
        ds = "tank/b" if i is None else f"tank/b/d{i:05d}"
        return TransferArgs(
            source=ds, send=SendSpec(f"{ds}@r1", from_snap="@r0"), to_guid=2, from_guid=1,
            targets=(TransferTarget(host="beta", dataset=ds.replace("tank", "bk")),
                     TransferTarget(host="gamma", dataset=ds.replace("tank", "bk"))))  # fmt: skip

    plans.append(StepPlan("xfer-root", "alpha", transfer(None), deps=holds,
                          writes=("beta:bk/b", "gamma:bk/b")))  # fmt: skip
    plans += [StepPlan(f"xfer{i:05d}", "alpha", transfer(i), deps=("xfer-root", *holds),
                       writes=(f"beta:bk/b/d{i:05d}", f"gamma:bk/b/d{i:05d}"))
              for i in range(n)]  # fmt: skip
    last = tuple(f"xfer{i:05d}" for i in range(n)) or ("xfer-root",)
    plans += [StepPlan(f"release-{h}", h, ReleaseArgs(tag="zfleet-scale", snapshots=()),
                       deps=(f"hold-{h}", *last), always=True) for h in HOSTS]  # fmt: skip
    add_steps(job, plans)
    return job


class ScriptedHost:
    """Threads that take a host's task messages and report each step done after ``run_s``."""

    def __init__(self, url: str, host: str, threads: int, run_s: float) -> None:
        self.url, self.host, self.run_s = url, host, run_s
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]
        self.threads.append(threading.Thread(target=self.beat, daemon=True))
        for t in self.threads:
            t.start()

    def beat(self) -> None:
        """Heartbeats as a worker sends them (the coordinator retries a silent host's steps)."""
        client: redis.Redis[bytes] = redis.Redis.from_url(self.url)
        started = time.time()
        while not self.stop.is_set():
            try:
                records.put_beat(client, records.WorkerBeat(
                    host=self.host, instance="scripted", started=started, beat=time.time(),
                    stream=None))  # fmt: skip
            except redis.ConnectionError:
                return
            self.stop.wait(1.0)

    def loop(self) -> None:
        client: redis.Redis[bytes] = redis.Redis.from_url(self.url)
        while not self.stop.is_set():
            try:
                self.one(client)
            except redis.ConnectionError:
                return  # the server went away at the end of the run

    def one(self, client: redis.Redis[bytes]) -> None:
        got: Any = client.brpop([queue_for(self.host)], timeout=1)
        if not got:
            return
        body = json.loads(base64.b64decode(json.loads(got[1])["body"]))
        c = from_dict(body[0][0], StepCall)
        publish(client, StepEvent(job_id=c.job_id, step_id=c.step_id, attempt=c.attempt,
                                  host=self.host, state=StepState.STARTED, at=time.time(),
                                  result={"worker": "scripted"}))  # fmt: skip
        if self.run_s:
            time.sleep(self.run_s)
        publish(client, StepEvent(job_id=c.job_id, step_id=c.step_id, attempt=c.attempt,
                                  host=self.host, state=StepState.SUCCEEDED, at=time.time(),
                                  result={"run_us": int(self.run_s * 1e6)}))  # fmt: skip


def baseline(client: redis.Redis[bytes], n: int) -> list[float]:
    """Round trips without a coordinator: push a message, a scripted thread answers, read it."""
    reader = EventConsumer(client, "baseline")
    reader.read(block_ms=1)
    out = []
    for i in range(n):
        call = StepCall(job_id="base", step_id=f"s{i}", attempt=1, host="alpha", args=b"")
        t = time.perf_counter()
        pipe = client.pipeline(transaction=True)
        taskqueue.push(pipe, [QueueSubmitter(client).message("alpha", call)])
        pipe.execute()
        seen = False
        while not seen:
            for d in reader.read(block_ms=1000):
                reader.ack([d.entry_id])
                seen = seen or bool(d.event and d.event.step_id == f"s{i}"
                                    and d.event.state is StepState.SUCCEEDED)  # fmt: skip
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=4, help="scripted worker threads per host")
    ap.add_argument("--run-ms", type=float, default=0.0, help="each step's scripted run time")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    a = ap.parse_args()
    configure_logging(level="WARNING")
    binary = redis_binary()
    if binary is None:
        sys.exit("no redis-server")
    with running_redis(binary) as srv:
        client = srv.client()
        hosts = [ScriptedHost(srv.url, h, a.threads, a.run_ms / 1000) for h in HOSTS]
        time.sleep(0.2)  # the first heartbeats are in
        rtts = baseline(client, 100)
        base = statistics.median(rtts)
        # the baseline's consumer group must not keep events from the coordinator: a fresh one
        client.delete("zfleet:events")
        store = JobStore(client)
        job = round_job(a.datasets)
        store.create(job)
        loop = Coordinator(client, QueueSubmitter(client), block_ms=100, grant_secret=SECRET)
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,), name="coordinator")
        started = time.perf_counter()
        thread.start()
        cpu_clock = time.pthread_getcpuclockid(thread.ident or 0)
        try:
            done = wait_job(store, job.id, timeout=a.timeout, poll=0.05)
            wall = time.perf_counter() - started
            cpu = time.clock_gettime(cpu_clock)
        finally:
            stop.set()
            thread.join(30)
            for h in hosts:
                h.stop.set()
        if done.status != engine.JOB_SUCCEEDED:
            sys.exit(f"round did not finish: {done.status} {engine.counts(done)}")
        overheads: list[float] = []
        dispatches: list[float] = []
        reacts: list[float] = []
        for s in done.steps.values():
            if s.sent_at is None or s.finished_at is None:
                continue
            ready = max((done.steps[d].finished_at or 0.0 for d in s.deps), default=0.0)
            dispatch = s.sent_at - ready if ready else 0.0
            react = s.finished_at - (s.reported_at or s.finished_at)
            overheads.append((dispatch + react) * 1000)
            dispatches.append(dispatch * 1000)
            reacts.append(react * 1000)
    steps = len(overheads)
    med, p90 = statistics.median(overheads), pct(overheads, 0.9)
    print(f"one round of {a.datasets:,} datasets ({steps:,} steps, scripted workers "
          f"{a.threads} threads x 3 hosts, {a.run_ms:g} ms each): {wall:.1f} s, "
          f"{steps / wall:.0f} steps/s")  # fmt: skip
    print(f"coordination overhead per step: median {med:.1f} ms, p90 {p90:.1f} ms "
          f"(ready -> submitted median {statistics.median(dispatches):.1f} ms, reported -> "
          f"applied median {statistics.median(reacts):.1f} ms)")
    print(f"coordinator thread CPU per step: {cpu / steps * 1000:.2f} ms ({cpu:.1f} s)")
    print(f"baseline scripted round trip without a coordinator: median {base:.2f} ms; "
          f"overhead median / baseline {med / base:.2f}x")
    if a.json:
        print(json.dumps({"datasets": a.datasets, "steps": steps, "wall_s": wall,
                          "steps_per_s": steps / wall, "overhead_median_ms": med,
                          "overhead_p90_ms": p90, "cpu_per_step_ms": cpu / steps * 1000,
                          "baseline_median_ms": base}))  # fmt: skip


if __name__ == "__main__":
    main()
