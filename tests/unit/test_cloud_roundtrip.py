"""The object store keeps real OpenZFS streams record-aware and gives them back byte for byte."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import StoreError, StreamChecksumError, StreamFormatError, StreamTruncated
from tests.conftest import ZFS_STREAMS
from workers.cloud import manifest as mf
from workers.cloud import restore as restore_module
from workers.cloud.blobstore import LocalBlobStore
from workers.cloud.ingest import StreamIngest, StreamRef
from workers.cloud.records import Framer
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_chain, restore_stream

STREAMS = sorted(ZFS_STREAMS.glob("*.zstream"))
EMBED_STREAM = (ZFS_STREAMS / "full-s1-largeblock-embed.zstream").read_bytes()


def make_repo(root: Path, pack_size: int = 256 * 1024) -> Repository:
    return Repository.init(
        LocalBlobStore(root), RepoKey(passphrase="correct horse"), pack_size=pack_size,
        scrypt_n=2**10,
    )


def put(repo: Repository, data: bytes, step: int = 65_537) -> StreamRef:
    sink = StreamIngest(repo)
    for i in range(0, len(data), step):
        sink.write(data[i : i + step])
    return sink.finish()


def manifest(repo: Repository, ref: StreamRef) -> mf.Manifest:
    found, _ = mf.load_all(repo.target, repo.crypto)
    return next(m for m in found if m.id == ref.manifest)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_every_fixture_stream_restores_byte_for_byte(tmp_path: Path, path: Path) -> None:
    data = path.read_bytes()
    repo = make_repo(tmp_path)
    ref = put(repo, data)
    # A fresh process (new Repository, index read from the store) restores it.
    reopened = Repository.open(LocalBlobStore(tmp_path), RepoKey(passphrase="correct horse"))
    restored = b"".join(restore_stream(reopened, manifest(reopened, ref)))
    assert sha(restored) == sha(data)
    assert ref.size == len(data)


def test_all_fixtures_in_one_repository_restore_and_deduplicate(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    refs = {p.stem: put(repo, p.read_bytes()) for p in STREAMS}
    for p in STREAMS:
        restored = b"".join(restore_stream(repo, manifest(repo, refs[p.stem])))
        assert sha(restored) == sha(p.read_bytes()), p.stem
    total = sum(p.stat().st_size for p in STREAMS)
    stored = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    # -R, -p, resumed and plain full sends of the same snapshot share their blocks.
    assert stored < total * 0.4


def test_split_points_do_not_matter(tmp_path: Path) -> None:
    data = (ZFS_STREAMS / "clone-app-from-base-s2.zstream").read_bytes()
    repo = make_repo(tmp_path)
    for step in (1, 311, 313, 4096):
        ref = put(repo, data, step)
        assert sha(b"".join(restore_stream(repo, manifest(repo, ref)))) == sha(data)


def test_second_upload_of_same_snapshot_stores_almost_nothing(tmp_path: Path) -> None:
    data = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
    repo = make_repo(tmp_path)
    first = put(repo, data)
    second = put(repo, data)
    assert first.new_bytes > 100_000
    # Only the manifest segment (headers) is new; every payload is deduplicated.
    assert second.new_bytes < first.new_bytes / 20


def test_chain_of_incrementals_and_clone_restores_full_first(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    for name in ("full-s1", "incr-s1-s2", "clone-app-from-base-s2"):
        put(repo, (ZFS_STREAMS / f"{name}.zstream").read_bytes())
    chain = restore_chain(repo, "fx/app@a1")
    assert [m.snapshot for m in chain] == ["fx/base@s1", "fx/base@s2", "fx/app@a1"]
    restored = [b"".join(restore_stream(repo, m)) for m in chain]
    originals = [
        (ZFS_STREAMS / f"{n}.zstream").read_bytes()
        for n in ("full-s1", "incr-s1-s2", "clone-app-from-base-s2")
    ]
    assert [sha(r) for r in restored] == [sha(o) for o in originals]


def test_chain_with_missing_base_is_a_clear_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    put(repo, (ZFS_STREAMS / "incr-s1-s2.zstream").read_bytes())
    with pytest.raises(StoreError, match="chain to fx/base@s2 is broken"):
        restore_chain(repo, "fx/base@s2")
    with pytest.raises(StoreError, match="no stream"):
        restore_chain(repo, "fx/base@nope")


def test_truncated_stream_is_refused_and_leaves_nothing_visible(tmp_path: Path) -> None:
    data = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
    repo = make_repo(tmp_path)
    sink = StreamIngest(repo)
    sink.write(data[:150_000])
    with pytest.raises(StreamTruncated):
        sink.finish()
    assert mf.load_all(repo.target, repo.crypto) == ([], {})
    assert list(repo.target.list("leases/")) == []


def test_stream_cut_at_a_record_boundary_is_refused(tmp_path: Path) -> None:
    data = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
    repo = make_repo(tmp_path)
    sink = StreamIngest(repo)
    sink.write(data[: len(data) - 312])  # everything but the END record
    with pytest.raises(StreamTruncated, match="without an END"):
        sink.finish()


def test_garbage_is_a_format_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    sink = StreamIngest(repo)
    with pytest.raises(StreamFormatError):
        sink.write(b"\x00" * 312)  # a BEGIN without the ZFS magic
    sink.abort()
    sink = StreamIngest(repo)
    with pytest.raises(StreamFormatError, match="does not start with BEGIN"):
        sink.write(b"\x03" + b"\x00" * 400)
    sink.abort()
    assert list(repo.target.list("manifests/")) == []


def test_a_damaged_stream_is_refused_at_ingest(tmp_path: Path) -> None:
    data = bytearray((ZFS_STREAMS / "incr-s1-s2.zstream").read_bytes())
    data[50_000] ^= 0x01  # one bit of file data flipped in transit
    repo = make_repo(tmp_path)
    sink = StreamIngest(repo)
    with pytest.raises(StreamChecksumError, match="checksum"):
        sink.write(bytes(data))
        sink.finish()
    sink.abort()
    assert list(repo.target.list("manifests/")) == []


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=577_560), max_size=40))
def test_framer_yields_the_same_records_however_the_bytes_arrive(cuts: list[int]) -> None:
    data = EMBED_STREAM
    whole = [rec for _kind, rec in Framer().feed(data)]
    framer = Framer()
    pieces: list[bytes] = []
    bounds = [0, *sorted(cuts), len(data)]
    for lo, hi in itertools.pairwise(bounds):
        pieces += [rec for _kind, rec in framer.feed(data[lo:hi])]
    framer.close()
    assert pieces == whole
    assert b"".join(whole) == data


def test_stream_spread_over_many_earlier_uploads_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny packs and a one-group cache: one restore batch needs many groups from many packs.
    monkeypatch.setattr(restore_module, "CACHED_GROUPS", 1)
    repo = make_repo(tmp_path, pack_size=4096)
    for name in ("full-s1", "incr-s1-s2", "incr-I-s1-s3"):
        put(repo, (ZFS_STREAMS / f"{name}.zstream").read_bytes())
    data = (ZFS_STREAMS / "replicate-R-base-s3.zstream").read_bytes()
    ref = put(repo, data)
    m = manifest(repo, ref)
    assert len(m.packs) > 10
    assert ref.new_bytes < len(data) / 10  # s1, s2 and s3's blocks were all stored already
    assert sha(b"".join(restore_stream(repo, m))) == sha(data)
