"""An aborted upload keeps what it stored: the retry of the stream sends only the rest.

The sender was cut, or the store went away for a while: ``StreamIngest.abort`` indexes the packs
whose upload had completed, so the next upload of the same stream deduplicates against them.
Nothing is visible until a manifest commits; prune removes the kept packs once the grace period
is over if no stream ever came to refer to them, and every other stream still restores.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ZFS_STREAMS
from workers.cloud import manifest as mf
from workers.cloud.blobstore import LocalBlobStore
from workers.cloud.ingest import StreamIngest
from workers.cloud.prune import prune
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_chain, restore_stream
from workers.cloud.verify import verify

PACK = 64 * 1024
FULL = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
OTHER = (ZFS_STREAMS / "zvol-v1.zstream").read_bytes()


def make_repo(root: Path) -> Repository:
    return Repository.init(LocalBlobStore(root), RepoKey(passphrase="correct horse"),
                           pack_size=PACK, scrypt_n=2**10)  # fmt: skip


def reopen(root: Path) -> Repository:
    return Repository.open(LocalBlobStore(root), RepoKey(passphrase="correct horse"))


def pack_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "data").rglob("*") if p.is_file())


def cut_upload(repo: Repository, data: bytes, at: int) -> None:
    sink = StreamIngest(repo, max_inflight=0)  # packs uploaded as they fill, in order
    for i in range(0, at, 40_000):
        sink.write(data[i : min(i + 40_000, at)])
    sink.abort()


def test_the_retry_of_an_aborted_upload_sends_only_the_rest(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    sink = StreamIngest(make_repo(clean))
    sink.write(FULL)
    clean_ref = sink.finish()

    root = tmp_path / "repo"
    cut_upload(make_repo(root), FULL, len(FULL) * 2 // 3)
    assert mf.load_all(reopen(root).target, reopen(root).crypto) == ([], {})  # nothing visible
    kept = pack_bytes(root)
    assert kept > pack_bytes(clean) // 3  # much of what came before the cut is stored, kept

    retry = StreamIngest(reopen(root))  # another process: the index comes from the store
    retry.write(FULL)
    ref = retry.finish()
    # the retry uploaded only what was not kept (give or take the pack open at the cut)
    assert ref.new_bytes <= clean_ref.new_bytes - kept + PACK
    assert ref.new_bytes < clean_ref.new_bytes * 0.6
    assert pack_bytes(root) <= pack_bytes(clean) + PACK  # no more stored than one pack beyond
    repo = reopen(root)
    (m,) = restore_chain(repo, "fx/base@s1")
    assert b"".join(restore_stream(repo, m)) == FULL
    assert verify(repo).ok


def test_kept_packs_nothing_refers_to_are_pruned_after_the_grace(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    repo = make_repo(root)
    sink = StreamIngest(repo)
    sink.write(OTHER)
    sink.finish()
    before = pack_bytes(root)
    cut_upload(repo, FULL, len(FULL) // 2)  # never retried
    assert pack_bytes(root) > before
    assert prune(reopen(root), keep_last=1, grace=3600).packs_deleted == 0  # young: kept
    report = prune(reopen(root), keep_last=1, grace=0)
    assert report.packs_deleted > 0 and pack_bytes(root) == before
    repo = reopen(root)
    assert verify(repo).ok
    (m,) = restore_chain(repo, "fx/vol@v1")
    assert b"".join(restore_stream(repo, m)) == OTHER
    # and an upload of the pruned stream now stores it whole again, restorable
    again = StreamIngest(repo)
    again.write(FULL)
    again.finish()
    (m,) = restore_chain(reopen(root), "fx/base@s1")
    assert b"".join(restore_stream(reopen(root), m)) == FULL


def test_an_upload_that_outlived_its_lease_indexes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_repo(root)
    stalled = StreamIngest(reopen(root), lease_ttl=0, max_inflight=0)  # its lease is gone at once
    stalled.write(FULL[: len(FULL) // 2])
    assert pack_bytes(root) > 0
    stalled.abort()  # a prune may have run meanwhile: its packs must not become dedup targets
    assert reopen(root).index.packs() == set()
    assert list(reopen(root).target.list("index/")) == []
