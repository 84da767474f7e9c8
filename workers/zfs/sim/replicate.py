"""``zfs send -R``: a compound stream of a dataset tree, with the nvlist OpenZFS puts first.

The nvlist names every filesystem by guid with its name, properties, snapshots (name -> guid)
and, for clones, its origin's guid, so the receiver can rebuild the tree and find the base of
every incremental. Datasets go out parents first and clones after their origins.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import InvalidOperation
from workers.zfs.base import SendSpec

from .pool import Bookmark, Dataset, Pool, Snapshot
from .proprules import SETTABLE, is_user_prop
from .send import Plan, Substream, parse_from, substream


def fs_entry(pool: Pool, ds: Dataset, upto: Snapshot, spec: SendSpec) -> dict[str, Any]:
    """One ``fss`` entry: what the receiver needs to know about a filesystem."""
    snaps = [s for s in pool.snapshots(ds.id) if s.createtxg <= upto.createtxg]
    props: dict[str, Any] = {}
    for name, value in {**ds.received, **ds.props}.items():
        if is_user_prop(name) or (
            name in SETTABLE and not SETTABLE[name].create_only and name not in ("keylocation",)
        ):
            props[name] = int(value) if SETTABLE.get(name) and SETTABLE[name].number else value
    entry: dict[str, Any] = {
        "name": ds.name,
        "parentfromsnap": 0,
        "props": props,
        "snaps": {s.short: s.guid for s in snaps},
        "snapprops": {s.short: dict(s.props) for s in snaps},
    }
    if ds.origin is not None:
        entry["origin"] = pool.snapshot_by_id(ds.origin).guid
    return entry


def replication_plan(pool: Pool, snap: Snapshot, spec: SendSpec) -> Plan:
    """Every dataset under the snapshot's dataset that has the snapshot, with its history."""
    top = pool.dataset_by_id(snap.dataset)
    family = [
        d
        for d in [top, *pool.descendants(top.name)]
        if any(s.short == snap.short for s in pool.snapshots(d.id))
    ]
    order = _origin_order(pool, family)
    base_short: str | None = None
    if spec.from_snap:
        base_short = spec.from_snap.split("@")[-1].split("#")[-1]
        parse_from(pool, snap, spec.from_snap)  # refuse a missing source up front
    sent_ids = {d.id for d in order}
    subs: list[Substream] = []
    fss: dict[str, Any] = {}
    for ds in order:
        upto = next(s for s in pool.snapshots(ds.id) if s.short == snap.short)
        history = [s for s in pool.snapshots(ds.id) if s.createtxg <= upto.createtxg]
        previous: Snapshot | Bookmark | None = None
        if base_short is not None:
            starts = [s for s in history if s.short == base_short]
            if not starts:
                raise InvalidOperation(
                    f"cannot send '{ds.name}@{snap.short}': incremental source "
                    f"{ds.name}@{base_short} does not exist"
                )
            previous = starts[0]
            history = [s for s in history if s.createtxg > previous.createtxg]
            if not spec.intermediates:
                history = history[-1:]
        elif ds.origin is not None and pool.snapshot_by_id(ds.origin).dataset in sent_ids:
            previous = pool.snapshot_by_id(ds.origin)
        for step in history:
            subs.append(substream(pool, step, previous, spec))
            previous = step
        fss[f"0x{ds.guid:x}"] = fs_entry(pool, ds, upto, spec)
    nvl: dict[str, Any] = {}
    if base_short is not None:
        nvl["fromsnap"] = base_short
    nvl["tosnap"] = snap.short
    nvl["fss"] = fss
    return Plan(subs, True, snap.name, nvl)


def _origin_order(pool: Pool, family: list[Dataset]) -> list[Dataset]:
    """Parents before children, and each clone after the dataset holding its origin."""
    ids = {d.id: d for d in family}
    done: list[Dataset] = []
    placed: set[int] = set()

    def place(ds: Dataset, depth: int = 0) -> None:
        if ds.id in placed or depth > len(family):
            return
        if ds.origin is not None:
            holder = pool.snapshot_by_id(ds.origin).dataset
            if holder in ids:
                place(ids[holder], depth + 1)
        parent = ds.name.rpartition("/")[0]
        for other in family:
            if other.name == parent:
                place(other, depth + 1)
        placed.add(ds.id)
        done.append(ds)

    for ds in family:
        place(ds)
    return done
