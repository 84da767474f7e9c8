"""Where a received substream lands, and OpenZFS's refusals when it cannot.

:func:`plan_target` reads only (it runs again at the first bytes and at apply time);
:func:`ensure_dataset` makes the changes, inside the txg that records the snapshot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from protocol.errors import (
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    DestinationHasSnapshots,
    DestinationModified,
    HasDependentClones,
    InvalidOperation,
    NoCommonSnapshot,
    OriginMissing,
    ResumeTokenStale,
)
from protocol.stream import BeginInfo, Feature
from protocol.stream.types import DMU_OST_ZVOL, DRR_FLAG_CLONE
from workers.zfs.base import ReceiveSpec

from .datasets import _insert, held_message
from .nodes import Manifest
from .partial import PartialState
from .pool import Dataset, Pool, Snapshot
from .proprules import normalize


@dataclass
class Landing:
    """Where one substream lands, decided from its BEGIN and the target's state."""

    dataset: str
    snapshot: str  # short name of the snapshot to create
    base: Snapshot | None  # the snapshot the stream applies to
    create: bool  # the dataset does not exist yet
    origin: Snapshot | None  # for a new clone
    rollback_to: Snapshot | None  # -F: roll back to this first
    skip: bool = False  # the snapshot is already there: consume and move on


def plan_target(pool: Pool, info: BeginInfo, target: str, spec: ReceiveSpec) -> Landing:
    """Decide where the substream described by ``info`` goes; raise if it cannot."""
    ds_name, _, short = target.partition("@")
    short = short or info.toname.partition("@")[2]
    ds = pool.find(ds_name)
    kind = "incremental" if info.fromguid else "new filesystem"
    if info.resuming:
        return _resume_target(pool, info, ds_name, short, ds)
    wants_new = not info.fromguid or bool(info.flags & DRR_FLAG_CLONE) or bool(spec.origin)
    if ds is not None and wants_new and not spec.force:
        # libzfs refuses before the kernel looks at anything, so even a stream whose snapshot
        # the target already holds (the dataset's own, sent back to it) is an error here
        raise DatasetExists(
            f"cannot receive new filesystem stream: destination '{ds_name}' exists\n"
            "must specify -F to overwrite it"
        )
    if ds is not None:
        if info.fromguid and any(s.guid == info.toguid for s in pool.snapshots(ds.id)):
            return Landing(ds_name, short, None, False, None, None, skip=True)
        partial = pool.conn.execute("SELECT 1 FROM partial WHERE dataset=?", (ds.id,)).fetchone()
        if partial and not spec.force:
            raise InvalidOperation(
                f"cannot receive {kind} stream: destination {ds_name} contains partially-complete "
                'state from "zfs receive -s".'
            )
    if not info.fromguid:
        return _full_target(pool, ds_name, short, ds, spec, raw=info.has(Feature.RAW))
    if ds is None:
        parent = ds_name.rpartition("/")[0]
        if parent and pool.find(parent) is None:
            raise DatasetNotFound(f"cannot open '{parent}': dataset does not exist")
        if info.flags & DRR_FLAG_CLONE or spec.origin:
            origin = _find_origin(pool, info, spec)
            if origin is None:
                raise OriginMissing(
                    f"cannot receive incremental stream: local origin for clone {ds_name}@{short} "
                    "does not exist"
                )
            return Landing(ds_name, short, origin, True, origin, None)
        raise DatasetNotFound(
            f"cannot receive incremental stream: destination '{ds_name}' does not exist"
        )
    # As OpenZFS (recv_begin_check_existing_impl): the source may be any snapshot in the
    # target's history; without -F the target must hold no change since it, whether in the
    # live data or in newer snapshots of its own. -F rolls back to it (newer ones go).
    snaps = pool.snapshots(ds.id)
    history = snaps or ([pool.snapshot_by_id(ds.origin)] if ds.origin is not None else [])
    match = [s for s in history if s.guid == info.fromguid]
    if not match:
        raise NoCommonSnapshot(
            f"cannot receive incremental stream: most recent snapshot of {ds_name} does not\n"
            "match incremental source"
        )
    base = match[0]
    if spec.force:
        return Landing(ds_name, short, base, False, None, base)
    newer = [s for s in snaps if s.createtxg > base.createtxg]
    if pool.modified(ds) or any(s.manifest != base.manifest for s in newer):
        raise DestinationModified(
            f"cannot receive incremental stream: destination {ds_name} has been modified\n"
            "since most recent snapshot"
        )
    return Landing(ds_name, short, base, False, None, None)


def _full_target(
    pool: Pool, ds_name: str, short: str, ds: Dataset | None, spec: ReceiveSpec, *, raw: bool
) -> Landing:
    if ds is None:
        parent = ds_name.rpartition("/")[0]
        if parent and pool.find(parent) is None:
            raise DatasetNotFound(f"cannot open '{parent}': dataset does not exist")
        return Landing(ds_name, short, None, True, None, None)
    if not spec.force:
        raise DatasetExists(
            f"cannot receive new filesystem stream: destination '{ds_name}' exists\n"
            "must specify -F to overwrite it"
        )
    # -F on an existing dataset, in libzfs's order: it must hold no snapshot, not be a clone,
    # and neither it nor the stream may be encrypted (the key could not be swapped)
    snaps = pool.snapshots(ds.id)
    if snaps:
        raise DestinationHasSnapshots(
            f"cannot receive new filesystem stream: destination has snapshots (eg. "
            f"{snaps[0].name})\nmust destroy them to overwrite it"
        )
    if ds.origin is not None:
        raise InvalidOperation(
            f"cannot receive new filesystem stream: destination '{ds_name}' is a clone\n"
            "must destroy it to overwrite it"
        )
    if ds.crypt or raw:
        raise InvalidOperation(
            "cannot receive new filesystem stream: zfs receive -F cannot be used to destroy an "
            "encrypted filesystem or overwrite an unencrypted one with an encrypted one"
        )
    return Landing(ds_name, short, None, False, None, None)


