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

``--faults N`` runs N failovers instead, each with a fault: the coordinator or Redis (persistent
as deployed: append-only file, fsync every second) is SIGKILLed at a random moment of the
failover job (within --fault-window seconds of the alert), kept down a random 0.1-2 s and
started again; choices come from --seed. Each run then checks: split-brain (once the old
primary's worker is back, more than one host has the job's datasets writable and mounted), data
lost (a snapshot the new primary held before the fault is gone, the old primary's unreplicated
write is not in its aside dataset after the rejoin, or the rejoined copy differs from the new
primary's), unfinished (the failover or the rejoin did not succeed within 120 s of the restart).
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
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def guids(b: Bench, host: str) -> set[int]:
    """The snapshot guids of ``host``'s copy of the job's base dataset."""
    name = f"{b.root(host)}/base"
    rows = b.fleet.backend(host).list(name, recursive=False, types=[ObjType.SNAPSHOT])
    return {r.guid for r in rows if r.dataset == name}


def writable_hosts(b: Bench) -> list[str]:
    """Hosts whose copy of the job's datasets takes writes (readonly=off and mounted)."""
    out = []
    for host in HOSTS:
        backend = b.fleet.backend(host)
        for name in (b.root(host), f"{b.root(host)}/base"):
            props = backend.get(name, ["readonly", "mounted"])
            if props["readonly"].value == "off" and props["mounted"].value == "yes":
                out.append(host)
                break
    return out


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


def faults(b: Bench, runs: int, change: int, seed: int, window: float) -> dict[str, Any]:
    import redis

    rng = random.Random(seed)
    fleet = b.fleet
    b.sync()
    split = lost = unfinished = 0
    rows: list[dict[str, Any]] = []
    for run in range(runs):
        primary = b.roles.read(b.jc).primary
        b.sync()
        held = {h: guids(b, h) for h in HOSTS if h != primary}
        data = os.urandom(change)
        write(fleet.backend(primary), f"{b.root(primary)}/base", f"lost-{run}", data)
        fleet.kill_worker(primary)
        died = time.time()
        code, body = b.alert(primary, f"fault-{seed}-{run}", died)
        answers = body.get("failovers") or [{}]
        if code != 200 or answers[0].get("outcome") != "started":
            raise SystemExit(f"run {run}: the webhook did not start a failover: {body}")
        job_id = str(answers[0]["id"])
        what, at, down = rng.choice(("coordinator", "redis")), rng.uniform(0, window), \
            rng.uniform(0.1, 2.0)  # fmt: skip
        time.sleep(at)
        crash(b, what, down)
        row: dict[str, Any] = {"run": run + 1, "killed": what, "at_s": round(at, 2),
                               "down_s": round(down, 2), "from": primary}  # fmt: skip
        problems: list[str] = []
        late = gone = False
        fo = settle(b, job_id, 120)
        if fo is None or fo.status != engine.JOB_SUCCEEDED:
            problems.append(f"failover {job_id} {fo.status if fo else 'unfinished'}")
            late = True
            # bring the fleet back for the next run: a fresh alert starts a new failover
            _, body = b.alert(primary, f"fault-{seed}-{run}-again", died)
            again = (body.get("failovers") or [{}])[0]
            fo = settle(b, str(again.get("id")), 120) if again.get("id") else None
            if fo is None or fo.status != engine.JOB_SUCCEEDED:
                raise SystemExit(f"run {run + 1}: no failover succeeded: {row} {problems}")
        new = str(fo.report["primary"])
        row["to"] = new
        if b.roles.read(b.jc).primary != new:
            problems.append("the roles in Redis do not name the promoted host")
        if not held[new] <= guids(b, new):
            problems.append(f"{new} lost snapshots it held before the failover")
            gone = True
        fleet.start_worker(primary)  # fences at start
        hosts = writable_hosts(b)
        row["writable"] = hosts
        if len(hosts) > 1:
            problems.append(f"split-brain: writable on {', '.join(hosts)}")
            split += 1
        write(fleet.backend(new), f"{b.root(new)}/base", f"new-{run}", os.urandom(change))
        b.sync()
        try:
            rj = b.rejoin(primary)
        except redis.RedisError as exc:
            raise SystemExit(f"run {run + 1}: rejoin refused: {exc}") from exc
        if rj.status != engine.JOB_SUCCEEDED:
            problems.append(f"rejoin {rj.id} {rj.status}: {rj.error}")
            late = True
        else:
            aside = [str(a) for a in rj.report.get("aside", [])]
            kept = any(
                replica_files(fleet.backend(primary), a).get(f"lost-{run}") == data for a in aside
            )
            same = guids(b, primary) == guids(b, new)
            if not kept or not same:
                problems.append("the old primary's write is not aside" if not kept
                                else "the rejoined copy differs from the new primary's")
                gone = True
        lost += gone
        unfinished += late
        row["problems"] = problems
        rows.append(row)
        print(f"fault run {run + 1}: {what} killed {at:.2f} s into the failover for "
              f"{down:.2f} s; {primary} -> {new}: " + ("; ".join(problems) or "ok"),
              file=sys.stderr)  # fmt: skip
    return {"fault_runs": runs, "seed": seed, "window_s": window, "split_brain": split,
            "data_lost": lost, "unfinished": unfinished, "runs": rows}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--change-kib", type=int, default=256)
    ap.add_argument("--faults", type=int, default=0, metavar="N",
                    help="N fault runs instead (coordinator or Redis killed mid-failover)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault runs' choices")
    ap.add_argument("--fault-window", type=float, default=1.0,
                    help="faults strike within this many seconds of the alert")
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
              f"(seed {out['seed']}, within {out['window_s']} s of the alert; sim, 3 hosts)")
        killed = [r["killed"] for r in out["runs"]]
        print(f"  killed: coordinator {killed.count('coordinator')}, redis {killed.count('redis')}")
        print(f"  split-brain {out['split_brain']}, data lost {out['data_lost']}, "
              f"unfinished {out['unfinished']}")  # fmt: skip
    else:
        print_measured(out)


if __name__ == "__main__":
    main()
