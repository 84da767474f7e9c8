"""Damaged metadata loses no data: a broken manifest or index segment is reported and repaired."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from protocol.errors import StoreCorrupt, StoreError
from tests.conftest import ZFS_STREAMS
from workers.cloud import manifest as mf
from workers.cloud.blobstore import LocalBlobStore
from workers.cloud.ingest import StreamIngest
from workers.cloud.prune import prune
from workers.cloud.repair import rebuild_index
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_chain, restore_stream
from workers.cloud.verify import verify


def repo_with(root: Path, *names: str) -> Repository:
    repo = Repository.init(
        LocalBlobStore(root), RepoKey(passphrase="pw"), pack_size=64 * 1024, scrypt_n=2**10
    )
    for name in names:
        sink = StreamIngest(repo)
        sink.write((ZFS_STREAMS / f"{name}.zstream").read_bytes())
        sink.finish()
    return repo


def reopen(root: Path) -> Repository:
    return Repository.open(LocalBlobStore(root), RepoKey(passphrase="pw"))


def flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def test_damaged_index_segment_is_reported_then_rebuilt_from_packs(tmp_path: Path) -> None:
    repo_with(tmp_path, "full-s1", "zvol-v1")
    segments = sorted((tmp_path / "index").iterdir())
    flip(segments[0])

    repo = reopen(tmp_path)
    report = verify(repo)
    assert not report.ok and list(report.broken_index) == [segments[0].name]
    # Some stream's blobs are no longer indexed: restore says so instead of inventing bytes.
    failures = 0
    for snap in ("fx/base@s1", "fx/vol@v1"):
        (m,) = restore_chain(repo, snap)
        try:
            b"".join(restore_stream(repo, m))
        except StoreCorrupt as e:
            assert "not in the index" in str(e)
            failures += 1
    assert failures == 1

    r = rebuild_index(repo)
    assert r.packs_indexed > 0 and r.segments_removed == 1 and not r.unreadable_packs
    repo = reopen(tmp_path)
    assert verify(repo).ok
    for snap, name in (("fx/base@s1", "full-s1"), ("fx/vol@v1", "zvol-v1")):
        (m,) = restore_chain(repo, snap)
        assert b"".join(restore_stream(repo, m)) == (ZFS_STREAMS / f"{name}.zstream").read_bytes()


def test_uploads_go_on_while_an_index_segment_is_damaged(tmp_path: Path) -> None:
    repo_with(tmp_path, "full-s1")
    flip(next((tmp_path / "index").iterdir()))
    repo = reopen(tmp_path)
    sink = StreamIngest(repo)
    sink.write((ZFS_STREAMS / "incr-s1-s2.zstream").read_bytes())
    sink.finish()
    rebuild_index(repo)
    chain = restore_chain(reopen(tmp_path), "fx/base@s2")
    restored = [b"".join(restore_stream(reopen(tmp_path), m)) for m in chain]
    assert restored == [
        (ZFS_STREAMS / f"{n}.zstream").read_bytes() for n in ("full-s1", "incr-s1-s2")
    ]


def test_damaged_manifest_is_reported_and_blocks_prune(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, "full-s1", "zvol-v1")
    packs_before = sorted(p.name for p in (tmp_path / "data").rglob("*") if p.is_file())
    flip(sorted((tmp_path / "manifests").iterdir())[0])
    found, broken = mf.load_all(repo.target, repo.crypto)
    assert len(found) == 1 and len(broken) == 1
    assert len(verify(repo).broken_manifests) == 1
    with pytest.raises(StoreError, match="unreadable"):
        prune(repo, keep_last=1, grace=0)
    # Nothing was deleted: the damaged manifest's packs may still be needed.
    assert sorted(p.name for p in (tmp_path / "data").rglob("*") if p.is_file()) == packs_before


def test_cli_repair(tmp_path: Path) -> None:
    repo_with(tmp_path, "zvol-v1")
    flip(next((tmp_path / "index").iterdir()))
    env = {"ZFLEET_PASSPHRASE": "pw"}
    runner = CliRunner()
    r = runner.invoke(cli, ["cloud", "--repo", str(tmp_path), "verify"], env=env)
    assert r.exit_code == 3 and "zfleet cloud repair" in r.output
    r = runner.invoke(cli, ["cloud", "--repo", str(tmp_path), "repair"], env=env)
    assert r.exit_code == 0 and "removed 1 damaged segments" in r.output
    r = runner.invoke(cli, ["cloud", "--repo", str(tmp_path), "verify"], env=env)
    assert r.exit_code == 0, r.output
