"""A repository: a target, its plaintext config, its key slots, and the unlocked master key.

Layout of the bucket (or directory)::

    config                 plaintext JSON: format version, repository id, pack size
    keys/<slot>            the master key wrapped by a passphrase (scrypt) or a key file
    data/<xx>/<pack id>    packs of sealed blobs, each with its own sealed header
    index/<segment id>     sealed index segments (one per upload; immutable)
    manifests/<id>         sealed per-stream manifests
    leases/<upload id>     live uploads and the packs they write (prune honours them)
    locks/prune            held while a prune runs
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Final

import structlog

from protocol.errors import ConfigError, StoreConflict, StoreCorrupt
from workers.cloud import crypto as keys
from workers.cloud.blobstore import BlobStore
from workers.cloud.crypto import Crypto, MasterKey
from workers.cloud.packs import PACK_TARGET, Index, check_pack_target

log = structlog.get_logger(__name__)

REPO_VERSION: Final = 1


@dataclass(frozen=True)
class RepoKey:
    """How to unlock a repository: a passphrase or a key file's bytes. Never printed."""

    passphrase: str | None = field(default=None, repr=False)
    keyfile: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.passphrase is None) == (self.keyfile is None):
            raise ConfigError("give exactly one of a passphrase or a key file")


@dataclass(frozen=True)
class RepoConfig:
    id: str
    pack_size: int
    version: int = REPO_VERSION


class Repository:
    """An unlocked repository; share one per process (the index is loaded once, lazily)."""

    def __init__(self, target: BlobStore, config: RepoConfig, key: MasterKey) -> None:
        self.target = target
        self.config = config
        self.crypto = Crypto(key)
        self._index: Index | None = None

    @classmethod
    def init(
        cls,
        target: BlobStore,
        secret: RepoKey,
        *,
        pack_size: int = PACK_TARGET,
        scrypt_n: int = keys.SCRYPT_N,
    ) -> Repository:
        """Create a new repository; :class:`StoreConflict` if one exists there already."""
        config = RepoConfig(id=os.urandom(16).hex(), pack_size=check_pack_target(pack_size))
        key = MasterKey.generate()
        if secret.passphrase is not None:
            slot = keys.wrap_with_passphrase(key, secret.passphrase, n=scrypt_n)
        else:
            assert secret.keyfile is not None
            slot = keys.wrap_with_keyfile(key, secret.keyfile)
        body = {"version": REPO_VERSION, "id": config.id, "pack_size": config.pack_size}
        # The key slot goes first: a config without a key slot would be a locked-out repository.
        if target.head("config") is not None:
            raise StoreConflict(f"a repository already exists at {target.describe()}")
        target.put_if_absent(f"keys/{os.urandom(8).hex()}", slot)
        target.put_if_absent("config", json.dumps(body, sort_keys=True).encode())
        log.info("repo.initialised", repo=config.id, location=target.describe())
        return cls(target, config, key)

    @classmethod
    def open(cls, target: BlobStore, secret: RepoKey) -> Repository:
        """Open and unlock an existing repository."""
        if target.head("config") is None:
            raise ConfigError(
                f"no zfleet repository at {target.describe()} (run `zfleet cloud init`)"
            )
        try:
            raw = json.loads(target.get("config"))
            config = RepoConfig(
                id=str(raw["id"]), pack_size=int(raw["pack_size"]), version=int(raw["version"])
            )
        except (ValueError, KeyError, TypeError) as e:
            raise StoreCorrupt("the repository config is unreadable") from e
        if config.version != REPO_VERSION:
            raise ConfigError(f"repository format {config.version} is not supported")
        last: ConfigError | None = None
        for info in target.list("keys/"):
            try:
                key = keys.unwrap(
                    target.get(info.key), passphrase=secret.passphrase, keyfile=secret.keyfile
                )
            except ConfigError as e:
                last = e
                continue
            return cls(target, config, key)
        raise last or StoreCorrupt("the repository has no key slot")

    @property
    def index(self) -> Index:
        """The repository index, loaded on first use."""
        if self._index is None:
            self._index = Index.load(self.target, self.crypto)
        return self._index

    def fresh_index(self) -> Index:
        """The index brought up to date with the bucket (one listing).

        New segments (other writers) are added; if a segment vanished (a prune rewrote the
        index) the whole index is read again, so no upload deduplicates against a deleted pack.
        """
        if self._index is None:
            return self.index
        keys = {i.key.rsplit("/", 1)[-1] for i in self.target.list("index/")}
        if not self._index.segments <= keys:
            return self.reload_index()
        for seg in sorted(keys - self._index.segments):
            self._index.add_segment(seg, self.target.get(f"index/{seg}"), self.crypto)
        return self._index

    def reload_index(self) -> Index:
        """Forget the cached index and read it again (after another writer or a prune)."""
        self._index = None
        return self.index


def now() -> float:
    """Wall-clock seconds (one place, so tests can reason about lease times)."""
    return time.time()
