"""Dataset properties as ``zfs get`` reports them: values, defaults, inheritance and sources.

Each dataset keeps two dictionaries: properties set locally (``zfs set``, ``create -o``) and
properties that came with a received stream (``-p``/``-R``). A value resolves, as in OpenZFS, to
the local value, then the received one, then the nearest ancestor's (for inheritable
properties), then the default. User properties (``module:name``) always inherit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from protocol.errors import InvalidOperation


@dataclass(frozen=True)
class NativeProp:
    default: str
    inherit: bool = True
    values: tuple[str, ...] = ()  # allowed values; empty means free-form (checked elsewhere)
    number: bool = False  # a size in bytes (accepts K/M/G/T suffixes)
    create_only: bool = False  # may be given at create time but not changed later
    volume_only: bool = False
    filesystem_only: bool = False


ONOFF: Final = ("on", "off")
COMPRESSION: Final = (
    "on",
    "off",
    "lzjb",
    "gzip",
    "gzip-1",
    "gzip-2",
    "gzip-3",
    "gzip-4",
    "gzip-5",
    "gzip-6",
    "gzip-7",
    "gzip-8",
    "gzip-9",
    "zle",
    "lz4",
    "zstd",
    "zstd-fast",
    *(f"zstd-{i}" for i in range(1, 20)),
)
# how zfs_prop.c words a property's values where it does not list each one
CHOICES: Final = {
    "compression": "on | off | lzjb | gzip | gzip-[1-9] | zle | lz4 | zstd | zstd-[1-19] | "
    "zstd-fast | zstd-fast-[1-10,20,30,40,50,60,70,80,90,100,500,1000]",
}
ENCRYPTION: Final = (
    "off",
    "on",
    "aes-128-ccm",
    "aes-192-ccm",
    "aes-256-ccm",
    "aes-128-gcm",
    "aes-192-gcm",
    "aes-256-gcm",
)

# Settable native properties (the subset zfleet and its users touch), with OpenZFS's defaults.
SETTABLE: Final[dict[str, NativeProp]] = {
    "atime": NativeProp("on", values=ONOFF),
    "canmount": NativeProp(
        "on", inherit=False, values=("on", "off", "noauto"), filesystem_only=True
    ),
    "checksum": NativeProp(
        "on",
        values=(
            "on",
            "off",
            "fletcher2",
            "fletcher4",
            "sha256",
            "sha512",
            "skein",
            "edonr",
            "blake3",
        ),
    ),
    "compression": NativeProp("on", values=COMPRESSION),
    "copies": NativeProp("1", values=("1", "2", "3")),
    "dedup": NativeProp("off", values=("on", "off", "verify", "sha256", "blake3")),
    "devices": NativeProp("on", values=ONOFF, filesystem_only=True),
    "encryption": NativeProp("off", values=ENCRYPTION, create_only=True),
    "exec": NativeProp("on", values=ONOFF, filesystem_only=True),
    "keyformat": NativeProp(
        "none", inherit=False, values=("none", "raw", "hex", "passphrase"), create_only=True
    ),
    "keylocation": NativeProp("none", inherit=False),
    "logbias": NativeProp("latency", values=("latency", "throughput")),
    "mountpoint": NativeProp("", filesystem_only=True),  # default computed from the name
    "pbkdf2iters": NativeProp("0", inherit=False, number=True, create_only=True),
    "primarycache": NativeProp("all", values=("all", "none", "metadata")),
    "quota": NativeProp("0", inherit=False, number=True, filesystem_only=True),
    "readonly": NativeProp("off", values=ONOFF),
    "recordsize": NativeProp("131072", number=True, filesystem_only=True),
    "refquota": NativeProp("0", inherit=False, number=True, filesystem_only=True),
    "refreservation": NativeProp("0", inherit=False, number=True),
    "reservation": NativeProp("0", inherit=False, number=True),
    "secondarycache": NativeProp("all", values=("all", "none", "metadata")),
    "setuid": NativeProp("on", values=ONOFF, filesystem_only=True),
    "snapdir": NativeProp("hidden", values=("hidden", "visible"), filesystem_only=True),
    "sync": NativeProp("standard", values=("standard", "always", "disabled")),
    "volblocksize": NativeProp(
        "16384", inherit=False, number=True, create_only=True, volume_only=True
    ),
    "volsize": NativeProp("0", inherit=False, number=True, volume_only=True),
    "xattr": NativeProp("on", values=("on", "off", "sa", "dir"), filesystem_only=True),
}

# Properties OpenZFS computes; `zfs get` shows them with source "-".
READONLY: Final = (
    "type",
    "creation",
    "used",
    "available",
    "referenced",
    "compressratio",
    "mounted",
    "origin",
    "createtxg",
    "guid",
    "usedbysnapshots",
    "usedbydataset",
    "usedbychildren",
    "usedbyrefreservation",
    "written",
    "logicalused",
    "logicalreferenced",
    "receive_resume_token",
    "keystatus",
    "encryptionroot",
    "defer_destroy",
    "userrefs",
    "clones",
    "version",
    "refcompressratio",
    "objsetid",
    "snapshots_changed",
    "inconsistent",
)

# Properties sent with -p / -R (the received source); the rest are local to a pool.
SENT_NATIVE: Final = frozenset(
    name
    for name, p in SETTABLE.items()
    if not p.create_only and name not in ("keylocation", "volsize")
)

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTPE]?)(?:i?B)?$", re.IGNORECASE)
_UNITS: Final = {
    "": 1,
    "K": 1 << 10,
    "M": 1 << 20,
    "G": 1 << 30,
    "T": 1 << 40,
    "P": 1 << 50,
    "E": 1 << 60,
}


def is_user_prop(name: str) -> bool:
    """User properties have a colon: ``zfleet:role``."""
    return ":" in name


def parse_size(value: str) -> int | None:
    """``128K`` -> 131072; None when ``value`` is not a size."""
    if value == "none":
        return 0
    m = _SIZE.match(value.strip())
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def normalize(
    dataset: str, name: str, value: str, *, creating: bool = False, kind: str = "filesystem"
) -> str:
    """Check one ``name=value`` for ``zfs set``/``create -o``; returns the stored form."""
    what = "create" if creating else "set property for"
    prefix = f"cannot {what} '{dataset}'"
    if is_user_prop(name):
        if len(name) > 256:
            raise InvalidOperation(f"{prefix}: property name '{name}' is too long")
        if len(value) > 8192:
            raise InvalidOperation(f"{prefix}: property value for '{name}' is too long")
        return value
    if name in READONLY:
        raise InvalidOperation(f"{prefix}: '{name}' is readonly")
    prop = SETTABLE.get(name)
    if prop is None:
        raise InvalidOperation(f"{prefix}: invalid property '{name}'")
    if prop.create_only and not creating:
        raise InvalidOperation(f"{prefix}: '{name}' can only be set during dataset creation")
    if prop.volume_only and kind != "volume":
        raise InvalidOperation(f"{prefix}: '{name}' does not apply to datasets of this type")
    if prop.filesystem_only and kind == "volume":
        raise InvalidOperation(f"{prefix}: '{name}' does not apply to datasets of this type")
    if prop.number:
        size = parse_size(value)
        if size is None:
            raise InvalidOperation(f"{prefix}: bad numeric value '{value}'")
        if size >= 1 << 64:
            raise InvalidOperation(f"{prefix}: numeric value is too large")  # zfs_nicestrtonum
        if name == "recordsize" and (size < 512 or size > 16 << 20 or size & (size - 1)):
            raise InvalidOperation(f"{prefix}: 'recordsize' must be power of 2 from 512B to 16M")
        return str(size)
    if prop.values and value not in prop.values:
        choices = CHOICES.get(name, " | ".join(prop.values))
        raise InvalidOperation(f"{prefix}: '{name}' must be one of '{choices}'")
    if name == "mountpoint" and value not in ("none", "legacy") and not value.startswith("/"):
        raise InvalidOperation(
            f"{prefix}: 'mountpoint' must be an absolute path, 'none', or 'legacy'"
        )
    return value
