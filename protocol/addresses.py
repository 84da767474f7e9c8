"""Fleet addresses, parsed in one place: ``HOST:DATASET[@SNAP]``, ``store:NAME[:DATASET[@SNAP]]``.

The short verbs (``zfleet snapshot|diff|clone|send|destroy|ls``) name what they act on this way,
as syncoid names ``root@host:pool/fs``. Pure: the dataset and snapshot parts are checked with
OpenZFS's own naming rules (:mod:`protocol.names`), the host part with the fleet config's host
rule, and every refusal is an :class:`AddressError` quoting the address and saying what is wrong,
so a typo stops the command before any job is created.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from protocol import names
from protocol.errors import AddressError, NameError_

STORE_PREFIX: Final = "store:"
# The same rule as a [hosts.NAME] table of the fleet config (coordinator/config.py).
_HOST: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Address:
    """One place in the fleet: a host (or ``store:NAME``), a dataset, maybe a snapshot."""

    host: str  # a host name, or "store:NAME" for an object store
    dataset: str  # "" only for a bare store address ("store:vault")
    snapshot: str | None = None  # the short name after '@'

    @property
    def is_store(self) -> bool:
        return self.host.startswith(STORE_PREFIX)

    @property
    def store(self) -> str | None:
        return self.host[len(STORE_PREFIX) :] if self.is_store else None

    @property
    def full(self) -> str:
        """The ZFS name: ``pool/a@s1`` or ``pool/a``."""
        return f"{self.dataset}@{self.snapshot}" if self.snapshot else self.dataset

    def __str__(self) -> str:
        return f"{self.host}:{self.full}" if self.dataset else self.host


def parse_address(
    text: str,
    *,
    snapshot: bool | None = None,
    hosts: Collection[str] | None = None,
    stores: Collection[str] | None = None,
    allow_store: bool = False,
) -> Address:
    """Parse ``text``; ``snapshot`` True requires ``@SNAP``, False forbids it, None allows both.

    With ``hosts``/``stores`` the host or store must be one of them (the fleet config's).
    """
    if not isinstance(text, str) or not text.strip():
        raise AddressError("an address is HOST:DATASET[@SNAPSHOT], got an empty one")
    if text.startswith(STORE_PREFIX):
        if not allow_store:
            raise AddressError(f"{text!r}: an object store cannot be used here (a HOST: address)")
        store, _, rest = text[len(STORE_PREFIX) :].partition(":")
        if not _HOST.match(store):
            raise AddressError(f"{text!r}: {store!r} is not a store name")
        if stores is not None and store not in stores:
            known = ", ".join(sorted(stores)) or "none"
            raise AddressError(f"{text!r}: unknown store {store!r} (stores: {known})")
        host = STORE_PREFIX + store
    else:
        host, sep, rest = text.partition(":")
        if not sep:
            raise AddressError(f"{text!r} is not HOST:DATASET[@SNAPSHOT] (no ':' after the host)")
        if not _HOST.match(host):
            raise AddressError(f"{text!r}: {host!r} is not a host name")
        if hosts is not None and host not in hosts:
            known = ", ".join(sorted(hosts)) or "none"
            raise AddressError(f"{text!r}: unknown host {host!r} (hosts: {known})")
        if not rest:
            raise AddressError(f"{text!r}: the dataset is missing after {host + ':'!r}")
    if not rest:
        if snapshot:
            raise AddressError(f"{text!r}: a snapshot is needed here (...@NAME)")
        return Address(host=host, dataset="")
    dataset, sep, short = names.split(rest)
    try:
        if sep == names.BOOKMARK_SEP:
            raise NameError_(rest, "a bookmark cannot be used here")
        if sep:
            names.validate_snapshot(rest, existing=True)
        else:
            names.validate_dataset(rest, existing=True)
    except NameError_ as exc:
        raise AddressError(f"{text!r}: {exc}") from None
    if snapshot is True and not sep:
        raise AddressError(f"{text!r}: a snapshot is needed here ({text}@NAME)")
    if snapshot is False and sep:
        raise AddressError(f"{text!r}: a dataset is needed here, not a snapshot")
    return Address(host=host, dataset=dataset, snapshot=short or None)


def parse_pattern(text: str, *, hosts: Collection[str] | None = None,
                  stores: Collection[str] | None = None) -> tuple[str | None, str]:  # fmt: skip
    """``[HOST:]PATTERN`` (or ``store:NAME[:PATTERN]``) for ``zfleet ls``: (host or None, glob).

    The glob is matched against dataset and snapshot names; an empty one matches everything.
    """
    if text.startswith(STORE_PREFIX):
        store, _, glob = text[len(STORE_PREFIX) :].partition(":")
        if not _HOST.match(store):
            raise AddressError(f"{text!r}: {store!r} is not a store name")
        if stores is not None and store not in stores:
            known = ", ".join(sorted(stores)) or "none"
            raise AddressError(f"{text!r}: unknown store {store!r} (stores: {known})")
        return STORE_PREFIX + store, glob
    host, sep, glob = text.partition(":")
    if not sep:
        return None, text
    if not _HOST.match(host):
        raise AddressError(f"{text!r}: {host!r} is not a host name")
    if hosts is not None and host not in hosts:
        known = ", ".join(sorted(hosts)) or "none"
        raise AddressError(f"{text!r}: unknown host {host!r} (hosts: {known})")
    return host, glob
