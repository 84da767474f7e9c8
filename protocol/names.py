"""OpenZFS naming rules for pools, datasets, snapshots (``@``) and bookmarks (``#``).

The rules are the ones OpenZFS 2.3 applies (``module/zcommon/zfs_namecheck.c`` in the kernel
and ``zfs_validate_name``/``zpool_name_valid`` in libzfs), checked in the same order so a name
gets the same verdict here as from ``zfs create``:

- characters: ASCII letters, digits and ``- _ . :`` and space (so ``tank/a@bad name`` is a valid
  snapshot, as seen on 2.3.2); ``%`` only in names OpenZFS made itself (temporary clones of an
  online receive), so it is refused unless ``existing=True``;
- at most 255 characters in the full name (``ZFS_MAX_DATASET_NAME_LEN`` is 256 with the NUL);
- no leading or trailing ``/``, no empty component, no ``.`` or ``..`` component, at most one
  ``@`` or ``#`` and no ``/`` after it;
- fewer than 50 levels of nesting (``zfs_max_dataset_nesting``);
- pools: begin with a letter, at most 239 characters (room for ``pool/$ORIGIN@$ORIGIN``), not
  ``mirror``, ``raidz`` or ``draid``; a *new* pool also may not start with ``mirror``, ``raidz``,
  ``draid`` or ``spare`` nor be ``log`` (libzfs widened the list later and keeps accepting
  older pools, hence ``existing=True``). The old "disk-like" ``c0...`` rule is gone from
  OpenZFS, so it is not applied.

Every refusal is a :class:`protocol.errors.NameError_` whose ``rule`` says what was broken; no
other exception escapes a ``validate_*`` function, whatever the input.
"""

from __future__ import annotations

import enum
from typing import Final

from protocol.errors import NameError_

MAX_NAME_LEN: Final = 255
# 256 - 1 (NUL) - 2 ("/" and "@") - 2 * len("$ORIGIN"): the pool's origin snapshot must fit.
MAX_POOL_NAME_LEN: Final = 239
MAX_NESTING: Final = 50  # a name's depth (count of '/') must stay below this
SNAPSHOT_SEP: Final = "@"
BOOKMARK_SEP: Final = "#"
TEMP_CHAR: Final = "%"

_VALID: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.: ")
_VALID_ENTITY: Final = _VALID | {TEMP_CHAR}
_LETTERS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_RESERVED_POOLS: Final = ("mirror", "raidz", "draid")
_RESERVED_POOL_PREFIXES: Final = ("mirror", "raidz", "draid", "spare")


class NameKind(enum.StrEnum):
    """What a full name denotes, by its shape."""

    DATASET = "dataset"  # a filesystem or volume (pools' root datasets included)
    SNAPSHOT = "snapshot"
    BOOKMARK = "bookmark"


# -- validation ---------------------------------------------------------------------------------


def validate_pool(name: str, *, existing: bool = False) -> str:
    """Check a pool name; return it. ``existing`` skips the create-only reserved prefixes."""
    _check_str(name)
    if len(name) > MAX_POOL_NAME_LEN:
        raise NameError_(name, f"pool name is too long ({len(name)} > {MAX_POOL_NAME_LEN})")
    if not name:
        raise NameError_(name, "empty component")
    for ch in name:
        if ch not in _VALID:
            raise NameError_(name, f"pool name contains invalid character {ch!r}")
    if name[0] not in _LETTERS:
        raise NameError_(name, "pool name must begin with a letter")
    if name in _RESERVED_POOLS:
        raise NameError_(name, "pool name is reserved")
    if not existing and (name.startswith(_RESERVED_POOL_PREFIXES) or name == "log"):
        raise NameError_(name, "pool name is reserved (mirror*, raidz*, draid*, spare*, log)")
    return name


def validate_dataset(name: str, *, existing: bool = False) -> str:
    """Check a filesystem or volume name (no ``@``, no ``#``); return it."""
    _check_str(name)
    if SNAPSHOT_SEP in name:
        raise NameError_(name, "snapshot delimiter '@' is not expected here")
    if BOOKMARK_SEP in name:
        raise NameError_(name, "bookmark delimiter '#' is not expected here")
    _check_entity(name, existing)
    return name


def validate_snapshot(name: str, *, existing: bool = False) -> str:
    """Check a full snapshot name (``pool/a@snap``); return it."""
    _check_str(name)
    if SNAPSHOT_SEP not in name:
        raise NameError_(name, "missing '@' delimiter in snapshot name")
    if BOOKMARK_SEP in name:
        raise NameError_(name, "bookmark delimiter '#' is not expected here")
    _check_entity(name, existing)
    return name


def validate_bookmark(name: str, *, existing: bool = False) -> str:
    """Check a full bookmark name (``pool/a#mark``); return it."""
    _check_str(name)
    if BOOKMARK_SEP not in name:
        raise NameError_(name, "missing '#' delimiter in bookmark name")
    if SNAPSHOT_SEP in name:
        raise NameError_(name, "snapshot delimiter '@' is not expected here")
    _check_entity(name, existing)
    return name


def validate_any(name: str, *, existing: bool = False) -> NameKind:
    """Check a dataset, snapshot or bookmark name; return which one it is by its shape."""
    _check_str(name)
    _check_entity(name, existing)
    if SNAPSHOT_SEP in name:
        return NameKind.SNAPSHOT
    if BOOKMARK_SEP in name:
        return NameKind.BOOKMARK
    return NameKind.DATASET


def validate_component(short: str, *, what: str = "snapshot") -> str:
    """Check a short snapshot or bookmark name on its own (``daily-1``); return it."""
    _check_str(short)
    if not short:
        raise NameError_(short, f"empty {what} name")
    if len(short) > MAX_NAME_LEN:
        raise NameError_(short, f"name is too long ({len(short)} > {MAX_NAME_LEN})")
    for ch in short:
        if ch not in _VALID:
            raise NameError_(short, f"{what} name contains invalid character {ch!r}")
    return short


