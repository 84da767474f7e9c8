"""Host-side role changes: make a replica the writable primary, demote or fence an old primary,
and keep an old primary's diverged changes aside before it rejoins as a replica.

Each function runs on one host over the :class:`~workers.zfs.base.ZfsBackend` contract and is
idempotent: it reads the state first and does only the part not yet done, so a step retried after
a crash (or run twice) ends in the same place. Nothing here destroys data: rollbacks only discard
changes made after the newest snapshot on a dataset that is not yet a primary, and diverged
changes on an old primary are moved aside (a snapshot, then a clone that owns the diverged
snapshots), never destroyed.

Why moving aside needs a rename: ``zfs rollback -r`` refuses to go past a snapshot that has
clones, and ``zfs promote`` moves *all* snapshots up to the origin, never only the newer ones. So
the old dataset (with its diverged tail) is renamed aside, a clone of its common snapshot takes
the name back and is promoted: the main line (common snapshot and older, same guids) belongs to
the dataset under the old name again, and the aside dataset is a clone of it holding only the
diverged snapshots. Children move with a rename, so they are moved back under the old name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

from protocol import names as zfsnames
from protocol.errors import DatasetExists, DatasetNotFound, NoCommonSnapshot
from workers.zfs.base import ObjType, PropertyValue, ZfsBackend, ZfsObject

log = structlog.get_logger(__name__)

ROLE_PROP: Final = "zfleet:role"  # "primary" once promoted here, "replica" once demoted
DIVERGED_SNAP: Final = "zfleet-diverged-{tag}"
DIVERGED_ASIDE: Final = "{dataset}.diverged-{tag}"
REPLACED_ASIDE: Final = "{dataset}.replaced-{tag}"
_UNSET: Final = ("", "-", "none")
_STATE_PROPS: Final = (
    "type", "readonly", "canmount", "mounted", "mountpoint", "receive_resume_token", "written",
    ROLE_PROP,
)  # fmt: skip
# Properties a clone cannot take after creation (or that the role change sets itself).
_NOT_COPIED: Final = frozenset({
    "readonly", "canmount", "encryption", "keyformat", "keylocation", "pbkdf2iters", "volsize",
    "volblocksize", "casesensitivity", "normalization", "utf8only", ROLE_PROP,
})  # fmt: skip


@dataclass(frozen=True)
class PromoteReport:
    """What ``promote_writable`` did to one dataset (False/None: it was already so)."""

    dataset: str
    aborted_receive: bool
    rolled_back_to: str | None
    made_writable: bool
    mounted: bool
    already_primary: bool


@dataclass(frozen=True)
class DemoteReport:
    """What ``demote_readonly`` did to one dataset."""

    dataset: str
    made_readonly: bool
    unmounted: bool


@dataclass(frozen=True)
class FenceReport:
    """What ``fence`` did to one dataset; ``present`` False when the host does not have it."""

    dataset: str
    present: bool
    made_readonly: bool


@dataclass(frozen=True)
class DivergenceReport:
    """Where diverged changes were put (``aside`` is None when nothing had diverged).

    ``kept_snapshots`` are the short names now on ``aside``, the diverged tail of the history.
    """

    dataset: str
    common: str
    diverged: bool
    snapshot: str | None
    aside: str | None
    kept_snapshots: tuple[str, ...]


# -- reading state --------------------------------------------------------------------------


def _state(backend: ZfsBackend, name: str) -> dict[str, str]:
    """The properties the role changes look at, ``""`` for the unset ones; ``readonly_local``
    is ``readonly``'s value when set on ``name`` itself (one ``zfs get`` for all of it)."""
    got: Mapping[str, PropertyValue] = backend.get(name, list(_STATE_PROPS))
    out = {k: v.value for k, v in got.items()}
    role = out.get(ROLE_PROP, "")
    out[ROLE_PROP] = "" if role == "-" else role
    readonly = got.get("readonly")
    out["readonly_local"] = readonly.value if readonly and readonly.source == "local" else ""
    return out


def _local(backend: ZfsBackend, name: str, prop: str) -> str | None:
    """The property's value when it is set locally on ``name``, else None."""
    got = backend.get(name, [prop]).get(prop)
    return got.value if got is not None and got.source == "local" else None


def _snapshots(backend: ZfsBackend, dataset: str) -> list[ZfsObject]:
    """The dataset's own snapshots, oldest first."""
    rows = backend.list(dataset, recursive=False, types=[ObjType.SNAPSHOT])
    return sorted((r for r in rows if r.dataset == dataset), key=lambda r: r.createtxg)


def _children(backend: ZfsBackend, dataset: str) -> list[str]:
    """Direct child filesystems and volumes of ``dataset``."""
    rows = backend.list(dataset, recursive=True, types=[ObjType.FILESYSTEM, ObjType.VOLUME])
    depth = zfsnames.depth(dataset) + 1
    return sorted(r.name for r in rows if zfsnames.depth(r.name) == depth)


