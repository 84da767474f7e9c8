"""Dataset lifecycle on one pool: create, snapshot, clone, promote, rename, rollback, destroy.

Each public function is one txg: it checks everything first, with OpenZFS's refusal messages,
then changes metadata in one SQLite transaction, then the live data.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence

import structlog

from protocol.errors import (
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    DestinationHasSnapshots,
    HasDependentClones,
    InvalidOperation,
)

from . import crypto, db
from .blocks import HOLE
from .nodes import (
    FIRST_OBJECT,
    RECORD,
    ROOT_OBJECT,
    VOLUME_OBJECT,
    Kind,
    Manifest,
    Meta,
    Node,
    encode_manifest,
)
from .pool import Dataset, Pool, Snapshot, new_guid
from .proprules import normalize
from .space import referenced, referenced_delta, unique_bytes
from .tree import encode_cache

log = structlog.get_logger(__name__)


def parent_name(name: str) -> str | None:
    return name.rpartition("/")[0] or None


def create(
    pool: Pool,
    name: str,
    *,
    props: Mapping[str, str],
    volsize: int | None,
    parents: bool,
    key: bytes | None,
) -> None:
    """``zfs create [-p] [-V size] [-o prop=value]``."""
    kind = "volume" if volsize is not None else "filesystem"
    local = {k: normalize(name, k, v, creating=True, kind=kind) for k, v in props.items()}
    if volsize is not None and volsize <= 0:
        raise InvalidOperation(f"cannot create '{name}': volume size must be greater than zero")
    if volsize is not None and volsize > int(str(db.get_meta(pool.conn, "size", 1 << 62))):
        # a volume reserves its size (refreservation) and the pool cannot hold it: as the
        # kernel's ENOSPC. The simulation also keeps one entry per block, so no sparse giant.
        raise InvalidOperation(f"cannot create '{name}': out of space")
    with db.txg(pool.conn) as txg:
        if pool.find(name) is not None:
            if parents:
                return
            raise DatasetExists(f"cannot create '{name}': dataset already exists")
        parent = parent_name(name)
        missing: list[str] = []
        while parent is not None and pool.find(parent) is None:
            missing.append(parent)
            parent = parent_name(parent)
        if missing and not parents:
            raise DatasetNotFound(f"cannot create '{name}': parent does not exist")
        for ancestor in reversed(missing):
            _insert(pool, ancestor, "filesystem", txg, {}, None, None)
        parent_ds = pool.dataset(parent_name(name) or name) if parent_name(name) else None
        crypt = _crypt_for_create(pool, name, local, parent_ds, key)
        ds = _insert(pool, name, kind, txg, local, None, crypt)
        root = _empty_volume(pool, volsize) if volsize is not None else _empty_root(pool)
        pool.install(ds, root, mount=True)


def _empty_root(pool: Pool) -> Manifest:
    now = time.time_ns()
    node = Node(Meta(Kind.DIR, 0o755, _uid(), _gid(), now, 0).encode(), ())
    return {ROOT_OBJECT: pool.objects.put(node, 0)}


def _empty_volume(pool: Pool, volsize: int) -> Manifest:
    """A volume of ``volsize`` bytes that are all holes (a sparse file once installed)."""
    holes = (HOLE,) * -(-volsize // RECORD)
    node = Node(Meta(Kind.FILE, 0o600, _uid(), _gid(), time.time_ns(), volsize).encode(), holes)
    return {VOLUME_OBJECT: pool.objects.put(node, 0)}


def _uid() -> int:
    return os.getuid()


def _gid() -> int:
    return os.getgid()


def _crypt_for_create(
    pool: Pool, name: str, local: dict[str, str], parent: Dataset | None, key: bytes | None
) -> dict[str, object] | None:
    encryption = local.get("encryption", "off")
    if encryption == "off":
        if parent is not None and parent.crypt is not None and "encryption" not in local:
            # A child of an encrypted dataset inherits its encryption root and key.
            return dict(parent.crypt)
        return None
    keyformat = local.get("keyformat", "none")
    if keyformat == "none":
        raise InvalidOperation(
            f"cannot create '{name}': Keyformat required for new encryption root."
        )
    if key is None:
        key = _read_keylocation(name, local.get("keylocation", "prompt"))
    else:
        local.setdefault("keylocation", "prompt")  # a key given is a typed one, as zfs has it
    iters = int(local.get("pbkdf2iters", "0")) or crypto.DEFAULT_ITERS
    if keyformat == "passphrase" and iters < crypto.MIN_ITERS:
        raise InvalidOperation(
            f"cannot create '{name}': Minimum pbkdf2iters is {crypto.MIN_ITERS}."
        )
    material, master, wrap = crypto.new_key(name, keyformat, key, iters)
    cipher = crypto.CIPHER if encryption == "on" else encryption
    # Fixed at creation, reported from the key state (source '-'), as OpenZFS does.
    local.pop("encryption", None)
    local.pop("keyformat", None)
    if keyformat == "passphrase":
        local["pbkdf2iters"] = str(iters)
    return {
        **material.to_json(),
        "cipher": cipher,
        "loaded": master.hex(),
        "wkey": wrap.hex(),  # the loaded wrapping key (kernel memory), for change-key -i
        "root": name,
        "sealed": False,
    }


def _read_keylocation(name: str, location: str) -> bytes:
    if not location.startswith("file://"):
        raise InvalidOperation(
            f"cannot create '{name}': keylocation '{location}' needs a terminal; "
            "use keylocation=file:///path or pass the key"
        )
    try:
        with open(location[len("file://") :], "rb") as fp:
            return fp.read()
    except OSError as exc:
        raise InvalidOperation(
            f"cannot create '{name}': Failed to open key material file: {exc.strerror}"
        ) from exc


def _insert(  # noqa: PLR0917
    pool: Pool,
    name: str,
    kind: str,
    txg: int,
    props: Mapping[str, str],
    origin: Snapshot | None,
    crypt: Mapping[str, object] | None,
    next_obj: int = FIRST_OBJECT,
) -> Dataset:
    pool.conn.execute(
        "INSERT INTO datasets(name, kind, guid, createtxg, creation, origin, props, next_obj,"
        " crypt) VALUES(?,?,?,?,?,?,?,?,?)",
        (
            name,
            kind,
            new_guid(),
            txg,
            int(time.time()),
            origin.id if origin else None,
            json.dumps(dict(props)),
            next_obj,
            json.dumps(dict(crypt)) if crypt else None,
        ),
    )
    return pool.dataset(name)


def take_snapshots(
    pool: Pool, names: Sequence[str], *, recursive: bool, props: Mapping[str, str]
) -> None:
    """``zfs snapshot [-r]``: every snapshot in one txg."""
    with db.txg(pool.conn) as txg:
        targets: list[tuple[Dataset, str]] = []
        for full in names:
            ds_name, _, short = full.partition("@")
            ds = pool.find(ds_name)
            if ds is None:
                raise DatasetNotFound(f"cannot open '{ds_name}': dataset does not exist")
            group = [ds, *pool.descendants(ds_name)] if recursive else [ds]
            targets.extend((d, short) for d in group)
        seen = set()
        for ds, short in targets:
            if (ds.id, short) in seen:
                raise InvalidOperation(
                    "cannot create snapshots : multiple snapshots of same fs not allowed"
                )
            seen.add((ds.id, short))
            exists = pool.conn.execute(
                "SELECT 1 FROM snapshots WHERE dataset=? AND name=?", (ds.id, short)
            ).fetchone()
            if exists:
                raise DatasetExists(
                    f"cannot create snapshot '{ds.name}@{short}': dataset already exists"
                )
            if ds.inconsistent:
                raise DatasetBusy(f"cannot create snapshot '{ds.name}@{short}': dataset is busy")
        for ds, short in targets:
            record_snapshot(pool, ds, short, txg, props)
    log.info("sim.snapshot.created", snapshots=[f"{d.name}@{s}" for d, s in targets], txg=txg)


def record_snapshot(
    pool: Pool,
    ds: Dataset,
    short: str,
    txg: int,
    props: Mapping[str, str] | None = None,
    *,
    guid: int | None = None,
    manifest: Manifest | None = None,
    creation: int | None = None,
) -> Snapshot:
    """Insert a snapshot of the dataset's current data (or of ``manifest``); inside a txg."""
    if manifest is None:
        manifest, cache, next_obj = pool.capture(ds)
        pool.conn.execute(
            "UPDATE datasets SET scan=?, next_obj=? WHERE id=?",
            (encode_cache(cache) if ds.head is None and ds.mounted else ds.scan, next_obj, ds.id),
        )
    before = previous_snapshot(pool, ds)
    if before is None:
        ref = referenced(pool.objects, manifest)
        written = ref
    else:
        previous = before.manifest
        # Only the objects that differ from the previous snapshot are looked at: the cost of a
        # snapshot follows the change.
        ref = before.referenced + referenced_delta(pool.objects, previous, manifest)
        written = unique_bytes(pool.objects, manifest, [previous])
    pool.conn.execute(
        "INSERT INTO snapshots(dataset, name, guid, createtxg, creation, manifest, referenced,"
        " written, props) VALUES(?,?,?,?,?,?,?,?,?)",
        (
            ds.id,
            short,
            guid or new_guid(),
            txg,
            creation or int(time.time()),
            encode_manifest(manifest),
            ref,
            written,
            json.dumps(dict(props or {})),
        ),
    )
    return pool.snapshot(f"{ds.name}@{short}")


