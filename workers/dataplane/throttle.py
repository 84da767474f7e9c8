"""A bandwidth limit: a token bucket that makes writers sleep, never spin."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from protocol.errors import ConfigError

# a second's worth of burst lets the first frame go out at once without overshooting for long
_BURST_SECONDS: Final = 1.0


class Throttle:
    """Limit callers to ``rate`` bytes per second on average (thread-safe).

    ``wait(n)`` returns once ``n`` bytes may go; it sleeps in slices so that ``stop`` (an event
    such as a cancellation) wakes it early.
    """

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        burst: float = _BURST_SECONDS,
    ) -> None:
        if rate <= 0:
            raise ConfigError(f"bandwidth limit must be a positive number of bytes/s, got {rate}")
        self.rate = rate
        self._clock = clock
        self._capacity = max(1.0, rate * burst)
        self._tokens = self._capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def _reserve(self, n: int) -> float:
        """Take ``n`` tokens (going into debt if needed); the seconds to wait to repay it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def wait(self, n: int, stop: threading.Event | None = None) -> None:
        """Block until ``n`` more bytes fit under the limit (or ``stop`` is set)."""
        delay = self._reserve(n)
        if delay <= 0:
            return
        if stop is None:
            time.sleep(delay)
        else:
            stop.wait(delay)