def _resume_target(
    pool: Pool, info: BeginInfo, ds_name: str, short: str, ds: Dataset | None
) -> Landing:
    row = None
    if ds is not None:
        row = pool.conn.execute("SELECT state FROM partial WHERE dataset=?", (ds.id,)).fetchone()
    if ds is None or row is None:
        raise ResumeTokenStale(
            f"cannot receive resume stream: destination {ds_name} does not contain a "
            "partially-complete receive"
        )
    state = PartialState.decode(row[0])
    if state.toguid != info.toguid:
        raise ResumeTokenStale(
            f"cannot receive resume stream: the partial state of {ds_name} is for another "
            "snapshot (guid mismatch)"
        )
    base = pool.snapshot_by_id(state.base) if state.base else None
    return Landing(ds_name, short, base, False, None, None)


def _find_origin(pool: Pool, info: BeginInfo, spec: ReceiveSpec) -> Snapshot | None:
    if spec.origin:
        try:
            snap = pool.snapshot(spec.origin)
        except DatasetNotFound:
            return None
        return snap if snap.guid == info.fromguid else None
    for snap in pool.snapshots():
        if snap.guid == info.fromguid:
            return snap
    return None


def resume_state(
    pool: Pool, info: BeginInfo, where: Landing, raw: bool
) -> tuple[PartialState, Manifest]:
    """The state to apply records to: a saved one when resuming, else a fresh one."""
    if info.resuming:
        ds = pool.dataset(where.dataset)
        row = pool.conn.execute("SELECT state FROM partial WHERE dataset=?", (ds.id,)).fetchone()
        state = PartialState.decode(row[0])
        base = pool.snapshot_by_id(state.base).manifest if state.base else {}
        return state, base
    state = PartialState(
        info.toguid, info.fromguid, info.toname, where.base.id if where.base else 0, raw
    )
    return state, (where.base.manifest if where.base else {})


def ensure_dataset(
    pool: Pool,
    where: Landing,
    info: BeginInfo,
    txg: int,
    *,
    raw: bool,
    spec: ReceiveSpec,
    inconsistent: bool = False,
) -> Dataset:
    """The target dataset, created (or rolled back for -F) as the stream requires."""
    ds = pool.find(where.dataset)
    if ds is not None:
        if where.rollback_to is not None:
            _drop_newer(pool, ds, where.rollback_to)
        return ds
    kind = "volume" if info.type == DMU_OST_ZVOL else "filesystem"
    local = {
        k: normalize(where.dataset, k, v, creating=True, kind=kind)
        for k, v in spec.set_props.items()
        if k != "origin"
    }
    crypt: dict[str, Any] | None = None
    if where.origin is not None:
        crypt = pool.dataset_by_id(where.origin.dataset).crypt
    elif raw and info.nvlist is not None and "crypt_keydata" in info.nvlist:
        crypt = crypt_from_stream(info, where.dataset)
    else:
        parent = pool.find(where.dataset.rpartition("/")[0])
        crypt = parent.crypt if parent is not None else None
    ds = _insert(pool, where.dataset, kind, txg, local, where.origin, crypt)
    if inconsistent:
        pool.conn.execute("UPDATE datasets SET inconsistent=1 WHERE id=?", (ds.id,))
        ds = pool.dataset_by_id(ds.id)
    return ds


def crypt_from_stream(info: BeginInfo, name: str) -> dict[str, Any]:
    assert info.nvlist is not None
    keydata = info.nvlist["crypt_keydata"]
    try:
        keyformat = {1: "raw", 2: "hex", 3: "passphrase"}[int(keydata["keyformat"])]
        return {
            "keyformat": keyformat,
            "salt": int(keydata["pbkdf2salt"]).to_bytes(8, "little").hex(),
            "iters": int(keydata["pbkdf2iters"]),
            "wrapped": bytes(keydata["DSL_CRYPTO_MASTER_KEY_1"]).hex(),
            "cipher": "aes-256-gcm",
            "loaded": None,
            "sealed": True,
            "root": name,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidOperation(
            f"cannot receive new filesystem stream: invalid stream (bad crypt_keydata: {exc})"
        ) from exc


def _drop_newer(pool: Pool, ds: Dataset, keep: Snapshot) -> None:
    newer = [s for s in pool.snapshots(ds.id) if s.createtxg > keep.createtxg]
    for snap in newer:
        clones = pool.clones_of(snap.id)
        if clones:
            raise HasDependentClones(
                f"cannot destroy '{snap.name}': snapshot has dependent clones\n"
                "use '-R' to destroy the following datasets:\n" + "\n".join(c.name for c in clones)
            )
        if pool.holds(snap.id):
            raise DatasetBusy(held_message(snap.name))
    for snap in newer:
        pool.conn.execute("DELETE FROM snapshots WHERE id=?", (snap.id,))


def set_received(pool: Pool, name: str, props: dict[str, Any], spec: ReceiveSpec) -> None:
    """Record properties that came with the stream, minus -x, under -o (inside a txg)."""
    ds = pool.dataset(name)
    received = {k: str(v) for k, v in props.items() if k not in spec.exclude_props}
    pool.conn.execute("UPDATE datasets SET received=? WHERE id=?", (json.dumps(received), ds.id))
