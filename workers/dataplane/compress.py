"""Compress a stream's chunks on several threads and hand them back in order.

zstd is the data plane's bottleneck (about 530 MB/s per core at level 1), and zstandard releases
the GIL while it compresses, so a small pool of threads, each compressing whole chunks into
independent frames, scales with cores. At most ``depth`` chunks are in flight, which bounds
memory whatever the speed of the reader.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final, Generic, TypeVar

from protocol.errors import ConfigError
from protocol.log import in_context

T = TypeVar("T")

MAX_THREADS: Final = 8


def default_threads() -> int:
    """One compressor per core this process may use, at most ``MAX_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


class ParallelCompressor(Generic[T]):
    """Run ``compress`` over chunks on ``threads`` threads, keeping the input order."""

    def __init__(self, compress: Callable[[bytes], T], *, threads: int, depth: int | None = None):
        if threads < 1:
            raise ConfigError(f"compression threads must be at least 1, got {threads}")
        self._compress = compress
        self.threads = threads
        # two chunks per thread keep every thread busy while the reader fetches the next one
        self.depth = depth if depth is not None else 2 * threads
        if self.depth < 1:
            raise ConfigError(f"compression depth must be at least 1, got {self.depth}")

    def map(self, chunks: Iterable[bytes]) -> Iterator[tuple[bytes, T]]:
        """Yield ``(chunk, compress(chunk))`` in input order; errors surface in order too."""
        if self.threads == 1:
            # no pool: on one core a thread hop only adds latency
            for chunk in chunks:
                yield chunk, self._compress(chunk)
            return
        pending: deque[tuple[bytes, Future[T]]] = deque()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="zfleet-zstd") as pool:
            try:
                for chunk in chunks:
                    pending.append((chunk, pool.submit(in_context(self._compress), chunk)))
                    if len(pending) >= self.depth:
                        done, future = pending.popleft()
                        yield done, future.result()
                while pending:
                    done, future = pending.popleft()
                    yield done, future.result()
            finally:
                for _, future in pending:
                    future.cancel()
