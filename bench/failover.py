"""Failover from an alert, and rejoin, on a simulated fleet: how fast, how much lost, how much sent.

    .venv/bin/python bench/failover.py [--runs 10] [--change-kib 256]

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
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coordinator import engine  # noqa: E402
from coordinator.jobstore import JobStore  # noqa: E402
from coordinator.rolestate import RoleStore, replica_root  # noqa: E402
from coordinator.runner import wait_job  # noqa: E402
from coordinator.syncjob import submit_sync  # noqa: E402
from protocol.log import configure_logging  # noqa: E402
from tests.integration.test_failover_fleet import free_port, post  # noqa: E402
from tests.integration.test_fleet_sync import build_source, write  # noqa: E402
from tests.services.fleet import running_fleet  # noqa: E402
from tests.services.redis import redis_binary, running_redis  # noqa: E402

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


def notification(host: str, run: int, since: float) -> bytes:
    start = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    alert = {"status": "firing", "labels": {"alertname": "ZfleetWorkerDown", "host": host},
             "annotations": {}, "startsAt": start, "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "", "fingerprint": f"{run:016x}"}  # fmt: skip
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--change-kib", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    configure_logging(level="WARNING", stream=sys.stderr)
    # SIGTERM unwinds the context managers, so no worker or Redis outlives the bench
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    change = args.change_kib * 1024
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-failover-") as tmp, \
            running_redis(redis_binary()) as server, \
            running_fleet(Path(tmp) / "fleet", server, HOSTS, JOB) as fleet:  # fmt: skip
        build_source(fleet.backend("alpha"))
        for host in ("beta", "gamma"):
            fleet.backend(host).create_pool("bk")
        for host in HOSTS:
            fleet.start_worker(host)
        (fleet.root / "api.token").write_text("api-token-0123456789abcdef\n")
        (fleet.root / "am.secret").write_text(SECRET + "\n")
        port = free_port()
        fleet.coordinator = fleet._spawn("coordinator", [
            "coordinator", "--config", str(fleet.config), "--lease-ttl", "2", "--http",
            f"127.0.0.1:{port}", "--api-token-file", str(fleet.root / "api.token"),
            "--alertmanager-secret-file", str(fleet.root / "am.secret")], {})  # fmt: skip
        store = JobStore(fleet.client())
        jc_roles = RoleStore(fleet.client())
        from coordinator.config import load_config

        jc = load_config(fleet.config).job("img")
        url = f"http://127.0.0.1:{port}/v1/alerts/alertmanager"
        full = moved(finished(store, submit_sync(store, str(fleet.config), "img").id, "sync"))
        writable, webhook, rpo, ratio, vs_full = [], [], [], [], []
        for run in range(args.runs):
            primary = jc_roles.read(jc).primary
            root = str(replica_root(jc, primary))
            time.sleep(1.1)  # one-second snapshot names
            finished(store, submit_sync(store, str(fleet.config), "img").id, "sync")
            write(fleet.backend(primary), f"{root}/base", f"lost-{run}", os.urandom(change))
            fleet.kill_worker(primary)
            died = time.time()
            t0 = time.monotonic()
            code, body = post(url, notification(primary, run, died), f"Bearer {SECRET}")
            webhook.append(time.monotonic() - t0)
            answers = body.get("failovers") or [{}]
            if code != 200 or answers[0].get("outcome") != "started":  # type: ignore[index, union-attr]
                raise SystemExit(f"run {run}: the webhook did not start a failover: {body}")
            fo = finished(store, str(answers[0]["id"]), "failover")  # type: ignore[index]
            writable.append(float(fo.report["time_to_writable"]))
            rpo.append(float(fo.report["data_loss_window"] or 0.0))
            new = str(fo.report["primary"])
            new_root = str(replica_root(jc, new))
            write(fleet.backend(new), f"{new_root}/base", f"new-{run}", os.urandom(change))
            time.sleep(1.1)
            finished(store, submit_sync(store, str(fleet.config), "img").id, "sync")
            fleet.start_worker(primary)
            from coordinator.rejoin import submit_rejoin

            text = fleet.config.read_text()
            (rj,) = submit_rejoin(store, text, load_config(fleet.config), primary)
            rejoined = moved(finished(store, rj.id, "rejoin"))
            ratio.append(rejoined / change)
            vs_full.append(rejoined / full)
            print(f"run {run + 1}: {primary} -> {new}: writable {writable[-1] * 1000:.0f} ms, "
                  f"RPO {rpo[-1]:.1f} s, rejoin {rejoined} B", file=sys.stderr)  # fmt: skip
    out = {
        "runs": args.runs, "change_bytes": change, "full_send_bytes": full,
        "alert_to_writable_ms": {"median": statistics.median(writable) * 1000,
                                 "p90": pct(writable, 0.9) * 1000},
        "webhook_round_trip_ms": {"median": statistics.median(webhook) * 1000},
        "rpo_s": {"median": statistics.median(rpo), "max": max(rpo)},
        "rejoin_bytes_per_changed_byte": {"median": statistics.median(ratio), "max": max(ratio)},
        "rejoin_bytes_vs_full_send": {"median": statistics.median(vs_full)},
    }  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.runs} failovers from an Alertmanager webhook (sim, 3 hosts, real processes)")
    print(f"  alert received -> replica writable: median {statistics.median(writable) * 1000:.0f}"
          f" ms, p90 {pct(writable, 0.9) * 1000:.0f} ms (webhook round trip median "
          f"{statistics.median(webhook) * 1000:.0f} ms)")  # fmt: skip
    print(f"  RPO (data-loss window): median {statistics.median(rpo):.1f} s, max {max(rpo):.1f} s")
    print(f"  rejoin: {statistics.median(ratio):.2f} bytes sent per byte changed on the new "
          f"primary; {statistics.median(vs_full) * 100:.1f} % of the first full send "
          f"({full} B)")  # fmt: skip

if __name__ == "__main__":
    main()
