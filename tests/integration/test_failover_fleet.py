"""Failover, fencing and rejoin on a whole simulated fleet: real redis-server, three real
`zfleet worker` processes, a real coordinator, the `zfleet` CLI.

alpha replicates a hierarchy with clones to beta and gamma; alpha's worker dies after writing
something that never got replicated; `zfleet failover alpha` makes beta the writable primary
(epoch bumped, a step planned under the old epoch refused); beta takes writes and replicates them
to gamma; alpha comes back, `zfleet rejoin alpha` keeps its unreplicated writes aside and sends it
only the increment. Clones stay clones on every host.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import records
from coordinator import engine
from coordinator.engine import Job, StepPlan, add_steps
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from protocol.steps import SnapshotArgs
from tests.integration.test_fleet_sync import CLONES, build_source, files, write
from tests.services.fleet import Fleet, running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.zfs.base import ObjType

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ("alpha", "beta", "gamma")
JOB = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img", "gamma:bk/img"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"

[jobs.img.failover]
candidates = ["beta", "auto"]
policy = "auto"
min_interval = "1h"
"""


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:  # noqa: F811
    with running_fleet(tmp_path, redis_server, HOSTS, JOB) as f:
        build_source(f.backend("alpha"))
        for host in ("beta", "gamma"):
            f.backend(host).create_pool("bk")
        for host in HOSTS:
            f.start_worker(host)
        f.start_coordinator()
        yield f


def run(fleet: Fleet, *args: str, code: int = 0) -> dict[str, object]:
    out = fleet.cli(*args, "--config", str(fleet.config), "--json", timeout=180)
    assert out.returncode == code, f"{args}: {out.returncode}\n{out.stdout}\n{out.stderr}\n" + (
        fleet.logs()
    )
    data: dict[str, object] = json.loads(out.stdout)
    return data


def sync(fleet: Fleet, store: JobStore) -> Job:
    out = run(fleet, "sync", "img")
    job = wait_job(store, str(out["id"]), timeout=120)
    assert job.status == engine.JOB_SUCCEEDED, f"{job.error}\n{fleet.logs()}"
    return job


def moved(job: Job) -> int:
    return sum(int(s.result.get("bytes") or 0) for s in job.steps.values() if s.kind == "transfer")


def snaps(fleet: Fleet, host: str, dataset: str) -> dict[str, int]:
    rows = fleet.backend(host).list(dataset, recursive=False, types=[ObjType.SNAPSHOT])
    return {r.short: r.guid for r in rows if r.dataset == dataset}


