"""Verify: read back every pack the manifests refer to, and say which snapshots a bad one hurts.

Each referenced pack is read whole: its name must match its bytes, its header must authenticate,
every compression group must decrypt and decompress, and every blob must hash to its id.
Manifests that cannot be read are reported too. Nothing is modified.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import structlog

from protocol.errors import StoreError
from workers.cloud import manifest as mf
from workers.cloud.packs import (
    blob_from_group,
    open_group,
    pack_id_of,
    pack_key,
    read_pack_header,
)
from workers.cloud.repo import Repository

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class VerifyReport:
    """What verify found. ``affected`` maps a bad pack to the snapshots that need it."""

    manifests: int
    packs_checked: int
    bytes_read: int
    missing: tuple[str, ...] = ()
    corrupt: dict[str, str] = field(default_factory=dict)  # pack -> reason
    broken_manifests: dict[str, str] = field(default_factory=dict)  # manifest id -> reason
    broken_index: dict[str, str] = field(default_factory=dict)  # index segment -> reason
    affected: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.broken_manifests or self.broken_index)

    def damaged_snapshots(self) -> tuple[str, ...]:
        """Every snapshot that cannot be restored as stored."""
        return tuple(sorted({s for snaps in self.affected.values() for s in snaps}))


def verify(repo: Repository, *, read_data: bool = True) -> VerifyReport:
    """Check every referenced pack (``read_data=False`` only checks that they exist)."""
    manifests, broken = mf.load_all(repo.target, repo.crypto)
    users: dict[str, set[str]] = defaultdict(set)
    for m in manifests:
        for p in m.packs:
            users[p].add(m.snapshot)
    present = {pack_id_of(i.key) for i in repo.target.list("data/")}
    missing = sorted(p for p in users if p not in present)
    corrupt: dict[str, str] = {}
    checked = 0
    read = 0
    if read_data:
        for pack in sorted(users):
            if pack in missing:
                continue
            try:
                data = repo.target.get(pack_key(pack))
                read += len(data)
                groups: dict[int, bytes] = {}
                where = f"pack {pack[:16]}"
                for e in read_pack_header(repo.crypto, pack, data):
                    if e.offset not in groups:
                        sealed = data[e.offset : e.offset + e.length]
                        groups = {e.offset: open_group(repo.crypto, e, sealed, where)}
                    blob_from_group(repo.crypto, e, groups[e.offset], where)
            except StoreError as err:
                corrupt[pack] = str(err)
                log.warning("verify.pack_bad", pack=pack[:16], error=str(err))
            checked += 1
    affected = {p: tuple(sorted(users[p])) for p in [*missing, *corrupt]}
    report = VerifyReport(
        manifests=len(manifests),
        packs_checked=checked,
        bytes_read=read,
        missing=tuple(missing),
        corrupt=corrupt,
        broken_manifests={k: str(v) for k, v in broken.items()},
        broken_index=dict(repo.reload_index().broken),
        affected=affected,
    )
    log.info("verify.done", ok=report.ok, packs=checked, missing=len(missing), corrupt=len(corrupt))
    return report