def _origin(backend: ZfsBackend, dataset: str) -> str | None:
    got = backend.get(dataset, ["origin"]).get("origin")
    return None if got is None or got.value in _UNSET else got.value


def _is_replica(st: Mapping[str, str]) -> bool:
    """Changes since the newest snapshot cannot be a user's: the dataset is marked a replica,
    read-only, or not mounted (replicas are received unmounted)."""
    return st[ROLE_PROP] == "replica" or st.get("readonly") == "on" or st.get("mounted") != "yes"


def _parents_first(datasets: Sequence[str]) -> list[str]:
    for name in datasets:
        zfsnames.validate_dataset(name, existing=True)
    return sorted(dict.fromkeys(datasets), key=lambda n: (zfsnames.depth(n), n))


def _require(backend: ZfsBackend, datasets: Sequence[str]) -> None:
    """Fail before changing anything when one of ``datasets`` is missing."""
    missing = [n for n in datasets if not backend.exists(n)]
    if missing:
        raise DatasetNotFound(f"cannot change roles: no such dataset: {', '.join(missing)}")


# -- primary / replica ----------------------------------------------------------------------


def promote_writable(backend: ZfsBackend, datasets: Sequence[str]) -> tuple[PromoteReport, ...]:
    """Make replicas the writable primary: abort partial receives, roll back to the newest
    complete snapshot, readonly=off, canmount=on, mount (parents first).

    Only a replica's changes are rolled back (marked ``zfleet:role=replica``, read-only or
    unmounted); once a dataset carries ``zfleet:role=primary`` it is never rolled back again, so
    a second run after users wrote to it, or a run on a dataset users write to, loses nothing.
    """
    order = _parents_first(datasets)
    _require(backend, order)
    reports = []
    for name in order:
        st = _state(backend, name)
        already = st[ROLE_PROP] == "primary"
        aborted = False
        if st.get("receive_resume_token", "") not in _UNSET:
            backend.abort_receive(name)
            aborted = True
        rolled: str | None = None
        if not already and st.get("written", "0") not in ("0", *_UNSET):
            if _is_replica(st):
                snaps = _snapshots(backend, name)
                if snaps:
                    rolled = snaps[-1].name
                    backend.rollback(rolled)
            else:
                # Mounted, writable and not marked a replica: the changes may be a user's.
                log.warning("roles.kept_live_changes", dataset=name)
        is_fs = st.get("type") == "filesystem"
        change = {}
        writable = st.get("readonly") == "off"
        if not writable or not st["readonly_local"]:
            change["readonly"] = "off"  # local, so a parent's readonly=on cannot reach it
        if is_fs and st.get("canmount") != "on":
            change["canmount"] = "on"
        if not already:
            change[ROLE_PROP] = "primary"  # in the same zfs set as readonly=off
        if change:
            backend.set(name, change)
        mounted = False
        if is_fs and st.get("mounted") != "yes" and st.get("mountpoint") not in ("none", "legacy"):
            backend.mount(name)
            mounted = True
        reports.append(PromoteReport(name, aborted, rolled, not writable, mounted, already))
        log.info("roles.promoted", dataset=name, aborted_receive=aborted, rolled_back_to=rolled,
                 mounted=mounted, already_primary=already)  # fmt: skip
    return tuple(reports)


def demote_readonly(
    backend: ZfsBackend, datasets: Sequence[str], *, unmount: bool = False
) -> tuple[DemoteReport, ...]:
    """Make datasets read-only replicas (``zfleet:role=replica``); with ``unmount`` also unmount
    them (children first) and set canmount=noauto so a reboot does not mount them again."""
    order = _parents_first(datasets)
    _require(backend, order)
    made: dict[str, bool] = {}
    for name in order:
        st = _state(backend, name)
        change = {}
        if st.get("readonly") != "on" or not st["readonly_local"]:
            change["readonly"] = "on"
        if st[ROLE_PROP] != "replica":
            change[ROLE_PROP] = "replica"
        if change:
            backend.set(name, change)
        made[name] = "readonly" in change
    unmounted: dict[str, bool] = {}
    for name in reversed(order):
        st = _state(backend, name)
        done = False
        if unmount and st.get("type") == "filesystem":
            if st.get("canmount") != "noauto":
                backend.set(name, {"canmount": "noauto"})
            if st.get("mounted") == "yes":
                backend.unmount(name)
                done = True
        unmounted[name] = done
    log.info("roles.demoted", datasets=order, unmount=unmount)
    return tuple(DemoteReport(n, made[n], unmounted[n]) for n in order)


