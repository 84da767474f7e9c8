"""Failover from an alert, and rejoin, on a simulated fleet: how fast, how much lost, how much sent.

    .venv/bin/python bench/failover.py [--runs 10] [--change-kib 256]
    .venv/bin/python bench/failover.py --faults 20 [--seed 1]

A real redis-server, three `zfleet worker` processes (alpha, beta, gamma), a `zfleet coordinator`
process serving the Alertmanager webhook. alpha holds a hierarchy with clones (as the integration
test), replicated to beta and gamma. Each run: the primary writes --change-kib that are never
replicated and its worker is killed; an Alertmanager notification is POSTed to the coordinator;
the failover job makes the freshest replica writable. The new primary then writes --change-kib,
syncs, the old primary's worker comes back and rejoins. The next run fails over from the new
primary (min_interval 0), so primaries rotate.

Figures: alert received to replica writable (the failover job's time_to_writable: webhook
request received -> promote reported by the worker), median and p90; the webhook's own round
trip; RPO (the data-loss window: age of the chosen replica's newest common snapshot at failure);
bytes moved by each rejoin against the bytes changed on the new primary since the failover, and
against the first full send.

``--faults N`` runs N failovers per victim instead, each with a fault: the coordinator, then
Redis (persistent as deployed: append-only file, fsync every second), is SIGKILLed at a random
moment of the failover job (within --fault-window seconds of the alert, by default the duration
of a failover without a fault, measured first), kept down a random 0.1-2 s and started again,
and the alert is sent again (as Alertmanager repeats it); choices come from --seed. Each run
checks:

- split-brain: a thread samples every 0.2 s, from the primary's death to the end of the rejoin,
  which hosts with a live worker (heartbeat present: a worker beats only once it has fenced) have
  a dataset of the job writable (readonly=off, mounted): never more than one; the job's epoch in
  Redis never goes back (a restart that lost the fencing token); after the failover the epoch
  rose by one (or two when a second alert was needed), the roles name the promoted host and
  only it is writable, also once the old primary's worker is back; the repeated alert starts no
  second failover;
- data lost: a snapshot (of any dataset) the new primary held before the fault is gone, the old
  primary's unreplicated write is not in its aside dataset after the rejoin, the rejoined copy's
  snapshots differ from the new primary's, or the new primary's write did not reach it;
- unfinished: the failover or the rejoin did not succeed within 120 s of the restart.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus import keys  # noqa: E402
from coordinator import engine  # noqa: E402
from coordinator.jobstore import JobStore  # noqa: E402
from coordinator.rolestate import RoleStore, replica_root  # noqa: E402
from coordinator.runner import wait_job  # noqa: E402
from coordinator.syncjob import submit_sync  # noqa: E402
from protocol.log import configure_logging  # noqa: E402
from tests.integration.test_failover_fleet import free_port, post  # noqa: E402
from tests.integration.test_fleet_sync import build_source, replica_files, write  # noqa: E402
from tests.services.fleet import Fleet, running_fleet  # noqa: E402
from tests.services.redis import PersistentRedis, persistent_redis, redis_binary  # noqa: E402
from workers.zfs.base import ObjType  # noqa: E402

HOSTS = ("alpha", "beta", "gamma")
VICTIMS = ("coordinator", "redis")
ASIDE = (".diverged-", ".replaced-")  # a rejoin's datasets set aside
T = TypeVar("T")
JOB = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img", "gamma:bk/img"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"

[jobs.img.failover]
policy = "auto"
min_interval = 0
"""
SECRET = "alertmanager-secret-0123456789"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def notification(host: str, key: str, since: float) -> bytes:
    start = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    alert = {"status": "firing", "labels": {"alertname": "ZfleetWorkerDown", "host": host},
             "annotations": {}, "startsAt": start, "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "",
             "fingerprint": hashlib.sha256(key.encode()).hexdigest()[:16]}  # fmt: skip
    return json.dumps({"version": "4", "groupKey": "bench", "truncatedAlerts": 0,
                       "status": "firing", "receiver": "zfleet", "groupLabels": {},
                       "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
                       "alerts": [alert]}).encode()  # fmt: skip


def finished(store: JobStore, job_id: str, what: str) -> engine.Job:
    job = wait_job(store, job_id, timeout=300)
    if job.status != engine.JOB_SUCCEEDED:
        raise SystemExit(f"{what} {job_id} {job.status}: {job.error}")
    return job


def moved(job: engine.Job) -> int:
    return sum(int(s.result.get("bytes") or 0) for s in job.steps.values() if s.kind == "transfer")


