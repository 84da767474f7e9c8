"""The demo's object store: back the source up into it through the data plane, restore from it.

A stopgap while sync jobs cannot target a store yet (workers/steps.py refuses ``store:`` targets):
the demo pushes each dataset's snapshots itself, one stream per snapshot (full for a dataset's
first snapshot, from the origin for a clone, incremental after that), with the data plane's
``push_transfer`` into a :class:`workers.cloud.ingest.StoreSink`, exactly the path a worker takes.
Restoring replays the store's chain for a snapshot into ``zfs receive`` on another host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import StoreError
from workers.cloud import manifest as mf
from workers.cloud.ingest import StoreSink, StreamRef
from workers.cloud.repo import Repository, Secret
from workers.cloud.restore import restore_chain, restore_stream
from workers.cloud.targets import open_target
from workers.dataplane import Outcome, StoreTarget, push_transfer
from workers.zfs.base import ObjType, ReceiveSpec, SendSpec, ZfsBackend, ZfsObject


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
    target = open_target(str(path))
    secret = Secret(passphrase=passphrase)
    if target.head("config") is None:
        return Repository.init(target, secret)
    return Repository.open(target, secret)


def _order(objects: Sequence[ZfsObject]) -> list[ZfsObject]:
    """Datasets with origins before their clones, parents before children."""
    datasets = sorted((o for o in objects if o.type is ObjType.FILESYSTEM), key=lambda o: o.name)
    done: list[ZfsObject] = []
    names: set[str] = set()
    while datasets:
        for d in list(datasets):
            origin = d.origin.split("@", 1)[0] if d.origin else None
            if origin is None or origin in names or origin not in {x.name for x in datasets}:
                done.append(d)
                names.add(d.name)
                datasets.remove(d)
    return done


def plan_uploads(objects: Sequence[ZfsObject], stored: set[int]) -> list[SendSpec]:
    """The sends that bring the store up to date: per dataset, each snapshot it lacks."""
    guids = {o.name: o.guid for o in objects}
    specs = []
    for ds in _order(objects):
        snaps = sorted((o for o in objects if o.type is ObjType.SNAPSHOT and o.dataset == ds.name),
                       key=lambda o: o.createtxg)  # fmt: skip
        previous = ds.origin if ds.origin and guids.get(ds.origin) in stored else None
        for s in snaps:
            if s.guid not in stored:
                specs.append(SendSpec(snapshot=s.name, from_snap=previous))
                stored.add(s.guid)
            previous = s.name
    return specs


def upload(
    backend: ZfsBackend,
    root: str,
    repo: Repository,
    *,
    host: str,
    progress: Callable[[str], None] = lambda _m: None,
) -> StoreStats:
    """Store every snapshot under ``root`` that the store lacks; a StoreError if one fails."""
    manifests, broken = mf.load_all(repo.target, repo.crypto)
    if broken:
        raise StoreError(f"the store has unreadable manifests: {', '.join(sorted(broken))}")
    stats = StoreStats()
    refs: list[StreamRef] = []

    def open_sink(spec: SendSpec) -> StoreSink:
        sink = StoreSink(repo, host=host)
        finish = sink.finish

        def finish_and_count() -> StreamRef:
            ref = finish()
            refs.append(ref)
            return ref

        sink.finish = finish_and_count  # type: ignore[method-assign]
        return sink

    specs = plan_uploads(backend.list(root), {m.toguid for m in manifests})
    for spec in specs:
        progress(f"store <- {spec.snapshot}")
        report = push_transfer(backend, spec, [StoreTarget("bucket", open_sink)])
        t = report.targets[0]
        if t.outcome is not Outcome.OK:
            raise StoreError(f"storing {spec.snapshot} failed: {t.error_type}: {t.error}")
    for ref in refs:
        stats.streams += 1
        stats.stream_bytes += ref.size
        stats.new_bytes += ref.new_bytes
    return stats


def restore(repo: Repository, snapshot: str, backend: ZfsBackend, target: str) -> str:
    """Receive ``snapshot``'s chain from the store into ``target``; the restored snapshot name."""
    chain = restore_chain(repo, snapshot)
    for m in chain:
        sink = backend.receive(ReceiveSpec(target=target))
        try:
            for chunk in restore_stream(repo, m):
                sink.write(chunk)
        except BaseException:
            sink.abort()
            raise
        sink.finish()
    return f"{target}@{snapshot.split('@', 1)[1]}"