def test_failover_fences_the_old_epoch_and_rejoin_moves_only_the_increment(fleet: Fleet) -> None:
    client = fleet.client()
    store = JobStore(client)
    first = sync(fleet, store)
    full = moved(first)
    # alpha writes something that never leaves it, then dies
    alpha = fleet.backend("alpha")
    write(alpha, "tank/img/base", "unreplicated", os.urandom(32 * 1024))
    fleet.kill_worker("alpha")
    assert records.get_beat(client, "alpha") is None

    t0 = time.time()
    out = run(fleet, "failover", "alpha", "--job", "img", "--wait")
    took = time.time() - t0
    (job,) = out["details"]  # type: ignore[misc]
    assert job["status"] == "succeeded", job
    report = job["report"]
    assert report["primary"] == "beta" and report["epoch"] == 1
    assert report["data_loss_window"] is not None and report["data_loss_window"] >= 0
    assert 0 <= report["time_to_writable"] <= took
    beta = fleet.backend("beta")
    for name in ("bk/img", "bk/img/base", "bk/img/app1"):
        props = beta.get(name, ["readonly", "mounted"])
        assert (props["readonly"].value, props["mounted"].value) == ("off", "yes"), name
    assert records.current_epoch(client, "img") == 1

    # a step planned under epoch 0 (before the failover) is refused by beta's worker
    stale = Job(id="stale-epoch-job", name="img", kind="sync", created=time.time(),
                options={"epoch": 0, "fence": "img"})  # fmt: skip
    add_steps(stale, [StepPlan(id="snap", host="beta",
                               args=SnapshotArgs(names=("bk/img/base@stale",)))])  # fmt: skip
    store.create(stale)
    refused = wait_job(store, stale.id, timeout=30)
    assert refused.steps["snap"].error_type == "Fenced", refused.steps["snap"]
    assert not beta.exists("bk/img/base@stale")

    # the job now runs from beta: a write there reaches gamma, alpha (out) is left alone
    write(beta, "bk/img/base", "after-failover", os.urandom(48 * 1024))
    time.sleep(1.1)  # one-second snapshot names
    after = sync(fleet, store)
    assert {s.host for s in after.steps.values() if s.kind == "snapshot"} == {"beta"}
    assert snaps(fleet, "gamma", "bk/img/base") == snaps(fleet, "beta", "bk/img/base")
    # no second failover within min_interval, even by hand: refused (3), nothing changes
    run(fleet, "failover", "beta", "--force", code=3)
    assert records.current_epoch(client, "img") == 1

    fleet.start_worker("alpha")
    out = run(fleet, "rejoin", "alpha", "--wait")
    (job,) = out["details"]  # type: ignore[misc]
    assert job["status"] == "succeeded", job
    aside = job["report"]["aside"]
    assert aside == [f"tank/img/base.diverged-{job['id']}"], job["report"]
    # alpha's unreplicated write is kept aside, in the diverged snapshot of the aside clone
    kept = snaps(fleet, "alpha", aside[0])
    assert f"zfleet-diverged-{job['id']}" in kept
    # alpha's main line is beta's again (same guids), and it received only the increment
    assert snaps(fleet, "alpha", "tank/img/base") == snaps(fleet, "beta", "bk/img/base")
    rejoined = job["report"]["bytes"]
    assert 0 < rejoined * 5 < full, (rejoined, full)
    props = alpha.get("tank/img/base", ["readonly"])
    assert props["readonly"].value == "on"  # a replica now
    for clone, origin in CLONES.items():
        assert alpha.get(clone, ["origin"])["origin"].value == f"tank/img/base@{origin}"
        twin = clone.replace("tank/img", "bk/img", 1)
        assert beta.get(twin, ["origin"])["origin"].value == f"bk/img/base@{origin}"
    assert "after-failover" in files(beta, "bk/img/base")
    # alpha is a replica again: the next sync sends to it as well, incrementally
    write(beta, "bk/img/base", "later", os.urandom(8 * 1024))
    time.sleep(1.1)
    last = sync(fleet, store)
    targets = {t.host for s in last.steps.values() if s.kind == "transfer" for t in s.args.targets}
    assert "alpha" in targets
    assert snaps(fleet, "alpha", "tank/img/base") == snaps(fleet, "beta", "bk/img/base")


