"""``zfs load-key`` / ``unload-key`` / ``change-key`` on simulated pools.

Unloading a key unmounts the dataset (its live data is kept as a head manifest, as a real
unmount keeps it on disk) and forgets the master key. Loading it with the right key unseals data
that arrived by raw receive (records and bonuses encrypted with the master key) and mounts.

Key state follows OpenZFS: a key is loaded, unloaded and changed on an *encryption root*, and the
datasets that share that root follow it: its descendants that inherit the key, and its clones
(a clone always shares its origin's master key, wherever the clone lives). ``change-key`` wraps
the same master key under a new wrapping key: data is not re-encrypted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from protocol.errors import InvalidOperation, KeyNotLoaded

from . import crypto, db
from .blocks import HOLE
from .nodes import Manifest, Node, decode_manifest, encode_manifest
from .pool import Dataset, Pool

CHANGE_PROPS = ("keyformat", "keylocation", "pbkdf2iters")


def root_of(ds: Dataset) -> str:
    """The dataset's encryption root (its own name for a root)."""
    assert ds.crypt is not None
    return str(ds.crypt.get("root") or ds.name)


def load_key(pool: Pool, name: str, key: bytes | None) -> None:
    """Unwrap the master key with ``key`` (or the keylocation file) and mount the data."""
    with db.txg(pool.conn):
        ds = pool.dataset(name)
        if not ds.crypt:
            raise InvalidOperation(f"Key load error: '{name}' is not encrypted.")
        if root_of(ds) != name:
            raise InvalidOperation(
                f"Key load error: Keys must be loaded for encryption root of '{name}' "
                f"({root_of(ds)})."
            )
        if ds.crypt.get("loaded"):
            raise InvalidOperation(f"Key load error: Key already loaded for '{name}'.")
        if key is None:
            key = _key_from_location(pool, ds, "Key load error")
        material = crypto.KeyMaterial.from_json(ds.crypt)
        wrap = crypto.wrapping_key(name, material.keyformat, key, material.salt, material.iters)
        for member in key_family(pool, ds):
            assert member.crypt is not None
            master = crypto.unwrap_with(name, crypto.KeyMaterial.from_json(member.crypt), wrap)
            crypt: dict[str, Any] = {**member.crypt, "loaded": master.hex(), "wkey": wrap.hex()}
            if crypt.get("sealed"):
                _unseal_all(pool, member, master)
                crypt["sealed"] = False
            crypt.setdefault("root", name)
            _store(pool, member, crypt)
            fresh = pool.dataset_by_id(member.id)
            if fresh.head is not None:
                pool.conn.execute("UPDATE datasets SET mounted=1 WHERE id=?", (member.id,))
                fresh = pool.dataset_by_id(member.id)
                pool.install(fresh, decode_manifest(fresh.head or b""), mount=True)


def unload_key(pool: Pool, name: str) -> None:
    """Unmount and forget the master key; the data stays, unreadable until load_key."""
    with db.txg(pool.conn):
        ds = pool.dataset(name)
        if not ds.crypt:
            raise InvalidOperation(f"Key unload error: '{name}' is not encrypted.")
        if root_of(ds) != name:
            raise InvalidOperation(
                f"Key unload error: Keys must be unloaded for encryption root of '{name}' "
                f"({root_of(ds)})."
            )
        if not ds.crypt.get("loaded"):
            raise InvalidOperation(f"Key unload error: Key already unloaded for '{name}'.")
        for member in key_family(pool, ds):
            pool.unmount(member)
            fresh = pool.dataset_by_id(member.id)
            crypt = dict(fresh.crypt or {})
            if not crypt.get("sealed") and crypt.get("loaded"):
                # data at rest is ciphertext once the key is gone, as on disk: a raw send of a
                # locked dataset needs no key, and nothing readable stays behind
                _transform_all(pool, fresh, bytes.fromhex(str(crypt["loaded"])), seal_manifest)
                crypt["sealed"] = True
            _store(pool, fresh, {**crypt, "loaded": None, "wkey": None})
        pool.collect()


