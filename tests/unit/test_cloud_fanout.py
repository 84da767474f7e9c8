"""One `zfs send` fanned out to a file and to the object store at once: both get the stream."""

from __future__ import annotations

import hashlib
from pathlib import Path

from workers.cloud.blobstore import LocalBlobStore
from workers.cloud.ingest import StreamIngest
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_chain, restore_stream
from workers.dataplane.sender import push_transfer
from workers.dataplane.targets import FileTarget, StoreTarget
from workers.zfs.base import SendSpec
from workers.zfs.sim import SimBackend


def test_send_to_a_file_and_the_store_in_one_pass_then_restore_the_chain(tmp_path: Path) -> None:
    backend = SimBackend(tmp_path / "pools")
    backend.create_pool("tank")
    backend.create("tank/app")
    mnt = Path(backend.mountpoint("tank/app") or "")
    for i in range(40):
        (mnt / f"module{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * 300)
    backend.snapshot(["tank/app@v1"])
    (mnt / "module7.py").write_text("changed\n" * 1000)
    backend.snapshot(["tank/app@v2"])

    repo = Repository.init(
        LocalBlobStore(tmp_path / "repo"), RepoKey(passphrase="pw"), pack_size=1 << 20,
        scrypt_n=2**10,
    )
    store = StoreTarget("bucket", open=lambda spec: StreamIngest(repo, host="alpha"))
    files = []
    for n, spec in enumerate(
        (SendSpec("tank/app@v1"), SendSpec("tank/app@v2", from_snap="tank/app@v1"))
    ):
        witness = tmp_path / f"witness{n}.zstream"
        report = push_transfer(backend, spec, [FileTarget(witness), store])
        assert report.ok, report
        files.append(witness.read_bytes())

    chain = restore_chain(repo, "tank/app@v2")
    assert [m.snapshot for m in chain] == ["tank/app@v1", "tank/app@v2"]
    restored = [b"".join(restore_stream(repo, m)) for m in chain]
    assert [hashlib.sha256(r).digest() for r in restored] == [
        hashlib.sha256(f).digest() for f in files
    ]
