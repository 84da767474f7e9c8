"""Ephemeral datasets: a shared base read as it is, every new byte under the user's own key.

ZFS cannot do this with one dataset: a clone always shares its origin's master key and
encryption root, and ``zfs change-key`` refuses clones. So an ephemeral NAME is layered:

    POOL/ephemeral/NAME         plain container; its user properties record how it was made
    POOL/ephemeral/NAME/lower   ``zfs clone BASE@SNAP``, readonly=on: the base's blocks, shared
    POOL/ephemeral/NAME/upper   a new encryption root (keyformat=hex, the user's key or the key
                                group's, given on stdin): ``data/`` and ``work/``
    merged view                 overlayfs: lowerdir=lower, upperdir=upper/data, workdir=upper/work

Reads fall through to the base; writes, new files, renames and deletions (whiteouts) land in
the upper dataset, so they are encrypted under the user's key, never the base's. ``discard``
unmounts and destroys both layers and makes them again from the same base and key source:
everything written is gone at once.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from protocol.errors import ConfigError, DatasetExists, DatasetNotFound, InvalidOperation
from protocol.kinds import KEY_GROUP_PROPERTY
from protocol.names import pool_of, validate_component, validate_snapshot
from workers import hostfiles
from workers.zfs.base import ZfsBackend

log = structlog.get_logger(__name__)

PARENT: Final = "ephemeral"
BASE_PROP: Final = "zfleet:ephemeral-base"
KEY_PROP: Final = "zfleet:ephemeral-key"  # "group:NAME" or "file:PATH", never the key itself
KIND_PROP: Final = "zfleet:kind"


@dataclass(frozen=True)
class Layout:
    pool: str
    name: str

    @property
    def top(self) -> str:
        return f"{self.pool}/{PARENT}/{self.name}"

    @property
    def lower(self) -> str:
        return f"{self.top}/lower"

    @property
    def upper(self) -> str:
        return f"{self.top}/upper"


def layout(base: str, name: str) -> Layout:
    validate_snapshot(base, existing=True)
    validate_component(name, what="ephemeral name")
    return Layout(pool_of(base), name)


def key_from_file(path: Path) -> bytes:
    """A 32-byte key as 64 hex digits (``keyformat=hex``), from a file holding either form."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
    text = raw.strip()
    if len(text) == 64 and all(c in b"0123456789abcdefABCDEF" for c in text):
        return text.lower()
    if len(raw) == 32:
        return raw.hex().encode()
    raise ConfigError(f"{path}: a key file holds 32 bytes or 64 hex digits")


def create(
    be: ZfsBackend,
    base: str,
    name: str,
    *,
    key: bytes,
    key_source: str,
    mount_at: Path | None,
    exec_prefix: Sequence[str] = (),
) -> Layout:
    """Make NAME's two layers (and mount the merged view at ``mount_at`` when given)."""
    lay = layout(base, name)
    if be.exists(lay.top):
        raise DatasetExists(f"ephemeral {name} exists ({lay.top}); discard or destroy it first")
    be.get(base, ["guid"])  # DatasetNotFound before anything is made
    props = {BASE_PROP: base, KEY_PROP: key_source, KIND_PROP: "ephemeral"}
    if key_source.startswith("group:"):  # what a kind's key_group policy checks
        props[KEY_GROUP_PROPERTY] = key_source.removeprefix("group:")
    be.create(lay.top, parents=True, props=props)
    _layers(be, lay, base, key, exec_prefix)
    if mount_at is not None:
        mount(be, lay, mount_at, exec_prefix)
    log.info("ephemeral.created", name=name, base=base, key_source=key_source.partition(":")[0])
    return lay


def _layers(
    be: ZfsBackend, lay: Layout, base: str, key: bytes, exec_prefix: Sequence[str] = ()
) -> None:
    be.clone(base, lay.lower, props={"readonly": "on"})
    be.create(lay.upper, props={"encryption": "on", "keyformat": "hex",
                                "keylocation": "prompt"}, key=key)  # fmt: skip
    upper = _mnt(be, lay.upper)
    hostfiles.mkdirs(exec_prefix, upper / "data", upper / "work")


def _mnt(be: ZfsBackend, ds: str) -> Path:
    where = be.mountpoint(ds)
    if where is None:
        raise InvalidOperation(f"{ds} is not mounted")
    return Path(where)


def mount(be: ZfsBackend, lay: Layout, at: Path, exec_prefix: Sequence[str] = ()) -> None:
    """The merged view: overlayfs over the base clone and the encrypted upper layer (on the
    host ``exec_prefix`` reaches, as for the real backend: ``ssh root@host``)."""
    lower, upper = _mnt(be, lay.lower), _mnt(be, lay.upper)
    opts = f"lowerdir={lower},upperdir={upper / 'data'},workdir={upper / 'work'}"
    hostfiles.mkdirs(exec_prefix, at)
    argv = ["mount", "-t", "overlay", f"zfleet-{lay.name}", "-o", opts, str(at)]
    hostfiles.run(exec_prefix, argv)


def unmount(at: Path, exec_prefix: Sequence[str] = ()) -> None:
    if exec_prefix:
        quoted = shlex.quote(str(at))
        hostfiles.run(exec_prefix, ["sh", "-c", f"! mountpoint -q {quoted} || umount {quoted}"])
    elif os.path.ismount(at):
        hostfiles.run((), ["umount", str(at)])


def recorded(be: ZfsBackend, pool: str, name: str) -> tuple[Layout, str, str]:
    """(layout, base, key source) of an existing ephemeral, from its user properties."""
    lay = Layout(pool, name)
    try:
        props = be.get(lay.top, [BASE_PROP, KEY_PROP])
    except DatasetNotFound:
        raise ConfigError(f"no ephemeral {name} in pool {pool}") from None
    base, source = props.get(BASE_PROP), props.get(KEY_PROP)
    if base is None or source is None or base.value == "-" or source.value == "-":
        raise ConfigError(f"{lay.top} is not an ephemeral made by zfleet")
    return lay, base.value, source.value


def discard(be: ZfsBackend, pool: str, name: str, *, key: bytes | None, mount_at: Path | None,
            recreate: bool = True, exec_prefix: Sequence[str] = ()) -> Layout:  # fmt: skip
    """Throw away everything written: both layers destroyed, then made again (same base and
    key source) unless ``recreate`` is False, in which case NAME is gone entirely."""
    lay, base, _ = recorded(be, pool, name)
    if mount_at is not None:
        unmount(mount_at, exec_prefix)
    for ds in (lay.upper, lay.lower):
        if be.exists(ds):
            be.destroy(ds, recursive=True)
    if not recreate:
        be.destroy(lay.top, recursive=True)
        log.info("ephemeral.destroyed", name=name)
        return lay
    if key is None:
        raise ConfigError("re-creating needs the key (from the key file or the key group)")
    _layers(be, lay, base, key, exec_prefix)
    if mount_at is not None:
        mount(be, lay, mount_at, exec_prefix)
    log.info("ephemeral.discarded", name=name, base=base)
    return lay
