"""The on-wire vocabulary of a ZFS send stream (OpenZFS include/sys/zfs_ioctl.h).

Every record is a 312-byte ``dmu_replay_record``: ``drr_type`` (u32), ``drr_payloadlen`` (u32),
then a per-type union. For every type but BEGIN the last 32 bytes hold the running fletcher-4
checksum of the stream up to that field; a BEGIN's name runs into those bytes instead.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

RECORD_SIZE: Final = 312
CHECKSUM_OFFSET: Final = 280  # drr_u.drr_checksum.drr_checksum
UNION_OFFSET: Final = 8
DMU_BACKUP_MAGIC: Final = 0x2F5BACBAC
MAXNAMELEN: Final = 256

# Payload limits: a block is at most 16 MiB (SPA_MAXBLOCKSIZE); a BEGIN's nvlist is bounded
# generously so that -R streams of large trees pass while a corrupt length cannot make the
# reader allocate gigabytes.
MAX_BLOCK_PAYLOAD: Final = 16 * 1024 * 1024
MAX_BEGIN_PAYLOAD: Final = 64 * 1024 * 1024


class DrrType(enum.IntEnum):
    """Record types, with OpenZFS's numbers."""

    BEGIN = 0
    OBJECT = 1
    FREEOBJECTS = 2
    WRITE = 3
    FREE = 4
    END = 5
    WRITE_BYREF = 6
    SPILL = 7
    WRITE_EMBEDDED = 8
    OBJECT_RANGE = 9
    REDACT = 10

    @property
    def wire_name(self) -> str:
        """OpenZFS's name for the type, as ``zstream dump`` prints it (``DRR_WRITE``)."""
        return f"DRR_{self.name}"


class HeaderType(enum.IntEnum):
    """The low two bits of ``drr_versioninfo``."""

    SUBSTREAM = 1
    COMPOUNDSTREAM = 2


class Feature(enum.IntFlag):
    """Feature flags: bits 2..31 of ``drr_versioninfo`` (shifted down by two)."""

    DEDUP = 1 << 0
    DEDUPPROPS = 1 << 1
    SA_SPILL = 1 << 2
    EMBED_DATA = 1 << 16
    LZ4 = 1 << 17
    LARGE_BLOCKS = 1 << 19
    RESUMING = 1 << 20
    REDACTED = 1 << 21
    COMPRESSED = 1 << 22
    LARGE_DNODE = 1 << 23
    RAW = 1 << 24
    ZSTD = 1 << 25
    HOLDS = 1 << 26
    SWITCH_TO_LARGE_BLOCKS = 1 << 27


FEATURE_SHIFT: Final = 2
FEATURE_MASK: Final = (1 << 30) - 1


def feature_names(features: int) -> tuple[str, ...]:
    """Lower-case names of the known feature bits set in ``features`` (``("embed_data", ...)``);
    unknown bits are named ``bit<N>`` so nothing is hidden."""
    names = []
    for bit in range(30):
        if features & (1 << bit):
            try:
                flag = Feature(1 << bit)
            except ValueError:
                names.append(f"bit{bit}")
            else:
                names.append(str(flag.name).lower())
    return tuple(names)


# BEGIN drr_flags
DRR_FLAG_CLONE: Final = 1 << 0
DRR_FLAG_CI_DATA: Final = 1 << 1
DRR_FLAG_FREERECORDS: Final = 1 << 2
DRR_FLAG_SPILL_BLOCK: Final = 1 << 3

# dmu_objset_type_t of a BEGIN
DMU_OST_ZFS: Final = 2
DMU_OST_ZVOL: Final = 3
# dmu_object_type_t used by the writer's defaults
DMU_OT_PLAIN_FILE_CONTENTS: Final = 19
DMU_OT_SA: Final = 44
ZIO_CHECKSUM_FLETCHER_4: Final = 7  # what OpenZFS stamps in WRITE records by default


@dataclass(frozen=True)
class Layout:
    """The union part of one record type: field names and a struct format (pads are ``x``)."""

    names: tuple[str, ...]
    groups: tuple[int, ...]  # how many struct values each name takes (4 for a checksum)
    defaults: tuple[object, ...]  # the zero value of each field (0, b"" or four zeros)
    le: struct.Struct
    be: struct.Struct


