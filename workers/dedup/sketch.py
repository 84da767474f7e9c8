"""One dataset in bounded memory: totals plus its records, all of them or a bottom-k sample.

A bottom-k sketch keeps the k records with the smallest fingerprints. Fingerprints are uniform,
so those are a uniform sample, and the same records are picked in every dataset that holds them:
a record shared by two datasets that falls below both sketches' thresholds is in both sketches.
That makes pairwise overlaps, and the union of the whole collection, estimable from the sketches
alone (overlap.py). The k-th fingerprint itself is kept apart as the threshold, so the k-1 kept
below it are a sample with a known inclusion probability, threshold / 2^64.

A :class:`Summary` with ``threshold == 1.0`` holds every record (exact): a small dataset's sketch
is the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from .records import KEY_SPACE, RecordSet

DEFAULT_K: Final = 1024  # 12 KiB per dataset; overlap estimates within a few % of the union
UNION_K: Final = 1 << 16  # one sketch of the whole collection: 1 MiB

Keys = npt.NDArray[np.uint64]
Sizes = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Summary:
    """What the analysis keeps of one dataset."""

    dataset: str
    snapshot: str | None  # the snapshot read; None for live data or a stream's last state
    records: int  # records with repetition
    logical: int  # their bytes
    distinct: int  # distinct records
    unique: int  # bytes of the distinct records
    keys: Keys  # sorted fingerprints: all records, or the sample below the threshold
    sizes: Sizes  # their sizes
    threshold: float  # probability a record is in ``keys``: 1.0 when exact
    top_key: int = 0  # the k-th fingerprint (sketches only): a member of the union's bottom-k
    top_size: int = 0

    @property
    def exact(self) -> bool:
        return self.threshold >= 1.0


def summarize(
    dataset: str, snapshot: str | None, records: RecordSet, k: int | None = DEFAULT_K
) -> Summary:
    """Summarize ``records``: every record when ``k`` is None or the set is small, else a sketch."""
    keys = np.fromiter(records.sizes.keys(), dtype=np.uint64, count=len(records.sizes))
    sizes = np.fromiter(records.sizes.values(), dtype=np.int64, count=len(records.sizes))
    order = np.argsort(keys, kind="stable")
    keys, sizes = keys[order], sizes[order]
    distinct = len(keys)
    unique = int(sizes.sum())
    if k is None or distinct < k:
        threshold, top_key, top_size = 1.0, 0, 0
    elif k < 2:
        raise ValueError("a sketch needs k >= 2")
    else:
        top_key, top_size = int(keys[k - 1]), int(sizes[k - 1])
        threshold = top_key / KEY_SPACE
        keys, sizes = keys[: k - 1].copy(), sizes[: k - 1].copy()
    return Summary(
        dataset,
        snapshot,
        records.records,
        records.logical,
        distinct,
        unique,
        keys,
        sizes,
        threshold,
        top_key,
        top_size,
    )


class UnionSketch:
    """The k smallest distinct fingerprints of a whole collection, fed one dataset at a time.

    One of these is kept for the collection, not one per dataset, so it can be far larger than
    the per-dataset sketches: the lower bound (the union's bytes) then comes with an error near
    1 / sqrt(k), 0.4 % at the default, where the union of small sketches would give 1 / sqrt(1024).
    Incoming keys are buffered and compacted when the buffer passes k, so feeding n datasets
    costs a sort of about n * (records below the threshold), not n sorts of k.
    """

    def __init__(self, k: int = UNION_K) -> None:
        self.k = k
        self.keys: Keys = np.empty(0, dtype=np.uint64)
        self.sizes: Sizes = np.empty(0, dtype=np.int64)
        self.truncated = False  # once more than k distinct keys were seen, the figure estimates
        self._pending: list[tuple[Keys, Sizes]] = []
        self._pending_len = 0

    def add(self, records: RecordSet) -> None:
        keys = np.fromiter(records.sizes.keys(), dtype=np.uint64, count=len(records.sizes))
        sizes = np.fromiter(records.sizes.values(), dtype=np.int64, count=len(records.sizes))
        if self.truncated:
            keep = keys < self.keys[-1]
            keys, sizes = keys[keep], sizes[keep]
        self._pending.append((keys, sizes))
        self._pending_len += len(keys)
        if self._pending_len > self.k:
            self._compact()

    def _compact(self) -> None:
        keys = np.concatenate([self.keys, *(k for k, _s in self._pending)])
        sizes = np.concatenate([self.sizes, *(s for _k, s in self._pending)])
        self._pending, self._pending_len = [], 0
        keys, first = np.unique(keys, return_index=True)
        sizes = sizes[first]
        if len(keys) > self.k:
            keys, sizes = keys[: self.k], sizes[: self.k]
            self.truncated = True
        self.keys, self.sizes = keys, sizes

    def total(self) -> float:
        """Bytes of the collection's distinct records: exact until more than k were seen."""
        self._compact()
        if not self.truncated:
            return float(self.sizes.sum())
        # the k-th smallest is the threshold; the k-1 below it are a sample of known probability
        return float(self.sizes[:-1].sum()) / (int(self.keys[-1]) / KEY_SPACE)
