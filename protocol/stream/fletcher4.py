"""Fletcher-4 as OpenZFS computes it: four running 64-bit sums over 32-bit words.

The sums after ``n`` more words have a closed form, so each block of words costs a handful of
vectorised numpy reductions instead of a Python loop::

    a' = a + sum(w[i])
    b' = b + n*a + sum(m_i * w[i])
    c' = c + n*b + T(n)*a + sum(T(m_i) * w[i])
    d' = d + n*c + T(n)*b + P(n)*a + sum(P(m_i) * w[i])

with ``m_i = n - i``, ``T(m) = m(m+1)/2`` and ``P(m) = m(m+1)(m+2)/6``; all arithmetic wraps at
2**64 as it does in C. Like OpenZFS, each ``update`` uses whole words only and ignores a tail of
fewer than four bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

import numpy as np
import numpy.typing as npt

MASK: Final = (1 << 64) - 1
# Words per vectorised step: small enough for the coefficient rows to stay in cache.
BLOCK_WORDS: Final = 1 << 14
# Below this many words a Python loop beats numpy's per-call overhead (record headers' tails).
SMALL_WORDS: Final = 48
# From this many words on, a block is widened into the instance's reused buffer; below, a small
# temporary is cheaper than allocating (and faulting in) that buffer for a one-off checksum.
WIDE_MIN_WORDS: Final = 4096

_m = np.arange(BLOCK_WORDS, 0, -1, dtype=np.uint64)
# The multipliers of b, c and d for the word at position i of a block, one contiguous row each
# (three plain dot products beat one n x 4 matrix product: numpy's integer matmul walks the
# matrix column by column); a block of n < BLOCK_WORDS words uses the last n entries (m_i runs
# n..1).
_COEF_B: Final[npt.NDArray[np.uint64]] = _m
_COEF_C: Final[npt.NDArray[np.uint64]] = _m * (_m + 1) // 2
_COEF_D: Final[npt.NDArray[np.uint64]] = _m * (_m + 1) * (_m + 2) // 6

Checksum = tuple[int, int, int, int]
Piece = tuple[int, int, int, int, int]  # words, and the four sums of the piece on its own


class Fletcher4:
    """A running fletcher-4 checksum, fed incrementally with :meth:`update`.

    ``byteswap=True`` reads the words big-endian, as OpenZFS does for a stream written on a
    machine of the other byte order.
    """

    __slots__ = ("_dtype", "_wide", "a", "b", "c", "d")

    def __init__(self, *, byteswap: bool = False, state: Checksum = (0, 0, 0, 0)) -> None:
        self._dtype = np.dtype(">u4" if byteswap else "<u4")
        # The words widened to 64 bits, one block at a time: reused, so a long stream does not
        # allocate (and fault in) a fresh buffer per block.
        self._wide: npt.NDArray[np.uint64] | None = None
        self.a, self.b, self.c, self.d = state

    @property
    def value(self) -> Checksum:
        """The four sums so far."""
        return (self.a, self.b, self.c, self.d)

    def reset(self) -> None:
        """Start again from zero (OpenZFS does so after every END record)."""
        self.a = self.b = self.c = self.d = 0

    def fold(self, piece: Piece) -> None:
        """Continue over a piece whose own sums :func:`piece_sums` computed."""
        n, s_a, s_b, s_c, s_d = piece
        a, b, c, d = self.a, self.b, self.c, self.d
        t = n * (n + 1) // 2
        p = t * (n + 2) // 3
        self.d = (d + n * c + t * b + p * a + s_d) & MASK
        self.c = (c + n * b + t * a + s_c) & MASK
        self.b = (b + n * a + s_b) & MASK
        self.a = (a + s_a) & MASK

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Fold ``data`` (its whole 32-bit words) into the running sums."""
        words = len(data) // 4
        if words == 0:
            return
        a, b, c, d = self.a, self.b, self.c, self.d
        if words <= SMALL_WORDS:
            code = ">" if self._dtype.byteorder == ">" else "<"
            for word in struct.unpack_from(f"{code}{words}I", data):
                a += word
                b += a
                c += b
                d += c
            self.a, self.b, self.c, self.d = a & MASK, b & MASK, c & MASK, d & MASK
            return
        w = np.frombuffer(data, dtype=self._dtype, count=words)
        for start in range(0, words, BLOCK_WORDS):
            words_in = w[start : start + BLOCK_WORDS]
            n = words_in.shape[0]
            if n < WIDE_MIN_WORDS:
                block = words_in.astype(np.uint64)
            else:
                if self._wide is None:
                    self._wide = np.empty(BLOCK_WORDS, dtype=np.uint64)
                block = self._wide[:n]
                np.copyto(block, words_in)
            first = BLOCK_WORDS - n
            s_a = int(block.sum())
            s_b = int(np.dot(block, _COEF_B[first:]))
            s_c = int(np.dot(block, _COEF_C[first:]))
            s_d = int(np.dot(block, _COEF_D[first:]))
            t = n * (n + 1) // 2
            p = t * (n + 2) // 3
            d = (d + n * c + t * b + p * a + s_d) & MASK
            c = (c + n * b + t * a + s_c) & MASK
            b = (b + n * a + s_b) & MASK
            a = (a + s_a) & MASK
        self.a, self.b, self.c, self.d = a, b, c, d


