"""Replay protection on the stream server: which transfer ids are streaming, and which were used.

A grant applies one stream once, however many connections (resumes) that takes; once applied its
transfer id is refused until the grant expires. With a ``path`` the used ids survive a restart of
the server: a captured grant (a forced one could roll a target back) cannot be replayed by
waiting for a reboot. The file is append-only, one ``<expiry> <transfer id>`` line per use, and
is compacted when loaded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from protocol.errors import ConfigError, GrantError, TransferInterrupted
from protocol.grants import Grant

log = structlog.get_logger(__name__)


class GrantLedger:
    """Transfer ids in use (this process) and used (until their grant expires)."""

    def __init__(self, clock: Callable[[], float] = time.time, *, path: Path | None = None):
        self._clock = clock
        self._path = path
        self._active: set[str] = set()
        self._done: dict[str, float] = {}
        self._lock = threading.Condition()
        # group commit: lines wait in _pending (under _lock); whoever holds _io writes and
        # fsyncs all of them at once, so concurrent receives share one fsync and none holds
        # _lock (which every new connection's begin needs) during it
        self._io = threading.Lock()
        self._pending: list[str] = []
        self._queued = 0  # lines ever queued
        self._synced = 0  # of those, how many are on disk (or failed loudly)
        if path is not None:
            self._load(path)

    def begin(self, grant: Grant, *, wait: float = 0.0) -> None:
        """Claim the grant's transfer id for this connection.

        A retry often arrives while the connection it replaces is still being torn down (its
        receive saving the partial state): wait up to ``wait`` seconds for that one to end.
        Raises GrantError for a used grant, TransferInterrupted (retryable) while still busy.
        """
        deadline = time.monotonic() + wait
        with self._lock:
            while True:
                now = self._clock()
                self._done = {tid: exp for tid, exp in self._done.items() if exp > now}
                if grant.transfer_id in self._done:
                    raise GrantError(
                        f"grant for transfer {grant.transfer_id!r} replayed: already used"
                    )
                if grant.transfer_id not in self._active:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransferInterrupted(
                        f"transfer {grant.transfer_id!r} is still streaming here; try again"
                    )
                self._lock.wait(left)
            self._active.add(grant.transfer_id)

    def end(self, grant: Grant, *, applied: bool) -> None:
        """Release the transfer id; once applied, it can never be used again before expiry.
        Returns once the use is on disk (with a ``path``)."""
        mine = 0
        with self._lock:
            self._active.discard(grant.transfer_id)
            if applied:
                self._done[grant.transfer_id] = grant.expires
                if self._path is not None:
                    self._pending.append(f"{grant.expires!r} {grant.transfer_id}\n")
                    self._queued += 1
                    mine = self._queued
            self._lock.notify_all()
        if mine:
            self._sync(mine)

    def _sync(self, upto: int) -> None:
        """Write and fsync the queued lines, unless another thread's fsync already covered
        line number ``upto``."""
        assert self._path is not None
        with self._io:
            if self._synced >= upto:
                return
            with self._lock:
                batch, self._pending = self._pending, []
                last = self._queued
            try:
                with self._path.open("a", encoding="utf-8") as fh:
                    fh.write("".join(batch))
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:  # the stream is applied already; say so loudly, do not undo it
                log.error("grant_ledger.write_failed", path=str(self._path), error=str(exc))
            self._synced = last

    def _load(self, path: Path) -> None:
        now = self._clock()
        try:
            lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"grant ledger {path} cannot be read: {exc}") from exc
        for number, line in enumerate(lines, 1):
            stamp, _, transfer_id = line.partition(" ")
            try:
                expires = float(stamp)
            except ValueError:
                # a torn last line after a crash is expected; anything else is worth a look
                log.warning("grant_ledger.bad_line", path=str(path), line=number)
                continue
            if transfer_id and expires > now:
                self._done[transfer_id] = expires
        compacted = "".join(f"{exp!r} {tid}\n" for tid, exp in self._done.items())
        try:
            partial = path.with_name(path.name + ".tmp")
            partial.write_text(compacted, encoding="utf-8")
            os.replace(partial, path)
        except OSError as exc:
            raise ConfigError(f"grant ledger {path} cannot be written: {exc}") from exc
