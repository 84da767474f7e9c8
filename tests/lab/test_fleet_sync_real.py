"""The fleet-sync job between two real-ZFS lab VMs (issue 6, outcome 7).

A real redis-server, one `zfleet worker` process per lab VM on this machine (backend ``real`` with
the VM's ssh exec prefix) and a `zfleet coordinator` process. So ``zfs send`` runs in VM 1, its
bytes come out over ssh into VM 1's worker, cross the data plane over 127.0.0.1 to VM 2's worker
and go over ssh into ``zfs receive`` in VM 2. On VM 2 the replica must have the same guids, the
clone must be a clone of the replicated base snapshot and the files must hash the same; a second
run after a small change must move only that change. Replicas are received unmounted with
``canmount=noauto`` (the default): mounted, a fresh replica's parents would count as modified since
their snapshots (mounting the children replaces their mountpoint directories, openzfs/zfs#12580) and
the next sync would refuse them. A replica a user mounts and writes into is still refused.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from coordinator import engine
from coordinator.engine import Job
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from tests.lab.remote import on_host
from tests.services.fleet import Fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.lab.lab import LabHost
from workers.zfs.base import ObjType, ZfsObject
from workers.zfs.real import RealBackend

pytestmark = pytest.mark.lab

# Under TCG a key exchange alone takes a second or more and every zfs command goes over ssh:
# jobs get minutes, bounded.
JOB_TIMEOUT: Final = 480
BASE_MIB: Final = 4  # incompressible data in the base, so byte counts mean something
CHANGE_KIB: Final = 64


def fleet_toml(hosts: list[LabHost], src: str, dst: str, *, force_rollback: bool) -> str:
    """Hosts as real-ZFS hosts reached through their exec prefixes, and one replication job."""
    lines = []
    for h in hosts:
        lines += [f"[hosts.{h.name}]", 'backend = "real"',
                  f"exec_prefix = {json.dumps(list(h.exec_prefix))}", ""]  # fmt: skip
    alpha, beta = hosts
    lines += ["[jobs.lab]", f'source = "{alpha.name}:{src}"', f'targets = ["{beta.name}:{dst}"]',
              'snapshot = "zfleet-%Y%m%dT%H%M%SZ"',
              f"force_rollback = {'true' if force_rollback else 'false'}", ""]  # fmt: skip
    return "\n".join(lines)


@contextlib.contextmanager
def lab_fleet(root: Path, server: RedisServer, hosts: list[LabHost], src: str, dst: str, *,
              force_rollback: bool = False) -> Iterator[Fleet]:  # fmt: skip
    """Workers for the lab hosts and a coordinator, all processes on this machine."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    config = root / "fleet.toml"
    config.write_text(fleet_toml(hosts, src, dst, force_rollback=force_rollback))
    fleet = Fleet(root=root, config=config, server=server, hosts=[h.name for h in hosts])
    try:
        for h in hosts:
            fleet.start_worker(h.name)
        fleet.start_coordinator()
        yield fleet
    finally:
        fleet.close()


def build_source(alpha: LabHost, root: str) -> None:
    """On VM 1: a base with files and two snapshots, a nested child, a clone of the first."""
    on_host(alpha, " && ".join([
        f"zfs create {root}",
        f"echo fleet > /{root}/README",
        f"zfs create {root}/base",
        f"head -c {BASE_MIB // 2}M /dev/urandom > /{root}/base/layer0",
        f"zfs snapshot {root}/base@b1",
        f"head -c {BASE_MIB // 2}M /dev/urandom > /{root}/base/layer1",
        f"zfs snapshot {root}/base@b2",
        f"zfs create {root}/base/child",
        f"head -c 256K /dev/urandom > /{root}/base/child/c",
        f"zfs clone {root}/base@b1 {root}/app",
        f"head -c 128K /dev/urandom > /{root}/app/own",
    ]), timeout=300)  # fmt: skip


def snapshot_hashes(host: LabHost, snapshot: str) -> dict[str, str]:
    """``hashes`` of an unmounted replica's snapshot, read through a temporary clone."""
    scratch, mnt = f"{host.pool}/fleetscratch", "/run/fleetscratch"
    on_host(host, f"zfs clone -o readonly=on -o mountpoint={mnt} {snapshot} {scratch}")
    try:
        return hashes(host, mnt)
    finally:
        on_host(host, f"zfs destroy {scratch}")