def change_key(
    pool: Pool,
    name: str,
    *,
    key: bytes | None,
    props: Mapping[str, str],
    inherit: bool,
) -> None:
    """``zfs change-key [-i] [-o keyformat=|keylocation=|pbkdf2iters=]``.

    Without ``inherit``: the dataset's master key (and every dataset sharing its encryption
    root) is wrapped under a new wrapping key made from ``key``; a dataset that inherited its
    key becomes an encryption root of its own. With ``inherit``: an encryption root takes its
    parent's wrapping key and encryption root.
    """
    fail = "Key change error"
    with db.txg(pool.conn):
        ds = pool.dataset(name)
        if not ds.crypt:
            raise InvalidOperation(f"{fail}: Dataset not encrypted.")
        if ds.origin is not None:
            raise InvalidOperation(f"{fail}: Keys cannot be changed on clones.")
        bad = sorted(set(props) - set(CHANGE_PROPS))
        if bad:
            raise InvalidOperation(
                f"{fail}: Only keyformat, keylocation and pbkdf2iters may be set with this command."
            )
        is_root = root_of(ds) == name
        if inherit:
            if props or key is not None:
                raise InvalidOperation("Properties not allowed for inheriting")
            parent = _inherit_checks(pool, ds, is_root, fail)
        else:
            parent = None
            if not is_root and "keyformat" not in props:
                raise InvalidOperation(f"{fail}: Keyformat required for new encryption root.")
        if not ds.crypt.get("loaded"):
            raise KeyNotLoaded(f"{fail}: Key must be loaded.")
        family = key_family(pool, ds)
        if parent is not None:
            _inherit(pool, family, parent)
            pool.conn.execute(
                "UPDATE datasets SET props=? WHERE id=?",
                (json.dumps({k: v for k, v in ds.props.items() if k not in CHANGE_PROPS}), ds.id),
            )
            return
        _rewrap(pool, ds, family, key=key, props=props, fail=fail)


def _inherit_checks(pool: Pool, ds: Dataset, is_root: bool, fail: str) -> Dataset:
    if not is_root:
        raise InvalidOperation(
            f"{fail}: Key inheritting can only be performed on encryption roots."
        )
    if "/" not in ds.name:
        raise InvalidOperation(f"{fail}: Root dataset cannot inherit key.")
    parent = pool.dataset(ds.name.rpartition("/")[0])
    if not parent.crypt:
        raise InvalidOperation(f"{fail}: Parent must be encrypted.")
    if not parent.crypt.get("loaded"):
        raise KeyNotLoaded(f"{fail}: Parent key must be loaded.")
    return parent


def _inherit(pool: Pool, family: list[Dataset], parent: Dataset) -> None:
    assert parent.crypt is not None
    wkey = parent.crypt.get("wkey")
    if not wkey:
        raise KeyNotLoaded("Key change error: Parent key must be loaded.")
    wrap = bytes.fromhex(str(wkey))
    for member in family:
        assert member.crypt is not None
        master = bytes.fromhex(str(member.crypt["loaded"]))
        crypt = {
            **member.crypt,
            "keyformat": parent.crypt["keyformat"],
            "salt": parent.crypt["salt"],
            "iters": parent.crypt["iters"],
            "wrapped": crypto.wrap_master(wrap, master).hex(),
            "root": root_of(parent),
            "wkey": wkey,
        }
        _store(pool, member, crypt)


def _rewrap(
    pool: Pool,
    ds: Dataset,
    family: list[Dataset],
    *,
    key: bytes | None,
    props: Mapping[str, str],
    fail: str,
) -> None:
    assert ds.crypt is not None
    keyformat = props.get("keyformat", str(ds.crypt.get("keyformat", "none")))
    if keyformat not in ("raw", "hex", "passphrase"):
        raise InvalidOperation(f"{fail}: Invalid properties for key change.")
    location = props.get("keylocation") or ds.props.get("keylocation") or "prompt"
    if location != "prompt" and not location.startswith("file://"):
        raise InvalidOperation(f"{fail}: Invalid properties for key change.")
    iters = int(props.get("pbkdf2iters", "0") or 0)
    if keyformat == "passphrase":
        iters = iters or int(ds.crypt.get("iters") or 0) or crypto.DEFAULT_ITERS
        if iters < crypto.MIN_ITERS:
            raise InvalidOperation(f"{fail}: Minimum pbkdf2iters is {crypto.MIN_ITERS}.")
    else:
        iters = 0
    if key is None:
        key = _read_location(location, fail)
    salt = os.urandom(8)
    wrap = crypto.wrapping_key(ds.name, keyformat, key, salt, iters)
    for member in family:
        assert member.crypt is not None
        master = bytes.fromhex(str(member.crypt["loaded"]))
        crypt = {
            **member.crypt,
            "keyformat": keyformat,
            "salt": salt.hex(),
            "iters": iters,
            "wrapped": crypto.wrap_master(wrap, master).hex(),
            "root": ds.name,
            "wkey": wrap.hex(),
        }
        _store(pool, member, crypt)
    local = {k: v for k, v in ds.props.items() if k not in CHANGE_PROPS}
    local["keylocation"] = location
    if keyformat == "passphrase":
        local["pbkdf2iters"] = str(iters)
    pool.conn.execute("UPDATE datasets SET props=? WHERE id=?", (json.dumps(local), ds.id))