class Bench:
    """The fleet under test: Redis, three workers, a coordinator serving the webhook."""

    def __init__(self, fleet: Fleet, server: PersistentRedis) -> None:
        from coordinator.config import load_config

        self.fleet, self.server = fleet, server
        (fleet.root / "api.token").write_text("api-token-0123456789abcdef\n")
        (fleet.root / "am.secret").write_text(SECRET + "\n")
        self.port = free_port()
        self.start_coordinator()
        self.store = JobStore(fleet.client())
        self.roles = RoleStore(fleet.client())
        self.jc = load_config(fleet.config).job("img")
        self.url = f"http://127.0.0.1:{self.port}/v1/alerts/alertmanager"

    def start_coordinator(self) -> None:
        root = self.fleet.root
        self.fleet.coordinator = self.fleet._spawn("coordinator", [
            "coordinator", "--config", str(self.fleet.config), "--lease-ttl", "2", "--http",
            f"127.0.0.1:{self.port}", "--api-token-file", str(root / "api.token"),
            "--alertmanager-secret-file", str(root / "am.secret")], {})  # fmt: skip

    def sync(self) -> engine.Job:
        time.sleep(1.1)  # one-second snapshot names
        return finished(self.store, submit_sync(self.store, str(self.fleet.config), "img").id,
                        "sync")  # fmt: skip

    def root(self, host: str) -> str:
        return str(replica_root(self.jc, host))

    def alert(self, host: str, key: str, since: float) -> tuple[int, dict[str, Any]]:
        """POST a firing alert for ``host``; retried while the coordinator restarts."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return post(self.url, notification(host, key, since), f"Bearer {SECRET}")
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def rejoin(self, host: str) -> engine.Job:
        from coordinator.config import load_config
        from coordinator.rejoin import submit_rejoin

        text = self.fleet.config.read_text()
        (rj,) = submit_rejoin(self.store, text, load_config(self.fleet.config), host)
        return wait_job(self.store, rj.id, timeout=300)


def measure(b: Bench, runs: int, change: int) -> dict[str, Any]:
    fleet, store = b.fleet, b.store
    full = moved(b.sync())
    writable: list[float] = []
    webhook: list[float] = []
    rpo: list[float] = []
    ratio: list[float] = []
    vs_full: list[float] = []
    for run in range(runs):
        primary = b.roles.read(b.jc).primary
        b.sync()
        write(fleet.backend(primary), f"{b.root(primary)}/base", f"lost-{run}", os.urandom(change))
        fleet.kill_worker(primary)
        died = time.time()
        t0 = time.monotonic()
        code, body = b.alert(primary, f"{run:016x}", died)
        webhook.append(time.monotonic() - t0)
        answers = body.get("failovers") or [{}]
        if code != 200 or answers[0].get("outcome") != "started":
            raise SystemExit(f"run {run}: the webhook did not start a failover: {body}")
        fo = finished(store, str(answers[0]["id"]), "failover")
        writable.append(float(fo.report["time_to_writable"]))
        rpo.append(float(fo.report["data_loss_window"] or 0.0))
        new = str(fo.report["primary"])
        write(fleet.backend(new), f"{b.root(new)}/base", f"new-{run}", os.urandom(change))
        b.sync()
        fleet.start_worker(primary)
        rj = b.rejoin(primary)
        if rj.status != engine.JOB_SUCCEEDED:
            raise SystemExit(f"rejoin {rj.id} {rj.status}: {rj.error}")
        rejoined = moved(rj)
        ratio.append(rejoined / change)
        vs_full.append(rejoined / full)
        print(f"run {run + 1}: {primary} -> {new}: writable {writable[-1] * 1000:.0f} ms, "
              f"RPO {rpo[-1]:.1f} s, rejoin {rejoined} B", file=sys.stderr)  # fmt: skip
    return {
        "runs": runs, "change_bytes": change, "full_send_bytes": full,
        "alert_to_writable_ms": {"median": statistics.median(writable) * 1000,
                                 "p90": pct(writable, 0.9) * 1000},
        "webhook_round_trip_ms": {"median": statistics.median(webhook) * 1000},
        "rpo_s": {"median": statistics.median(rpo), "max": max(rpo)},
        "rejoin_bytes_per_changed_byte": {"median": statistics.median(ratio), "max": max(ratio)},
        "rejoin_bytes_vs_full_send": {"median": statistics.median(vs_full)},
    }  # fmt: skip


def print_measured(out: dict[str, Any]) -> None:
    w, rpo = out["alert_to_writable_ms"], out["rpo_s"]
    print(f"{out['runs']} failovers from an Alertmanager webhook (sim, 3 hosts, real processes)")
    print(f"  alert received -> replica writable: median {w['median']:.0f} ms, p90 {w['p90']:.0f}"
          f" ms (webhook round trip median {out['webhook_round_trip_ms']['median']:.0f} ms)")
    print(f"  RPO (data-loss window): median {rpo['median']:.1f} s, max {rpo['max']:.1f} s")
    print(f"  rejoin: {out['rejoin_bytes_per_changed_byte']['median']:.2f} bytes sent per byte "
          f"changed on the new primary; {out['rejoin_bytes_vs_full_send']['median'] * 100:.1f} % "
          f"of the first full send ({out['full_send_bytes']} B)")  # fmt: skip


# -- fault runs --------------------------------------------------------------------------------


def guids(b: Bench, host: str) -> dict[str, set[int]]:
    """The snapshot guids of every dataset of ``host``'s copy (aside datasets left out), keyed
    by the dataset's name below the job's root."""
    root = b.root(host)
    out: dict[str, set[int]] = {}
    for r in b.fleet.backend(host).list(root, types=[ObjType.SNAPSHOT]):
        if not any(mark in r.dataset for mark in ASIDE):
            out.setdefault(r.dataset[len(root):], set()).add(r.guid)
    return out


def live_hosts(b: Bench) -> set[str]:
    """Hosts whose worker runs and heartbeats: the hosts zfleet can write through. A worker's
    first beat comes after its fencing, so a returning old primary counts from then on."""
    with b.fleet.client() as c:
        beating = {h for h in HOSTS if c.exists(keys.worker(h))}
    return {h for h in beating if h in b.fleet.workers and b.fleet.workers[h].poll() is None}


def writable_hosts(b: Bench, among: set[str] | None = None) -> list[str]:
    """Hosts (of ``among``, by default the live ones) whose copy of the job takes writes: a
    dataset of it (aside ones left out) with readonly=off and mounted."""
    hosts = live_hosts(b) if among is None else among
    out = []
    for host in HOSTS:
        if host not in hosts:
            continue
        backend = b.fleet.backend(host)
        with contextlib.suppress(Exception):  # a dataset destroyed while we looked: not writable
            for row in backend.list(b.root(host), types=[ObjType.FILESYSTEM]):
                if any(mark in row.name for mark in ASIDE):
                    continue
                props = backend.get(row.name, ["readonly", "mounted"])
                if props["readonly"].value == "off" and props["mounted"].value == "yes":
                    out.append(host)
                    break
    return out


class Watch:
    """Samples, every ``every`` seconds on a thread, which live hosts are writable and the job's
    epoch in Redis: the most hosts writable at once, and whether the epoch ever went back (a
    Redis restart that lost a fencing token)."""

    def __init__(self, b: Bench, every: float = 0.2) -> None:
        self.b, self.every = b, every
        self.most: list[str] = []
        self.epochs: list[int] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # Redis restarting: no sample
                live = live_hosts(self.b)
                hosts = writable_hosts(self.b, live)
                if len(hosts) > len(self.most):
                    self.most = hosts
                epoch = self.b.roles.read(self.b.jc).epoch
                if not self.epochs or epoch != self.epochs[-1]:
                    self.epochs.append(epoch)
                self.samples += 1
            self._stop.wait(self.every)

    @property
    def epoch_went_back(self) -> bool:
        return any(b < a for a, b in zip(self.epochs, self.epochs[1:], strict=False))


def settle(b: Bench, job_id: str, timeout: float) -> engine.Job | None:
    """The job once finished, or None after ``timeout``; Redis may still be coming back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            job = b.store.load(job_id)
            if job.done:
                return job
        time.sleep(0.2)
    return None


