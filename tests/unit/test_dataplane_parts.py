"""Data-plane parts: the bandwidth limit, the threaded compressor and progress reporting."""

from __future__ import annotations

import os
import threading
import time

import pytest

from protocol.errors import ConfigError, FrameError
from protocol.frames import Codec, compress_payload
from workers.dataplane.compress import ParallelCompressor
from workers.dataplane.progress import ProgressEvent, ProgressMeter
from workers.dataplane.throttle import Throttle


class FakeClock:
    """A clock the test moves; sleeping is replaced by moving it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_holds_the_average_rate() -> None:
    throttle = Throttle(1_000_000, burst=0.1)
    start = time.monotonic()
    for _ in range(5):
        throttle.wait(100_000)  # 500 kB at 1 MB/s with a 100 kB burst: at least 0.4 s
    elapsed = time.monotonic() - start
    assert 0.35 <= elapsed < 1.5


def test_throttle_lets_a_burst_through_at_once() -> None:
    clock = FakeClock()
    throttle = Throttle(1000, clock=clock)
    assert throttle._reserve(1000) == 0.0
    assert throttle._reserve(500) == pytest.approx(0.5)
    clock.now += 2.0  # refilled (up to the burst) while idle
    assert throttle._reserve(400) == 0.0


def test_throttle_wakes_early_on_cancel() -> None:
    throttle = Throttle(10, burst=0.1)
    stop = threading.Event()
    stop.set()
    start = time.monotonic()
    throttle.wait(1000, stop)  # would be 100 s without the stop
    assert time.monotonic() - start < 1.0


def test_throttle_refuses_a_nonsense_rate() -> None:
    with pytest.raises(ConfigError):
        Throttle(0)


@pytest.mark.parametrize("threads", [1, 3])
def test_parallel_compressor_keeps_order_and_round_trips(threads: int) -> None:
    import zstandard

    chunks = [os.urandom(1000) + bytes(5000) * (i % 3) for i in range(20)]
    pool = ParallelCompressor(lambda b: compress_payload(b, 1), threads=threads, depth=4)
    out = list(pool.map(iter(chunks)))
    assert [raw for raw, _ in out] == chunks
    for raw, prepared in out:
        if prepared.codec is Codec.ZSTD:
            assert zstandard.ZstdDecompressor().decompress(prepared.data) == raw
        else:
            assert prepared.data == raw


def test_a_stream_of_one_chunk_is_compressed_without_the_pool() -> None:
    import threading

    where: list[str] = []

    def compress(b: bytes) -> object:
        where.append(threading.current_thread().name)
        return compress_payload(b, 1)

    pool = ParallelCompressor(compress, threads=3)
    [(raw, _)] = list(pool.map(iter([b"one" * 100])))
    assert raw == b"one" * 100 and where == [threading.current_thread().name]
    where.clear()
    assert [r for r, _ in pool.map(iter([b"a", b"b"]))] == [b"a", b"b"]
    assert all(name.startswith("zfleet-zstd") for name in where) and len(where) == 2
    assert list(pool.map(iter([]))) == []


def test_incompressible_chunks_go_raw() -> None:
    noise = os.urandom(64 * 1024)
    pool = ParallelCompressor(lambda b: compress_payload(b, 1), threads=2)
    [(_, prepared)] = list(pool.map([noise]))
    assert prepared.codec is Codec.RAW and prepared.data == noise


def test_compressor_bounds_chunks_in_flight() -> None:
    read = 0

    def source() -> object:
        nonlocal read
        for _ in range(100):
            read += 1
            yield b"x" * 100

    pool = ParallelCompressor(lambda b: compress_payload(b, 1), threads=2, depth=3)
    results = pool.map(source())  # type: ignore[arg-type]
    next(results)
    assert read <= 3  # the reader is held back while the consumer is slow
    assert len(list(results)) == 99


def test_compressor_errors_surface_in_order() -> None:
    pool = ParallelCompressor(lambda b: compress_payload(b, 99), threads=2)
    with pytest.raises(FrameError, match="level"):
        list(pool.map([b"abc"]))
    with pytest.raises(ConfigError):
        ParallelCompressor(lambda b: b, threads=0)


def test_progress_is_rate_limited_and_ends_with_done() -> None:
    clock = FakeClock()
    events: list[ProgressEvent] = []
    meter = ProgressMeter("p/a@s1", events.append, estimate=1000, interval=1.0, clock=clock)
    for _ in range(10):
        meter.add(50, 20)
        clock.now += 0.25
    meter.finish()
    assert 2 <= len(events) <= 5  # about one per simulated second, plus the final one
    last = events[-1]
    assert last.done and last.stream_bytes == 500 and last.wire_bytes == 200
    assert last.fraction == pytest.approx(0.5)
    assert last.rate == pytest.approx(500 / 2.5)


def test_a_failing_progress_callback_is_switched_off() -> None:
    calls = 0

    def broken(event: ProgressEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("terminal closed")

    meter = ProgressMeter("p/a@s1", broken, interval=0.0)
    meter.add(1, 1)
    meter.add(1, 1)
    meter.finish()
    assert calls == 1 and meter.stream_bytes == 2
