"""``zfs load-key`` / ``unload-key`` on simulated pools.

Unloading a key unmounts the dataset (its live data is kept as a head manifest, as a real
unmount keeps it on disk) and forgets the master key. Loading it with the right key unseals data
that arrived by raw receive (records and bonuses encrypted with the master key) and mounts.
"""

from __future__ import annotations

import json
from typing import Any

from protocol.errors import InvalidOperation

from . import crypto, db
from .blocks import HOLE
from .nodes import Manifest, Node, decode_manifest, encode_manifest
from .pool import Dataset, Pool


def load_key(pool: Pool, name: str, key: bytes | None) -> None:
    """Unwrap the master key with ``key`` (or the keylocation file) and mount the data."""
    with db.txg(pool.conn):
        ds = pool.dataset(name)
        if not ds.crypt:
            raise InvalidOperation(
                f"Key load error: Keys can only be loaded for encrypted "
                f"datasets: '{name}' is not encrypted."
            )
        if ds.crypt.get("loaded"):
            raise InvalidOperation(f"Key load error: Key already loaded for '{name}'.")
        if key is None:
            location = ds.props.get("keylocation") or ds.received.get("keylocation") or "prompt"
            if not location.startswith("file://"):
                raise InvalidOperation(
                    f"Key load error: no key given for '{name}' (keylocation={location})"
                )
            try:
                with open(location[len("file://") :], "rb") as fp:
                    key = fp.read()
            except OSError as exc:
                raise InvalidOperation(
                    f"Key load error: Failed to open key material file: {exc.strerror}"
                ) from exc
        material = crypto.KeyMaterial.from_json(ds.crypt)
        master = crypto.unwrap(name, material, key)
        root = ds.crypt.get("root", name)
        for member in _sharing_key(pool, ds):
            crypt: dict[str, Any] = {**(member.crypt or {}), "loaded": master.hex()}
            if crypt.get("sealed"):
                _unseal_all(pool, member, master)
                crypt["sealed"] = False
            crypt.setdefault("root", root)
            pool.conn.execute(
                "UPDATE datasets SET crypt=? WHERE id=?", (json.dumps(crypt), member.id)
            )
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
        if not ds.crypt.get("loaded"):
            raise InvalidOperation(f"Key unload error: Key already unloaded for '{name}'.")
        for member in _sharing_key(pool, ds):
            pool.unmount(member)
            crypt = {**(member.crypt or {}), "loaded": None}
            pool.conn.execute(
                "UPDATE datasets SET crypt=? WHERE id=?", (json.dumps(crypt), member.id)
            )


def _sharing_key(pool: Pool, ds: Dataset) -> list[Dataset]:
    """The dataset and its descendants that inherit its encryption root."""
    assert ds.crypt is not None
    root = ds.crypt.get("root", ds.name)
    return [ds] + [
        d for d in pool.descendants(ds.name) if d.crypt and d.crypt.get("root", d.name) == root
    ]


def _unseal_all(pool: Pool, ds: Dataset, master: bytes) -> None:
    """Turn a raw-received dataset's sealed manifests into plain ones (same guids)."""
    cache: dict[bytes, bytes] = {}
    for snap in pool.snapshots(ds.id):
        plain = unseal_manifest(pool, snap.manifest, master, cache)
        pool.conn.execute(
            "UPDATE snapshots SET manifest=? WHERE id=?", (encode_manifest(plain), snap.id)
        )
    if ds.head is not None:
        plain = unseal_manifest(pool, decode_manifest(ds.head), master, cache)
        pool.conn.execute("UPDATE datasets SET head=? WHERE id=?", (encode_manifest(plain), ds.id))
    for mark in pool.bookmarks(ds.id):
        plain = unseal_manifest(pool, mark.manifest, master, cache)
        pool.conn.execute(
            "UPDATE bookmarks SET manifest=? WHERE id=?", (encode_manifest(plain), mark.id)
        )


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
