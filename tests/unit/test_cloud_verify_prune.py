"""verify names the snapshots a damaged pack hurts; prune never deletes what uploads need."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from protocol.errors import StoreConflict, StoreUnavailable
from tests.conftest import ZFS_STREAMS
from workers.cloud import manifest as mf
from workers.cloud.blobstore import LocalBlobStore
from workers.cloud.ingest import StreamIngest, StreamRef
from workers.cloud.leases import take_prune_lock
from workers.cloud.packs import pack_key
from workers.cloud.prune import prune
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_chain, restore_stream
from workers.cloud.verify import verify


def make_repo(root: Path, pack_size: int = 64 * 1024) -> Repository:
    return Repository.init(
        LocalBlobStore(root), RepoKey(passphrase="pw"), pack_size=pack_size, scrypt_n=2**10
    )


def put(repo: Repository, name: str) -> StreamRef:
    sink = StreamIngest(repo)
    sink.write((ZFS_STREAMS / f"{name}.zstream").read_bytes())
    return sink.finish()


def packs_of(repo: Repository, snapshot: str) -> tuple[str, ...]:
    found, _ = mf.load_all(repo.target, repo.crypto)
    return next(m for m in found if m.snapshot == snapshot).packs


def test_verify_reports_corrupt_and_missing_packs_with_affected_snapshots(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    put(repo, "full-s1")
    put(repo, "incr-s1-s2")
    assert verify(repo).ok
    only_s2 = sorted(set(packs_of(repo, "fx/base@s2")) - set(packs_of(repo, "fx/base@s1")))
    shared_or_s1 = sorted(packs_of(repo, "fx/base@s1"))
    corrupt, missing = only_s2[0], shared_or_s1[0]
    path = tmp_path / pack_key(corrupt)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    (tmp_path / pack_key(missing)).unlink()

    report = verify(repo)
    assert not report.ok
    assert report.missing == (missing,)
    assert list(report.corrupt) == [corrupt]
    assert report.affected[corrupt] == ("fx/base@s2",)
    assert "fx/base@s1" in report.affected[missing]
    assert set(report.damaged_snapshots()) == {"fx/base@s1", "fx/base@s2"}


def test_cli_verify_exits_3_and_names_the_snapshot(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    put(repo, "zvol-v1")
    pack = packs_of(repo, "fx/vol@v1")[0]
    (tmp_path / pack_key(pack)).unlink()
    env = {"ZFLEET_PASSPHRASE": "pw"}
    r = CliRunner().invoke(cli, ["cloud", "--repo", str(tmp_path), "verify", "--json"], env=env)
    assert r.exit_code == 3, r.output
    out = json.loads(r.output)
    assert out["missing"] == [pack] and out["affected"][pack] == ["fx/vol@v1"]


def test_prune_keeps_chain_bases_and_deletes_only_unreferenced_packs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    put(repo, "zvol-v1")  # another dataset: untouched by base's retention
    put(repo, "full-s1")
    put(repo, "incr-s1-s2")
    put(repo, "full-s1-compressed")  # a newer full of base with other (compressed) blocks
    r = prune(repo, keep_last=1, grace=0)
    # keep-last 1 on fx/base keeps only the compressed full; s1 and s2 are forgotten.
    assert sorted(r.forgotten) == ["fx/base@s1", "fx/base@s2"]
    assert r.packs_deleted > 0
    assert verify(repo).ok
    for snap, name in (("fx/vol@v1", "zvol-v1"), ("fx/base@s1", "full-s1-compressed")):
        (m,) = restore_chain(repo, snap)
        assert b"".join(restore_stream(repo, m)) == (ZFS_STREAMS / f"{name}.zstream").read_bytes()


def test_prune_keeps_what_an_incremental_needs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    put(repo, "full-s1")
    put(repo, "incr-s1-s2")
    r = prune(repo, keep_last=1, grace=0)
    assert r.forgotten == () and r.packs_deleted == 0
    chain = restore_chain(repo, "fx/base@s2")
    assert [m.snapshot for m in chain] == ["fx/base@s1", "fx/base@s2"]


def test_prune_never_deletes_a_pack_an_upload_in_progress_refers_to(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, pack_size=4096)
    put(repo, "full-s1")
    put(repo, "full-s1-compressed")
    data = (ZFS_STREAMS / "incr-s1-s2.zstream").read_bytes()
    sink = StreamIngest(Repository.open(LocalBlobStore(tmp_path), RepoKey(passphrase="pw")))
    sink.write(data[:-312])  # all but END: dedups against s1, and new packs are uploaded
    (lease,) = repo.target.list("leases/")
    leased = set(json.loads(repo.target.get(lease.key))["packs"])
    assert leased
    deadline = time.monotonic() + 10  # packs upload on the sink's threads: let them land
    while not all((tmp_path / pack_key(p)).exists() for p in leased):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = prune(repo, keep_last=1, grace=0)  # s1 is forgotten: its packs are now unreferenced
    assert r.forgotten == ("fx/base@s1",)
    assert r.packs_protected_by_leases == len(leased)
    for pack in leased:
        assert (tmp_path / pack_key(pack)).exists()
    sink.write(data[-312:])
    sink.finish()
    # The incremental's base manifest is gone, but every byte it was stored with survived.
    assert verify(repo).ok


def test_expired_leases_and_grace(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    sink = StreamIngest(repo, lease_ttl=0.0)  # a crashed upload: its lease has expired
    sink.write((ZFS_STREAMS / "zvol-v1.zstream").read_bytes()[:200_000])
    sink._drain()  # its packs reached the store, then the process "died"
    orphans = list(repo.target.list("data/"))
    assert orphans
    assert prune(repo, keep_last=1).packs_deleted == 0  # within the grace period: kept
    assert prune(repo, keep_last=1, grace=0).packs_deleted == len(orphans)
    sink.abort()


def test_prune_lock_makes_uploads_wait_and_prunes_exclusive(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    take_prune_lock(repo.target)
    with pytest.raises(StoreUnavailable, match="prune is running"):
        StreamIngest(repo)
    assert list(repo.target.list("leases/")) == []  # the refused upload left no lease
    with pytest.raises(StoreConflict, match="another prune"):
        prune(repo, keep_last=1)


def test_cli_put_ls_restore_prune(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"ZFLEET_PASSPHRASE": "pw"}
    repo = str(tmp_path / "r")
    base = ["cloud", "--repo", repo]
    assert runner.invoke(cli, [*base, "init", "--pack-size-mib", "1"], env=env).exit_code == 0
    for name in ("full-s1", "incr-s1-s2"):
        r = runner.invoke(cli, [*base, "put", str(ZFS_STREAMS / f"{name}.zstream")], env=env)
        assert r.exit_code == 0, r.output
    r = runner.invoke(cli, [*base, "ls", "--json"], env=env)
    streams = json.loads(r.output)["streams"]
    assert [(s["snapshot"], s["kind"]) for s in streams] == [
        ("fx/base@s1", "full"),
        ("fx/base@s2", "incremental"),
    ]
    out = tmp_path / "out"
    r = runner.invoke(cli, [*base, "restore", "fx/base@s2", "--out-dir", str(out)], env=env)
    assert r.exit_code == 0, r.output
    files = sorted(out.iterdir())
    assert [f.read_bytes() for f in files] == [
        (ZFS_STREAMS / f"{n}.zstream").read_bytes() for n in ("full-s1", "incr-s1-s2")
    ]
    r = runner.invoke(cli, [*base, "restore", "fx/base@s2"], env=env)
    assert r.exit_code == 1 and "use --out-dir" in r.output
    r = runner.invoke(cli, [*base, "prune", "--keep-last", "1", "--grace", "0"], env=env)
    assert r.exit_code == 0 and "forgot 0 streams" in r.output
    r = runner.invoke(cli, [*base, "ls"], env={"ZFLEET_PASSPHRASE": "wrong"})
    assert r.exit_code == 1 and "wrong passphrase" in r.output
    assert os.listdir(tmp_path / "r" / "leases") == []


def test_an_upload_that_outlived_its_lease_fails_instead_of_committing_lost_packs(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path)
    put(repo, "full-s1")
    put(repo, "full-s1-compressed")
    data = (ZFS_STREAMS / "incr-s1-s2.zstream").read_bytes()
    stalled = StreamIngest(
        Repository.open(LocalBlobStore(tmp_path), RepoKey(passphrase="pw")), lease_ttl=0
    )
    stalled.write(data[:-312])  # deduplicates against s1's packs, then the sender stalls
    assert prune(repo, keep_last=1, grace=0).packs_deleted > 0  # s1's packs go: no live lease
    stalled.write(data[-312:])
    with pytest.raises(StoreUnavailable, match="outlived its lease"):
        stalled.finish()
    assert [m.snapshot for m in mf.load_all(repo.target, repo.crypto)[0]] == ["fx/base@s1"]
