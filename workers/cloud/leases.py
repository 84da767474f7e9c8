"""Leases: how an upload in progress tells prune which packs it needs, and the prune lock.

An upload writes ``leases/<upload id>`` before it reads the index, and lists every pack it
writes before uploading it; it renews the lease while it runs. A prune takes ``locks/prune``
first and reads the leases only after listing packs. Because a new upload checks for the prune
lock after writing its lease, either the upload sees the lock (and waits) or the prune sees the
lease: a pack an upload refers to is never deleted under it.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Final

import structlog

from protocol.errors import StoreConflict, StoreCorrupt, StoreError, StoreUnavailable
from workers.cloud.blobstore import BlobStore
from workers.cloud.repo import now

log = structlog.get_logger(__name__)

LEASE_TTL: Final = 15 * 60.0
PRUNE_LOCK: Final = "locks/prune"
PRUNE_LOCK_TTL: Final = 60 * 60.0


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as prune sees it."""

    upload: str
    host: str
    started: float
    expires: float
    packs: frozenset[str]

    def live(self, at: float) -> bool:
        return self.expires > at


class Lease:
    """The lease of one upload (not thread-safe: the sink's thread owns it)."""

    def __init__(
        self, target: BlobStore, *, ttl: float = LEASE_TTL, host: str | None = None
    ) -> None:
        self._target = target
        self.ttl = ttl
        self.upload = os.urandom(12).hex()
        self.key = f"leases/{self.upload}"
        self.host = host or socket.gethostname()
        self.started = now()
        self.expires = self.started + ttl
        self.packs: list[str] = []
        self._etag = target.put_if_absent(self.key, self._body())

    def _body(self) -> bytes:
        body = {
            "upload": self.upload,
            "host": self.host,
            "pid": os.getpid(),
            "started": self.started,
            "expires": self.expires,
            "packs": self.packs,
        }
        return json.dumps(body).encode()

    def _write(self) -> None:
        self.expires = now() + self.ttl
        self._etag = self._target.put_if_match(self.key, self._body(), self._etag)

    def add(self, pack_id: str) -> None:
        """Record a pack before it is uploaded (renews the lease)."""
        self.packs.append(pack_id)
        self._write()

    def renew_if_due(self) -> None:
        """Renew when half the lease time has passed."""
        if now() > self.expires - self.ttl / 2:
            self._write()

    def release(self) -> None:
        """Drop the lease (the upload committed its manifest, or gave up)."""
        self._target.delete(self.key)


def read_leases(target: BlobStore) -> list[LeaseInfo]:
    """Every lease in the repository; an unreadable one protects nothing but is reported."""
    out: list[LeaseInfo] = []
    for info in target.list("leases/"):
        try:
            b = json.loads(target.get(info.key))
            out.append(
                LeaseInfo(
                    upload=str(b["upload"]),
                    host=str(b["host"]),
                    started=float(b["started"]),
                    expires=float(b["expires"]),
                    packs=frozenset(str(p) for p in b["packs"]),
                )
            )
        except StoreCorrupt:
            continue  # released while we listed
        except (ValueError, KeyError, TypeError):
            log.warning("lease.unreadable", key=info.key)
    return out


def prune_lock_held(target: BlobStore) -> bool:
    """Whether a live prune lock exists."""
    try:
        b = json.loads(target.get(PRUNE_LOCK))
        return float(b["expires"]) > now()
    except StoreCorrupt:
        return False
    except (ValueError, KeyError, TypeError):
        return True  # unreadable: assume a prune is running, the safe side


def check_no_prune(target: BlobStore) -> None:
    """Raise :class:`StoreUnavailable` (retryable) while a prune runs."""
    if prune_lock_held(target):
        raise StoreUnavailable("a prune is running on this repository; retry after it ends")


def take_prune_lock(target: BlobStore, ttl: float = PRUNE_LOCK_TTL) -> None:
    """Take the prune lock; :class:`StoreConflict` when another prune holds it."""
    body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "expires": now() + ttl})
    try:
        target.put_if_absent(PRUNE_LOCK, body.encode())
    except StoreConflict:
        if prune_lock_held(target):
            raise StoreConflict("another prune is running on this repository") from None
        # A stale lock from a prune that died: remove it and try once more.
        target.delete(PRUNE_LOCK)
        target.put_if_absent(PRUNE_LOCK, body.encode())


def release_prune_lock(target: BlobStore) -> None:
    """Release the prune lock."""
    try:
        target.delete(PRUNE_LOCK)
    except StoreError as e:
        log.warning("prune.unlock_failed", error=str(e))