def is_valid(name: str, *, existing: bool = False) -> bool:
    """True when ``name`` is a valid dataset, snapshot or bookmark name."""
    try:
        validate_any(name, existing=existing)
    except NameError_:
        return False
    return True


def _check_str(name: object) -> None:
    if not isinstance(name, str):
        raise NameError_(repr(name), f"a name must be a string, not {type(name).__name__}")


def _check_entity(name: str, existing: bool) -> None:
    """The checks every dataset, snapshot and bookmark name gets, in OpenZFS's order."""
    if not existing and TEMP_CHAR in name:
        raise NameError_(name, "invalid character '%' (reserved for OpenZFS's temporary names)")
    if len(name) > MAX_NAME_LEN:
        raise NameError_(name, f"name is too long ({len(name)} > {MAX_NAME_LEN})")
    if name.startswith("/"):
        raise NameError_(name, "leading slash")
    if not name:
        raise NameError_(name, "empty name")
    if name.endswith("/"):
        raise NameError_(name, "trailing slash")

    delim = ""
    start = 0
    first = True
    while True:
        end = start
        while end < len(name) and name[end] not in "/@#":
            end += 1
        component = name[start:end]
        stop = name[end] if end < len(name) else ""
        for ch in component:
            if ch not in _VALID_ENTITY:
                raise NameError_(name, f"component {component!r} contains invalid character {ch!r}")
        # OpenZFS skips this check for a component ended by '@'/'#' ("tank/.@s" passes its
        # namecheck), but no dataset "tank/." can exist, so such names are refused here too.
        if component == ".":
            raise NameError_(name, "component '.' is a self reference")
        if component == "..":
            raise NameError_(name, "component '..' is a parent reference")
        if stop in ("@", "#"):
            if delim:
                if delim == stop:
                    raise NameError_(name, f"multiple {stop!r} delimiters")
                raise NameError_(name, "both '@' and '#' delimiters")
            delim = stop
        if not component:
            where = f"before {stop!r}" if stop in ("@", "#") else "in name"
            if start == len(name) and delim:
                where = f"after {delim!r}"
            raise NameError_(name, f"empty component ({where})")
        if first:
            _check_pool_part(name, component)
            first = False
        if not stop:
            break
        if stop == "/" and delim:
            raise NameError_(name, f"'/' is not allowed after the {delim!r} delimiter")
        start = end + 1

    nesting = depth(name)
    if nesting >= MAX_NESTING:
        raise NameError_(
            name, f"nested too deeply ({nesting} levels; the limit is {MAX_NESTING - 1})"
        )


def _check_pool_part(name: str, pool: str) -> None:
    # An existing pool can have no other name, so the kernel's pool rules apply to every name.
    if len(pool) > MAX_POOL_NAME_LEN:
        raise NameError_(name, f"pool name is too long ({len(pool)} > {MAX_POOL_NAME_LEN})")
    if TEMP_CHAR in pool:
        raise NameError_(name, "pool name contains invalid character '%'")
    if pool[0] not in _LETTERS:
        raise NameError_(name, "pool name must begin with a letter")
    if pool in _RESERVED_POOLS:
        raise NameError_(name, "pool name is reserved")


# -- structure --------------------------------------------------------------------------------


def split(name: str) -> tuple[str, str, str]:
    """``(dataset, sep, short)``: ``("tank/a", "@", "s1")``; ``sep`` and ``short`` are "" for a
    dataset. Splits on the first ``@`` or ``#``; it does not validate."""
    for i, ch in enumerate(name):
        if ch in (SNAPSHOT_SEP, BOOKMARK_SEP):
            return name[:i], ch, name[i + 1 :]
    return name, "", ""


def dataset_of(name: str) -> str:
    """The dataset part of any name (``tank/a`` for ``tank/a@s1``)."""
    return split(name)[0]


def pool_of(name: str) -> str:
    """The pool a name lives in (``tank`` for ``tank/a/b@s1``)."""
    return dataset_of(name).split("/", 1)[0]


def parent(name: str) -> str | None:
    """The dataset directly above ``name``: a snapshot's or bookmark's own dataset, a dataset's
    parent, None for a pool's root dataset."""
    dataset, sep, _ = split(name)
    if sep:
        return dataset
    head, slash, _ = dataset.rpartition("/")
    return head if slash else None


def depth(name: str) -> int:
    """How deeply a name's dataset is nested (``tank`` is 0, ``tank/a/b`` is 2)."""
    return dataset_of(name).count("/")


def is_ancestor(ancestor: str, name: str) -> bool:
    """True when dataset ``ancestor`` is strictly above ``name`` (a dataset, snapshot or
    bookmark): ``tank/a`` is an ancestor of ``tank/a/b``, ``tank/a@s1`` and ``tank/a/b#m``,
    never of itself or of ``tank/ab``."""
    dataset, sep, _ = split(name)
    if sep and dataset == ancestor:
        return True
    return dataset.startswith(ancestor + "/")


def rebase(name: str, old_root: str, new_root: str) -> str:
    """``name`` moved from under dataset ``old_root`` to under ``new_root``
    (``tank/a/b@s1``, ``tank``, ``backup/alpha`` -> ``backup/alpha/a/b@s1``)."""
    dataset, sep, short = split(name)
    if dataset == old_root:
        moved = new_root
    elif dataset.startswith(old_root + "/"):
        moved = new_root + dataset[len(old_root) :]
    else:
        raise NameError_(name, f"not under {old_root!r}")
    return f"{moved}{sep}{short}"
