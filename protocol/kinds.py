"""Dataset kinds: the compartment a dataset belongs to, kept on the dataset itself.

A kind is the ZFS user property ``zfleet:kind`` (:data:`KIND_PROPERTY`). Like every user
property it is inherited by descendants, so ``zfs set zfleet:kind=home tank/homes`` makes each
home below it a ``home`` until one says otherwise. The coordinator's policies per kind
(``[kinds.<kind>]`` in the fleet config, coordinator/kinds.py) decide where a dataset of that
kind replicates, whether it goes to the object store, how long its snapshots stay and which
containers mount it. Pure: names and parsing only.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Mapping
from typing import Final

from protocol.errors import ConfigError

KIND_PROPERTY: Final = "zfleet:kind"
# the group key a dataset is encrypted under (set by zfleet keys/ephemeral; inherited)
KEY_GROUP_PROPERTY: Final = "zfleet:keygroup"


class Kind(enum.StrEnum):
    """The compartments (docs/compartments.md says what each is for)."""

    BASE = "base"
    IMAGE = "image"
    CONTAINER = "container"
    HOME = "home"
    SHARED = "shared"
    LOG = "log"
    EPHEMERAL = "ephemeral"
    TEMP = "temp"


KINDS: Final = tuple(k.value for k in Kind)

# One line per kind, for `zfleet kind show` and the docs.
DESCRIPTIONS: Final[Mapping[Kind, str]] = {
    Kind.BASE: "a shared base filesystem that images are cloned from",
    Kind.IMAGE: "an application image: a clone of a base plus its own layer",
    Kind.CONTAINER: "a running container's writable root, cloned from an image",
    Kind.HOME: "a user's home: its own dataset, mounted into containers, never in an image",
    Kind.SHARED: "data shared between containers and applications, mounted by policy",
    Kind.LOG: "append-only logs, rolled over per period and sealed when a period closes",
    Kind.EPHEMERAL: "a throw-away layer over a shared base, its new data under the user's key",
    Kind.TEMP: "scratch data: never replicated, never stored",
}

# Kinds whose data is a user's or an application's own: it must never end up inside an image.
PRIVATE_KINDS: Final = frozenset({Kind.HOME, Kind.SHARED, Kind.LOG, Kind.EPHEMERAL, Kind.TEMP})
# Kinds that are (or become) images other datasets are cloned from.
IMAGE_KINDS: Final = frozenset({Kind.BASE, Kind.IMAGE, Kind.CONTAINER})


def parse_kind(text: str) -> Kind:
    """``text`` as a kind; ConfigError naming the known kinds (and the likely one) otherwise."""
    try:
        return Kind(text)
    except ValueError:
        pass
    near = difflib.get_close_matches(text.lower(), KINDS, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    shown = text if len(text) <= 40 else text[:37] + "..."
    raise ConfigError(f"{shown!r} is not a dataset kind (kinds: {', '.join(KINDS)}){hint}")


def kind_of(user_props: Mapping[str, str]) -> Kind | None:
    """The kind in a dataset's user properties (as an inventory lists them), or None when it has
    none; a value that is no kind (set by hand with ``zfs set``) is a ConfigError."""
    raw = user_props.get(KIND_PROPERTY)
    if raw is None or raw in ("", "-"):
        return None
    return parse_kind(raw)