def newest_snapshot(found: dict[str, ZfsObject], name: str) -> ZfsObject:
    """The newest snapshot of ``name`` among ``found`` (keyed as ``objects`` keys them)."""
    return max((o for k, o in found.items() if k.startswith(f"{name}@")), key=lambda o: o.createtxg)


def hashes(host: LabHost, directory: str) -> dict[str, str]:
    """sha256 of every file under ``directory`` on ``host`` (not crossing into child datasets)."""
    out = on_host(host, f"cd {directory} && find . -xdev -type f -print0 | sort -z | "
                        "xargs -0 -r sha256sum", timeout=300)  # fmt: skip
    return {path: digest for digest, path in (line.split(None, 1) for line in out.splitlines())}


def objects(host: LabHost, root: str) -> dict[str, ZfsObject]:
    """Everything under ``root``, keyed by the name relative to it (``ROOT/base@b1``)."""
    return {o.name.replace(root, "ROOT", 1): o for o in RealBackend(host.exec_prefix).list(root)}


def modified(beta: LabHost, dst: str) -> dict[str, str]:
    """Replica datasets written since their newest snapshot: bytes written and ``zfs diff``."""
    on_host(beta, f"zpool sync {beta.pool}")  # ``written`` shows only what a txg has synced
    found = objects(beta, dst)
    out = {}
    for name, o in found.items():
        if o.type is ObjType.FILESYSTEM and o.written:
            newest = max((s for k, s in found.items() if k.startswith(f"{name}@")),
                         key=lambda s: s.createtxg)  # fmt: skip
            diff = on_host(beta, f"zfs diff -FH {newest.name} {o.name} 2>&1 || true")
            out[name] = f"{o.written} B; zfs diff: {diff.strip()!r}"
    return out


def assert_replicated(alpha: LabHost, beta: LabHost, src: str, dst: str) -> None:
    """Every dataset and snapshot of ``src`` on VM 2 with its guid, clones as clones, same files,
    unmounted with canmount=noauto.

    Files are read through the newest snapshot: on VM 1 its ``.zfs/snapshot`` directory (reading
    the live source would update atimes), on VM 2 a temporary clone (the replica is unmounted).
    """
    ours, theirs = objects(alpha, src), objects(beta, dst)
    assert set(ours) <= set(theirs), f"missing on {beta.name}: {sorted(set(ours) - set(theirs))}"
    for name, obj in ours.items():
        if obj.type is ObjType.SNAPSHOT:
            assert theirs[name].guid == obj.guid, f"{name}: guid differs on {beta.name}"
    assert ours["ROOT/app"].origin == f"{src}/base@b1"
    assert theirs["ROOT/app"].origin == f"{dst}/base@b1", "the clone did not arrive as a clone"
    for name, obj in ours.items():
        if obj.type is not ObjType.FILESYSTEM:
            continue
        snap = newest_snapshot(ours, name)
        mine = f"/{name.replace('ROOT', src, 1)}/.zfs/snapshot/{snap.short}"
        twin = name.replace("ROOT", dst, 1)
        digests = hashes(alpha, mine)
        assert digests, f"no files in {mine}"
        assert snapshot_hashes(beta, f"{twin}@{snap.short}") == digests, twin
        state = on_host(beta, f"zfs get -H -o value mounted,canmount {twin}")
        assert state.split() == ["no", "noauto"], (twin, state)


def moved(job: Job) -> int:
    return sum(int(s.result.get("bytes") or 0) for s in job.steps.values() if s.kind == "transfer")


def run_sync(fleet: Fleet, store: JobStore) -> tuple[Job, float]:
    started = time.monotonic()
    out = fleet.cli("sync", "lab", "--config", str(fleet.config), "--json", timeout=120)
    assert out.returncode == 0, out.stderr + fleet.logs()
    job = wait_job(store, json.loads(out.stdout)["id"], timeout=JOB_TIMEOUT, poll=1)
    assert job.done, f"job did not finish in {JOB_TIMEOUT} s: {engine.counts(job)}\n{fleet.logs()}"
    assert job.status == engine.JOB_SUCCEEDED, f"{job.error}: {engine.counts(job)}\n{fleet.logs()}"
    return job, time.monotonic() - started


