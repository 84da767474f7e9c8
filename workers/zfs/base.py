"""The one ZFS contract every backend keeps (real OpenZFS and the userspace simulation).

Names are full OpenZFS names: ``pool/a/b``, ``pool/a@snap``, ``pool/a#bookmark``. Every method
raises a :class:`protocol.errors.ZfsError` subclass on failure, never a dependency's exception.
Streams are never held whole in memory: ``send`` hands back a reader, ``receive`` a writer.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Mapping, Sequence
from typing import Protocol

# The value types live in protocol/zfs.py (one set for every part); re-exported for the backends.
from protocol.zfs import (
    ALL_TYPES,
    DiffChange,
    DiffEntry,
    ObjType,
    PoolInfo,
    PropertyValue,
    ReceiveResult,
    ReceiveSpec,
    SendSpec,
    ZfsObject,
)

__all__ = [
    "ALL_TYPES", "DiffChange", "DiffEntry", "ObjType", "PoolInfo", "PropertyValue",
    "ReceiveResult", "ReceiveSink", "ReceiveSpec", "SendSpec", "SendStream", "ZfsBackend",
    "ZfsObject",
]  # fmt: skip


class SendStream(Protocol):
    """A running ``zfs send``: read its bytes, then ``close`` (raises on a failed send)."""

    def read(self, n: int = -1) -> bytes: ...

    def close(self) -> None: ...

    def cancel(self) -> None: ...


class ReceiveSink(Protocol):
    """A running ``zfs receive``: write the stream, then ``finish`` (raises typed errors)."""

    def write(self, data: bytes) -> int: ...

    def finish(self) -> ReceiveResult: ...

    def abort(self) -> None:
        """Stop now; with ``-s`` the partial state stays on the target for a resume."""
        ...


class ZfsBackend(abc.ABC):
    """The operations zfleet's workers need from ZFS on one host.

    Annotations below say ``builtins.list`` because the method ``list`` shadows the builtin
    inside the class body.
    """

    name: str = "abstract"

    # -- inventory -----------------------------------------------------------------------
    @abc.abstractmethod
    def list(
        self,
        root: str | None = None,
        *,
        recursive: bool = True,
        types: Sequence[ObjType] = ALL_TYPES,
    ) -> list[ZfsObject]:
        """Datasets, snapshots and bookmarks under ``root`` (all pools when None)."""

    @abc.abstractmethod
    def pools(self) -> builtins.list[PoolInfo]: ...

    # -- datasets --------------------------------------------------------------------------
    @abc.abstractmethod
    def create(
        self,
        name: str,
        *,
        props: Mapping[str, str] | None = None,
        volsize: int | None = None,
        parents: bool = False,
        key: bytes | None = None,
    ) -> None:
        """``zfs create``; ``key`` is a new encryption root's key, given on stdin
        (``keylocation=prompt``) so it is never written to a file."""

    @abc.abstractmethod
    def destroy(self, name: str, *, recursive: bool = False, defer: bool = False) -> None: ...

    @abc.abstractmethod
    def snapshot(
        self,
        names: Sequence[str],
        *,
        recursive: bool = False,
        props: Mapping[str, str] | None = None,
    ) -> None:
        """Take all the snapshots in ``names`` atomically (one txg)."""

    @abc.abstractmethod
    def clone(
        self, snapshot: str, target: str, *, props: Mapping[str, str] | None = None
    ) -> None: ...

    @abc.abstractmethod
    def promote(self, name: str) -> None: ...

    @abc.abstractmethod
    def rename(self, old: str, new: str) -> None: ...

    @abc.abstractmethod
    def rollback(self, snapshot: str, *, destroy_newer: bool = False) -> None: ...

    @abc.abstractmethod
    def bookmark(self, snapshot: str, bookmark: str) -> None: ...

    # -- holds -------------------------------------------------------------------------------
    @abc.abstractmethod
    def hold(self, tag: str, snapshots: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def release(self, tag: str, snapshots: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def holds(self, snapshot: str) -> builtins.list[str]: ...

    def hold_times(self, snapshot: str) -> dict[str, int]:
        """Each hold's tag -> when it was placed (seconds since the epoch; 0 if not known)."""
        return dict.fromkeys(self.holds(snapshot), 0)

    # -- properties -----------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, name: str, props: Sequence[str] | None = None) -> dict[str, PropertyValue]:
        """Properties of ``name`` (all of them when ``props`` is None)."""

    @abc.abstractmethod
    def set(self, name: str, props: Mapping[str, str]) -> None: ...

    @abc.abstractmethod
    def inherit(self, name: str, prop: str) -> None: ...

    # -- streams ----------------------------------------------------------------------------
    @abc.abstractmethod
    def send(self, spec: SendSpec) -> SendStream: ...

    @abc.abstractmethod
    def estimate(self, spec: SendSpec) -> int:
        """``zfs send -nP``: the stream's size in bytes."""

    @abc.abstractmethod
    def receive(self, spec: ReceiveSpec) -> ReceiveSink: ...

    @abc.abstractmethod
    def abort_receive(self, target: str) -> None:
        """``zfs receive -A``: discard a partial receive's saved state."""

    @abc.abstractmethod
    def diff(self, snapshot: str, other: str) -> builtins.list[DiffEntry]:
        """``zfs diff``: files changed between a snapshot and a later snapshot or the dataset."""

    # -- encryption -------------------------------------------------------------------------
    @abc.abstractmethod
    def load_key(self, name: str, *, key: bytes | None = None) -> None: ...

    @abc.abstractmethod
    def unload_key(self, name: str) -> None: ...

    @abc.abstractmethod
    def change_key(
        self,
        name: str,
        *,
        key: bytes | None = None,
        props: Mapping[str, str] | None = None,
        inherit: bool = False,
    ) -> None:
        """``zfs change-key``: wrap ``name``'s master key under a new wrapping key.

        ``key`` is the new key material (read from stdin, ``keylocation=prompt``); without it
        the new ``keylocation`` is read. ``props`` may set ``keyformat``, ``keylocation`` and
        ``pbkdf2iters`` only. ``inherit`` is ``-i``: the encryption root takes its parent's key.
        The current key must be loaded; clones cannot change keys (they share their origin's).
        Data is not re-encrypted: the master key stays the same.
        """

    # -- mounts ---------------------------------------------------------------------------
    @abc.abstractmethod
    def mount(self, name: str) -> None:
        """``zfs mount NAME``: make a filesystem's files visible at its mountpoint."""

    @abc.abstractmethod
    def unmount(self, name: str) -> None:
        """``zfs unmount NAME``: the filesystem and the ones mounted below it."""

    @abc.abstractmethod
    def mounted(self) -> builtins.list[tuple[str, str]]:
        """(filesystem, mountpoint) of every mounted filesystem, as ``zfs mount`` lists them."""

    # -- helpers every backend gets -------------------------------------------------------
    def exists(self, name: str) -> bool:
        from protocol.errors import DatasetNotFound

        try:
            self.get(name, ["guid"])
        except DatasetNotFound:
            return False
        return True

    def mountpoint(self, name: str) -> str | None:
        """Where a filesystem is mounted, or None (volumes, unmounted or locked datasets)."""
        value = self.get(name, ["mountpoint"]).get("mountpoint")
        if value is None or value.value in ("-", "none", "legacy"):
            return None
        return value.value