def piece_sums(data: bytes | bytearray | memoryview, cuts: Iterable[int]) -> list[Piece]:
    """``data`` (little-endian, whole words) cut at the byte offsets ``cuts``: each piece's
    word count and own sums, in order, ready for :meth:`Fletcher4.fold`.

    The running checksum at many points of a buffer (every record of a send stream has one)
    costs a few numpy passes over the whole buffer instead of several numpy calls per point:
    within a block of ``W`` words every word is weighted once against the block's end
    (``M_i = W - i``), ``np.add.reduceat`` sums the weighted words per piece, and a piece
    ending ``e`` words before the block's end has ``m_i = M_i - e``, so its own sums follow
    exactly (binomial shifts, all wrapping at 2**64)::

        sum(m w)    = S1 - e S0
        sum(T(m) w) = S2 - e S1 + T(e - 1) S0
        sum(P(m) w) = S3 - e (S2 + S1 + S0) + T(e) (S1 + 2 S0) - P(e) S0

    Offsets outside ``(0, len(data))`` and repeats are ignored; each offset must be a
    multiple of 4.
    """
    words = len(data) // 4
    bounds = sorted({c // 4 for c in cuts if 0 < c < words * 4})
    if not words:
        return []
    w_all = np.frombuffer(data, dtype="<u4", count=words)
    out: list[Piece] = []
    at = 0  # index into bounds
    for base in range(0, words, BLOCK_WORDS):
        width = min(BLOCK_WORDS, words - base)
        starts = [0]
        while at < len(bounds) and bounds[at] < base + width:
            if bounds[at] > base:  # a cut on the block's start is the block's own first piece
                starts.append(bounds[at] - base)
            at += 1
        w = w_all[base : base + width].astype(np.uint64)
        first = BLOCK_WORDS - width
        idx = np.array(starts, dtype=np.intp)
        s0 = np.add.reduceat(w, idx)
        s1 = np.add.reduceat(w * _COEF_B[first:], idx)
        s2 = np.add.reduceat(w * _COEF_C[first:], idx)
        s3 = np.add.reduceat(w * _COEF_D[first:], idx)
        ends = np.array([*starts[1:], width], dtype=np.uint64)
        e = np.uint64(width) - ends
        t_e = e * (e + np.uint64(1)) // np.uint64(2)
        t_e1 = e * (e - np.uint64(1)) // np.uint64(2)  # e = 0 gives 0 (0 times the wrap)
        p_e = t_e * (e + np.uint64(2)) // np.uint64(3)
        sb = s1 - e * s0
        sc = s2 - e * s1 + t_e1 * s0
        sd = s3 - e * (s2 + s1 + s0) + t_e * (s1 + np.uint64(2) * s0) - p_e * s0
        n = ends - np.array(starts, dtype=np.uint64)
        out += zip(n.tolist(), s0.tolist(), sb.tolist(), sc.tolist(), sd.tolist(), strict=True)
    return out


def fletcher4(data: bytes | bytearray | memoryview, *, byteswap: bool = False) -> Checksum:
    """The fletcher-4 checksum of ``data`` from a zero state."""
    f = Fletcher4(byteswap=byteswap)
    f.update(data)
    return f.value


def fletcher4_reference(data: bytes, *, byteswap: bool = False) -> Checksum:
    """A plain word-by-word fletcher-4, for tests and as the benchmark's baseline."""
    a = b = c = d = 0
    for i in range(0, len(data) // 4 * 4, 4):
        word = data[i : i + 4]
        a = (a + int.from_bytes(word, "big" if byteswap else "little")) & MASK
        b = (b + a) & MASK
        c = (c + b) & MASK
        d = (d + c) & MASK
    return (a, b, c, d)
