"""Progress of a transfer: events for the CLI's progress bars and for metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog

log = structlog.get_logger(__name__)

# the CLI redraws a few times a second; more often is wasted work on the hot path
DEFAULT_INTERVAL: Final = 0.5


@dataclass(frozen=True)
class ProgressEvent:
    """Where a transfer stands: stream bytes read from ``zfs send`` against its estimate."""

    transfer: str  # the send's snapshot, or the transfer id
    stream_bytes: int  # bytes of the send stream read so far
    estimate: int | None  # `zfs send -nP` size, when known
    wire_bytes: int  # compressed bytes handed to the sinks (the largest per-sink count)
    elapsed: float  # seconds since the send started
    done: bool = False

    @property
    def fraction(self) -> float | None:
        """Share done in [0, 1], when the estimate is known."""
        if not self.estimate:
            return None
        return min(1.0, self.stream_bytes / self.estimate)

    @property
    def rate(self) -> float:
        """Stream bytes per second so far."""
        return self.stream_bytes / self.elapsed if self.elapsed > 0 else 0.0


ProgressCallback = Callable[[ProgressEvent], None]


class ProgressMeter:
    """Counts bytes and calls ``callback`` at most every ``interval`` seconds, and once at the end.

    A callback that raises is logged and switched off: a broken progress bar must never stop a
    transfer.
    """

    def __init__(
        self,
        transfer: str,
        callback: ProgressCallback | None,
        *,
        estimate: int | None = None,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transfer = transfer
        self.estimate = estimate
        self._callback = callback
        self._interval = interval
        self._clock = clock
        self._start = clock()
        self._last = float("-inf")
        self._lock = threading.Lock()
        self.stream_bytes = 0
        self.wire_bytes = 0

    def add(self, stream_bytes: int, wire_bytes: int) -> None:
        """Record progress; maybe report it."""
        with self._lock:
            self.stream_bytes += stream_bytes
            self.wire_bytes += wire_bytes
            now = self._clock()
            if now - self._last < self._interval:
                return
            self._last = now
        self._emit(done=False)

    def finish(self) -> None:
        """Report the final figures."""
        self._emit(done=True)

    def snapshot(self, *, done: bool = False) -> ProgressEvent:
        """The current figures as an event."""
        return ProgressEvent(
            transfer=self.transfer,
            stream_bytes=self.stream_bytes,
            estimate=self.estimate,
            wire_bytes=self.wire_bytes,
            elapsed=self._clock() - self._start,
            done=done,
        )

    def _emit(self, *, done: bool) -> None:
        callback = self._callback
        if callback is None:
            return
        try:
            callback(self.snapshot(done=done))
        except Exception as exc:  # a user's callback: anything may come out of it
            log.warning(
                "transfer.progress_callback_failed", transfer=self.transfer, error=repr(exc)
            )
            self._callback = None