def crash(b: Bench, what: str, down: float) -> None:
    if what == "redis":
        b.server.kill()
        time.sleep(down)
        b.server.start()
    else:
        b.fleet.kill_coordinator()
        time.sleep(down)
        b.start_coordinator()


def patient(call: Callable[[], T], timeout: float = 60) -> T:
    """``call()``, retried while Redis or the coordinator restarts (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (OSError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def clean_failover(b: Bench, change: int) -> float:
    """One failover and rejoin without a fault; the failover job's duration (alert to done)."""
    primary = b.roles.read(b.jc).primary
    b.sync()
    write(b.fleet.backend(primary), f"{b.root(primary)}/base", "clean", os.urandom(change))
    b.fleet.kill_worker(primary)
    died = time.time()
    _, body = b.alert(primary, "clean-failover", died)
    fo = finished(b.store, str((body.get("failovers") or [{}])[0].get("id")), "failover")
    b.sync()
    b.fleet.start_worker(primary)
    rj = b.rejoin(primary)
    if rj.status != engine.JOB_SUCCEEDED:
        raise SystemExit(f"a rejoin without a fault did not succeed: {rj.error}")
    assert fo.finished is not None
    return fo.finished - fo.created


def fault_run(b: Bench, run: int, what: str, at: float, down: float, change: int, seed: int
              ) -> dict[str, Any]:  # fmt: skip
    """One failover with ``what`` killed ``at`` seconds after the alert; its checks."""
    fleet = b.fleet
    roles = b.roles.read(b.jc)
    primary, epoch0 = roles.primary, roles.epoch
    b.sync()
    held = {h: guids(b, h) for h in HOSTS if h != primary}
    data = os.urandom(change)
    write(fleet.backend(primary), f"{b.root(primary)}/base", f"lost-{run}", data)
    row: dict[str, Any] = {"run": run, "killed": what, "at_s": round(at, 2),
                           "down_s": round(down, 2), "from": primary}  # fmt: skip
    problems: list[str] = []
    late = gone = split = False
    with Watch(b) as watch:
        fleet.kill_worker(primary)
        died = time.time()
        key = f"fault-{seed}-{run}"
        code, body = b.alert(primary, key, died)
        answers = body.get("failovers") or [{}]
        if code != 200 or answers[0].get("outcome") != "started":
            raise SystemExit(f"run {run}: the webhook did not start a failover: {body}")
        job_id = str(answers[0]["id"])
        time.sleep(at)
        crash(b, what, down)
        # Alertmanager sends the notification again (its repeat, or a retry of a request the
        # crash cut): it must not start a second failover
        _, again = b.alert(primary, key, died)
        second = [a for a in again.get("failovers") or [] if a.get("outcome") == "started"]
        if second:
            problems.append(f"the repeated notification started another failover: {second}")
            split = True
        fo = settle(b, job_id, 120)
        if fo is None or fo.status != engine.JOB_SUCCEEDED:
            problems.append(f"failover {job_id} {fo.status if fo else 'unfinished'}")
            late = True
            # bring the fleet back for the next run: a fresh alert starts a new failover
            _, body = b.alert(primary, f"{key}-again", died)
            redo = (body.get("failovers") or [{}])[0]
            fo = settle(b, str(redo.get("id")), 120) if redo.get("id") else None
            if fo is None or fo.status != engine.JOB_SUCCEEDED:
                raise SystemExit(f"run {run}: no failover succeeded: {row} {problems}")
        new = str(fo.report["primary"])
        row["to"] = new
        after = patient(lambda: b.roles.read(b.jc))
        row["epoch"] = [epoch0, after.epoch]
        if after.primary != new:
            problems.append(f"the roles in Redis name {after.primary}, {new} was promoted")
            split = True
        if not epoch0 < after.epoch <= epoch0 + 1 + late:
            problems.append(f"epoch {epoch0} -> {after.epoch} for {1 + late} failover(s)")
            split = True
        if writable_hosts(b) != [new]:
            problems.append(f"writable after the failover: {writable_hosts(b)}, not [{new}]")
            split = True
        mine = held[new]
        if any(not want <= guids(b, new).get(name, set()) for name, want in mine.items()):
            problems.append(f"{new} lost snapshots it held before the failover")
            gone = True
        fleet.start_worker(primary)  # fences at start
        if writable_hosts(b) != [new]:
            problems.append(f"writable once {primary} is back: {writable_hosts(b)}")
            split = True
        fresh = os.urandom(change)
        write(fleet.backend(new), f"{b.root(new)}/base", f"new-{run}", fresh)
        b.sync()
        try:
            rj = patient(lambda: b.rejoin(primary))
        except redis.RedisError as exc:
            raise SystemExit(f"run {run}: rejoin refused: {exc}") from exc
        if rj.status != engine.JOB_SUCCEEDED:
            problems.append(f"rejoin {rj.id} {rj.status}: {rj.error}")
            late = True
        else:
            aside = [str(a) for a in rj.report.get("aside", [])]
            kept = any(
                replica_files(fleet.backend(primary), a).get(f"lost-{run}") == data for a in aside
            )
            if not kept:
                problems.append("the old primary's unreplicated write is not aside")
                gone = True
            if guids(b, primary) != guids(b, new):
                problems.append("the rejoined copy's snapshots differ from the new primary's")
                gone = True
            got = replica_files(fleet.backend(primary), f"{b.root(primary)}/base")
            if got.get(f"new-{run}") != fresh:
                problems.append("the new primary's write did not reach the rejoined copy")
                gone = True
    if not watch.most:  # the watch saw nothing writable, not even the primary: it did not look
        problems.append(f"the watch never saw a writable primary ({watch.samples} samples)")
        split = True
    if len(watch.most) > 1:
        problems.append(f"split-brain: writable at once on {', '.join(watch.most)}")
        split = True
    if watch.epoch_went_back:
        problems.append(f"the epoch went back: {watch.epochs}")
        split = True
    row.update({"problems": problems, "split_brain": split, "data_lost": gone,
                "unfinished": late, "samples": watch.samples,
                "most_writable_at_once": len(watch.most)})  # fmt: skip
    return row


