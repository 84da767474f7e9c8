"""Encryption at rest: the key never lies in clear in the bucket, and tampering is caught."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from protocol.errors import ConfigError, StoreCorrupt
from tests.conftest import ZFS_STREAMS
from workers.cloud import manifest as mf
from workers.cloud.blobstore import LocalBlobStore
from workers.cloud.crypto import Crypto, MasterKey, unwrap, wrap_with_passphrase
from workers.cloud.ingest import StreamIngest
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_stream


def stored_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def upload(repo: Repository, name: str) -> None:
    sink = StreamIngest(repo)
    sink.write((ZFS_STREAMS / name).read_bytes())
    sink.finish()


def test_master_key_and_plaintext_never_reach_the_bucket(tmp_path: Path) -> None:
    repo = Repository.init(
        LocalBlobStore(tmp_path), RepoKey(passphrase="pw"), pack_size=1 << 20, scrypt_n=2**10
    )
    upload(repo, "full-s1.zstream")
    everything = stored_bytes(tmp_path)
    (slot,) = (tmp_path / "keys").iterdir()
    master = unwrap(slot.read_bytes(), passphrase="pw")
    for secret in (master.secret, master.id_key, master.enc_key):
        assert secret not in everything
        assert secret.hex().encode() not in everything
    # No 64-byte run of the stream (file data, headers, dataset name) is readable in the bucket.
    data = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
    assert b"fx/base@s1" not in everything
    samples = [data[i : i + 64] for i in range(312, len(data) - 64, 4099)]
    assert not any(s in everything for s in samples if len(set(s)) > 4)


def test_master_key_bytes_are_not_in_the_key_slot() -> None:
    key = MasterKey.generate()
    slot = wrap_with_passphrase(key, "pw", n=2**10)
    assert key.secret not in slot
    assert key.secret.hex().encode() not in slot
    assert unwrap(slot, passphrase="pw").secret == key.secret
    with pytest.raises(ConfigError, match="wrong passphrase"):
        unwrap(slot, passphrase="nope")
    with pytest.raises(ConfigError, match="needs a passphrase"):
        unwrap(slot, keyfile=os.urandom(32))
    with pytest.raises(StoreCorrupt):
        unwrap(b"{not json")


def test_key_file_unlocks_and_a_wrong_one_does_not(tmp_path: Path) -> None:
    keyfile = os.urandom(64)
    Repository.init(LocalBlobStore(tmp_path), RepoKey(keyfile=keyfile), pack_size=1 << 20)
    Repository.open(LocalBlobStore(tmp_path), RepoKey(keyfile=keyfile))
    with pytest.raises(ConfigError, match="wrong passphrase or key file"):
        Repository.open(LocalBlobStore(tmp_path), RepoKey(keyfile=os.urandom(64)))
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Repository.init(LocalBlobStore(tmp_path / "b"), RepoKey(keyfile=b"short"))


def test_content_ids_depend_on_the_repository_key() -> None:
    a, b = Crypto(MasterKey.generate()), Crypto(MasterKey.generate())
    block = b"same block" * 100
    assert a.content_id(block) != b.content_id(block)
    assert a.content_id(block) != hashlib.blake2b(block, digest_size=32).digest()


def test_sealed_objects_are_bound_to_their_role() -> None:
    c = Crypto(MasterKey.generate())
    sealed = c.seal(b"payload", b"role A")
    assert c.open(sealed, b"role A", "x") == b"payload"
    with pytest.raises(StoreCorrupt, match="authentication"):
        c.open(sealed, b"role B", "x")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(StoreCorrupt):
        c.open(flipped, b"role A", "x")


def test_tampered_pack_makes_restore_fail_not_return_wrong_bytes(tmp_path: Path) -> None:
    repo = Repository.init(
        LocalBlobStore(tmp_path), RepoKey(passphrase="pw"), pack_size=1 << 20, scrypt_n=2**10
    )
    upload(repo, "incr-s1-s2.zstream")
    pack = next((tmp_path / "data").rglob("*"))
    while pack.is_dir():
        pack = next(pack.iterdir())
    raw = bytearray(pack.read_bytes())
    raw[100] ^= 0xFF
    pack.write_bytes(bytes(raw))
    (m,), _ = mf.load_all(repo.target, repo.crypto)
    with pytest.raises(StoreCorrupt):
        b"".join(restore_stream(repo, m))
