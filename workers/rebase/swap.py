"""Putting a new dataset in an image's place, and back, with every step undoable.

The swap (chosen over "same name plus a snapshot": a clone of another base cannot become the
old dataset, so the old one must step aside under a new name):

1. the image is renamed to ``NAME.pre-rebase-<UTC time>`` (the backup: all its snapshots and
   blocks kept); an explicit mountpoint ``/m`` moves with it to ``/m.pre-rebase-<time>``;
2. the new clone is renamed to ``NAME``, then gets the image's mountpoint (``/m``, or inherited
   as before).

Properties the image set itself (source local or received: ``zfleet:*`` and other user
properties, quotas, compression, readonly...) were copied onto the clone before. The image and
its backup point at each other through ``zfleet:rebase-backup`` / ``zfleet:rebase-backup-of``,
so :func:`workers.rebase.apply.undo` can swap back. Each step pushes its inverse on an
:class:`Undo` stack: a failure part-way unwinds it, and names and mountpoints are as before.
"Atomic" is meant as all or nothing: ZFS has no rename-exchange, so for the moment between the
two renames the name is absent, which is why the before hook stops the image's users first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import structlog

from protocol.errors import ZfleetError, ZfsError
from workers.zfs.base import ZfsBackend

log = structlog.get_logger(__name__)

BACKUP_PROP: Final = "zfleet:rebase-backup"  # on a rebased image: its backup's name
BACKUP_OF_PROP: Final = "zfleet:rebase-backup-of"  # on a backup: the image it was
EXPLICIT: Final = ("local", "received")
# Properties that cannot be set on an existing dataset, or that the swap itself handles.
NOT_CARRIED: Final = frozenset(
    {
        "mountpoint",
        "encryption",
        "keyformat",
        "keylocation",
        "pbkdf2iters",
        "casesensitivity",
        "normalization",
        "utf8only",
        "volblocksize",
        "volsize",
        "origin",
        BACKUP_PROP,
        BACKUP_OF_PROP,
    }
)


def stamp(now: float | None = None) -> str:
    """A UTC time for names: ``20261202T161500Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def free_name(
    backend: ZfsBackend, wanted: str, taken: Callable[[str], bool] = lambda _name: False
) -> str:
    """``wanted``, or ``wanted-2``, ``-3``... the first that does not exist (and that
    ``taken`` does not refuse: a directory already where it would be mounted)."""
    name, n = wanted, 1
    while backend.exists(name) or taken(name):
        n += 1
        name = f"{wanted}-{n}"
    return name


class Undo:
    """A stack of inverse steps, run newest first by :meth:`unwind`."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, step: Callable[[], None]) -> None:
        self._steps.append((what, step))

    def unwind(self) -> list[str]:
        """Run every inverse; returns the ones that failed (with why), so nothing is hidden."""
        failed = []
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except (ZfleetError, OSError) as exc:
                failed.append(f"{what}: {exc}")
                log.error("rebase.undo_failed", step=what, error=str(exc))
        return failed

    def clear(self) -> None:
        self._steps.clear()


def explicit_mountpoint(backend: ZfsBackend, name: str) -> str | None:
    """The mountpoint ``name`` sets itself (local or received), or None when inherited."""
    value = backend.get(name, ["mountpoint"]).get("mountpoint")
    if value is None or value.source not in EXPLICIT:
        return None
    return value.value


def carried_props(backend: ZfsBackend, image: str) -> dict[str, str]:
    """The properties ``image`` sets itself that a new dataset in its place must set too."""
    return {
        k: v.value
        for k, v in backend.get(image).items()
        if v.source in EXPLICIT and k not in NOT_CARRIED
    }


def exchange(backend: ZfsBackend, live: str, spare: str, aside: str, undo: Undo) -> None:
    """Move ``live`` to ``aside`` and ``spare`` into ``live``'s name and mountpoint."""
    mountpoint = explicit_mountpoint(backend, live)
    backend.rename(live, aside)
    undo.push(f"rename {aside} back to {live}", lambda: backend.rename(aside, live))
    if mountpoint is not None and mountpoint not in ("none", "legacy"):
        backend.set(aside, {"mountpoint": mountpoint + aside[len(live) :]})
        undo.push(
            f"mountpoint of {aside} back to {mountpoint}",
            lambda: backend.set(aside, {"mountpoint": mountpoint}),
        )
    spare_mountpoint = explicit_mountpoint(backend, spare)
    backend.rename(spare, live)
    undo.push(f"rename {live} back to {spare}", lambda: backend.rename(live, spare))
    if mountpoint is not None:
        backend.set(live, {"mountpoint": mountpoint})
    elif spare_mountpoint is not None:
        backend.inherit(live, "mountpoint")
    if mountpoint is not None or spare_mountpoint is not None:
        undo.push(
            f"mountpoint of {live} back",
            lambda: _restore_mountpoint(backend, live, spare_mountpoint),
        )
    log.info("rebase.swapped", live=live, aside=aside, spare=spare)


def _restore_mountpoint(backend: ZfsBackend, name: str, value: str | None) -> None:
    if value is None:
        backend.inherit(name, "mountpoint")
    else:
        backend.set(name, {"mountpoint": value})


def destroy_quietly(backend: ZfsBackend, name: str) -> None:
    """Destroy a temporary dataset with its snapshots; raise only if it still exists after."""
    try:
        backend.destroy(name, recursive=True)
    except ZfsError:
        if backend.exists(name):
            raise
