"""Sealed logs: each period its own encryption root, its key sealed to an archive public key.

    ROOT                 plain container (``zfleet:kind=log``); user properties: the archive
                         public key and the current period
    ROOT/keys            plain dataset of sealed boxes, ``PERIOD.box``: replicated like any
                         dataset (a box opens with the archive private key only)
    ROOT/p-PERIOD        one period: a new encryption root whose random key exists only in this
                         process while the dataset is created; it is sealed to the archive key
                         at once, never written in clear, and given to ZFS on stdin

Writers write into the current period's mountpoint. ``roll`` snapshots the current period
(``@closed``), unmounts it and unloads its key, so this host can no longer read it; then it
opens the next period. Closed periods replicate raw (they are encrypted), so targets and the
store hold ciphertext. ``open`` (anywhere the period and its box are) opens the box with the
archive *private* key and runs ``zfs load-key``: nothing else can.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import structlog

from protocol.errors import ConfigError, DatasetNotFound, InvalidOperation
from protocol.names import validate_dataset
from protocol.sealed import KEY_LEN, KeyPair, SealError, open_box, seal
from workers import hostfiles
from workers.zfs.base import ObjType, ZfsBackend

log = structlog.get_logger(__name__)

ARCHIVE_PROP: Final = "zfleet:log-archive"
CURRENT_PROP: Final = "zfleet:log-current"
KIND_PROP: Final = "zfleet:kind"
CLOSED: Final = "closed"
PERIOD_FORMAT: Final = "%Y%m%dT%H%M%SZ"


def box_context(root: str, period: str) -> str:
    """Bound to the log's own name and period (not its pool: a replica has other names)."""
    return f"zfleet log {root.rsplit('/', 1)[-1]} period {period}"


def period_dataset(root: str, period: str) -> str:
    return f"{root}/p-{period}"


def init(
    be: ZfsBackend,
    root: str,
    archive_public: bytes,
    *,
    now: float | None = None,
    exec_prefix: Sequence[str] = (),
) -> str:
    """Make the log's container and keys dataset and open its first period; the period name."""
    validate_dataset(root)
    if len(archive_public) != KEY_LEN:
        raise ConfigError(f"an archive public key is {KEY_LEN} bytes (X25519)")
    if be.exists(root):
        raise ConfigError(f"{root} exists: a log is made new (zfleet logs init)")
    be.create(root, parents=True, props={KIND_PROP: "log", ARCHIVE_PROP: archive_public.hex()})
    be.create(f"{root}/keys")
    return _open_period(be, root, archive_public, now, exec_prefix)


def _archive_key(be: ZfsBackend, root: str) -> bytes:
    value = be.get(root, [ARCHIVE_PROP]).get(ARCHIVE_PROP)
    if value is None or value.value in ("", "-"):
        raise ConfigError(f"{root} is not a sealed log (no {ARCHIVE_PROP})")
    return bytes.fromhex(value.value)


def current(be: ZfsBackend, root: str) -> str:
    value = be.get(root, [CURRENT_PROP]).get(CURRENT_PROP)
    if value is None or value.value in ("", "-"):
        raise ConfigError(f"{root} has no open period")
    return value.value


def _open_period(
    be: ZfsBackend,
    root: str,
    archive_public: bytes,
    now: float | None,
    exec_prefix: Sequence[str],
) -> str:
    when = time.time() if now is None else now
    period = time.strftime(PERIOD_FORMAT, time.gmtime(when))
    n = 1
    while be.exists(period_dataset(root, period)):  # two rolls in one second
        n += 1
        period = time.strftime(PERIOD_FORMAT, time.gmtime(when)) + f"-{n}"
    key = os.urandom(32).hex().encode()
    box = seal(archive_public, key, box_context(root, period))
    keys_dir = be.mountpoint(f"{root}/keys")
    if keys_dir is None:
        raise InvalidOperation(f"{root}/keys is not mounted")
    # the box first: a period whose key was not kept sealed must never take writes
    hostfiles.write_bytes(exec_prefix, Path(keys_dir, f"{period}.box"), box)
    be.create(period_dataset(root, period), key=key,
              props={"encryption": "on", "keyformat": "hex", "keylocation": "prompt"})  # fmt: skip
    del key  # the only clear copy is in ZFS now (kernel memory), until roll unloads it
    be.snapshot([f"{root}/keys@{period}"])
    be.set(root, {CURRENT_PROP: period})
    log.info("logs.period_opened", root=root, period=period)
    return period


def roll(
    be: ZfsBackend, root: str, *, now: float | None = None, exec_prefix: Sequence[str] = ()
) -> tuple[str, str]:
    """Close the current period (snapshot, unmount, unload its key) and open the next."""
    archive = _archive_key(be, root)
    closing = current(be, root)
    ds = period_dataset(root, closing)
    be.snapshot([f"{ds}@{CLOSED}"])
    if be.get(ds, ["mounted"])["mounted"].value == "yes":
        be.unmount(ds)
    be.unload_key(ds)
    opened = _open_period(be, root, archive, now, exec_prefix)
    log.info("logs.rolled", root=root, closed=closing, opened=opened)
    return closing, opened


def periods(be: ZfsBackend, root: str) -> list[tuple[str, str]]:
    """(period, keystatus) of every period dataset under ``root``, oldest first."""
    out = []
    for obj in be.list(root, types=(ObjType.FILESYSTEM,)):
        short = obj.name[len(root) + 1 :]
        if short.startswith("p-") and "/" not in short:
            out.append((short[2:], obj.keystatus or "-"))
    return sorted(out)


@contextmanager
def _keys_files(be: ZfsBackend, root: str) -> Iterator[Path]:
    """The keys dataset's files: its mountpoint, or (an unmounted replica) its newest snapshot
    through a temporary read-only clone."""
    keys_ds = f"{root}/keys"
    where = be.mountpoint(keys_ds) if be.get(keys_ds, ["mounted"])["mounted"].value == "yes" \
        else None  # fmt: skip
    if where is not None:
        yield Path(where)
        return
    snaps = be.list(keys_ds, recursive=False, types=(ObjType.SNAPSHOT,))
    if not snaps:
        raise DatasetNotFound(f"{keys_ds} has no snapshots: no sealed keys here")
    newest = max(snaps, key=lambda o: o.createtxg)
    scratch = f"{root}/keys-read-{os.getpid()}"
    be.clone(newest.name, scratch, props={"readonly": "on"})
    try:
        mp = be.mountpoint(scratch)
        if mp is None:
            raise InvalidOperation(f"{scratch} did not mount")
        yield Path(mp)
    finally:
        be.destroy(scratch)


def open_period(
    be: ZfsBackend, root: str, period: str, archive: KeyPair, exec_prefix: Sequence[str] = ()
) -> str | None:
    """Open the period's box with the archive private key, load its key and mount it; the
    mountpoint (None for a dataset that does not mount)."""
    ds = period_dataset(root, period)
    with _keys_files(be, root) as files:
        box = hostfiles.read_bytes(exec_prefix, files / f"{period}.box")
        if box is None:
            raise DatasetNotFound(f"no sealed key for period {period} in {root}/keys")
    try:
        key = open_box(archive, box, box_context(root, period))
    except SealError:
        raise ConfigError(f"the archive key given does not open period {period}'s key") from None
    state = be.get(ds, ["keystatus", "encryptionroot", "mounted"])
    if state["keystatus"].value != "available":
        be.load_key(ds, key=key)
    if be.get(ds, ["mounted"])["mounted"].value == "no":
        be.mount(ds)
    log.info("logs.period_opened_for_reading", root=root, period=period)
    return be.mountpoint(ds)