def previous_snapshot(pool: Pool, ds: Dataset) -> Snapshot | None:
    """The newest snapshot, or a clone's origin; None for a dataset with neither."""
    snaps = pool.snapshots(ds.id)
    if snaps:
        return snaps[-1]
    if ds.origin is not None:
        return pool.snapshot_by_id(ds.origin)
    return None


def clone(pool: Pool, snapshot: str, target: str, props: Mapping[str, str]) -> None:
    """``zfs clone``: a new filesystem whose data starts as the snapshot's."""
    local = {k: normalize(target, k, v, creating=True) for k, v in props.items()}
    with db.txg(pool.conn) as txg:
        snap = pool.snapshot(snapshot)
        if pool.find(target) is not None:
            raise DatasetExists(f"cannot create '{target}': dataset already exists")
        parent = parent_name(target)
        if parent is None or pool.find(parent) is None:
            raise DatasetNotFound(f"cannot create '{target}': parent does not exist")
        source = pool.dataset_by_id(snap.dataset)
        ds = _insert(pool, target, source.kind, txg, local, snap, source.crypt, source.next_obj)
        manifest = snap.manifest
        sealed = bool(source.crypt and not source.crypt.get("loaded"))
        pool.install(ds, manifest, mount=not sealed)
    log.info("sim.clone.created", clone=target, origin=snapshot)