def faults(b: Bench, runs: int, change: int, seed: int, window: float | None) -> dict[str, Any]:
    """``runs`` fault runs per victim (the coordinator, Redis), alternating; the summary."""
    rng = random.Random(seed)
    b.sync()
    clean = clean_failover(b, change)
    span = window if window is not None else clean
    rows: list[dict[str, Any]] = []
    for _ in range(runs):
        for what in VICTIMS:
            at, down = rng.uniform(0, span), rng.uniform(0.1, 2.0)
            row = fault_run(b, len(rows) + 1, what, at, down, change, seed)
            rows.append(row)
            print(f"fault run {row['run']}: {what} killed {at:.2f} s into the failover for "
                  f"{down:.2f} s; {row['from']} -> {row['to']} (epoch {row['epoch'][0]} -> "
                  f"{row['epoch'][1]}): " + ("; ".join(row["problems"]) or "ok"),
                  file=sys.stderr, flush=True)  # fmt: skip
    per = {what: {k: sum(bool(r[k]) for r in rows if r["killed"] == what)
                  for k in ("split_brain", "data_lost", "unfinished")}
           | {"runs": sum(r["killed"] == what for r in rows)} for what in VICTIMS}  # fmt: skip
    return {"fault_runs": len(rows), "seed": seed, "window_s": round(span, 2),
            "clean_failover_s": round(clean, 2), "per_victim": per,
            "split_brain": sum(r["split_brain"] for r in rows),
            "data_lost": sum(r["data_lost"] for r in rows),
            "unfinished": sum(r["unfinished"] for r in rows), "runs": rows}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--change-kib", type=int, default=256)
    ap.add_argument("--faults", type=int, default=0, metavar="N",
                    help="N fault runs per victim instead (the coordinator, then Redis, killed "
                         "mid-failover, alternating)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault runs' choices")
    ap.add_argument("--fault-window", type=float, default=None,
                    help="faults strike within this many seconds of the alert (default: the "
                         "duration of a failover without a fault, measured first)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="work (and keep the fleet's logs) here instead of a temporary directory")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not 0 <= args.faults <= 100 or not 1 <= args.runs <= 100:
        raise SystemExit("--runs is 1..100 and --faults 0..100")  # every loop bounded
    configure_logging(level="WARNING", stream=sys.stderr)
    # SIGTERM unwinds the context managers, so no worker or Redis outlives the bench
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    change = args.change_kib * 1024
    binary = redis_binary()
    if binary is None:
        raise SystemExit("no redis-server installed")
    with contextlib.ExitStack() as stack:
        tmp = args.dir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="zfleet-bench-failover-")))  # fmt: skip
        server = stack.enter_context(persistent_redis(binary))
        fleet = stack.enter_context(running_fleet(tmp / "fleet", server, HOSTS, JOB))
        build_source(fleet.backend("alpha"))
        for host in ("beta", "gamma"):
            fleet.backend(host).create_pool("bk")
        for host in HOSTS:
            fleet.start_worker(host)
        bench = Bench(fleet, server)
        if args.faults:
            out = faults(bench, args.faults, change, args.seed, args.fault_window)
        else:
            out = measure(bench, args.runs, change)
    if args.json:
        print(json.dumps(out, indent=2))
    elif args.faults:
        print(f"{out['fault_runs']} failovers with the coordinator or Redis killed mid-way "
              f"(seed {out['seed']}, within {out['window_s']} s of the alert, a failover without "
              f"a fault taking {out['clean_failover_s']} s; sim, 3 hosts)")
        for what, fig in out["per_victim"].items():
            print(f"  {what:<12} runs {fig['runs']:>3}  split-brain {fig['split_brain']}  "
                  f"data lost {fig['data_lost']}  unfinished {fig['unfinished']}")
        for r in out["runs"]:
            if r["problems"]:
                print(f"  run {r['run']} ({r['killed']} at {r['at_s']} s): "
                      + "; ".join(r["problems"]))  # fmt: skip
    else:
        print_measured(out)


if __name__ == "__main__":
    main()