def post(url: str, body: bytes, auth: str | None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    if auth is not None:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def notification(status: str, host: str) -> bytes:
    alert = {"status": status, "labels": {"alertname": "ZfleetWorkerDown", "host": host},
             "annotations": {}, "startsAt": "2026-12-02T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
             "fingerprint": hashlib.sha256(host.encode()).hexdigest()[:16]}
    return json.dumps({
        "version": "4", "groupKey": "{}:{alertname=\"ZfleetWorkerDown\"}", "truncatedAlerts": 0,
        "status": status, "receiver": "zfleet", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://am", "alerts": [alert],
    }).encode()  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_alertmanager_webhook_fails_over_once_and_refuses_bad_requests(
    tmp_path: Path, redis_server: RedisServer  # noqa: F811
) -> None:
    with running_fleet(tmp_path, redis_server, HOSTS, JOB) as fleet:
        build_source(fleet.backend("alpha"))
        for host in ("beta", "gamma"):
            fleet.backend(host).create_pool("bk")
        for host in HOSTS:
            fleet.start_worker(host)
        (tmp_path / "api.token").write_text("api-token-0123456789abcdef\n")
        (tmp_path / "am.secret").write_text("alertmanager-secret-0123456789\n")
        port = free_port()
        fleet.coordinator = fleet._spawn("coordinator", [
            "coordinator", "--config", str(fleet.config), "--lease-ttl", "2",
            "--http", f"127.0.0.1:{port}", "--api-token-file", str(tmp_path / "api.token"),
            "--alertmanager-secret-file", str(tmp_path / "am.secret")], {})  # fmt: skip
        client = fleet.client()
        store = JobStore(client)
        sync(fleet, store)
        url = f"http://127.0.0.1:{port}/v1/alerts/alertmanager"
        good = "Bearer alertmanager-secret-0123456789"
        basic = "Basic " + base64.b64encode(b"am:alertmanager-secret-0123456789").decode()
        firing = notification("firing", "alpha")

        # unauthorised and malformed: 4xx, nothing changes
        assert post(url, firing, None)[0] == 401
        assert post(url, firing, "Bearer wrong-secret-0123456789")[0] == 401
        assert post(url, b'{"alerts": [', good)[0] == 400
        # alpha's worker still beats: the alert alone is not evidence enough
        code, body = post(url, firing, basic)
        assert code == 200 and body["failovers"][0]["outcome"] == "refused", body
        assert records.current_epoch(client, "img") == 0

        fleet.kill_worker("alpha")
        code, body = post(url, firing, good)
        assert code == 200 and body["failovers"][0]["outcome"] == "started", body
        job_id = str(body["failovers"][0]["id"])  # type: ignore[index]
        # a repeat (Alertmanager's repeat_interval, a second Alertmanager) starts nothing new
        code, again = post(url, firing, good)
        assert again["failovers"][0] == {"host": "alpha", "job": "img", "id": job_id,  # type: ignore[index]
                                         "outcome": "repeat"}  # fmt: skip
        job = wait_job(store, job_id, timeout=60)
        assert job.status == engine.JOB_SUCCEEDED, f"{job.error}\n{fleet.logs()}"
        assert job.report["primary"] == "beta" and job.report["time_to_writable"] > 0
        props = fleet.backend("beta").get("bk/img/base", ["readonly", "mounted"])
        assert (props["readonly"].value, props["mounted"].value) == ("off", "yes")
        # alpha returns: the resolved alert fails nothing back; beta's own flap is gated
        fleet.start_worker("alpha")
        code, body = post(url, notification("resolved", "alpha"), good)
        assert code == 200 and body["failovers"] == [] and body["ignored"], body
        fleet.kill_worker("beta")
        code, body = post(url, notification("firing", "beta"), good)
        assert body["failovers"][0]["outcome"] == "refused", body  # type: ignore[index]
        assert "min_interval" in str(body["failovers"][0]["reason"])  # type: ignore[index]
        assert records.current_epoch(client, "img") == 1
        assert len([j for j in store.recent(50) if j.kind == "failover"]) == 1


def test_switchover_loses_nothing_and_reverses_the_direction(fleet: Fleet) -> None:
    client = fleet.client()
    store = JobStore(client)
    first = sync(fleet, store)
    # written after the last sync: the switchover's final snapshot must carry it
    write(fleet.backend("alpha"), "tank/img/base", "last-words", b"x" * 4096)
    out = run(fleet, "switchover", "img", "--to", "beta", "--wait")
    (job,) = out["details"]  # type: ignore[misc]
    assert job["status"] == "succeeded", job
    assert job["report"]["data_loss_window"] == 0.0 and job["report"]["epoch"] == 1
    final = str(job["report"]["final_snapshot"])
    beta, alpha = fleet.backend("beta"), fleet.backend("alpha")
    # every replica got the final snapshot incrementally, nothing full
    transfers = [s for s in job["step_list"] if s["kind"] == "transfer"]  # type: ignore[union-attr]
    assert transfers and 0 < job["report"]["final_bytes"] * 5 < moved(first)
    for host, name in (("beta", "bk/img/base"), ("gamma", "bk/img/base")):
        assert final in snaps(fleet, host, name), host
    props = beta.get("bk/img/base", ["readonly", "mounted"])
    assert (props["readonly"].value, props["mounted"].value) == ("off", "yes")
    assert files(beta, "bk/img/base")["last-words"] == b"x" * 4096
    assert alpha.get("tank/img/base", ["readonly"])["readonly"].value == "on"
    # the next sync runs from beta to alpha and gamma, incrementally
    write(beta, "bk/img/base", "new-primary", os.urandom(8 * 1024))
    time.sleep(1.1)
    nxt = sync(fleet, store)
    targets = {t.host for s in nxt.steps.values() if s.kind == "transfer" for t in s.args.targets}
    assert targets == {"alpha", "gamma"}
    assert all(s.args.send.from_snap for s in nxt.steps.values() if s.kind == "transfer")
    assert snaps(fleet, "alpha", "tank/img/base") == snaps(fleet, "beta", "bk/img/base")
    for clone, origin in CLONES.items():
        assert alpha.get(clone, ["origin"])["origin"].value == f"tank/img/base@{origin}"