def fence(backend: ZfsBackend, datasets: Sequence[str]) -> tuple[FenceReport, ...]:
    """readonly=on on every dataset this host has, before anything else runs there.

    Reads one property and writes one per dataset: a returning old primary must stop taking
    writes first; a missing dataset is reported, not an error, so the rest still get fenced.
    """
    reports = []
    for name in _parents_first(datasets):
        try:
            if _local(backend, name, "readonly") == "on":
                reports.append(FenceReport(name, present=True, made_readonly=False))
                continue
            backend.set(name, {"readonly": "on"})
        except DatasetNotFound:
            reports.append(FenceReport(name, present=False, made_readonly=False))
            continue
        reports.append(FenceReport(name, present=True, made_readonly=True))
    log.info("roles.fenced", datasets=[r.dataset for r in reports if r.made_readonly])
    return tuple(reports)


# -- divergence ------------------------------------------------------------------------------


def _short(dataset: str, snap: str) -> str:
    """``s1`` for ``s1``, ``@s1`` or ``DATASET@s1``; other datasets' snapshots are refused."""
    if "@" not in snap:
        short = snap
    else:
        ds, _, short = snap.partition("@")
        if ds and ds != dataset:
            raise NoCommonSnapshot(f"{snap!r} is not a snapshot of {dataset!r}")
    zfsnames.validate_component(short)
    return short


def _copy_props(backend: ZfsBackend, source: str) -> dict[str, str]:
    """``source``'s locally set properties that a new clone can take."""
    return {
        k: v.value
        for k, v in backend.get(source).items()
        if v.source == "local" and k not in _NOT_COPIED
    }


def _move_children(backend: ZfsBackend, src: str, dst: str) -> tuple[str, ...]:
    moved = []
    for child in _children(backend, src):
        target = dst + child[len(src) :]
        if backend.exists(target):
            raise DatasetExists(f"cannot move {child} back: {target} already exists")
        backend.rename(child, target)
        moved.append(target)
    return tuple(moved)


def _unmount_tree(backend: ZfsBackend, dataset: str) -> None:
    """Unmount ``dataset`` and its descendants (deepest first); canmount=noauto on ``dataset``.

    Renames, clones and promotes then run on unmounted datasets, so no two of them ever ask
    for the same directory (a renamed dataset keeps a local mountpoint).
    """
    rows = backend.list(dataset, recursive=True, types=[ObjType.FILESYSTEM])
    for name in sorted((r.name for r in rows), key=lambda n: (-zfsnames.depth(n), n)):
        if _state(backend, name).get("mounted") == "yes":
            backend.unmount(name)
    if rows and _state(backend, dataset).get("canmount") != "noauto":
        backend.set(dataset, {"canmount": "noauto"})


def _split(backend: ZfsBackend, dataset: str, aside: str, common: str) -> None:
    """Resume or run: rename ``dataset`` to ``aside``, clone ``aside@common`` back to
    ``dataset``, promote it, and bring the children back under ``dataset``."""
    if backend.exists(dataset) and not backend.exists(aside):
        _unmount_tree(backend, dataset)
        backend.rename(dataset, aside)
    if not backend.exists(dataset):
        props = _copy_props(backend, aside)
        props |= {"readonly": "on", ROLE_PROP: "replica"}
        if _state(backend, aside).get("type") == "filesystem":
            props["canmount"] = "noauto"
        backend.clone(f"{aside}@{common}", dataset, props=props)
    if _origin(backend, dataset) == f"{aside}@{common}":
        backend.promote(dataset)
    if _origin(backend, aside) != f"{dataset}@{common}":
        raise DatasetExists(
            f"cannot keep diverged changes of {dataset}: {aside} exists and is not a clone of "
            f"{dataset}@{common}"
        )
    _move_children(backend, aside, dataset)


def preserve_divergence(
    backend: ZfsBackend, dataset: str, common_snap: str, tag: str
) -> DivergenceReport:
    """Keep what ``dataset`` gained after ``common_snap`` aside, so that it can receive
    incrementals from ``common_snap`` on.

    The changes are snapshotted (``@zfleet-diverged-TAG``), the dataset with its diverged
    snapshots becomes the clone ``DATASET.diverged-TAG``, and ``DATASET`` is again the main line
    ending at ``common_snap`` (same guids: the new primary's incrementals apply), read-only.
    Clones of older snapshots keep their origins; nothing is destroyed.
    """
    zfsnames.validate_dataset(dataset, existing=True)
    zfsnames.validate_component(tag)
    common = _short(dataset, common_snap)
    aside = DIVERGED_ASIDE.format(dataset=dataset, tag=tag)
    zfsnames.validate_dataset(aside)
    snap = DIVERGED_SNAP.format(tag=tag)
    if backend.exists(dataset) and not backend.exists(aside):
        snaps = _snapshots(backend, dataset)
        shorts = [s.short for s in snaps]
        if common not in shorts:
            raise NoCommonSnapshot(f"{dataset}@{common} does not exist: nothing to rejoin from")
        newer = shorts[shorts.index(common) + 1 :]
        written = _state(backend, dataset).get("written", "0")
        if not newer and written in ("0", *_UNSET):
            log.info("roles.not_diverged", dataset=dataset, common=common)
            return DivergenceReport(dataset, common, False, None, None, ())
        if snap not in newer:
            backend.snapshot([f"{dataset}@{snap}"])
    elif not backend.exists(aside):
        raise DatasetNotFound(f"cannot keep diverged changes: no such dataset: {dataset}")
    _split(backend, dataset, aside, common)
    kept = tuple(s.short for s in _snapshots(backend, aside))
    log.info("roles.divergence_kept", dataset=dataset, aside=aside, snapshots=list(kept))
    return DivergenceReport(dataset, common, True, f"{aside}@{snap}", aside, kept)


