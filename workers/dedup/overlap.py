"""Shared bytes between every pair of datasets, and the bytes of the whole collection's union.

Both come from one pass over the fingerprints held (every record, or the sketches' samples):
records are grouped by the exact set of datasets holding them, so a base's thousand records
shared by the same 200 images become one group, added to the 200 x 200 block of the matrix
once. The cost follows the number of distinct holder sets, small in a collection of look-alikes.

With sketches, a record shared by A and B is in both samples exactly when it lies below both
thresholds, so below min(t_A, t_B) the pair is fully observed: the sampled shared bytes over the
sampled union bytes estimate the pair's byte-weighted Jaccard, and the exact per-dataset bytes
turn it into shared bytes. The collection's union is estimated alike from the k smallest
fingerprints of the whole collection, which the sketches contain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .sketch import Summary

Matrix = npt.NDArray[np.float64]


def _entries(
    summaries: Sequence[Summary],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """All held fingerprints, their sizes and holders, sorted by fingerprint."""
    keys = np.concatenate([s.keys for s in summaries]) if summaries else np.empty(0, np.uint64)
    sizes = np.concatenate([s.sizes for s in summaries]) if summaries else np.empty(0, np.int64)
    owners = np.repeat(np.arange(len(summaries)), [len(s.keys) for s in summaries])
    order = np.argsort(keys, kind="stable")
    return keys[order], sizes[order], owners[order]


def overlaps(summaries: Sequence[Summary]) -> Matrix:
    """An n x n matrix: bytes shared by datasets i and j (estimated with sketches); the diagonal
    holds each dataset's own unique bytes."""
    n = len(summaries)
    shared = np.zeros((n, n), dtype=np.float64)
    keys, sizes, owners = _entries(summaries)
    if len(keys):
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        counts = np.diff(np.r_[starts, len(keys)])
        groups: dict[bytes, float] = {}
        for start, count in zip(starts[counts > 1], counts[counts > 1], strict=True):
            holders = owners[start : start + count]
            tag = holders.tobytes()
            groups[tag] = groups.get(tag, 0.0) + float(sizes[start])
        for tag, weight in groups.items():
            idx = np.frombuffer(tag, dtype=owners.dtype)
            shared[np.ix_(idx, idx)] += weight
    unique = np.array([s.unique for s in summaries], dtype=np.float64)
    if not all(s.exact for s in summaries):
        shared = _scale(summaries, shared, unique)
    # an estimate may not exceed what either side holds
    np.minimum(shared, np.minimum.outer(unique, unique), out=shared)
    np.fill_diagonal(shared, unique)
    return shared


def _below(summary: Summary, thresholds: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    """Bytes of ``summary``'s sample with fingerprints below each threshold."""
    cumulative = np.r_[0.0, np.cumsum(summary.sizes, dtype=np.float64)]
    return np.asarray(cumulative[np.searchsorted(summary.keys, thresholds, side="left")])


def _scale(summaries: Sequence[Summary], sampled: Matrix, unique: Matrix) -> Matrix:
    """Shared bytes from the sampled shared bytes, by a ratio estimate.

    Below t = min(t_A, t_B) both samples are complete, so the byte-weighted Jaccard J of the pair
    is estimated by sampled shared / sampled union there; the exact unique bytes then give
    shared = J / (1 + J) * (u_A + u_B). The ratio is far steadier than dividing the sampled
    bytes by t (numerator and denominator move together), and exact when both are exact.
    """
    tops = np.array(
        [s.top_key if not s.exact else np.iinfo(np.uint64).max for s in summaries],
        dtype=np.uint64,
    )
    pair_top = np.minimum.outer(tops, tops)
    own = np.array([_below(s, pair_top[i]) for i, s in enumerate(summaries)])  # A below t(A,B)
    union = own + own.T - sampled
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.where(union > 0, sampled / np.where(union > 0, union, 1.0), 0.0)
    return np.asarray(jaccard / (1.0 + jaccard) * np.add.outer(unique, unique), dtype=np.float64)


def union_bytes(summaries: Sequence[Summary]) -> float:
    """Bytes of the distinct records of the whole collection (estimated when sketched)."""
    sketched = [s for s in summaries if not s.exact]
    if not sketched:
        keys, sizes, _owners = _entries(summaries)
        first = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.empty(0, bool)
        return float(sizes[first].sum())
    k = len(sketched[0].keys) + 1
    tops = np.array([s.top_key for s in sketched], dtype=np.uint64)
    keys = np.concatenate([*(s.keys for s in summaries), tops])
    sizes = np.concatenate(
        [*(s.sizes for s in summaries), np.array([s.top_size for s in sketched], np.int64)]
    )
    keys, first = np.unique(keys, return_index=True)
    sizes = sizes[first]
    # The k smallest distinct fingerprints of the union are all among the sketches' entries,
    # and every sketch is complete below the k-th, v. Below v the union's bytes and the sum of
    # the datasets' bytes are both known; their ratio, times the exact sum, is the estimate.
    top = keys[k - 1]
    sampled_union = float(sizes[: k - 1].sum())
    sampled_sum = sum(float(_below(s, np.array([top], np.uint64))[0]) for s in summaries)
    total = float(sum(s.unique for s in summaries))
    return total * sampled_union / sampled_sum if sampled_sum > 0 else 0.0


def similarity(shared: Matrix) -> Matrix:
    """Byte-weighted Jaccard: shared bytes over the bytes of the pair's union (1 on the
    diagonal; 0 where both are empty)."""
    unique = np.diag(shared)
    union = np.add.outer(unique, unique) - shared
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, shared / np.where(union > 0, union, 1.0), 0.0)
    np.fill_diagonal(out, 1.0)
    return np.asarray(out, dtype=np.float64)
