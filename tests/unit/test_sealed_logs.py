"""Sealed logs on the simulation: a closed period reads with the archive private key only.

After ``roll`` the writing host has unloaded the period's key and holds no copy of it; the
period replicates raw to another host and into an object store (opened with the store's own
credentials), and both hold ciphertext only. The host's own key pair, the store's passphrase,
a wrong archive key: none opens it. The archive private key does, on the replica.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol.errors import ConfigError, InvalidOperation
from protocol.sealed import KeyPair
from tests.unit.sim_helpers import mnt, new_sim, send_bytes
from workers import sealedlogs
from workers.cloud import manifest as mf
from workers.cloud.blobstore import LocalBlobStore
from workers.cloud.ingest import StreamIngest
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_stream
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

MARKER = b"LOG-LINE-" + os.urandom(12).hex().encode()
ROOT = "tank/logs/app"


def receive(be: SimBackend, data: bytes, target: str) -> None:
    sink = be.receive(ReceiveSpec(target, no_mount=True))
    sink.write(data)
    sink.finish()


def test_closed_period_opens_with_the_archive_key_only(tmp_path: Path) -> None:
    be = new_sim(tmp_path, ["tank", "bk", "restored"])
    archive, host_pair, stranger = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    first = sealedlogs.init(be, ROOT, archive.public, now=1_000_000)
    ds = sealedlogs.period_dataset(ROOT, first)
    (mnt(be, ds) / "app.log").write_bytes(MARKER * 200)
    closed, opened = sealedlogs.roll(be, ROOT, now=1_000_060)
    assert closed == first and opened != first
    assert dict(sealedlogs.periods(be, ROOT)) == {first: "unavailable", opened: "available"}
    # this host cannot read what it wrote: unmounted, and its files are not where they were
    assert be.get(ds, ["mounted"])["mounted"].value == "no"
    assert not (tmp_path / "pools/tank/mnt/logs/app" / f"p-{first}" / "app.log").exists()
    with pytest.raises(InvalidOperation):
        be.load_key(ds)  # no key anywhere on the host (keylocation=prompt, nothing kept)
    (mnt(be, sealedlogs.period_dataset(ROOT, opened)) / "app.log").write_bytes(b"next\n")

    # a replica: the period raw (it is encrypted), the keys dataset as it is (boxes only)
    raw = send_bytes(be, SendSpec(f"{ds}@{CLOSED}", raw=True))
    assert MARKER not in raw
    be.create("bk/logs/app", parents=True)
    receive(be, send_bytes(be, SendSpec(f"{ROOT}/keys@{opened}")), "bk/logs/app/keys")
    receive(be, raw, f"bk/logs/app/p-{first}")
    # the store: its own credentials give back the raw stream, and nothing readable in it
    repo = Repository.init(LocalBlobStore(tmp_path / "vault"), RepoKey(passphrase="store pw"),
                           scrypt_n=2**10)  # fmt: skip
    sink = StreamIngest(repo)
    sink.write(raw)
    sink.finish()
    reopened = Repository.open(LocalBlobStore(tmp_path / "vault"), RepoKey(passphrase="store pw"))
    (stored,), _ = mf.load_all(reopened.target, reopened.crypto)
    restored = b"".join(restore_stream(reopened, stored))
    assert restored == raw and MARKER not in restored
    assert not any(MARKER in p.read_bytes() for p in (tmp_path / "vault").rglob("*") if p.is_file())
    receive(be, restored, "restored/period")
    assert be.get("restored/period", ["keystatus"])["keystatus"].value == "unavailable"

    for wrong in (host_pair, stranger):
        with pytest.raises(ConfigError, match="does not open"):
            sealedlogs.open_period(be, "bk/logs/app", first, wrong)
    assert be.get(f"bk/logs/app/p-{first}", ["keystatus"])["keystatus"].value == "unavailable"
    where = sealedlogs.open_period(be, "bk/logs/app", first, archive)
    assert where is not None and (Path(where) / "app.log").read_bytes() == MARKER * 200


CLOSED = sealedlogs.CLOSED


def test_bad_input_changes_nothing(tmp_path: Path) -> None:
    be = new_sim(tmp_path, ["tank"])
    with pytest.raises(ConfigError, match="32 bytes"):
        sealedlogs.init(be, ROOT, b"short")
    assert not be.exists(ROOT)
    be.create("tank/plain")
    with pytest.raises(ConfigError, match="not a sealed log"):
        sealedlogs.roll(be, "tank/plain")
    sealedlogs.init(be, ROOT, KeyPair.generate().public)
    with pytest.raises(ConfigError, match="exists"):
        sealedlogs.init(be, ROOT, KeyPair.generate().public)
