"""The demo's object store: open it, measure what the sync jobs stored, restore from it.

The sync job writes into the store itself (a ``store:`` target fans the same send out to the
store's record-aware sink). Here the demo reads the store as an operator would: which streams
arrived, what they cost in pack bytes, and a restore of a snapshot's chain into ``zfs receive``
on another host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol.errors import StoreError
from workers.cloud import manifest as mf
from workers.cloud.blobstore import open_blob_store
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_chain, restore_stream
from workers.zfs.base import ReceiveSpec, ZfsBackend


@dataclass
class StoreStats:
    """What uploads cost: stream bytes offered, pack bytes actually written."""

    streams: int = 0
    stream_bytes: int = 0
    new_bytes: int = 0

    @property
    def saved(self) -> float:
        """The share of stream bytes the store did not have to write (dedup and compression)."""
        return 1.0 - self.new_bytes / self.stream_bytes if self.stream_bytes else 0.0


def open_repo(path: Path, passphrase: str) -> Repository:
    """The repository at ``path``, created on first use."""
    target = open_blob_store(str(path))
    secret = RepoKey(passphrase=passphrase)
    if target.head("config") is None:
        return Repository.init(target, secret)
    return Repository.open(target, secret)


def pack_bytes(repo: Repository) -> int:
    """Bytes of every pack object in the store (what deduplicated, compressed data costs)."""
    return sum(info.size for info in repo.target.list("data/"))


def stored_streams(repo: Repository) -> dict[str, int]:
    """Every stored stream's manifest id and its stream size in bytes."""
    manifests, broken = mf.load_all(repo.target, repo.crypto)
    if broken:
        raise StoreError(f"the store has unreadable manifests: {', '.join(sorted(broken))}")
    return {m.id: m.size for m in manifests}


def stats_since(repo: Repository, streams: dict[str, int], packs: int) -> StoreStats:
    """What the store gained since ``streams`` and ``packs`` were read."""
    now = stored_streams(repo)
    new = {k: v for k, v in now.items() if k not in streams}
    return StoreStats(streams=len(new), stream_bytes=sum(new.values()),
                      new_bytes=pack_bytes(repo) - packs)  # fmt: skip


def restore(repo: Repository, snapshot: str, backend: ZfsBackend, target: str) -> str:
    """Receive ``snapshot``'s chain from the store into ``target``; the restored snapshot name."""
    chain = restore_chain(repo, snapshot)
    for m in chain:
        sink = backend.receive(ReceiveSpec(target=target))
        try:
            for chunk in restore_stream(repo, m):
                sink.write(bytes(chunk))
        except BaseException:
            sink.abort()
            raise
        sink.finish()
    return f"{target}@{snapshot.split('@', 1)[1]}"
