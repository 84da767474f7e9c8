"""Keep a short-lived store process's heap from holding on to the store's big buffers.

glibc serves a large allocation with its own mapping, but raises that threshold after the first
such buffer is freed; from then on the 1 MiB compression groups and the packs come from the heap,
and what they leave behind when freed stays resident. A `zfleet cloud put` or `restore` is
compared with borg on peak memory, so it pins the threshold at 256 KiB (record payloads of
128 KiB still come from the heap, where they are reused) and gives memory back above 512 KiB of
free heap top. Elsewhere (another libc) this does nothing.
"""

from __future__ import annotations

import ctypes
from typing import Final

M_TRIM_THRESHOLD: Final = -1  # glibc's malloc.h
M_MMAP_THRESHOLD: Final = -3
MMAP_THRESHOLD: Final = 256 * 1024
TRIM_THRESHOLD: Final = 512 * 1024


def bound_heap() -> bool:
    """Apply the thresholds to this process; True when the C library took them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
