"""Re-organise a collection of look-alike images around common bases, on one host.

A :class:`Proposal` (from the similarity analysis, or written by hand) groups images into
clusters, each with a base: an image of the collection (a medoid) or any snapshot. Every member
is rebased onto its cluster's base with ``keep_content``: its files stay byte for byte, and the
blocks it shares with the base are stored once. A base that is a dataset gets a snapshot
(``BASE@zfleet-base-<time>``) to be cloned from; a base that is itself a member of another
cluster is rebased first (bases before their dependents), and a cycle is refused up front.

The proposal's JSON form, which ``zfleet rebase --proposal FILE`` reads::

    {"clusters": [{"base": "tank/img/web", "members": ["tank/img/db", "tank/img/py"]}, ...]}

The report gives the pool's allocated bytes and the collection's ``used`` before and after, so
the saving is measured, not estimated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from protocol.errors import ConfigError, RebaseError, ZfleetError
from workers.zfs.base import ZfsBackend

from .apply import RebaseReport, rebase
from .hooks import Hooks
from .swap import stamp

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Cluster:
    base: str  # a dataset (the medoid) or a snapshot to rebase the members onto
    members: tuple[str, ...]


@dataclass(frozen=True)
class Proposal:
    clusters: tuple[Cluster, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Proposal:
        """Read ``{"clusters": [{"base": ..., "members": [...]}]}``; ConfigError if malformed."""
        raw = data.get("clusters") if isinstance(data, Mapping) else None
        if not isinstance(raw, list):
            raise ConfigError('a rebase proposal needs "clusters": a list of {base, members}')
        clusters = []
        for i, item in enumerate(raw):
            base = item.get("base") if isinstance(item, Mapping) else None
            members = item.get("members") if isinstance(item, Mapping) else None
            if (
                not isinstance(base, str)
                or not isinstance(members, list)
                or not all(isinstance(m, str) for m in members)
            ):
                raise ConfigError(f'cluster {i}: needs a "base" name and a "members" list')
            clusters.append(Cluster(base, tuple(members)))
        return cls(tuple(clusters))

    @classmethod
    def load(cls, text: str) -> Proposal:
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the proposal is not JSON: {exc}") from exc


@dataclass(frozen=True)
class CollectionReport:
    allocated_before: int  # the pool's allocated bytes
    allocated_after: int
    used_before: int  # sum of `used` over the collection's datasets
    used_after: int
    rebased: tuple[RebaseReport, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)  # member -> why (its dependents too)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def order(proposal: Proposal) -> list[tuple[str, str]]:
    """``(member, base)`` pairs, every base that is a member placed before its dependents."""
    base_of: dict[str, str] = {}
    for cluster in proposal.clusters:
        for member in cluster.members:
            if member in base_of:
                raise ConfigError(f"{member} is a member of two clusters")
            if member == cluster.base.split("@", 1)[0]:
                raise ConfigError(f"{member} is listed as a member of its own cluster")
            base_of[member] = cluster.base
    out: list[tuple[str, str]] = []
    state: dict[str, str] = {}  # visiting | done

    def visit(member: str, path: tuple[str, ...]) -> None:
        if state.get(member) == "done":
            return
        if state.get(member) == "visiting":
            raise ConfigError("the proposal's bases form a cycle: " + " -> ".join((*path, member)))
        state[member] = "visiting"
        base_ds = base_of[member].split("@", 1)[0]
        if base_ds in base_of:
            visit(base_ds, (*path, member))
        state[member] = "done"
        out.append((member, base_of[member]))

    for member in base_of:
        visit(member, ())
    return out


def _allocated(backend: ZfsBackend, pool: str) -> int:
    return next((p.allocated for p in backend.pools() if p.name == pool), 0)


def _used(backend: ZfsBackend, names: set[str]) -> int:
    total = 0
    for name in names:
        if backend.exists(name):
            value = backend.get(name, ["used"]).get("used")
            total += int(value.value) if value is not None else 0
    return total


def rebase_collection(
    backend: ZfsBackend,
    proposal: Proposal,
    *,
    drop_old: bool = False,
    hooks: Hooks | None = None,
    now: Callable[[], float] = time.time,
) -> CollectionReport:
    """Rebase every member onto its cluster's base (keep-content), bases first.

    A member that fails is rolled back (as :func:`rebase` does) and reported; members whose
    base failed are skipped and reported too; the others go on.
    """
    started = time.monotonic()
    pairs = order(proposal)
    if not pairs:
        raise RebaseError("the proposal has no members to rebase")
    datasets = {m for m, _b in pairs} | {b.split("@", 1)[0] for _m, b in pairs}
    pools = {d.split("/", 1)[0] for d in datasets}
    if len(pools) != 1:
        raise RebaseError(f"a collection is rebased within one pool, not {sorted(pools)}")
    pool = pools.pop()
    missing = sorted(d for d in datasets if not backend.exists(d))
    if missing:
        raise RebaseError(f"the proposal names datasets that do not exist: {', '.join(missing)}")
    allocated_before = _allocated(backend, pool)
    used_before = _used(backend, datasets)
    snapshots: dict[str, str] = {}  # base dataset -> the snapshot its members are cloned from
    reports: list[RebaseReport] = []
    failed: dict[str, str] = {}
    for member, base in pairs:
        base_ds = base.split("@", 1)[0]
        if base_ds in failed:
            failed[member] = f"its base {base_ds} was not rebased"
            continue
        try:
            onto = base if "@" in base else snapshots.get(base_ds)
            if onto is None:
                onto = f"{base_ds}@zfleet-base-{stamp(now())}"
                if not backend.exists(onto):
                    backend.snapshot([onto])
                snapshots[base_ds] = onto
            reports.append(
                rebase(
                    backend,
                    member,
                    onto,
                    keep_content=True,
                    drop_old=drop_old,
                    hooks=hooks,
                    now=now,
                )
            )
        except ZfleetError as exc:
            failed[member] = str(exc)
            log.error("rebase.collection.member_failed", member=member, error=str(exc))
    return CollectionReport(
        allocated_before=allocated_before,
        allocated_after=_allocated(backend, pool),
        used_before=used_before,
        used_after=_used(backend, datasets),
        rebased=tuple(reports),
        failed=failed,
        seconds=time.monotonic() - started,
    )
