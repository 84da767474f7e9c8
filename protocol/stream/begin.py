"""What a BEGIN record says: which snapshot, from where, with which stream features."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import ProtocolError, StreamFormatError
from protocol.stream.nvlist import NvList, nvlist_decode
from protocol.stream.record import Record
from protocol.stream.types import (
    DMU_BACKUP_MAGIC,
    DRR_FLAG_CLONE,
    DrrType,
    Feature,
    HeaderType,
    feature_names,
)


@dataclass(frozen=True)
class BeginInfo:
    """The decoded fields of a BEGIN record (one per stream or sub-stream)."""

    magic: int
    versioninfo: int
    hdrtype: int
    features: int
    feature_names: tuple[str, ...]
    creation_time: int
    type: int  # dmu_objset_type_t: 2 filesystem, 3 volume
    flags: int
    toguid: int
    fromguid: int
    toname: str
    payload: bytes = b""
    nvlist: NvList | None = None
    offset: int = 0
    index: int = 0

    @property
    def compound(self) -> bool:
        """True for the BEGIN that opens a compound (-R / -I / -p) stream."""
        return self.hdrtype == HeaderType.COMPOUNDSTREAM

    @property
    def incremental(self) -> bool:
        """True when the stream applies on top of ``fromguid``."""
        return self.fromguid != 0

    @property
    def is_clone(self) -> bool:
        """True when the stream creates a clone of its ``fromguid`` snapshot."""
        return bool(self.flags & DRR_FLAG_CLONE)

    def has(self, feature: Feature) -> bool:
        """Whether the stream uses ``feature`` (e.g. ``Feature.RAW``)."""
        return bool(self.features & feature)

    @property
    def raw(self) -> bool:
        return self.has(Feature.RAW)

    @property
    def compressed(self) -> bool:
        return self.has(Feature.COMPRESSED)

    @property
    def large_blocks(self) -> bool:
        return self.has(Feature.LARGE_BLOCKS)

    @property
    def embed_data(self) -> bool:
        return self.has(Feature.EMBED_DATA)

    @property
    def resuming(self) -> bool:
        return self.has(Feature.RESUMING)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary (``zfleet stream dump --json``)."""
        return {
            "toguid": self.toguid,
            "fromguid": self.fromguid,
            "toname": self.toname,
            "flags": self.flags,
            "features": self.features,
            "feature_names": list(self.feature_names),
            "hdrtype": self.hdrtype,
            "creation_time": self.creation_time,
            "type": self.type,
            "payload_bytes": len(self.payload),
            "nvlist": self.nvlist.to_python() if self.nvlist is not None else None,
        }


def parse_begin(record: Record) -> BeginInfo:
    """Decode a BEGIN record, its nvlist payload included.

    Raises :class:`StreamFormatError` for a record that is not a BEGIN, a bad magic, or a
    payload that is not a valid nvlist.
    """
    if record.type != DrrType.BEGIN:
        raise StreamFormatError(
            f"{record.type.wire_name} is not a BEGIN record",
            offset=record.offset,
            record=record.index,
        )
    f = record.fields
    if f["magic"] != DMU_BACKUP_MAGIC:
        raise StreamFormatError(
            f"bad BEGIN magic 0x{f['magic']:x}", offset=record.offset, record=record.index
        )
    nvlist = None
    if record.payload:
        try:
            nvlist = nvlist_decode(record.payload)
        except ProtocolError as exc:
            raise StreamFormatError(
                f"BEGIN payload is not a valid nvlist: {exc}",
                offset=record.offset,
                record=record.index,
            ) from exc
    return BeginInfo(
        magic=f["magic"],
        versioninfo=f["versioninfo"],
        hdrtype=f["hdrtype"],
        features=f["features"],
        feature_names=feature_names(f["features"]),
        creation_time=f["creation_time"],
        type=f["type"],
        flags=f["flags"],
        toguid=f["toguid"],
        fromguid=f["fromguid"],
        toname=f["toname"],
        payload=record.payload,
        nvlist=nvlist,
        offset=record.offset,
        index=record.index,
    )
