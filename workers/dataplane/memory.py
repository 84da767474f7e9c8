"""Keep the C allocator from handing stream-sized buffers back to the kernel after every use.

Every chunk of a stream passes through a few buffers of about a MiB (read from `zfs send`, its
compressed form, the decompressed payload at the receiver). glibc's malloc returns such freed
memory to the kernel (an unmap, or a trim of the arena's top beyond ``M_TRIM_THRESHOLD``) and
the next buffer is faulted back in page by page: some 14,000 minor faults and about 8% of the CPU
of a 134 MB loopback transfer here. Fixing the mmap threshold above the largest frame and raising
the trim threshold keeps that memory in the process for the next chunk, which is what the bounded
queues already allow for anyway; the resident set stays at the transfer's peak instead of
shrinking between chunks.

Process-wide, so it is done once, by whoever runs a data plane in this process (the sender and
the stream server). On a C library without glibc's ``mallopt`` it does nothing.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Final

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
# glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): above every chunk size
# the sender allows (16 MiB), so stream buffers come from the arenas
MMAP_THRESHOLD: Final = 32 << 20
# how much free memory an arena's top may hold before it is given back: several times what one
# transfer keeps in flight per thread (queues of 256 KiB chunks), small next to a worker's RSS
TRIM_THRESHOLD: Final = 32 << 20

_lock = threading.Lock()
_done: list[bool] = []


def keep_stream_buffers() -> bool:
    """Tune the allocator once for this process; True if it took the settings."""
    with _lock:
        if not _done:
            _done.append(_tune())
        return _done[0]


def _tune() -> bool:
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (or no dynamic libc at all)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 for a value it refuses
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