def has_diverged(backend: ZfsBackend, dataset: str, common_snap: str, tag: str) -> bool:
    """Whether ``dataset`` changed after ``common_snap`` (newer snapshots or unsnapshotted
    writes), or a run of :func:`preserve_divergence` with ``tag`` already began splitting it."""
    zfsnames.validate_component(tag)
    aside = DIVERGED_ASIDE.format(dataset=dataset, tag=tag)
    if backend.exists(aside) or not backend.exists(dataset):
        return True
    common = _short(dataset, common_snap)
    shorts = [s.short for s in _snapshots(backend, dataset)]
    if common not in shorts:
        raise NoCommonSnapshot(f"{dataset}@{common} does not exist: nothing to rejoin from")
    return bool(shorts[shorts.index(common) + 1 :]) or _state(backend, dataset).get(
        "written", "0"
    ) not in ("0", *_UNSET)


def rewind_to_common(backend: ZfsBackend, dataset: str, common_snap: str) -> bool:
    """Roll ``dataset`` back to ``common_snap`` when that is its newest snapshot; True if done.

    For a rejoining host only, after :func:`preserve_divergence` has split its diverged datasets:
    a split renames datasets aside and back, which writes mountpoint directories into the trees of
    their parents and of the split dataset itself (zfs#12580). Nothing else can have written there
    since the divergence was judged (the host is fenced, readonly=on), so the rollback discards
    only the split's traces, which would otherwise make the next incremental receive fail with
    "destination has been modified" wherever the rejoin itself had nothing to send.
    """
    common = _short(dataset, common_snap)
    snaps = _snapshots(backend, dataset)
    if not snaps or snaps[-1].short != common:
        return False
    backend.rollback(f"{dataset}@{common}")
    return True


def keep_diverged(backend: ZfsBackend, dataset: str, tag: str) -> DivergenceReport:
    """The operator keeps the diverged side instead: after :func:`preserve_divergence`, make
    ``DATASET.diverged-TAG`` the main line again under the name ``DATASET`` (``zfs promote``),
    and keep the replica line (with what it received since) aside as ``DATASET.replaced-TAG``.
    """
    zfsnames.validate_dataset(dataset, existing=True)
    zfsnames.validate_component(tag)
    diverged = DIVERGED_ASIDE.format(dataset=dataset, tag=tag)
    replaced = REPLACED_ASIDE.format(dataset=dataset, tag=tag)
    zfsnames.validate_dataset(replaced)
    # States, in the order a run goes through them; each test reads what the last step left.
    if backend.exists(diverged) and backend.exists(dataset) and not backend.exists(replaced):
        origin = _origin(backend, diverged)
        if origin is not None and origin.startswith(f"{dataset}@"):
            backend.promote(diverged)
        if _origin(backend, dataset) is None or not str(_origin(backend, dataset)).startswith(
            f"{diverged}@"
        ):
            raise DatasetExists(
                f"cannot keep {diverged}: it is not a clone of {dataset} made by a rejoin"
            )
        _unmount_tree(backend, dataset)
        backend.rename(dataset, replaced)
    if backend.exists(diverged) and backend.exists(replaced) and not backend.exists(dataset):
        backend.rename(diverged, dataset)
    if not (backend.exists(dataset) and backend.exists(replaced)):
        raise DatasetNotFound(f"cannot keep diverged changes: no {diverged} next to {dataset}")
    origin = _origin(backend, replaced)
    if origin is None or not origin.startswith(f"{dataset}@"):
        raise DatasetExists(f"cannot keep diverged changes: {replaced} is not a clone of {dataset}")
    _move_children(backend, replaced, dataset)
    common = origin.partition("@")[2]
    kept = tuple(s.short for s in _snapshots(backend, replaced))
    log.info("roles.diverged_kept_as_main", dataset=dataset, replaced=replaced)
    return DivergenceReport(dataset, common, True, None, replaced, kept)
