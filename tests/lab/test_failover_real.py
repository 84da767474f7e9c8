"""Failover and rejoin on real OpenZFS (issue 12, outcome 7): two lab VMs, a real redis-server,
one `zfleet worker` per VM on this machine (real backend over ssh) and a coordinator.

VM 1 replicates a hierarchy with a clone to VM 2, writes something that never leaves it, and its
worker dies. `zfleet failover` makes VM 2's replica the writable, mounted primary; VM 2 takes
writes. VM 1's worker comes back (it fences its datasets read-only before serving), and
`zfleet rejoin` keeps VM 1's unreplicated write aside (a snapshot on a clone) and sends VM 1
only what changed on VM 2, straight after the failover. The next sync then runs from VM 2 to
VM 1 incrementally: the rejoin's split left nothing that fails the receive.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.jobstore import JobStore
from tests.lab.remote import on_host
from tests.lab.test_fleet_sync_real import (
    BASE_MIB,
    JOB_TIMEOUT,
    build_source,
    moved,
    names,  # noqa: F401  (fixture)
    objects,
    run_sync,
    snapshot_hashes,
)
from tests.services.fleet import Fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.lab.lab import LabHost
from workers.zfs.base import ObjType

pytestmark = pytest.mark.lab

CHANGE_KIB = 64


def fleet_toml(hosts: list[LabHost], src: str, dst: str) -> str:
    lines = []
    for h in hosts:
        lines += [f"[hosts.{h.name}]", 'backend = "real"',
                  f"exec_prefix = {json.dumps(list(h.exec_prefix))}", ""]  # fmt: skip
    alpha, beta = hosts
    lines += ["[jobs.lab]", f'source = "{alpha.name}:{src}"', f'targets = ["{beta.name}:{dst}"]',
              'snapshot = "zfleet-%Y%m%dT%H%M%SZ"', "", "[jobs.lab.failover]",
              'candidates = ["auto"]', 'policy = "auto"', 'min_interval = "1h"', ""]  # fmt: skip
    return "\n".join(lines)


@contextlib.contextmanager
def lab_fleet(root: Path, server: RedisServer, hosts: list[LabHost], src: str,
              dst: str) -> Iterator[Fleet]:  # fmt: skip
    (root / "logs").mkdir(parents=True, exist_ok=True)
    config = root / "fleet.toml"
    config.write_text(fleet_toml(hosts, src, dst))
    fleet = Fleet(root=root, config=config, server=server, hosts=[h.name for h in hosts])
    try:
        for h in hosts:
            fleet.start_worker(h.name)
        fleet.start_coordinator()
        yield fleet
    finally:
        fleet.close()


def cli(fleet: Fleet, *args: str) -> dict[str, object]:
    out = fleet.cli(*args, "--config", str(fleet.config), "--json", timeout=JOB_TIMEOUT)
    assert out.returncode == 0, f"{args}: {out.returncode}\n{out.stdout}\n{out.stderr}\n" + (
        fleet.logs()
    )
    data: dict[str, object] = json.loads(out.stdout)
    return data


def props(host: LabHost, name: str, *which: str) -> list[str]:
    return on_host(host, f"zfs get -H -o value {','.join(which)} {name}").split()


def guids(host: LabHost, root: str, name: str) -> dict[str, int]:
    found = objects(host, root)
    return {k.split("@", 1)[1]: o.guid for k, o in found.items()
            if o.type is ObjType.SNAPSHOT and k.startswith(f"{name}@")}  # fmt: skip


def test_failover_then_rejoin_on_real_zfs_moves_only_the_change(
    lab_hosts: list[LabHost], names: tuple[str, str], tmp_path: Path,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> None:  # fmt: skip
    alpha, beta = lab_hosts
    src, parent = names
    on_host(beta, f"zfs create {parent}")
    dst = f"{parent}/img"
    build_source(alpha, src)
    with lab_fleet(tmp_path, redis_server, lab_hosts, src, dst) as fleet:
        store = JobStore(fleet.client())
        first, _ = run_sync(fleet, store)
        full = moved(first)
        assert full > BASE_MIB * 1024 * 1024, full
        on_host(alpha, f"head -c 32K /dev/urandom > /{src}/base/unreplicated && zpool sync")
        fleet.kill_worker(alpha.name)

        started = time.monotonic()
        (failover,) = cli(fleet, "failover", alpha.name, "--job", "lab", "--wait")["details"]  # type: ignore[misc]
        took = time.monotonic() - started
        assert failover["status"] == "succeeded", failover
        assert failover["report"]["primary"] == beta.name
        for name in (dst, f"{dst}/base", f"{dst}/app"):
            assert props(beta, name, "readonly", "mounted") == ["off", "yes"], name
        assert props(beta, f"{dst}/app", "origin") == [f"{dst}/base@b1"]
        on_host(beta, f"head -c {CHANGE_KIB}K /dev/urandom > /{dst}/base/after && zpool sync")

        fleet.start_worker(alpha.name)  # fences its moved datasets before it serves
        for name in (src, f"{src}/base", f"{src}/app"):
            assert props(alpha, name, "readonly") == ["on"], name
        (rejoin,) = cli(fleet, "rejoin", alpha.name, "--wait")["details"]  # type: ignore[misc]
        assert rejoin["status"] == "succeeded", (rejoin, fleet.logs())
        (aside,) = rejoin["report"]["aside"]
        assert aside == f"{src}/base.diverged-{rejoin['id']}"
        kept = snapshot_hashes(alpha, f"{aside}@zfleet-diverged-{rejoin['id']}")
        assert "./unreplicated" in kept, kept  # kept aside, not destroyed
        assert props(alpha, f"{src}/app", "origin") == [f"{src}/base@b1"]  # still a clone
        rejoined = int(rejoin["report"]["bytes"])  # no snapshot on VM 2 since: little or 0

        # the job now runs from VM 2; VM 1 takes the next increment like any replica, the
        # parent included (its tree was touched by the split, and rolled back by the rejoin)
        on_host(beta, f"head -c 16K /dev/urandom > /{dst}/later && zpool sync")
        changed = (CHANGE_KIB + 16) * 1024
        time.sleep(1.1)
        nxt, _ = run_sync(fleet, store)
        to_alpha = [s for s in nxt.steps.values() if s.kind == "transfer"]
        assert to_alpha and all(s.args.send.from_snap for s in to_alpha)  # type: ignore[attr-defined]
        assert guids(alpha, src, "ROOT") == guids(beta, dst, "ROOT")
        assert guids(alpha, src, "ROOT/base") == guids(beta, dst, "ROOT/base")
        since = rejoined + moved(nxt)
        assert changed <= since < full // 10, (rejoined, moved(nxt), full)
        print(f"\nreal ZFS: `zfleet failover` {took:.1f} s (time to writable "
              f"{float(failover['report']['time_to_writable']):.1f} s); rejoin and next sync "
              f"moved {since:,} B for {changed:,} B changed since the failover; full send "
              f"{full:,} B")