def _layout(*spec: tuple[str | None, str]) -> Layout:
    names: list[str] = []
    groups: list[int] = []
    defaults: list[object] = []
    fmt = ""
    for name, code in spec:
        fmt += code
        if name is None:
            continue
        names.append(name)
        groups.append(4 if code == "4Q" else 1)
        defaults.append((0, 0, 0, 0) if code == "4Q" else b"" if code.endswith("s") else 0)
    return Layout(
        tuple(names),
        tuple(groups),
        tuple(defaults),
        struct.Struct("<" + fmt),
        struct.Struct(">" + fmt),
    )


_SALT_IV_MAC: Final = (("salt", "8s"), ("iv", "12s"), ("mac", "16s"))

LAYOUTS: Final[dict[DrrType, Layout]] = {
    DrrType.BEGIN: _layout(
        ("magic", "Q"),
        ("versioninfo", "Q"),
        ("creation_time", "Q"),
        ("type", "I"),
        ("flags", "I"),
        ("toguid", "Q"),
        ("fromguid", "Q"),
        ("toname", f"{MAXNAMELEN}s"),
    ),
    DrrType.END: _layout(("checksum", "4Q"), ("toguid", "Q")),
    DrrType.OBJECT: _layout(
        ("object", "Q"),
        ("type", "I"),
        ("bonustype", "I"),
        ("blksz", "I"),
        ("bonuslen", "I"),
        ("checksumtype", "B"),
        ("compress", "B"),
        ("dn_slots", "B"),
        ("flags", "B"),
        ("raw_bonuslen", "I"),
        ("toguid", "Q"),
        ("indblkshift", "B"),
        ("nlevels", "B"),
        ("nblkptr", "B"),
        (None, "5x"),
        ("maxblkid", "Q"),
    ),
    DrrType.FREEOBJECTS: _layout(("firstobj", "Q"), ("numobjs", "Q"), ("toguid", "Q")),
    DrrType.WRITE: _layout(
        ("object", "Q"),
        ("type", "I"),
        (None, "4x"),
        ("offset", "Q"),
        ("logical_size", "Q"),
        ("toguid", "Q"),
        ("checksumtype", "B"),
        ("flags", "B"),
        ("compressiontype", "B"),
        (None, "5x"),
        ("key", "40s"),
        ("compressed_size", "Q"),
        *_SALT_IV_MAC,
    ),
    DrrType.FREE: _layout(("object", "Q"), ("offset", "Q"), ("length", "Q"), ("toguid", "Q")),
    DrrType.WRITE_BYREF: _layout(
        ("object", "Q"),
        ("offset", "Q"),
        ("length", "Q"),
        ("toguid", "Q"),
        ("refguid", "Q"),
        ("refobject", "Q"),
        ("refoffset", "Q"),
        ("checksumtype", "B"),
        ("flags", "B"),
        (None, "6x"),
        ("key", "40s"),
    ),
    DrrType.SPILL: _layout(
        ("object", "Q"),
        ("length", "Q"),
        ("toguid", "Q"),
        ("flags", "B"),
        ("compressiontype", "B"),
        (None, "6x"),
        ("compressed_size", "Q"),
        *_SALT_IV_MAC,
        ("type", "I"),
    ),
    DrrType.WRITE_EMBEDDED: _layout(
        ("object", "Q"),
        ("offset", "Q"),
        ("length", "Q"),
        ("toguid", "Q"),
        ("compression", "B"),
        ("etype", "B"),
        (None, "6x"),
        ("lsize", "I"),
        ("psize", "I"),
    ),
    DrrType.OBJECT_RANGE: _layout(
        ("firstobj", "Q"),
        ("numslots", "Q"),
        ("toguid", "Q"),
        *_SALT_IV_MAC,
        ("flags", "B"),
        (None, "3x"),
    ),
    DrrType.REDACT: _layout(("object", "Q"), ("offset", "Q"), ("length", "Q"), ("toguid", "Q")),
}

# Fixed-position fields the reader needs on every record (offsets from the record start).
PREFIX_LE: Final = struct.Struct("<II")
PREFIX_BE: Final = struct.Struct(">II")
CHECKSUM_LE: Final = struct.Struct("<4Q")
CHECKSUM_BE: Final = struct.Struct(">4Q")
EMPTY_CHECKSUM: Final = (0, 0, 0, 0)
