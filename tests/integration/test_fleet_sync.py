"""A whole simulated fleet: real redis-server, three `zfleet worker` processes, a coordinator.

alpha holds a hierarchy (a base with snapshots, nested children, three clones of different base
snapshots); the job replicates it to beta and gamma. The targets must end up with clones as clones,
equal guids and equal contents, unmounted with canmount=noauto (the default), read through temporary
clones of their newest snapshots; a second run moves only the changes; a worker and the coordinator
killed (SIGKILL) mid-job do not stop the job from finishing correctly once they are back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.demo.verify import snapshot_files
from coordinator import engine
from coordinator.engine import Job
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from tests.services.fleet import PASSPHRASE, Fleet, running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.zfs.base import ObjType
from workers.zfs.sim import SimBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ("alpha", "beta", "gamma")
JOB = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img", "gamma:bk/img"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
retention = { "zfleet-*" = 2 }
"""
CLONES = {"tank/img/app1": "b1", "tank/img/app2": "b2", "tank/img/app3": "b3"}


def write(backend: SimBackend, dataset: str, name: str, data: bytes) -> None:
    mp = backend.mountpoint(dataset)
    assert mp is not None
    Path(mp, name).write_bytes(data)


def build_source(alpha: SimBackend) -> None:
    """The hierarchy to replicate, with incompressible data so sizes mean something."""
    alpha.create_pool("tank")
    alpha.create("tank/img")
    write(alpha, "tank/img", "README", b"images\n")
    alpha.create("tank/img/base")
    for i, snap in enumerate(("b1", "b2", "b3")):
        write(alpha, "tank/img/base", f"layer{i}", os.urandom(256 * 1024))
        alpha.snapshot([f"tank/img/base@{snap}"])
    alpha.create("tank/img/base/child")
    write(alpha, "tank/img/base/child", "c", os.urandom(64 * 1024))
    alpha.create("tank/img/base/child/deep")
    write(alpha, "tank/img/base/child/deep", "d", os.urandom(32 * 1024))
    for clone, origin in CLONES.items():
        alpha.clone(f"tank/img/base@{origin}", clone)
        write(alpha, clone, "own", os.urandom(16 * 1024))


def files(backend: SimBackend, dataset: str) -> dict[str, bytes]:
    mp = backend.mountpoint(dataset)
    assert mp is not None
    return {p.name: p.read_bytes() for p in Path(mp).iterdir() if p.is_file()}


def replica_files(backend: SimBackend, dataset: str) -> dict[str, bytes]:
    """The files of an (unmounted) replica's newest snapshot, read through a temporary clone."""
    snaps = [o for o in backend.list(dataset) if o.type is ObjType.SNAPSHOT]
    newest = max((o for o in snaps if o.dataset == dataset), key=lambda o: o.createtxg)
    pool = dataset.split("/", 1)[0]
    with snapshot_files(backend, newest.name, f"{pool}/scratch") as mp:
        return {p.name: p.read_bytes() for p in mp.iterdir() if p.is_file()}


def assert_replicated(fleet: Fleet) -> None:
    alpha = fleet.backend("alpha")
    src = {o.name: o for o in alpha.list("tank/img")}
    datasets = [n for n, o in src.items() if o.type is ObjType.FILESYSTEM]
    for host in ("beta", "gamma"):
        tgt_backend = fleet.backend(host)
        tgt = {o.name: o for o in tgt_backend.list("bk/img")}
        for name, obj in src.items():
            twin = tgt.get(name.replace("tank/img", "bk/img", 1))
            assert twin is not None, f"{host} lacks {name}"
            if obj.type is ObjType.SNAPSHOT:
                assert twin.guid == obj.guid, f"{host}: {twin.name} has another guid"
        for clone, origin in CLONES.items():
            twin = tgt[clone.replace("tank/img", "bk/img", 1)]
            assert twin.origin == f"bk/img/base@{origin}", f"{host}: {twin.name} is not a clone"
        for name in datasets:
            twin_name = name.replace("tank/img", "bk/img", 1)
            props = tgt_backend.get(twin_name, ["mounted", "canmount"])
            assert (props["mounted"].value, props["canmount"].value) == ("no", "noauto"), twin_name
            assert replica_files(tgt_backend, twin_name) == files(alpha, name)


def moved(job: Job) -> int:
    return sum(int(s.result.get("bytes") or 0) for s in job.steps.values() if s.kind == "transfer")


