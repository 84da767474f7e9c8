"""Group keys through a real fleet: made, shared, used and rotated on member hosts only.

Real redis-server, three `zfleet worker` processes and a coordinator over simulated pools. Each
host registers its own X25519 key pair (`zfleet keys host init`); group ``team`` keeps
alpha:tank/team, beta is a member, gamma is not (it only holds a replica). Checks: replicas
arrive locked; a member loads the group key and reads; a non-member cannot; a rotation after
removing a member changes the keeper's key and reaches the replicas with the next raw send;
and neither Redis (every key, every value) nor any log line ever holds the key in clear.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.demo.verify import snapshot_files
from coordinator import engine
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from protocol.errors import InvalidOperation
from protocol.keysteps import key_context
from protocol.sealed import KeyPair, open_box, unb64
from tests.services.fleet import Fleet, running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.zfs.base import ObjType

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ("alpha", "beta", "gamma")
JOB = """
[jobs.team]
source = "alpha:tank/team"
targets = ["beta:bk/team", "gamma:bk/team"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""


def ok(fleet: Fleet, *args: str) -> dict[str, object]:
    out = fleet.cli(*args, "--json", timeout=120)
    assert out.returncode == 0, f"{args}: {out.stdout}\n{out.stderr}\n{fleet.logs()}"
    return json.loads(out.stdout) if out.stdout.strip() else {}


def sync(fleet: Fleet) -> None:
    out = fleet.cli("sync", "team", "--config", str(fleet.config), "--json")
    assert out.returncode == 0, out.stderr
    job = wait_job(JobStore(fleet.client()), json.loads(out.stdout)["id"], timeout=90)
    assert job.status == engine.JOB_SUCCEEDED, f"{job.error}: {engine.counts(job)}\n{fleet.logs()}"


def group_key(fleet: Fleet, host: str, version: int) -> bytes:
    """What the test may do and a coordinator may not: open a box with the host's private key
    (read from the host's own key file)."""
    pair = KeyPair.from_private((fleet.root / "data" / "keys" / f"{host}.x25519").read_bytes())
    box = fleet.client().hget("zfleet:keygroup:team", f"sealed:{version}:{host}")
    assert box is not None, f"no v{version} box for {host}"
    return open_box(pair, unb64(box.decode()), key_context("team", version))


def everything_in_redis(fleet: Fleet) -> bytes:
    c = fleet.client()
    out = bytearray()
    for key in c.scan_iter("*"):
        kind = c.type(key).decode()
        out += key
        if kind == "string":
            out += c.get(key) or b""
        elif kind == "hash":
            for k, v in c.hgetall(key).items():
                out += k + v
        elif kind == "list":
            out += b"".join(c.lrange(key, 0, -1))
        elif kind == "set":
            out += b"".join(c.smembers(key))
        elif kind == "zset":
            out += b"".join(m for m, _ in c.zrange(key, 0, -1, withscores=True))
        elif kind == "stream":
            for _, entry in c.xrange(key):
                for k, v in entry.items():
                    out += k + v
    return bytes(out)


def locked(fleet: Fleet, host: str, ds: str) -> bool:
    return fleet.backend(host).get(ds, ["keystatus"])["keystatus"].value == "unavailable"


def unload(fleet: Fleet, host: str, ds: str) -> None:
    be = fleet.backend(host)
    if be.get(ds, ["mounted"])["mounted"].value == "yes":
        be.unmount(ds)
    be.unload_key(ds)


def newest_files(fleet: Fleet, host: str, ds: str) -> dict[str, bytes]:
    be = fleet.backend(host)
    snaps = [o for o in be.list(ds, recursive=False, types=(ObjType.SNAPSHOT,))]
    newest = max(snaps, key=lambda o: o.createtxg)
    with snapshot_files(be, newest.name, f"{ds.split('/', maxsplit=1)[0]}/scratch") as mp:
        return {p.name: p.read_bytes() for p in mp.iterdir() if p.is_file()}


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:  # noqa: F811
    with running_fleet(tmp_path, redis_server, HOSTS, JOB) as f:
        f.backend("alpha").create_pool("tank")
        for host in ("beta", "gamma"):
            f.backend(host).create_pool("bk")
        for host in HOSTS:
            ok(f, "keys", "host", "init", "--host", host)
            f.start_worker(host)
        f.start_coordinator()
        yield f


@pytest.mark.timeout(400)  # ten CLI runs and jobs, three syncs: slow when the machine is busy
def test_group_key_lifecycle(fleet: Fleet) -> None:
    ok(fleet, "keys", "group", "create", "team", "alpha:tank/team", "--member", "beta")
    alpha = fleet.backend("alpha")
    got = alpha.get("tank/team", ["encryption", "keyformat", "keylocation", "zfleet:keygroup"])
    assert (got["keyformat"].value, got["keylocation"].value) == ("hex", "prompt")
    assert got["zfleet:keygroup"].value == "team"
    mp = alpha.mountpoint("tank/team")
    assert mp is not None
    Path(mp, "plan.txt").write_bytes(b"team secret v1 " + os.urandom(32).hex().encode())
    sync(fleet)
    assert locked(fleet, "beta", "bk/team") and locked(fleet, "gamma", "bk/team")

    ok(fleet, "keys", "group", "load", "team", "beta:bk/team")
    assert not locked(fleet, "beta", "bk/team")
    assert newest_files(fleet, "beta", "bk/team") == {"plan.txt": Path(mp, "plan.txt").read_bytes()}
    refused = fleet.cli("keys", "group", "load", "team", "gamma:bk/team")
    assert refused.returncode == 2 and "not a member" in refused.stderr
    assert locked(fleet, "gamma", "bk/team")

    # gamma joins, then leaves: the others get a new key, the keeper's dataset changes to it
    ok(fleet, "keys", "group", "add-host", "team", "gamma")
    v1 = group_key(fleet, "gamma", 1)
    assert v1 == group_key(fleet, "beta", 1)
    ok(fleet, "keys", "group", "load", "team", "gamma:bk/team")
    assert not locked(fleet, "gamma", "bk/team")
    ok(fleet, "keys", "group", "remove-host", "team", "gamma")
    show = ok(fleet, "keys", "group", "show", "team")
    assert isinstance(show, list) and show[0]["version"] == 2 and show[0]["members"] == [
        "alpha", "beta"]  # fmt: skip
    assert fleet.client().hget("zfleet:keygroup:team", "sealed:1:gamma") is None
    v2 = group_key(fleet, "beta", 2)
    assert v2 != v1
    Path(mp, "plan.txt").write_bytes(b"team secret v2 " + os.urandom(32).hex().encode())
    sync(fleet)
    unload(fleet, "beta", "bk/team")
    ok(fleet, "keys", "group", "load", "team", "beta:bk/team")  # v2 opens the replica now
    assert newest_files(fleet, "beta", "bk/team") == {"plan.txt": Path(mp, "plan.txt").read_bytes()}
    unload(fleet, "gamma", "bk/team")
    # gamma still holds the replica (a sync target), but the new wrapped key came with the send
    with pytest.raises(InvalidOperation, match="Incorrect key"):
        fleet.backend("gamma").load_key("bk/team", key=v1)

    # the keys never appear in clear: not in Redis, not in any log
    dump = everything_in_redis(fleet)
    logs = b"".join(p.read_bytes() for p in (fleet.root / "logs").glob("*.log"))
    for key in (v1, v2):
        for form in (key, bytes.fromhex(key.decode())):
            assert form not in dump
            assert form not in logs