def key_family(pool: Pool, ds: Dataset) -> list[Dataset]:
    """``ds`` and the datasets that follow its key: descendants and clones sharing its root."""
    root = root_of(ds)
    out: list[Dataset] = []
    seen: set[int] = set()
    todo = [ds]
    while todo:
        member = todo.pop()
        if member.id in seen or not member.crypt or root_of(member) != root:
            continue
        seen.add(member.id)
        out.append(member)
        todo.extend(pool.descendants(member.name))
        for snap in pool.snapshots(member.id):
            todo.extend(pool.clones_of(snap.id))
    return out


def update_from_stream(pool: Pool, ds: Dataset, material: Mapping[str, Any]) -> None:
    """A raw incremental carries the source's wrapped key: an encryption root takes it on, so
    a ``change-key`` on the source reaches its raw replicas with the next send."""
    if not ds.crypt or root_of(ds) != ds.name:
        return
    if all(ds.crypt.get(k) == material[k] for k in ("keyformat", "salt", "iters", "wrapped")):
        return
    for member in key_family(pool, ds):
        fields = {k: material[k] for k in ("keyformat", "salt", "iters", "wrapped")}
        _store(pool, member, {**(member.crypt or {}), **fields, "wkey": None})


def _store(pool: Pool, ds: Dataset, crypt: Mapping[str, Any]) -> None:
    pool.conn.execute("UPDATE datasets SET crypt=? WHERE id=?", (json.dumps(dict(crypt)), ds.id))


def _key_from_location(pool: Pool, ds: Dataset, fail: str) -> bytes:
    location = ds.props.get("keylocation") or ds.received.get("keylocation") or "prompt"
    if not location.startswith("file://"):
        raise InvalidOperation(f"{fail}: no key given for '{ds.name}' (keylocation={location})")
    return _read_location(location, fail)


def _read_location(location: str, fail: str) -> bytes:
    if not location.startswith("file://"):
        raise InvalidOperation(f"{fail}: no key given (keylocation={location})")
    try:
        with open(location[len("file://") :], "rb") as fp:
            return fp.read()
    except OSError as exc:
        raise InvalidOperation(f"{fail}: Failed to open key material file: {exc.strerror}") from exc


def _unseal_all(pool: Pool, ds: Dataset, master: bytes) -> None:
    """Turn a sealed dataset's manifests into plain ones (same guids)."""
    _transform_all(pool, ds, master, unseal_manifest)


def _transform_all(
    pool: Pool,
    ds: Dataset,
    master: bytes,
    fn: Callable[[Pool, Manifest, bytes, dict[bytes, bytes]], Manifest],
) -> None:
    cache: dict[bytes, bytes] = {}
    for snap in pool.snapshots(ds.id):
        out = fn(pool, snap.manifest, master, cache)
        pool.conn.execute(
            "UPDATE snapshots SET manifest=? WHERE id=?", (encode_manifest(out), snap.id)
        )
    if ds.head is not None:
        out = fn(pool, decode_manifest(ds.head), master, cache)
        pool.conn.execute("UPDATE datasets SET head=? WHERE id=?", (encode_manifest(out), ds.id))
    for mark in pool.bookmarks(ds.id):
        out = fn(pool, mark.manifest, master, cache)
        pool.conn.execute(
            "UPDATE bookmarks SET manifest=? WHERE id=?", (encode_manifest(out), mark.id)
        )


def seal_manifest(
    pool: Pool, manifest: Manifest, master: bytes, done: dict[bytes, bytes]
) -> Manifest:
    """Encrypt each node (bonus and records) as a raw send would carry it."""
    store = pool.objects
    todo = [d for d in manifest.values() if d not in done]
    nodes = store.get_many(todo) if todo else {}
    for digest, node in nodes.items():
        blocks = tuple(
            HOLE if b == HOLE else store.blocks.put(crypto.seal(master, store.blocks.get(b)))
            for b in node.blocks
        )
        sealed = Node(crypto.seal(master, node.bonus), blocks)
        done[digest] = store.put(sealed, node.allocated())
    return {obj: done[d] for obj, d in manifest.items()}


def unseal_manifest(
    pool: Pool, manifest: Manifest, master: bytes, done: dict[bytes, bytes]
) -> Manifest:
    """Decrypt each node (bonus and records) of a sealed manifest into the store."""
    store = pool.objects
    todo = [d for d in manifest.values() if d not in done]
    nodes = store.get_many(todo) if todo else {}
    for digest, node in nodes.items():
        bonus = crypto.unseal(master, node.bonus)
        blocks = []
        for block in node.blocks:
            if block == HOLE:
                blocks.append(HOLE)
            else:
                blocks.append(store.blocks.put(crypto.unseal(master, store.blocks.get(block))))
        plain = Node(bonus, tuple(blocks))
        done[digest] = store.put(plain, plain.allocated())
    return {obj: done[d] for obj, d in manifest.items()}
