"""How `zfs list`, `zfs get` and `zpool list` lay out values: OpenZFS's tables and units.

The formats follow OpenZFS 2.3: headers are a property's column name in capitals (user
properties keep their own spelling), columns are two spaces apart, numbers align right, and
without ``-p`` sizes are printed the way ``zfs_nicenum`` does (at most five characters: ``0B``,
``403K``, ``11.6M``). ``-H`` gives tab-separated rows without a header.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Final

from protocol.errors import ConfigError

_UNITS: Final = "BKMGTPE"

# zfs's short column names where they differ from the property's own name
COLUMN_NAMES: Final[dict[str, str]] = {
    "available": "AVAIL",
    "avail": "AVAIL",
    "referenced": "REFER",
    "refer": "REFER",
    "compressratio": "RATIO",
    "refcompressratio": "REFRATIO",
    "receive_resume_token": "RESUMETOK",
    "logicalused": "LUSED",
    "logicalreferenced": "LREFER",
    "usedbysnapshots": "USEDSNAP",
    "usedbydataset": "USEDDS",
    "usedbychildren": "USEDCHILD",
    "usedbyrefreservation": "USEDREFRESERV",
    "allocated": "ALLOC",
    "capacity": "CAP",
    "fragmentation": "FRAG",
    "reservation": "RESERV",
    "refreservation": "REFRESERV",
    "snapshot_count": "SSCOUNT",
    "filesystem_count": "FSCOUNT",
}
# properties whose values are byte counts (printed with units without -p)
SIZE_PROPS: Final = frozenset(
    {
        "used", "available", "avail", "referenced", "refer", "written", "volsize", "quota",
        "refquota", "reservation", "refreservation", "usedbysnapshots", "usedbydataset",
        "usedbychildren", "usedbyrefreservation", "logicalused", "logicalreferenced",
        "recordsize", "volblocksize", "size", "allocated", "free", "alloc",
    }
)  # fmt: skip
# sizes where 0 means "no limit" and zfs prints "none"
LIMIT_PROPS: Final = frozenset({"quota", "refquota", "reservation", "refreservation"})
TIME_PROPS: Final = frozenset({"creation", "snapshots_changed"})
NUMERIC_PROPS: Final = SIZE_PROPS | TIME_PROPS | {"guid", "createtxg", "userrefs", "objsetid"}
ALIASES: Final[dict[str, str]] = {
    "refer": "referenced",
    "avail": "available",
    "alloc": "allocated",
    "compress": "compression",
    "rdonly": "readonly",
    "recsize": "recordsize",
    "volblock": "volblocksize",
    "reserv": "reservation",
    "refreserv": "refreservation",
    "lused": "logicalused",
    "lrefer": "logicalreferenced",
    "ratio": "compressratio",
    "refratio": "refcompressratio",
    "dnsize": "dnodesize",
}
# OpenZFS 2.3's native dataset properties (anything else must be a user property, with a colon)
NATIVE_PROPS: Final = frozenset(
    (
        "aclinherit", "aclmode", "acltype", "atime", "available", "canmount",
        "casesensitivity", "checksum", "clones", "compression", "compressratio", "context",
        "copies", "createtxg", "creation", "dedup", "defcontext", "defer_destroy", "devices",
        "direct", "dnodesize", "encryption", "encryptionroot", "exec", "filesystem_count",
        "filesystem_limit", "fscontext", "guid", "keyformat", "keylocation", "keystatus",
        "logbias", "logicalreferenced", "logicalused", "longname", "mlslabel", "mounted",
        "mountpoint", "name", "nbmand", "normalization", "objsetid", "origin", "overlay",
        "prefetch", "primarycache", "quota", "readonly", "receive_resume_token", "recordsize",
        "redact_snaps", "redundant_metadata", "refcompressratio", "referenced", "refquota",
        "refreservation", "relatime", "reservation", "rootcontext", "secondarycache", "setuid",
        "sharenfs", "sharesmb", "snapdev", "snapdir", "snapshot_count", "snapshot_limit",
        "snapshots_changed", "special_small_blocks", "sync", "type", "used", "usedbychildren",
        "usedbydataset", "usedbyrefreservation", "usedbysnapshots", "userrefs", "version",
        "volblocksize", "volmode", "volsize", "vscan", "written", "xattr", "zoned", "jailed",
        "pbkdf2iters", "utf8only",
    )
)  # fmt: skip


def is_property(prop: str) -> bool:
    """Whether ``zfs list -o``/``zfs get`` would accept ``prop`` as a property name."""
    return ":" in prop or ALIASES.get(prop, prop) in NATIVE_PROPS


def nicenum(value: int) -> str:
    """A byte count as ``zfs_nicenum`` prints it: exact multiples whole, else 5 characters."""
    index, scaled = 0, value
    while scaled >= 1024 and index < len(_UNITS) - 1:
        scaled //= 1024
        index += 1
    unit = _UNITS[index]
    if index == 0 or value % (1024**index) == 0:
        return f"{value // 1024**index}{unit}"
    exact = value / 1024**index
    for digits in (2, 1, 0):
        text = f"{exact:.{digits}f}{unit}"
        if len(text) <= 5:
            return text
    return text


def nicetime(seconds: int) -> str:
    """A creation time as zfs prints it without -p (``Sat Nov 28  7:55 2026``)."""
    return time.strftime("%a %b %e %k:%M %Y", time.localtime(seconds))


_SIZE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([BKMGTPE]?)(?:I?B)?\Z", re.IGNORECASE)


def parse_size(text: str) -> int:
    """A size as zfs takes it on the command line: ``8M``, ``1.5G``, ``4096``, ``10KiB``."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ConfigError(f"bad numeric value '{text}'")
    number, unit = match.groups()
    value = int(float(number) * 1024 ** _UNITS.index(unit.upper() or "B"))
    if value > MAX_U64:
        raise ConfigError("numeric value is too large")  # zfs_nicestrtonum's words
    return value


MAX_U64: Final = (1 << 64) - 1


def header(prop: str) -> str:
    """The column title for ``prop`` (user properties, with a colon, keep their case)."""
    if ":" in prop:
        return prop
    return COLUMN_NAMES.get(prop, prop.upper())


def humanize(prop: str, raw: str, *, parsable: bool) -> str:
    """A property value as zfs prints it (units and dates unless ``parsable``)."""
    if parsable or not raw.isdigit():
        return raw
    prop = ALIASES.get(prop, prop)
    if prop in LIMIT_PROPS and raw == "0":
        return "none"
    if prop in SIZE_PROPS:
        return nicenum(int(raw))
    if prop in TIME_PROPS:
        return nicetime(int(raw))
    return raw


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    scripted: bool,
    right: Sequence[bool] = (),
) -> str:
    """Rows as zfs prints them: tab-separated when ``scripted`` (-H), else aligned columns."""
    if scripted:
        return "".join("\t".join(row) + "\n" for row in rows)
    all_rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    aligned = [*right, *([False] * (len(headers) - len(right)))]
    lines = []
    for row in all_rows:
        cells = [
            cell.rjust(width) if is_right else cell.ljust(width)
            for cell, width, is_right in zip(row, widths, aligned, strict=True)
        ]
        lines.append("  ".join(cells).rstrip() + "\n")
    return "".join(lines)
