"""The ZFS value types every part shares: objects, properties, send and receive specs, inventories.

One set, here in the pure language package: the backends (workers/zfs) produce and consume them,
the coordinator's graph and planner read them, and they travel as messages unchanged (the codec in
:mod:`protocol.messages` checks every field). ``SendSpec`` and ``ReceiveSpec`` are *strict*: a
flag this side does not know is refused when decoded, never silently dropped, so a newer planner
cannot ask an older worker for ``zfs send -w`` and get a plain send.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from protocol.messages import message


class ObjType(enum.StrEnum):
    """The kinds of ZFS objects, by the names ``zfs list -o type`` prints."""

    FILESYSTEM = "filesystem"
    VOLUME = "volume"
    SNAPSHOT = "snapshot"
    BOOKMARK = "bookmark"


ALL_TYPES: Final[tuple[ObjType, ...]] = tuple(ObjType)


@message("zfs.object", version=1)
@dataclass(frozen=True)
class ZfsObject:
    """One row of ``zfs list -t all -Hp``: a dataset, snapshot or bookmark."""

    name: str
    type: ObjType
    guid: int
    createtxg: int
    creation: int  # unix seconds
    origin: str | None = None  # clones only: the origin snapshot's full name
    used: int = 0
    referenced: int = 0
    written: int = 0
    receive_resume_token: str | None = None
    encryption: str | None = None  # None or "off" when not encrypted, else the cipher
    keystatus: str | None = None  # "available" / "unavailable" for encrypted datasets
    user_props: Mapping[str, str] = field(default_factory=dict)  # "zfleet:*" and other user:props

    @property
    def dataset(self) -> str:
        """The dataset part of the name (``pool/a`` for ``pool/a@s1`` and ``pool/a#b``)."""
        return self.name.split("@", 1)[0].split("#", 1)[0]

    @property
    def short(self) -> str:
        """The snapshot or bookmark part (``s1``), or the name itself for datasets."""
        for sep in ("@", "#"):
            if sep in self.name:
                return self.name.split(sep, 1)[1]
        return self.name


@dataclass(frozen=True)
class PropertyValue:
    value: str
    source: str  # "local", "default", "inherited from X", "received", "-", "temporary"


@dataclass(frozen=True)
class PoolInfo:
    name: str
    size: int
    allocated: int
    free: int
    health: str


@message("zfs.send_spec", version=1, strict=True)
@dataclass(frozen=True)
class SendSpec:
    """What to send; the fields are ``zfs send``'s flags.

    ``snapshot`` is the full snapshot name. ``from_snap`` is a snapshot (``@s1`` or ``pool/a@s1``)
    or a bookmark (``pool/a#b``); with ``intermediates`` it is ``-I``, otherwise ``-i``. A
    ``resume_token`` means ``zfs send -t TOKEN`` and the other fields (but ``snapshot``, kept for
    logging) are ignored.
    """

    snapshot: str
    from_snap: str | None = None
    intermediates: bool = False  # -I
    replicate: bool = False  # -R
    raw: bool = False  # -w
    compressed: bool = False  # -c
    large_blocks: bool = False  # -L
    embedded: bool = False  # -e
    props: bool = False  # -p
    resume_token: str | None = None  # -t


@message("zfs.receive_spec", version=1, strict=True)
@dataclass(frozen=True)
class ReceiveSpec:
    """Where and how to receive; the fields are ``zfs receive``'s flags."""

    target: str
    resumable: bool = True  # -s
    force: bool = False  # -F
    no_mount: bool = False  # -u
    set_props: Mapping[str, str] = field(default_factory=dict)  # -o prop=value
    exclude_props: tuple[str, ...] = ()  # -x prop
    origin: str | None = None  # -o origin=pool/base@s2


@dataclass(frozen=True)
class ReceiveResult:
    target: str
    snapshot: str | None  # the snapshot that now exists, if known
    bytes_received: int


class DiffChange(enum.StrEnum):
    ADDED = "+"
    REMOVED = "-"
    MODIFIED = "M"
    RENAMED = "R"


@dataclass(frozen=True)
class DiffEntry:
    change: DiffChange
    path: str
    new_path: str | None = None  # renames only


@message("inventory.report", version=1)
@dataclass(frozen=True)
class InventoryReport:
    """Everything ``zfs list -t all`` showed on ``host`` at ``taken_at`` (unix seconds)."""

    host: str
    taken_at: float
    objects: tuple[ZfsObject, ...]
    root: str | None = None  # the listed subtree; None means all pools


# The send flags as ``zfs send`` spells them, for error messages and the real backend.
SEND_FLAGS: Final = {
    "intermediates": "-I", "replicate": "-R", "raw": "-w", "compressed": "-c",
    "large_blocks": "-L", "embedded": "-e", "props": "-p",
}  # fmt: skip


def send_flags(spec: SendSpec) -> tuple[str, ...]:
    """The field names of the boolean flags ``spec`` turns on (``("raw", "props")``)."""
    return tuple(name for name in SEND_FLAGS if getattr(spec, name))