@pytest.fixture
def names(lab_hosts: list[LabHost]) -> Iterator[tuple[str, str]]:
    """A fresh source root on VM 1 and a fresh parent for the replica on VM 2 (the test creates
    it, with the properties the replica is to inherit); both destroyed afterwards."""
    alpha, beta = lab_hosts
    leaf = f"fleet{secrets.token_hex(3)}"
    src, parent = f"{alpha.pool}/{leaf}", f"{beta.pool}/{leaf}r"
    yield src, parent
    for host, root in ((alpha, src), (beta, parent)):
        with contextlib.suppress(Exception):
            on_host(host, f"zfs destroy -R {root} 2>/dev/null || true", timeout=300)


def test_hierarchy_replicates_between_real_hosts_then_only_changes(
    lab_hosts: list[LabHost], names: tuple[str, str], tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:  # fmt: skip
    alpha, beta = lab_hosts
    src, parent = names
    on_host(beta, f"zfs create {parent}")
    dst = f"{parent}/img"
    build_source(alpha, src)
    with lab_fleet(tmp_path, redis_server, lab_hosts, src, dst) as fleet:
        store = JobStore(fleet.client())
        first, first_s = run_sync(fleet, store)
        assert modified(beta, dst) == {}, "the replica changed after it was received"
        assert_replicated(alpha, beta, src, dst)
        assert moved(first) > BASE_MIB * 1024 * 1024, moved(first)

        on_host(alpha, f"head -c {CHANGE_KIB}K /dev/urandom > /{src}/base/patch")
        time.sleep(1.1)  # the snapshot pattern has one-second resolution
        second, second_s = run_sync(fleet, store)
        assert_replicated(alpha, beta, src, dst)
        theirs = objects(beta, dst)
        assert "./patch" in snapshot_hashes(beta, newest_snapshot(theirs, "ROOT/base").name)
        transfers = [s for s in second.steps.values() if s.kind == "transfer"]
        assert transfers and all(s.args.send.from_snap for s in transfers)
        assert moved(second) * 10 < moved(first), (moved(first), moved(second))
        print(f"fleet sync on real ZFS: first {moved(first)} B in {first_s:.0f} s, "
              f"second {moved(second)} B in {second_s:.0f} s; second run's steps: "
              f"{sorted(s.kind for s in second.steps.values())}")  # fmt: skip


def test_second_sync_without_force_rollback_refuses_only_a_written_replica(
    lab_hosts: list[LabHost], names: tuple[str, str], tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:  # fmt: skip
    alpha, beta = lab_hosts
    src, parent = names
    on_host(beta, f"zfs create {parent}")
    dst = f"{parent}/img"
    on_host(alpha, f"zfs create {src} && zfs create {src}/child && echo a > /{src}/child/f")
    with lab_fleet(tmp_path, redis_server, lab_hosts, src, dst) as fleet:
        store = JobStore(fleet.client())
        run_sync(fleet, store)
        assert modified(beta, dst) == {}, "the replica changed after it was received"
        on_host(alpha, f"echo b >> /{src}/child/f")
        time.sleep(1.1)
        run_sync(fleet, store)  # unmounted replicas: no force_rollback needed

        # a user mounts the child's replica and writes into it: that target is refused by name
        on_host(beta, f"zfs mount {dst}/child && echo local >> /{dst}/child/f && zpool sync")
        on_host(alpha, f"echo c >> /{src}/child/f")
        time.sleep(1.1)
        out = fleet.cli("sync", "lab", "--config", str(fleet.config), "--wait", "--json",
                        timeout=JOB_TIMEOUT)  # fmt: skip
        assert out.returncode == 3, out.stdout + out.stderr + fleet.logs()  # EXIT_REFUSED
        (refusal,) = json.loads(out.stdout)["report"]["refusals"]
        assert refusal["target"] == f"{beta.name}:{dst}/child", refusal
        assert "modified" in refusal["reason"], refusal
