"""A second pass for sketched collections: exact figures and a better base for each cluster.

Sketches pick bases with a bias: among a cluster's candidates, the one whose sample happens to
overstate its overlaps wins, and the same sample then overstates the saving (bench/dedup.py
measures it: tens of percent with small sketches). So, once the clusters are known, each
cluster's best candidates (16, by the sketches) are read again in full, then every member once,
comparing it with those candidates exactly; the base becomes the candidate that really shares
the most, and the members' figures are exact. Memory: the candidates' record sets only (a few
per cluster), never the whole collection. Only the lower bound stays an estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

from .analyze import Analysis, build_proposal
from .overlap import similarity
from .records import RecordSet

CANDIDATES: Final = 16  # cheap: each is compared with the members already being read

Arrays = tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]


def _arrays(records: RecordSet) -> Arrays:
    keys = np.fromiter(records.sizes.keys(), dtype=np.uint64, count=len(records.sizes))
    sizes = np.fromiter(records.sizes.values(), dtype=np.int64, count=len(records.sizes))
    order = np.argsort(keys)
    return keys[order], sizes[order]


def _shared(member: Arrays, other: Arrays) -> int:
    keys, sizes = member
    return int(sizes[np.isin(keys, other[0], assume_unique=True)].sum())


def reread(
    analysis: Analysis, read: Callable[[int], RecordSet], *, candidates: int = CANDIDATES
) -> Analysis:
    """``analysis`` with exact member figures and bases re-chosen among each cluster's best
    ``candidates``; ``read(i)`` reads dataset ``i`` again. An exact analysis comes back as is."""
    if analysis.proposal.method == "exact":
        return analysis
    summaries = analysis.summaries
    shared = np.array(analysis.shared, dtype=np.float64, copy=True)
    threshold = analysis.proposal.threshold
    clusters: dict[int, list[int]] = {}
    for member, base in enumerate(analysis.bases):
        clusters.setdefault(base, []).append(member)
    bases = list(analysis.bases)
    for group in clusters.values():
        if len(group) < 2:
            continue
        idx = np.array(group)
        block = shared[np.ix_(idx, idx)]
        gains = block.sum(axis=0) - np.diag(block)
        picked = [int(idx[i]) for i in np.argsort(-gains, kind="stable")[:candidates]]
        exact = {c: _arrays(read(c)) for c in picked}
        for member in group:
            own = exact[member] if member in exact else _arrays(read(member))
            for c, theirs in exact.items():
                if c != member:
                    shared[member, c] = shared[c, member] = _shared(own, theirs)
        totals = {c: sum(shared[m, c] for m in group if m != c) for c in picked}
        best = max(picked, key=lambda c: (totals[c], -c))
        for member in group:
            bases[member] = best
        del exact
    sim = similarity(shared)
    # a member the exact figures put below the threshold stands alone
    bases = [b if m == b or sim[m, b] >= threshold else m for m, b in enumerate(bases)]
    proposal = build_proposal(
        summaries,
        shared,
        bases,
        threshold=threshold,
        bound=analysis.proposal.lower_bound,
        method="sketch+reread",
    )
    return Analysis(summaries, shared, sim, tuple(bases), analysis.merges, proposal)