def promote(pool: Pool, name: str) -> None:
    """``zfs promote``: the clone takes its origin's older snapshots and becomes the parent."""
    with db.txg(pool.conn):
        ds = pool.dataset(name)
        if ds.origin is None:
            raise InvalidOperation(f"cannot promote '{name}': not a cloned filesystem")
        origin = pool.snapshot_by_id(ds.origin)
        parent = pool.dataset_by_id(origin.dataset)
        moving = [s for s in pool.snapshots(parent.id) if s.createtxg <= origin.createtxg]
        mine = {s.short for s in pool.snapshots(ds.id)}
        for snap in moving:
            if snap.short in mine:
                raise DatasetExists(
                    f"cannot promote '{name}': snapshot name '{snap.short}' from origin "
                    f"conflicts with '{name}@{snap.short}' from target"
                )
        for snap in moving:
            pool.conn.execute("UPDATE snapshots SET dataset=? WHERE id=?", (ds.id, snap.id))
        pool.conn.execute("UPDATE datasets SET origin=? WHERE id=?", (parent.origin, ds.id))
        pool.conn.execute("UPDATE datasets SET origin=? WHERE id=?", (origin.id, parent.id))
        next_obj = max(ds.next_obj, parent.next_obj)
        pool.conn.execute(
            "UPDATE datasets SET next_obj=? WHERE id IN (?,?)", (next_obj, ds.id, parent.id)
        )
    log.info("sim.promoted", dataset=name, snapshots_moved=len(moving))


