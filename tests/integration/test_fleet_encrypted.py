"""Encrypted datasets through a real fleet: raw sends, so a replica and the store hold ciphertext.

Real redis-server, two `zfleet worker` processes and a coordinator over simulated pools. alpha has
an encrypted dataset (its own hex key) with a child and a clone; the job replicates it to beta
and to a directory store. beta has no key: its copies must arrive with keystatus unavailable,
and their bytes must not appear anywhere on beta's disk or in the store. The key then opens
beta's copy with alpha's contents (the same guids).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.demo.verify import snapshot_files
from coordinator import engine
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from tests.services.fleet import PASSPHRASE, Fleet, running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.zfs.base import ObjType

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = os.urandom(32).hex().encode()
MARKER = b"ZFLEET-PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
JOB = """
[stores.vault]
kind = "dir"
path = "{path}"

[jobs.sec]
source = "alpha:tank/sec"
targets = ["beta:bk/sec", "store:vault"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""


def files_contain(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            hits.append(path)
    return hits


def sync(fleet: Fleet) -> engine.Job:
    out = fleet.cli("sync", "sec", "--config", str(fleet.config), "--json")
    assert out.returncode == 0, out.stderr
    job = wait_job(JobStore(fleet.client()), json.loads(out.stdout)["id"], timeout=90)
    assert job.status == engine.JOB_SUCCEEDED, f"{job.error}: {engine.counts(job)}\n{fleet.logs()}"
    return job


@pytest.mark.timeout(300)  # three processes and a sync: slow when the machine is busy
def test_encrypted_tree_reaches_peer_and_store_as_ciphertext(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    from workers.cloud import manifest as mf
    from workers.cloud.blobstore import LocalBlobStore
    from workers.cloud.repo import RepoKey, Repository
    from workers.cloud.restore import restore_stream

    vault = tmp_path / "vault"
    vault.mkdir()
    repo = Repository.init(LocalBlobStore(vault), RepoKey(passphrase=PASSPHRASE), scrypt_n=2**10)
    with running_fleet(tmp_path / "fleet", redis_server, ("alpha", "beta"), JOB.format(
            path=vault)) as fleet:  # fmt: skip
        alpha = fleet.backend("alpha")
        alpha.create_pool("tank")
        alpha.create("tank/sec", props={"encryption": "on", "keyformat": "hex"}, key=KEY)
        alpha.create("tank/sec/child")
        for name in ("tank/sec", "tank/sec/child"):
            mp = alpha.mountpoint(name)
            assert mp is not None
            Path(mp, "f").write_bytes(MARKER + os.urandom(64 * 1024) + MARKER)
        alpha.snapshot(["tank/sec@base"])
        alpha.clone("tank/sec@base", "tank/sec/app")
        fleet.backend("beta").create_pool("bk")
        for host in ("alpha", "beta"):
            fleet.start_worker(host)
        fleet.start_coordinator()

        job = sync(fleet)
        transfers = [s for s in job.steps.values() if s.kind == "transfer"]
        assert transfers and all(s.args.send.raw for s in transfers)

        beta = fleet.backend("beta")
        for name in ("bk/sec", "bk/sec/child", "bk/sec/app"):
            got = beta.get(name, ["keystatus", "encryptionroot", "mounted"])
            assert got["keystatus"].value == "unavailable", name
            assert got["mounted"].value == "no", name
        assert beta.get("bk/sec/app", ["origin"])["origin"].value.startswith("bk/sec@")
        assert files_contain(fleet.root / "beta", MARKER) == []
        assert files_contain(vault, MARKER) == []
        # the store's own credentials open its packs, and what they give back is ciphertext
        stored, broken = mf.load_all(repo.target, repo.crypto)
        assert stored and not broken
        for m in stored:
            assert MARKER not in b"".join(restore_stream(repo, m))

        # sent one dataset at a time, each raw replica is an encryption root of its own (as a
        # raw receive without -R makes it), with the same key; the clone shares its origin's
        roots = {n: beta.get(n, ["encryptionroot"])["encryptionroot"].value
                 for n in ("bk/sec", "bk/sec/child", "bk/sec/app")}  # fmt: skip
        assert roots == {"bk/sec": "bk/sec", "bk/sec/child": "bk/sec/child", "bk/sec/app": "bk/sec"}
        beta.load_key("bk/sec", key=KEY)
        beta.load_key("bk/sec/child", key=KEY)
        assert beta.get("bk/sec/app", ["keystatus"])["keystatus"].value == "available"
        for name in ("sec", "sec/child"):
            newest = max(
                (o for o in beta.list(f"bk/{name}", recursive=False, types=(ObjType.SNAPSHOT,))),
                key=lambda o: o.createtxg,
            )
            twin = alpha.list(newest.name.replace("bk/", "tank/", 1))[0]
            assert newest.guid == twin.guid
            source = Path(str(alpha.mountpoint(f"tank/{name}")), "f").read_bytes()
            with snapshot_files(beta, newest.name, "bk/scratch") as mp:
                assert (mp / "f").read_bytes() == source
