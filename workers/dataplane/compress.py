"""Compress a stream's chunks on several threads and hand them back in order.

zstd is the data plane's bottleneck (about 530 MB/s per core at level 1), and zstandard releases
the GIL while it compresses, so a small pool of threads, each compressing whole chunks into
independent frames, scales with cores. At most ``depth`` chunks are in flight, which bounds
memory whatever the speed of the reader.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Final, Generic, TypeVar

from protocol.errors import ConfigError
from protocol.log import context_thread

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
        # a stream of one chunk (most small incrementals) is compressed here: starting and
        # joining the pool's threads would cost more than the chunk itself
        source = iter(chunks)
        first = next(source, None)
        if first is None:
            return
        second = next(source, None)
        if second is None:
            yield first, self._compress(first)
            return
        yield from self._pooled(itertools.chain((first, second), source))

    def _pooled(self, chunks: Iterable[bytes]) -> Iterator[tuple[bytes, T]]:
        # Long-lived workers fed through C queues: per chunk one put and one get, no Future, lock
        # or wrapper object. Every hand-over between threads is a chance for the thread holding
        # the GIL to be switched out with it, and on a busy host that stalls the whole pipeline.
        todo: SimpleQueue[tuple[int, bytes] | None] = SimpleQueue()
        done: SimpleQueue[_Done[T]] = SimpleQueue()
        stop = threading.Event()
        workers = [
            context_thread(
                self._work, args=(todo, done, stop), name=f"zfleet-zstd_{i}", daemon=True
            )
            for i in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        ready: dict[int, _Done[T]] = {}
        sent = taken = 0
        try:
            for chunk in chunks:
                todo.put((sent, chunk))
                sent += 1
                if sent - taken >= self.depth:
                    yield _take(taken, ready, done)
                    taken += 1
            while taken < sent:
                yield _take(taken, ready, done)
                taken += 1
        finally:
            stop.set()  # a consumer that stopped early: skip what is still queued
            for _ in workers:
                todo.put(None)
            for worker in workers:
                worker.join()

    def _work(
        self,
        todo: SimpleQueue[tuple[int, bytes] | None],
        done: SimpleQueue[_Done[T]],
        stop: threading.Event,
    ) -> None:
        while (item := todo.get()) is not None:
            index, chunk = item
            if stop.is_set():
                continue
            try:
                done.put(_Done(index, chunk, self._compress(chunk), None))
            except BaseException as exc:  # handed to the consumer, raised there in order
                done.put(_Done(index, chunk, None, exc))


@dataclass(frozen=True)
class _Done(Generic[T]):
    index: int
    chunk: bytes
    result: T | None
    error: BaseException | None


def _take(index: int, ready: dict[int, _Done[T]], done: SimpleQueue[_Done[T]]) -> tuple[bytes, T]:
    """The result for chunk ``index``, waiting for it; results that finish early wait in
    ``ready``."""
    while index not in ready:
        item = done.get()
        ready[item.index] = item
    item = ready.pop(index)
    if item.error is not None:
        raise item.error
    return item.chunk, item.result  # type: ignore[return-value]  # set whenever error is None
