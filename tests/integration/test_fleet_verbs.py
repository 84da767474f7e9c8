"""The short fleet verbs against a real fleet: real redis-server, `zfleet worker` processes for
alpha, beta and gamma, a coordinator, and a fleet config with nothing but [hosts].

One story, in the order a user would go: snapshot a dataset; send a hierarchy with a clone to
another host (the clone arrives as a clone), then again (only increments move); diff two
snapshots; clone a snapshot onto a host that lacks it (its origin goes first) and onto one that
has it; refuse to destroy a replica's incremental base, then destroy it with --force; list what is
where; refuse bad addresses with exit code 2 before any job exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.demo.verify import snapshot_files
from coordinator.jobstore import JobStore
from protocol.steps import TransferArgs
from tests.services.fleet import Fleet, running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.zfs.base import ObjType
from workers.zfs.sim import SimBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ("alpha", "beta", "gamma")


def write(backend: SimBackend, dataset: str, name: str, data: bytes) -> None:
    mp = backend.mountpoint(dataset)
    assert mp is not None
    Path(mp, name).write_bytes(data)


def snap_files(backend: SimBackend, snapshot: str) -> dict[str, bytes]:
    pool = snapshot.split("/", 1)[0]
    with snapshot_files(backend, snapshot, f"{pool}/scratch") as mp:
        return {p.name: p.read_bytes() for p in mp.iterdir() if p.is_file()}


def snaps(backend: SimBackend, dataset: str) -> dict[str, int]:
    return {o.short: o.guid for o in backend.list(dataset)
            if o.type is ObjType.SNAPSHOT and o.dataset == dataset}  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:  # noqa: F811
    with running_fleet(tmp_path, redis_server, HOSTS, "") as f:
        alpha = f.backend("alpha")
        alpha.create_pool("tank")
        alpha.create("tank/img")
        alpha.create("tank/img/base")
        write(alpha, "tank/img/base", "layer", os.urandom(256 * 1024))
        alpha.snapshot(["tank/img/base@b1"])
        alpha.clone("tank/img/base@b1", "tank/img/app")
        write(alpha, "tank/img/app", "own", os.urandom(32 * 1024))
        for host in ("beta", "gamma"):
            f.backend(host).create_pool("bk")
        for host in HOSTS:
            f.start_worker(host)
        f.start_coordinator()
        yield f


def verb(fleet: Fleet, *args: str, code: int = 0) -> dict[str, Any]:
    out = fleet.cli(*args, "--config", str(fleet.config), "--json", timeout=240)
    assert out.returncode == code, f"{args}: {out.returncode}\n{out.stdout}\n{out.stderr}\n" \
        + fleet.logs()
    return dict(json.loads(out.stdout)) if out.stdout.strip() else {}


def moved(job: dict[str, Any]) -> int:
    return sum(int(s["result"].get("bytes") or 0) for s in job["step_list"]
               if s["kind"] == "transfer")  # fmt: skip


def test_the_short_verbs_on_a_fleet(fleet: Fleet) -> None:
    alpha, beta, gamma = (fleet.backend(h) for h in HOSTS)

    # snapshot, named by the user; taking it again is not an error and changes nothing
    verb(fleet, "snapshot", "alpha:tank/img@manual", "-r")
    assert "manual" in snaps(alpha, "tank/img/base")
    again = verb(fleet, "snapshot", "alpha:tank/img@manual", "-r")
    assert again["report"]["up_to_date"] == ["alpha:tank/img@manual"]

    # a dry run plans and sends nothing
    dry = verb(fleet, "send", "alpha:tank/img", "beta:bk/img", "-r", "--dry-run")
    assert any(row["kind"] == "transfer" for row in dry["report"]["plan"])
    assert not beta.exists("bk/img")

    # send: a fresh snapshot, everything whole, the clone as a clone of its origin's replica
    first = verb(fleet, "send", "alpha:tank/img", "beta:bk/img", "-r")
    for ds in ("tank/img", "tank/img/base", "tank/img/app"):
        twin = ds.replace("tank/img", "bk/img", 1)
        assert snaps(beta, twin) == snaps(alpha, ds), ds
    (app,) = [o for o in beta.list("bk/img/app") if o.name == "bk/img/app"]
    assert app.origin == "bk/img/base@b1"
    newest = max((o for o in alpha.list("tank/img/app") if o.type is ObjType.SNAPSHOT),
                 key=lambda o: o.createtxg)  # fmt: skip
    assert snap_files(beta, newest.name.replace("tank/img", "bk/img", 1)) == \
        snap_files(alpha, newest.name)

    # again after a change: only increments move
    write(alpha, "tank/img/base", "patch", os.urandom(8 * 1024))
    second = verb(fleet, "send", "alpha:tank/img", "beta:bk/img", "-r")
    job = JobStore(fleet.client()).load(second["id"])
    xfers = [s.args for s in job.steps.values() if isinstance(s.args, TransferArgs)]
    assert xfers and all(a.send.from_snap for a in xfers)
    assert moved(second) * 5 < moved(first), (moved(first), moved(second))
    assert snaps(beta, "bk/img/base") == snaps(alpha, "tank/img/base")
    latest = max(snaps(alpha, "tank/img/base").items(), key=lambda kv: kv[0])[0]
    assert latest.startswith("zfleet-")

    # diff between two snapshots, and against the live dataset
    d = verb(fleet, "diff", "alpha:tank/img/base@manual", f"alpha:tank/img/base@{latest}")
    # as zfs diff: the new file, and its directory as modified
    added = [Path(c["path"]).name for c in d["changes"] if c["change"] == "+"]
    assert added == ["patch"] and {c["change"] for c in d["changes"]} <= {"+", "M"}, d["changes"]
    shown = fleet.cli("diff", "alpha:tank/img/base@manual", f"alpha:tank/img/base@{latest}",
                      "--config", str(fleet.config), timeout=240)  # fmt: skip
    assert shown.returncode == 0 and "+\t" in shown.stdout and "patch" in shown.stdout, shown
    told = fleet.cli("send", "alpha:tank/img", "beta:bk/img", "-r", "--no-snapshot",
                     "--config", str(fleet.config), timeout=240)  # fmt: skip
    assert told.returncode == 0 and "beta:bk/img is up to date" in told.stdout, told
    write(alpha, "tank/img/base", "later", b"x")
    live = verb(fleet, "diff", f"alpha:tank/img/base@{latest}")
    assert [Path(c["path"]).name for c in live["changes"] if c["change"] == "+"] == ["later"]

    # clone onto gamma, which has nothing: the origin snapshot goes first, the result is a clone
    verb(fleet, "clone", "alpha:tank/img/base@b1", "gamma:bk/work")
    (work,) = [o for o in gamma.list("bk/work") if o.name == "bk/work"]
    assert work.origin == "bk/base@b1"
    assert snaps(gamma, "bk/base") == {"b1": snaps(alpha, "tank/img/base")["b1"]}
    assert Path(str(gamma.mountpoint("bk/work")), "layer").read_bytes() == \
        snap_files(alpha, "tank/img/base@b1")["layer"]
    # onto beta, which holds b1 already (as bk/img/base@b1): no transfer at all
    same = verb(fleet, "clone", "alpha:tank/img/base@b1", "beta:bk/copy")
    assert not [s for s in same["step_list"] if s["kind"] == "transfer"]
    (copy,) = [o for o in beta.list("bk/copy") if o.name == "bk/copy"]
    assert copy.origin == "bk/img/base@b1"

    # destroy: the newest snapshot alpha and beta share is beta's next base: refused (exit 3)
    refused = verb(fleet, "destroy", f"alpha:tank/img/base@{latest}", code=3)
    (why,) = refused["report"]["refusals"]
    assert why["target"] == "beta:bk/img/base", why
    assert latest in snaps(alpha, "tank/img/base")
    # an older snapshot is nobody's base: destroyed without --force
    verb(fleet, "destroy", "alpha:tank/img/base@manual")
    assert "manual" not in snaps(alpha, "tank/img/base")
    verb(fleet, "destroy", f"alpha:tank/img/base@{latest}", "--force")
    assert latest not in snaps(alpha, "tank/img/base")

    # ls from the latest inventories, and with fresh ones
    listed = verb(fleet, "ls", "beta:bk/img")
    assert {o["name"] for o in listed["objects"]} == {"bk/img", "bk/img/base", "bk/img/app"}
    assert listed["objects"][0]["host"] == "beta"
    fresh = verb(fleet, "ls", "alpha:tank/img/base@*", "--refresh")
    assert {o["name"].split("@")[1] for o in fresh["objects"]} == \
        set(snaps(alpha, "tank/img/base"))
    everywhere = verb(fleet, "ls", "*@b1")
    assert {(o["host"], o["name"]) for o in everywhere["objects"]} == {
        ("alpha", "tank/img/base@b1"), ("beta", "bk/img/base@b1"), ("gamma", "bk/base@b1")}

    # bad addresses: exit 2 with the reason, and no job was created
    before = len(JobStore(fleet.client()).recent(100))
    for args in (("send", "nohost:tank/img", "beta:bk/x"), ("snapshot", "alpha:tank//x"),
                 ("destroy", "alpha:tank/img/base"), ("clone", "alpha:tank/img", "beta:bk/y")):
        out = fleet.cli(*args, "--config", str(fleet.config))
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "zfleet:" in out.stderr and args[1] in out.stderr, out.stderr
    assert len(JobStore(fleet.client()).recent(100)) == before
