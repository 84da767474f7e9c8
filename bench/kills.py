"""Fault figures: SIGKILL of a worker, the coordinator or Redis at a random point of a sync job.

Real processes throughout: a redis-server persisted as deployed (append-only file, fsync every
second), one `zfleet worker` per simulated host (alpha the source, beta and gamma the targets) and
a `zfleet coordinator`. The job replicates alpha's ``tank/img`` (a base with three snapshots,
nested children, three clones of different base snapshots) to beta and gamma, so every run sends
full streams, incrementals and clones (as incrementals from their origins) to two targets at once.

For each victim (the source worker, a target worker, the coordinator, Redis) and each of
``--kills`` runs: the targets start empty, a sync job is submitted, the victim is SIGKILLed at a
random moment within the duration of a clean job (measured first, in the same run), kept down a
random 0.1-1 s and started again (Redis from its append-only file, on the same port). Then, within
``--timeout`` seconds, the job must have succeeded, and the harness checks what an operator would:

- lost: a job submitted by this run (this one or any before) is no longer in Redis;
- stuck: the job did not finish in time; failed: it finished, not succeeded;
- replicas differ: a dataset missing, a snapshot missing or with another guid, a clone with another
  origin, or the files of a snapshot differ (each snapshot read through a temporary clone);
- sent twice to a different effect: a target holds a dataset or snapshot the source lacks, or the
  source has more than the one snapshot per dataset the job takes;
- left behind: holds on the source or partial receive state on a target once the job succeeded.

It also counts, as facts and not as faults, the steps that ran more than once and the streams a
target applied more than once in a run (a re-run step that re-applies must still end as above).

    python bench/kills.py                        # 3 runs per victim, a few minutes
    python bench/kills.py --kills 20 --json      # the figure
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from app.demo.verify import Replica, verify_replicas  # noqa: E402
from coordinator import engine  # noqa: E402
from coordinator.jobstore import JobStore  # noqa: E402
from coordinator.syncjob import submit_sync  # noqa: E402
from protocol.errors import JobError  # noqa: E402
from protocol.log import configure_logging  # noqa: E402
from tests.services.fleet import Fleet, running_fleet  # noqa: E402
from tests.services.redis import PersistentRedis, persistent_redis, redis_binary  # noqa: E402
from workers.zfs.base import ObjType  # noqa: E402
from workers.zfs.sim import SimBackend  # noqa: E402

HOSTS: Final = ("alpha", "beta", "gamma")
TARGETS: Final = ("beta", "gamma")
VICTIMS: Final = ("source", "target", "coordinator", "redis")
SRC, DST = "tank/img", "bk/img"
CLONES: Final = {"tank/img/app1": "b1", "tank/img/app2": "b2", "tank/img/app3": "b3"}
JOB: Final = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img", "gamma:bk/img"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""
KIB = 1024
T = TypeVar("T")
# kinds of problem a run can show, counted per victim (runs with at least one of the kind)
PROBLEMS: Final = ("lost", "stuck", "failed", "differ", "effect", "left")


@dataclass
class Run:
    """One kill and what followed it."""

    victim: str
    run: int
    at_s: float  # after the job's submission
    down_s: float
    running: list[str] = field(default_factory=list)  # step kinds running when it struck
    status: str = ""
    seconds: float = 0.0  # submission to finished
    rerun_steps: int = 0
    resent_streams: int = 0
    applied_twice: int = 0
    problems: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # of the problems: lost, stuck, failed, ...

    def add(self, kind: str, text: str) -> None:
        self.kinds.append(kind)
        self.problems.append(text)


def patient(call: Callable[[], T], timeout: float = 60) -> T:
    """``call()``, retried while Redis is restarting (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def write(backend: SimBackend, dataset: str, name: str, data: bytes) -> None:
    Path(backend.mountpoint(dataset) or "", name).write_bytes(data)


def build_source(alpha: SimBackend, layer: int, rng: random.Random) -> None:
    """The hierarchy to replicate; incompressible layers so that transfers take time."""
    alpha.create_pool("tank")
    alpha.create(SRC)
    write(alpha, SRC, "README", b"images\n")
    alpha.create(f"{SRC}/base")
    for i, snap in enumerate(("b1", "b2", "b3")):
        write(alpha, f"{SRC}/base", f"layer{i}", rng.randbytes(layer))
        alpha.snapshot([f"{SRC}/base@{snap}"])
    alpha.create(f"{SRC}/base/child")
    write(alpha, f"{SRC}/base/child", "c", rng.randbytes(layer // 4))
    alpha.create(f"{SRC}/base/child/deep")
    write(alpha, f"{SRC}/base/child/deep", "d", rng.randbytes(layer // 8))
    for clone, origin in CLONES.items():
        alpha.clone(f"{SRC}/base@{origin}", clone)
        write(alpha, clone, "own", rng.randbytes(layer // 16))


class Harness:
    """The fleet under test and one sync job after another on it."""

    def __init__(self, fleet: Fleet, server: PersistentRedis, timeout: float) -> None:
        self.fleet, self.server, self.timeout = fleet, server, timeout
        self.store = JobStore(fleet.client())
        self.jobs: list[str] = []  # every job this harness submitted, to be found after restarts
        self.alpha = fleet.backend("alpha")

    # -- the job --------------------------------------------------------------------------
    def submit(self) -> str:
        job = submit_sync(self.store, str(self.fleet.config), "img")
        self.jobs.append(job.id)
        return job.id

    def settle(self, job_id: str, timeout: float) -> engine.Job | None:
        """The job once finished, or None after ``timeout``; Redis may be coming back."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                job = self.store.load(job_id)
                if job.done:
                    return job
            time.sleep(0.1)
        return None

    def running(self, job_id: str) -> list[str]:
        with contextlib.suppress(redis.RedisError, JobError):
            job = self.store.load(job_id)
            return sorted(s.kind for s in job.steps.values() if s.status == engine.RUNNING)
        return []

    # -- kills ------------------------------------------------------------------------------
    def kill(self, victim: str) -> None:
        if victim == "redis":
            self.server.kill()
        elif victim == "coordinator":
            self.fleet.kill_coordinator()
        else:
            proc = self.fleet.workers.pop(self._host(victim))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its heartbeat key stays, as after a crash
            proc.wait(20)

    def restart(self, victim: str) -> None:
        if victim == "redis":
            self.server.start()
        elif victim == "coordinator":
            self.fleet.start_coordinator()
        else:
            self.fleet.start_worker(self._host(victim))

    @staticmethod
    def _host(victim: str) -> str:
        return "alpha" if victim == "source" else "beta"

    # -- checks -----------------------------------------------------------------------------
    def log_sizes(self) -> dict[str, int]:
        return {h: self._log(h).stat().st_size if self._log(h).exists() else 0 for h in TARGETS}

    def _log(self, host: str) -> Path:
        return self.fleet.root / "logs" / f"worker-{host}.log"

    def repeats(self, since: dict[str, int]) -> tuple[int, int]:
        """Streams the targets were sent again whole after they had them (``stream.applied``
        once more for a snapshot) and snapshots they applied more than once (the simulation's
        ``sim.receive.snapshot``), in their logs since ``since`` (offsets)."""
        sent = applied = 0
        for host in TARGETS:
            seen: Counter[tuple[str, str]] = Counter()
            with self._log(host).open("rb") as fh:
                fh.seek(since[host])
                for line in fh:
                    with contextlib.suppress(ValueError):
                        entry = json.loads(line)
                        seen[(str(entry.get("event")), str(entry.get("snapshot")))] += 1
            for (event, _), n in seen.items():
                if event == "stream.applied":
                    sent += n - 1
                elif event == "sim.receive.snapshot":
                    applied += n - 1
        return sent, applied

    def check(self, job: engine.Job, before: set[str]) -> list[tuple[str, str]]:
        """What is wrong with the replicas and the source after a succeeded job, each problem
        with its kind: ``differ`` (replicas), ``effect`` (sent twice to a different effect) or
        ``left`` (holds or partial state left behind)."""
        problems = [
            ("differ", f"{c.name}: {c.detail}")
            for c in verify_replicas(self.alpha, SRC,
                                     [Replica(h, self.fleet.backend(h), DST) for h in TARGETS])
            if not c.ok
        ]  # fmt: skip
        src = {o.name for o in self.alpha.list(SRC)}
        for host in TARGETS:
            backend = self.fleet.backend(host)
            theirs = backend.list(DST) if backend.exists(DST) else []
            extra = [o.name for o in theirs if SRC + o.name[len(DST):] not in src]
            if extra:
                problems.append(("effect", f"{host} has what the source lacks: {extra[:4]}"))
            partial = [o.name for o in theirs if o.receive_resume_token]
            if partial:
                problems.append(("left", f"{host} keeps partial receive state: {partial[:4]}"))
        new = Counter(o.dataset for o in self.alpha.list(SRC)
                      if o.type is ObjType.SNAPSHOT and o.name not in before)  # fmt: skip
        if set(new.values()) != {1}:
            problems.append(("effect", f"the source took {dict(new)} snapshots (one a dataset)"))
        tag = f"zfleet-{job.id}"
        held = [o.name for o in self.alpha.list(SRC)
                if o.type is ObjType.SNAPSHOT and self.alpha.holds(o.name)]  # fmt: skip
        if held:
            problems.append(("left", f"holds left on the source: {held[:4]} (job tag {tag})"))
        return problems

    def missing_jobs(self) -> list[str]:
        gone = []
        for job_id in self.jobs:
            try:
                patient(lambda j=job_id: self.store.load(j))  # type: ignore[misc]
            except JobError:
                gone.append(job_id)
        return gone

    # -- between runs -----------------------------------------------------------------------
    def reset(self, change: bytes) -> set[str]:
        """Empty targets, the source back to its three base snapshots plus a new write."""
        for host in TARGETS:
            backend = self.fleet.backend(host)
            if backend.exists(DST):
                for o in backend.list(DST):
                    if o.type is ObjType.FILESYSTEM and o.origin:
                        backend.destroy(o.name, recursive=True)
                backend.destroy(DST, recursive=True)
        for o in self.alpha.list(SRC):
            if o.type is ObjType.SNAPSHOT and o.short.startswith("zfleet-"):
                for tag in self.alpha.holds(o.name):
                    self.alpha.release(tag, [o.name])
                self.alpha.destroy(o.name)
        write(self.alpha, f"{SRC}/base", "change", change)
        time.sleep(1.05)  # the snapshot pattern has one-second resolution
        return {o.name for o in self.alpha.list(SRC)}

    def clean_job(self, rng: random.Random) -> float:
        """One job without a fault; its duration, submission to finished."""
        before = self.reset(rng.randbytes(64 * KIB))
        t0 = time.monotonic()
        job = self.settle(self.submit(), self.timeout)
        if job is None or job.status != engine.JOB_SUCCEEDED:
            why = job.error if job else "unfinished"
            raise SystemExit(f"a job without a fault did not succeed: {why}\n{self.fleet.logs()}")
        seconds = time.monotonic() - t0
        problems = self.check(job, before)
        if problems:
            raise SystemExit(f"a job without a fault left: {problems}")
        return seconds

    def one(self, victim: str, run: int, rng: random.Random, span: float) -> Run:
        before = self.reset(rng.randbytes(64 * KIB))
        row = Run(victim, run, round(rng.uniform(0, span), 3), round(rng.uniform(0.1, 1.0), 3))
        since = self.log_sizes()
        t0 = time.monotonic()
        job_id = self.submit()
        time.sleep(max(0.0, t0 + row.at_s - time.monotonic()))
        row.running = self.running(job_id)
        self.kill(victim)
        time.sleep(row.down_s)
        self.restart(victim)
        missing = self.missing_jobs()
        if missing:
            row.add("lost", "jobs lost: " + ", ".join(missing))
        job = self.settle(job_id, self.timeout)
        row.seconds = round(time.monotonic() - t0, 2)
        if job is None:
            row.status = "unfinished"
            row.add("stuck", f"unfinished {self.timeout:.0f} s after the restart")
            try:
                self._unstick(job_id)
            except Wedged as exc:
                row.problems.append(str(exc))
                raise Wedged(row) from exc
            return row
        row.status = job.status
        row.rerun_steps = sum(1 for s in job.steps.values() if s.attempt > 1)
        row.resent_streams, row.applied_twice = self.repeats(since)
        if job.status != engine.JOB_SUCCEEDED:
            row.add("failed", f"job {job.status}: {job.error}")
        else:
            for kind, text in self.check(job, before):
                row.add(kind, text)
        return row

    def _unstick(self, job_id: str) -> None:
        """Cancel a stuck job so that the next run starts clean (its locks released); one that
        does not end either wedges the fleet, which is then built again (:class:`Wedged`)."""
        out = self.fleet.cli("job", "cancel", job_id)
        if out.returncode != 0 or self.settle(job_id, 60) is None:
            raise Wedged(f"stuck job {job_id} could not be cancelled; logs in "
                         f"{self.fleet.root / 'logs'}")  # fmt: skip


class Wedged(Exception):
    """A stuck job that cancelling did not end: the next runs need a fresh fleet."""


def summary(rows: list[Run], clean: list[float]) -> dict[str, Any]:
    by: dict[str, Any] = {}
    for victim in VICTIMS:
        mine = [r for r in rows if r.victim == victim]
        if not mine:
            continue
        by[victim] = {
            "runs": len(mine),
            "succeeded": sum(r.status == engine.JOB_SUCCEEDED for r in mine),
            **{kind: sum(kind in r.kinds for r in mine) for kind in PROBLEMS},
            "during_transfer": sum("transfer" in r.running for r in mine),
            "rerun_steps": sum(r.rerun_steps for r in mine),
            "resent_streams": sum(r.resent_streams for r in mine),
            "applied_twice": sum(r.applied_twice for r in mine),
            "seconds_median": round(statistics.median(r.seconds for r in mine), 2),
            "seconds_max": max(r.seconds for r in mine),
        }  # fmt: skip
    return {"clean_job_seconds": round(statistics.median(clean), 2), "victims": by,
            "anomalies": sum(bool(r.problems) for r in rows),
            "runs": [asdict(r) for r in rows]}  # fmt: skip


def print_table(out: dict[str, Any]) -> None:
    cols = ("runs", "succeeded", *PROBLEMS, "during_transfer", "rerun_steps", "resent_streams",
            "applied_twice", "seconds_median", "seconds_max")  # fmt: skip
    heads = ("runs", "ok", "lost", "stuck", "failed", "differ", "2x-effect", "left", "in-xfer",
             "reruns", "re-sent", "2x-applied", "s med", "s max")  # fmt: skip
    print(f"clean job: {out['clean_job_seconds']} s (median, submission to finished)")
    print(f"{'victim':<12}" + "".join(f"{h:>11}" for h in heads))
    for victim, fig in out["victims"].items():
        print(f"{victim:<12}" + "".join(f"{fig[c]:>11}" for c in cols))
    print("anomalies: lost (a job gone from Redis), stuck, failed, differ (replicas), 2x-effect "
          "(sent twice to a different effect), left (holds, partial state); facts: in-xfer "
          "(struck while a transfer ran), reruns (steps run again), re-sent (whole streams sent "
          "again to a target that had them: skipped there), 2x-applied (a snapshot applied "
          "twice)")
    print(f"runs with an anomaly: {out['anomalies']} of {len(out['runs'])}")
    for r in out["runs"]:
        if r["problems"]:
            print(f"  {r['victim']} run {r['run']} (at {r['at_s']} s, down {r['down_s']} s, "
                  f"running {r['running']}): {'; '.join(r['problems'])}")  # fmt: skip


@contextlib.contextmanager
def harness(work: Path, timeout: float, layer: int, seed: int) -> Iterator[Harness]:
    binary = redis_binary()
    if binary is None:
        raise SystemExit("no redis-server installed (scripts/system-deps)")
    with persistent_redis(binary) as server, running_fleet(work, server, HOSTS, JOB) as fleet:
        build_source(fleet.backend("alpha"), layer, random.Random(seed))
        for host in TARGETS:
            fleet.backend(host).create_pool("bk")
        for host in HOSTS:
            fleet.start_worker(host)
        fleet.start_coordinator()
        yield Harness(fleet, server, timeout)


def run(kills: int, seed: int, *, victims: tuple[str, ...] = VICTIMS, layer: int = 512 * KIB,
        timeout: float = 120, work: Path | None = None,
        progress: Callable[[Run], None] = lambda r: None) -> dict[str, Any]:  # fmt: skip
    """``kills`` runs per victim; the summary (see :func:`summary`)."""
    rng = random.Random(seed)
    todo = [(victim, i + 1) for i in range(kills) for victim in victims]
    rows: list[Run] = []
    clean: list[float] = []
    with contextlib.ExitStack() as outer:
        where = work or Path(
            outer.enter_context(tempfile.TemporaryDirectory(prefix="zfleet-kills-")))
        for fleet_no in range(1, len(todo) + 1):  # a wedged fleet is built again, once a run
            with harness(where / f"fleet{fleet_no}", timeout, layer, seed) as h:
                clean += [h.clean_job(rng) for _ in range(2)]
                span = statistics.median(clean)
                try:
                    while len(rows) < len(todo):
                        victim, i = todo[len(rows)]
                        rows.append(h.one(victim, i, rng, span))
                        progress(rows[-1])
                except Wedged as wedged:
                    (row,) = wedged.args
                    rows.append(row)
                    progress(row)
            if len(rows) == len(todo):
                break
    return summary(rows, clean)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=3, help="runs per victim (default 3)")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--victims", default=",".join(VICTIMS), help="comma-separated subset")
    ap.add_argument("--layer-kib", type=int, default=512, help="size of each base layer")
    ap.add_argument("--timeout", type=float, default=120,
                    help="seconds a job may take after the restart before it counts as stuck")
    ap.add_argument("--dir", type=Path, default=None,
                    help="work (and keep the fleet's logs) here instead of a temporary directory")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args()
    victims = tuple(v for v in args.victims.split(",") if v)
    unknown = sorted(set(victims) - set(VICTIMS))
    if unknown or not victims or not 1 <= args.kills <= 100 or not 16 <= args.layer_kib <= 65536 \
            or not 10 <= args.timeout <= 600:  # fmt: skip
        ap.error(f"victims from {VICTIMS}, 1..100 kills, 16..65536 KiB layers, 10..600 s "
                 f"timeout (unknown: {unknown})")  # fmt: skip
    configure_logging(level="WARNING", stream=sys.stderr)
    # SIGTERM unwinds the context managers, so no worker or Redis outlives the bench
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    print(f"bench/kills.py: {args.kills} SIGKILLs per victim ({', '.join(victims)}), seed "
          f"{args.seed}, base layers of {args.layer_kib} KiB, sim, 3 hosts, real processes")

    def show(r: Run) -> None:
        print(f"{r.victim} run {r.run}: killed {r.at_s:.2f} s in (running {r.running or '-'}), "
              f"down {r.down_s:.2f} s; {r.status} in {r.seconds:.1f} s; "
              + ("; ".join(r.problems) or "ok"), file=sys.stderr, flush=True)  # fmt: skip

    out = run(args.kills, args.seed, victims=victims, layer=args.layer_kib * KIB,
              timeout=args.timeout, work=args.dir, progress=show)  # fmt: skip
    print_table(out)
    if args.json:
        print(json.dumps({k: v for k, v in out.items()}, indent=2))


if __name__ == "__main__":
    main()