def run_sync(fleet: Fleet, store: JobStore, timeout: float = 90) -> Job:
    out = fleet.cli("sync", "img", "--config", str(fleet.config), "--json")
    assert out.returncode == 0, out.stderr
    job = wait_job(store, json.loads(out.stdout)["id"], timeout=timeout)
    assert job.done, f"job did not finish: {engine.counts(job)}\n{fleet.logs()}"
    assert job.status == engine.JOB_SUCCEEDED, f"{job.error}: {engine.counts(job)}\n{fleet.logs()}"
    return job


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


def test_hierarchy_replicates_with_clones_then_only_changes(fleet: Fleet) -> None:
    store = JobStore(fleet.client())
    dry = fleet.cli("sync", "img", "--config", str(fleet.config), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr + fleet.logs()
    plan = json.loads(dry.stdout)["report"]
    assert plan["estimate"] > 700 * 1024  # the three 256 KiB layers at least
    assert not fleet.backend("beta").exists("bk/img")  # a dry run sends nothing

    first = run_sync(fleet, store)
    assert_replicated(fleet)
    # one fan-out step per stream: every transfer went to both targets at once
    transfers = [s for s in first.steps.values() if s.kind == "transfer"]
    assert transfers and all(len(s.args.targets) == 2 for s in transfers)

    write(fleet.backend("alpha"), "tank/img/base", "patch", os.urandom(8 * 1024))
    time.sleep(1.1)  # the snapshot pattern has one-second resolution
    second = run_sync(fleet, store)
    assert_replicated(fleet)
    assert all(s.args.send.from_snap for s in second.steps.values() if s.kind == "transfer")
    assert moved(second) * 10 < moved(first), (moved(first), moved(second))

    status = fleet.cli("status", "--config", str(fleet.config), "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)["datasets"]
    assert {t["snapshots_behind"] for r in rows for t in r["targets"]} == {0}

    # someone snapshots beta's copy (unmounted, the sim gives no way to write into it): beta's base
    # is refused by name, gamma still syncs
    fleet.backend("beta").snapshot(["bk/img/base@local-edit"])
    write(fleet.backend("alpha"), "tank/img/base", "patch2", os.urandom(4096))
    time.sleep(1.1)
    third = fleet.cli("sync", "img", "--config", str(fleet.config), "--wait", "--json",
                      timeout=120)  # fmt: skip
    steps = json.loads(third.stdout)["step_list"]
    failed = [(s["id"], s["error"]) for s in steps if s["status"] != "succeeded"]
    assert third.returncode == 3, failed  # EXIT_REFUSED: all ran, but beta's base was refused
    (refusal,) = json.loads(third.stdout)["report"]["refusals"]
    assert refusal["target"] == "beta:bk/img/base"
    assert "snapshots the source lacks" in refusal["reason"], refusal
    gamma_base = replica_files(fleet.backend("gamma"), "bk/img/base")
    assert gamma_base == files(fleet.backend("alpha"), "tank/img/base")
    assert "patch2" not in replica_files(fleet.backend("beta"), "bk/img/base")

    # retention kept the newest two zfleet snapshots everywhere it pruned, never a needed base
    for host, root in (("alpha", "tank/img"), ("gamma", "bk/img")):
        snaps: dict[str, list[str]] = {}
        for o in fleet.backend(host).list(root):
            if o.type is ObjType.SNAPSHOT and o.short.startswith("zfleet-"):
                snaps.setdefault(o.dataset, []).append(o.short)
        assert snaps and all(len(v) == 2 for v in snaps.values()), (host, snaps)
    beta_base = [o.short for o in fleet.backend("beta").list("bk/img/base")
                 if o.dataset == "bk/img/base" and o.short.startswith("zfleet-")]  # fmt: skip
    alpha_base = [o.short for o in fleet.backend("alpha").list("tank/img/base")
                  if o.dataset == "tank/img/base" and o.type is ObjType.SNAPSHOT]  # fmt: skip
    assert len(beta_base) == 2  # refused targets are not pruned
    assert beta_base[-1] in alpha_base  # beta's base for its next incremental is still there


def test_killed_worker_and_coordinator_do_not_stop_the_job(fleet: Fleet) -> None:
    store = JobStore(fleet.client())
    run_sync(fleet, store)
    # slow alpha's sends down so the next transfer is still running when we strike
    fleet.kill_worker("alpha")
    fleet.start_worker("alpha", ZFLEET_BWLIMIT="300K")
    write(fleet.backend("alpha"), "tank/img/base", "big", os.urandom(3 * 1024 * 1024))
    time.sleep(1.1)
    out = fleet.cli("sync", "img", "--config", str(fleet.config), "--json")
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["id"]
    deadline = time.monotonic() + 60
    # the big stream's first progress report (one data-plane chunk, 256 KiB, read from zfs send);
    # the other transfers' streams are a few KiB
    while not any(p.get("done", 0) >= 256 * 1024 for p in store.progress(job_id).values()):
        assert time.monotonic() < deadline, f"no transfer started\n{fleet.logs()}"
        time.sleep(0.2)
    fleet.kill_coordinator()
    fleet.kill_worker("alpha")
    time.sleep(1)
    fleet.start_worker("alpha")
    fleet.start_coordinator()
    job = wait_job(store, job_id, timeout=100)
    assert job.status == engine.JOB_SUCCEEDED, f"{job.error}: {engine.counts(job)}\n{fleet.logs()}"
    assert_replicated(fleet)
    assert max(s.attempt for s in job.steps.values() if s.kind == "transfer") >= 2


STORE_JOB = """
[stores.vault]
kind = "dir"
path = "{path}"

[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img", "store:vault"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""


def test_object_store_target_gets_the_same_streams(
    tmp_path: Path, redis_server: RedisServer  # noqa: F811
) -> None:
    from workers.cloud import manifest as mf
    from workers.cloud.blobstore import LocalBlobStore
    from workers.cloud.repo import RepoKey, Repository

    vault = tmp_path / "vault"
    vault.mkdir()
    repo = Repository.init(LocalBlobStore(vault), RepoKey(passphrase=PASSPHRASE), scrypt_n=2**10)
    job = STORE_JOB.format(path=vault)
    with running_fleet(tmp_path / "fleet", redis_server, HOSTS[:2], job) as fleet:
        build_source(fleet.backend("alpha"))
        fleet.backend("beta").create_pool("bk")
        for host in HOSTS[:2]:
            fleet.start_worker(host)
        fleet.start_coordinator()
        store = JobStore(fleet.client())
        first = run_sync(fleet, store)
        # one send feeds the peer and the store at once
        assert all(len(s.args.targets) == 2 for s in first.steps.values()
                   if s.kind == "transfer")  # fmt: skip
        stored, broken = mf.load_all(repo.target, repo.crypto)
        assert not broken
        in_store = {sub.toguid for m in stored for sub in (m.substreams or [m])}
        snaps = {o.guid for o in fleet.backend("alpha").list("tank/img")
                 if o.type is ObjType.SNAPSHOT}  # fmt: skip
        assert snaps <= in_store
        # clones went in as incrementals from their origin snapshot
        app1 = next(m for m in stored if m.dataset == "tank/img/app1")
        assert app1.fromguid != 0

        write(fleet.backend("alpha"), "tank/img/base", "patch", os.urandom(4096))
        time.sleep(1.1)
        second = run_sync(fleet, store)
        newer, _ = mf.load_all(repo.target, repo.crypto)
        added = [m for m in newer if m.id not in {o.id for o in stored}]
        assert added and all(m.fromguid != 0 for m in added)  # only increments went in
        assert moved(second) * 10 < moved(first)


def test_cancel_stops_a_running_transfer_and_releases_holds(fleet: Fleet) -> None:
    store = JobStore(fleet.client())
    run_sync(fleet, store)
    fleet.kill_worker("alpha")
    fleet.start_worker("alpha", ZFLEET_BWLIMIT="200K")
    write(fleet.backend("alpha"), "tank/img/base", "big", os.urandom(4 * 1024 * 1024))
    time.sleep(1.1)
    out = fleet.cli("sync", "img", "--config", str(fleet.config), "--json")
    job_id = json.loads(out.stdout)["id"]
    deadline = time.monotonic() + 60
    while not any(p.get("done", 0) > 128 * 1024 for p in store.progress(job_id).values()):
        assert time.monotonic() < deadline, f"no transfer started\n{fleet.logs()}"
        time.sleep(0.2)
    cancel = fleet.cli("job", "cancel", job_id[:-2])  # a unique prefix is enough
    assert cancel.returncode == 0, cancel.stderr
    job = wait_job(store, job_id, timeout=60)
    assert job.status == engine.JOB_CANCELLED, f"{engine.counts(job)}\n{fleet.logs()}"
    shown = fleet.cli("job", "show", job_id, "--json")
    assert shown.returncode == 6  # EXIT_CANCELLED
    tag = f"zfleet-{job_id}"
    alpha = fleet.backend("alpha")
    held = [o.name for o in alpha.list("tank/img")
            if o.type is ObjType.SNAPSHOT and tag in alpha.holds(o.name)]  # fmt: skip
    assert held == []  # the release step ran although the job was cancelled
    assert "big" not in replica_files(fleet.backend("beta"), "bk/img/base")
