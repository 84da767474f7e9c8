"""The fleet graph: which dataset, snapshot and bookmark exists on which host, by guid.

Built from the inventories the workers report (``ZfsObject`` rows). A snapshot is the same
snapshot on two hosts when its guid is equal, whatever it is called. Kept compact so that a fleet of
a million snapshots fits in memory: names are interned, per-dataset snapshot columns are arrays.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from protocol.kinds import KEY_GROUP_PROPERTY, KIND_PROPERTY
from protocol.zfs import ObjType, ZfsObject

_DATASET_TYPES: Final = (ObjType.FILESYSTEM, ObjType.VOLUME)


@dataclass(frozen=True)
class Snap:
    """One snapshot or bookmark of a dataset, as the planner sees it."""

    dataset: str
    short: str
    guid: int
    createtxg: int
    written: int = 0
    referenced: int = 0
    creation: int = 0
    bookmark: bool = False

    @property
    def name(self) -> str:
        return f"{self.dataset}{'#' if self.bookmark else '@'}{self.short}"


class Dataset:
    """A filesystem or volume on one host with its snapshots (oldest first) and bookmarks."""

    __slots__ = (
        "_snap_names", "bm_guids", "bm_names", "bm_txgs", "creation", "encryption", "guid",
        "host", "key_group", "kind", "name", "origin", "resume_token", "snap_creation",
        "snap_guids", "snap_referenced", "snap_txgs", "snap_written", "type", "written",
    )  # fmt: skip

    def __init__(
        self,
        host: str,
        name: str,
        *,
        guid: int = 0,
        type: str = "filesystem",
        origin: str | None = None,
        written: int = 0,
        resume_token: str | None = None,
        creation: int = 0,
        kind: str | None = None,
        encryption: str | None = None,
        key_group: str | None = None,
    ) -> None:
        self.host = sys.intern(host)
        self.name = sys.intern(name)
        self.guid = guid
        self.type = sys.intern(type)
        self.origin = sys.intern(origin) if origin else None
        self.written = written
        self.resume_token = resume_token
        self.creation = creation
        # the zfleet:kind user property as listed (raw: coordinator/kinds.py interprets it)
        self.kind = sys.intern(kind) if kind else None
        self.encryption = encryption  # the cipher, or None / "off"
        self.key_group = key_group  # the zfleet:keygroup user property, if set
        self._snap_names: list[str] = []
        self.snap_guids = array("Q")
        self.snap_txgs = array("Q")
        self.snap_written = array("Q")
        self.snap_referenced = array("Q")
        self.snap_creation = array("q")
        self.bm_names: list[str] = []
        self.bm_guids = array("Q")
        self.bm_txgs = array("Q")

    @property
    def encrypted(self) -> bool:
        """Native ZFS encryption is on: such a dataset replicates as raw sends only."""
        return self.encryption not in (None, "off")

    # -- building ----------------------------------------------------------------------------
    def add_snapshot(
        self,
        short: str,
        guid: int,
        createtxg: int,
        *,
        written: int = 0,
        referenced: int = 0,
        creation: int = 0,
    ) -> None:
        """Append a snapshot; call ``sort`` after adding out of createtxg order."""
        self._snap_names.append(sys.intern(short))
        self.snap_guids.append(guid)
        self.snap_txgs.append(createtxg)
        self.snap_written.append(written)
        self.snap_referenced.append(referenced)
        self.snap_creation.append(creation)

    def add_bookmark(self, short: str, guid: int, createtxg: int) -> None:
        self.bm_names.append(sys.intern(short))
        self.bm_guids.append(guid)
        self.bm_txgs.append(createtxg)

    def sort(self) -> None:
        """Order snapshots and bookmarks oldest first (by createtxg)."""
        order = sorted(range(len(self.snap_txgs)), key=self.snap_txgs.__getitem__)
        if order != list(range(len(order))):
            self._snap_names = [self._snap_names[i] for i in order]
            for col in ("snap_guids", "snap_txgs", "snap_written", "snap_referenced",
                        "snap_creation"):  # fmt: skip
                old = getattr(self, col)
                setattr(self, col, array(old.typecode, (old[i] for i in order)))
        border = sorted(range(len(self.bm_txgs)), key=self.bm_txgs.__getitem__)
        if border != list(range(len(border))):
            self.bm_names = [self.bm_names[i] for i in border]
            self.bm_guids = array("Q", (self.bm_guids[i] for i in border))
            self.bm_txgs = array("Q", (self.bm_txgs[i] for i in border))

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._snap_names)

    def snap(self, i: int) -> Snap:
        """The i-th snapshot, oldest first (negative indexes count from the newest)."""
        return Snap(
            dataset=self.name,
            short=self._snap_names[i],
            guid=self.snap_guids[i],
            createtxg=self.snap_txgs[i],
            written=self.snap_written[i],
            referenced=self.snap_referenced[i],
            creation=self.snap_creation[i],
        )

    def snapshots(self) -> list[Snap]:
        # One pass over the columns together: planning asks for whole lists often, and
        # indexing six arrays through snap(i) per snapshot cost several times more.
        name = self.name
        return [
            Snap(name, short, g, t, w, r, c)
            for short, g, t, w, r, c in zip(
                self._snap_names, self.snap_guids, self.snap_txgs, self.snap_written,
                self.snap_referenced, self.snap_creation, strict=True,
            )
        ]  # fmt: skip

    def bookmarks(self) -> list[Snap]:
        return [
            Snap(self.name, n, g, t, bookmark=True)
            for n, g, t in zip(self.bm_names, self.bm_guids, self.bm_txgs, strict=True)
        ]

    def index_of_guid(self, guid: int) -> int:
        """Position of the snapshot with ``guid``, or -1."""
        try:
            return self.snap_guids.index(guid)
        except ValueError:
            return -1

    def index_of_short(self, short: str) -> int:
        try:
            return self._snap_names.index(short)
        except ValueError:
            return -1

    def bookmark_with_guid(self, guid: int) -> Snap | None:
        try:
            i = self.bm_guids.index(guid)
        except ValueError:
            return None
        return Snap(self.name, self.bm_names[i], guid, self.bm_txgs[i], bookmark=True)

    @property
    def origin_dataset(self) -> str | None:
        return self.origin.split("@", 1)[0] if self.origin else None

    @property
    def origin_short(self) -> str | None:
        return self.origin.split("@", 1)[1] if self.origin and "@" in self.origin else None


@dataclass
class HostInventory:
    """Everything one host reported, and when."""

    host: str
    datasets: dict[str, Dataset]
    reported_at: float = 0.0


class FleetGraph:
    """Datasets and snapshots of every host, matched across hosts by guid."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostInventory] = {}
        self._by_guid: dict[int, list[tuple[str, str]]] | None = None

    def add_inventory(
        self, host: str, objects: Iterable[ZfsObject], reported_at: float = 0.0
    ) -> None:
        """Replace ``host``'s part of the graph with the rows it reported."""
        datasets: dict[str, Dataset] = {}
        later: list[ZfsObject] = []
        for obj in objects:
            if obj.type in _DATASET_TYPES:
                datasets[obj.name] = Dataset(
                    host,
                    obj.name,
                    guid=obj.guid,
                    type=obj.type.value,
                    origin=obj.origin,
                    written=obj.written,
                    resume_token=obj.receive_resume_token,
                    creation=obj.creation,
                    kind=obj.user_props.get(KIND_PROPERTY),
                    encryption=obj.encryption,
                    key_group=obj.user_props.get(KEY_GROUP_PROPERTY),
                )
            else:
                later.append(obj)
        for obj in later:
            ds = datasets.get(obj.dataset)
            if ds is None:
                continue  # a snapshot of a dataset outside the listed root
            if obj.type is ObjType.SNAPSHOT:
                ds.add_snapshot(
                    obj.short, obj.guid, obj.createtxg, written=obj.written,
                    referenced=obj.referenced, creation=obj.creation,
                )  # fmt: skip
            else:
                ds.add_bookmark(obj.short, obj.guid, obj.createtxg)
        for ds in datasets.values():
            ds.sort()
        self.put_host(HostInventory(host=host, datasets=datasets, reported_at=reported_at))

    def put_host(self, inventory: HostInventory) -> None:
        self.hosts[inventory.host] = inventory
        self._by_guid = None

    def dataset(self, host: str, name: str) -> Dataset | None:
        inv = self.hosts.get(host)
        return inv.datasets.get(name) if inv else None

    def subtree(self, host: str, root: str, *, recursive: bool = True) -> list[Dataset]:
        """``root`` and (when recursive) its descendants on ``host``, parents first."""
        inv = self.hosts.get(host)
        if inv is None:
            return []
        if not recursive:
            ds = inv.datasets.get(root)
            return [ds] if ds else []
        prefix = root + "/"
        found = [d for n, d in inv.datasets.items() if n == root or n.startswith(prefix)]
        return sorted(found, key=lambda d: d.name)

    def locations(self, guid: int) -> list[tuple[str, str]]:
        """Every (host, full snapshot name) holding the snapshot ``guid``."""
        if self._by_guid is None:
            index: dict[int, list[tuple[str, str]]] = {}
            for inv in self.hosts.values():
                for ds in inv.datasets.values():
                    for short, g in zip(ds._snap_names, ds.snap_guids, strict=True):
                        index.setdefault(g, []).append((inv.host, f"{ds.name}@{short}"))
            self._by_guid = index
        return list(self._by_guid.get(guid, ()))

    def __iter__(self) -> Iterator[Dataset]:
        for inv in self.hosts.values():
            yield from inv.datasets.values()


