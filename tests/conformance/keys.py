"""Key scenarios: ``zfs change-key`` and the encryption roots it moves, on any backend.

The refusals are OpenZFS 2.3's (libzfs_crypto.c, zfs_crypto_rewrap): a clone cannot change its
key, the current key must be loaded, a dataset that inherits its key needs a keyformat to become
an encryption root of its own.
"""

from __future__ import annotations

import os

import pytest

from protocol.errors import InvalidOperation, KeyNotLoaded, ZfleetError
from tests.conformance.target import Subject, transfer
from workers.zfs.base import ReceiveSpec, SendSpec


def hexkey() -> bytes:
    return os.urandom(32).hex().encode() + b"\n"


def _encrypted(t: Subject, name: str, key: bytes) -> str:
    keyfile = t.files.scratch(f"{name}.key", key)
    ds = t.ds(name)
    t.backend.create(
        ds, props={"encryption": "on", "keyformat": "hex", "keylocation": f"file://{keyfile}"}
    )
    return ds


def _prop(t: Subject, name: str, prop: str) -> str:
    return t.backend.get(name, [prop])[prop].value


def _mount(t: Subject, name: str) -> None:
    # real load-key does not mount; the simulation's mounts what it unlocks
    if _prop(t, name, "mounted") == "no":
        t.backend.mount(name)


def _lock(t: Subject, name: str) -> None:
    t.backend.unmount(name)
    t.backend.unload_key(name)


def change_key_rewraps_root_and_children(t: Subject) -> None:
    """The root's new key opens it and the children that inherit it; the old key no longer."""
    old, new = hexkey(), hexkey()
    src = _encrypted(t, "ck", old)
    child = f"{src}/child"
    t.backend.create(child)
    t.files.write(child, "c.txt", b"child data\n")
    t.backend.snapshot([f"{src}@s1", f"{child}@s1"])
    t.backend.change_key(src, key=new, props={"keyformat": "hex"})
    assert _prop(t, src, "keylocation") == "prompt"
    assert _prop(t, child, "encryptionroot") == src
    _lock(t, src)
    assert _prop(t, child, "keystatus") == "unavailable"
    with pytest.raises(ZfleetError, match="Incorrect key"):
        t.backend.load_key(src, key=old)
    t.backend.load_key(src, key=new)
    assert _prop(t, child, "keystatus") == "available"
    _mount(t, src)
    _mount(t, child)
    assert t.files.read(child, "c.txt") == b"child data\n"


def change_key_makes_a_new_encryption_root(t: Subject) -> None:
    """A child that inherited its key becomes its own root, given a keyformat; -i undoes it."""
    src = _encrypted(t, "nr", hexkey())
    child = f"{src}/child"
    t.backend.create(child)
    with pytest.raises(InvalidOperation, match="Keyformat required"):
        t.backend.change_key(child, key=hexkey())
    own = hexkey()
    t.backend.change_key(child, key=own, props={"keyformat": "hex"})
    assert _prop(t, child, "encryptionroot") == child
    t.backend.change_key(child, inherit=True)
    assert _prop(t, child, "encryptionroot") == src
    with pytest.raises(InvalidOperation, match="encryption root"):
        t.backend.unload_key(child)
    with pytest.raises(InvalidOperation, match="only be performed on encryption roots"):
        t.backend.change_key(child, inherit=True)


def change_key_refused_on_clones_and_locked_keys(t: Subject) -> None:
    """A clone shares its origin's encryption root and key: it cannot change it."""
    src = _encrypted(t, "cl", hexkey())
    t.backend.snapshot([f"{src}@s1"])
    clone = t.ds("cl-clone")
    t.backend.clone(f"{src}@s1", clone)
    assert _prop(t, clone, "encryptionroot") == src
    with pytest.raises(InvalidOperation, match="Keys cannot be changed on clones"):
        t.backend.change_key(clone, key=hexkey(), props={"keyformat": "hex"})
    t.backend.unmount(clone)
    _lock(t, src)
    assert _prop(t, clone, "keystatus") == "unavailable"
    with pytest.raises(KeyNotLoaded):
        t.backend.change_key(src, key=hexkey(), props={"keyformat": "hex"})
    plain = t.ds("plain")
    t.backend.create(plain)
    with pytest.raises(InvalidOperation, match="not encrypted"):
        t.backend.change_key(plain, key=hexkey(), props={"keyformat": "hex"})


def raw_incremental_carries_the_new_key(t: Subject) -> None:
    """After change-key on the source, a raw replica opens with the new key once the next raw
    incremental arrived: the wrapped key travels in the stream, the data is never re-encrypted."""
    old, new = hexkey(), hexkey()
    src, dst = _encrypted(t, "rk", old), t.ds("rk-copy")
    t.files.write(src, "a.txt", b"before\n")
    t.backend.snapshot([f"{src}@s1"])
    transfer(t.backend, SendSpec(f"{src}@s1", raw=True), t.backend, ReceiveSpec(dst))
    assert _prop(t, dst, "keystatus") == "unavailable"
    t.backend.change_key(src, key=new, props={"keyformat": "hex"})
    t.files.write(src, "b.txt", b"after\n")
    t.backend.snapshot([f"{src}@s2"])
    spec = SendSpec(f"{src}@s2", from_snap=f"{src}@s1", raw=True)
    transfer(t.backend, spec, t.backend, ReceiveSpec(dst))
    assert _prop(t, dst, "keystatus") == "unavailable"
    with pytest.raises(ZfleetError, match="Incorrect key"):
        t.backend.load_key(dst, key=old)
    t.backend.load_key(dst, key=new)
    _mount(t, dst)
    assert t.files.read(dst, "b.txt") == b"after\n"


def create_with_key_on_stdin(t: Subject) -> None:
    """A new encryption root whose key is given on stdin (``keylocation=prompt``): no key file
    exists anywhere, and the key opens it after an unload."""
    key = hexkey()
    ds = t.ds("stdin")
    t.backend.create(ds, props={"encryption": "on", "keyformat": "hex"}, key=key)
    assert (_prop(t, ds, "keylocation"), _prop(t, ds, "encryptionroot")) == ("prompt", ds)
    t.files.write(ds, "f", b"typed\n")
    _lock(t, ds)
    with pytest.raises(ZfleetError, match="Incorrect key"):
        t.backend.load_key(ds, key=hexkey())
    t.backend.load_key(ds, key=key)
    _mount(t, ds)
    assert t.files.read(ds, "f") == b"typed\n"