def rename(pool: Pool, old: str, new: str) -> None:
    """``zfs rename`` of a dataset (with its children) or of a snapshot."""
    if "#" in old:
        raise InvalidOperation(f"cannot rename '{old}': bookmarks cannot be renamed")
    with db.txg(pool.conn):
        if "@" in old:
            snap = pool.snapshot(old)
            ds_name, _, short = new.partition("@")
            if ds_name != snap.dataset_name:
                raise InvalidOperation(
                    "cannot rename to '{new}': snapshots must be part of same dataset"
                )
            if pool.conn.execute(
                "SELECT 1 FROM snapshots WHERE dataset=? AND name=?", (snap.dataset, short)
            ).fetchone():
                raise DatasetExists(f"cannot rename to '{new}': dataset already exists")
            pool.conn.execute("UPDATE snapshots SET name=? WHERE id=?", (short, snap.id))
            return
        ds = pool.dataset(old)
        if "/" not in old:
            raise InvalidOperation(f"cannot rename '{old}': cannot rename the root of a pool")
        if pool.find(new) is not None:
            raise DatasetExists(f"cannot rename to '{new}': dataset already exists")
        if new.startswith(old + "/"):
            raise InvalidOperation(
                f"cannot rename to '{new}': New dataset name cannot be a descendant of current dataset name"  # noqa: E501
            )
        parent = parent_name(new)
        if parent is None or pool.find(parent) is None:
            # libzfs's check_parents words it as for create, whatever the command
            raise DatasetNotFound(f"cannot create '{new}': parent does not exist")
        family = [ds, *pool.descendants(old)]
        before = {d.id: pool.mountpoint(d) for d in family}
        for d in family:
            pool.conn.execute(
                "UPDATE datasets SET name=? WHERE id=?", (new + d.name[len(old) :], d.id)
            )
        moved = pool.dataset(new)
        if moved.kind == "volume":
            src = pool.volume_path(ds)
            if src.exists():
                src.rename(pool.volume_path(moved))
            return
        after = pool.mountpoint(moved)
        src_mnt = before[ds.id]
        if src_mnt is not None and after is not None and src_mnt != after and src_mnt.exists():
            after.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src_mnt), str(after))


def rollback(pool: Pool, snapshot: str, *, destroy_newer: bool) -> None:
    """``zfs rollback [-r]``: the live data becomes the snapshot's again."""
    with db.txg(pool.conn):
        snap = pool.snapshot(snapshot)
        ds = pool.dataset_by_id(snap.dataset)
        newer = [s for s in pool.snapshots(ds.id) if s.createtxg > snap.createtxg]
        marks = [b for b in pool.bookmarks(ds.id) if b.createtxg > snap.createtxg]
        if (newer or marks) and not destroy_newer:
            listing = "\n".join([s.name for s in newer] + [b.name for b in marks])
            raise DestinationHasSnapshots(
                f"cannot rollback to '{snapshot}': more recent snapshots or bookmarks exist\n"
                f"use '-r' to force deletion of the following snapshots and bookmarks:\n{listing}"
            )
        clones = [c for s in newer for c in pool.clones_of(s.id)]
        if clones:
            raise HasDependentClones(
                f"cannot rollback to '{snapshot}': clones of previous snapshots exist\n"
                "use '-R' to force deletion of the following clones and dependents:\n"
                + "\n".join(c.name for c in clones)
            )
        for s in newer:
            if pool.holds(s.id):
                raise DatasetBusy(held_message(s.name))
        for s in newer:
            drop_snapshot(pool, s)
        for b in marks:
            pool.conn.execute("DELETE FROM bookmarks WHERE id=?", (b.id,))
        if ds.crypt and not ds.crypt.get("loaded"):
            raise crypto_locked(ds.name)
        pool.install(ds, snap.manifest, mount=ds.mounted)
        pool.collect()
    log.info("sim.rolled_back", snapshot=snapshot, destroyed=len(newer))


def crypto_locked(name: str) -> InvalidOperation:
    return InvalidOperation(f"cannot rollback '{name}': encryption key not loaded")


def held_message(name: str) -> str:
    return (
        f"cannot destroy snapshot {name}: it's being held. "
        f"Run 'zfs holds -r {name}' to see holders."
    )


def drop_snapshot(pool: Pool, snap: Snapshot) -> None:
    pool.conn.execute("DELETE FROM holds WHERE snapshot=?", (snap.id,))
    pool.conn.execute("DELETE FROM snapshots WHERE id=?", (snap.id,))