# -- inventory rows on the wire -----------------------------------------------------------

_ROW_FIELDS: Final = ("name", "type", "guid", "createtxg", "creation", "origin", "used",
                      "referenced", "written", "receive_resume_token")  # fmt: skip


def objects_to_rows(objects: Sequence[ZfsObject]) -> list[list[Any]]:
    """ZfsObject rows as plain lists (JSON/msgpack friendly), in ``_ROW_FIELDS`` order."""
    return [
        [
            o.name, o.type.value, o.guid, o.createtxg, o.creation, o.origin, o.used,
            o.referenced, o.written, o.receive_resume_token,
        ]
        for o in objects
    ]


def rows_to_objects(rows: Iterable[Sequence[Any]]) -> list[ZfsObject]:
    """The inverse of ``objects_to_rows``."""
    out = []
    for r in rows:
        fields: Mapping[str, Any] = dict(zip(_ROW_FIELDS, r, strict=True))
        out.append(
            ZfsObject(
                name=str(fields["name"]),
                type=ObjType(fields["type"]),
                guid=int(fields["guid"]),
                createtxg=int(fields["createtxg"]),
                creation=int(fields["creation"]),
                origin=fields["origin"],
                used=int(fields["used"]),
                referenced=int(fields["referenced"]),
                written=int(fields["written"]),
                receive_resume_token=fields["receive_resume_token"],
            )
        )
    return out
