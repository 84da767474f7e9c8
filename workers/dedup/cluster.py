"""Group look-alike datasets and pick a base for each group: the image the others become clones of.

Two steps. Average-linkage agglomerative clustering on the byte-weighted similarity merges the
closest groups until no two are at least ``threshold`` alike; the merge list is kept (a
dendrogram). Then the choice is tuned for what a rebase saves: each group's base is its medoid,
the member sharing the most bytes with the others (a member stored as a clone of the base costs
its bytes minus those it shares with the base), and every dataset is moved to the base it shares
most with, among those at least ``threshold`` alike, or stands alone. Bases are re-picked and
members re-assigned until nothing changes (each round can only lower the cost; the best seen is
kept, so a cycle cannot make it worse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from .overlap import Matrix

MAX_ROUNDS: Final = 20


@dataclass(frozen=True)
class Merge:
    """One step of the agglomeration: groups ``left`` and ``right`` (ids as in scipy's linkage:
    datasets 0..n-1, then n, n+1... for merged groups) joined at ``similarity``."""

    left: int
    right: int
    similarity: float
    size: int


def agglomerate(sim: Matrix, threshold: float) -> tuple[list[list[int]], list[Merge]]:
    """Average-linkage groups of datasets at least ``threshold`` alike, and the merges made."""
    n = len(sim)
    work = np.array(sim, dtype=np.float64, copy=True)
    np.fill_diagonal(work, -np.inf)
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    ident = list(range(n))  # the merge id of the group in each row
    merges: list[Merge] = []
    while len(members) > 1:
        flat = int(np.argmax(work))
        a, b = divmod(flat, n)
        best = float(work[a, b])
        if best < threshold or best == -np.inf:
            break
        na, nb = len(members[a]), len(members[b])
        row = (na * work[a] + nb * work[b]) / (na + nb)
        work[a, :] = row
        work[:, a] = row
        work[a, a] = -np.inf
        work[b, :] = -np.inf
        work[:, b] = -np.inf
        members[a] = members[a] + members.pop(b)
        merges.append(Merge(ident[a], ident[b], best, na + nb))
        ident[a] = n + len(merges) - 1
    return [sorted(g) for g in members.values()], merges


def medoid(group: list[int], shared: Matrix) -> int:
    """The member sharing the most bytes with the rest of ``group`` (ties: the lowest index)."""
    if len(group) == 1:
        return group[0]
    idx = np.array(group)
    block = shared[np.ix_(idx, idx)]
    gains = block.sum(axis=0) - np.diag(block)
    return int(idx[int(np.argmax(gains))])


def cost(assignment: dict[int, int], shared: Matrix) -> float:
    """Bytes stored when each dataset is a clone of its base (a base maps to itself)."""
    unique = np.diag(shared)
    total = 0.0
    for member, base in assignment.items():
        total += (
            float(unique[member])
            if member == base
            else float(unique[member] - shared[member, base])
        )
    return total


def _groups(assignment: dict[int, int]) -> list[list[int]]:
    out: dict[int, list[int]] = {}
    for member, base in sorted(assignment.items()):
        out.setdefault(base, []).append(member)
    return list(out.values())


def choose_bases(
    groups: list[list[int]], shared: Matrix, sim: Matrix, threshold: float
) -> dict[int, int]:
    """Each dataset's base (itself for a base), starting from ``groups`` and tuned for bytes."""
    assignment = {m: medoid(g, shared) for g in groups for m in g}
    best, best_cost = dict(assignment), cost(assignment, shared)
    for _round in range(MAX_ROUNDS):
        bases = sorted(set(assignment.values()))
        moved: dict[int, int] = {}
        for member in assignment:
            if member in bases:
                moved[member] = member
                continue
            fit = [b for b in bases if sim[member, b] >= threshold and shared[member, b] > 0]
            moved[member] = max(fit, key=lambda b: (shared[member, b], -b)) if fit else member
        regrouped = {m: medoid(g, shared) for g in _groups(moved) for m in g}
        here = cost(regrouped, shared)
        if here < best_cost:
            best, best_cost = dict(regrouped), here
        if regrouped == assignment:
            break
        assignment = regrouped
    # a re-picked medoid can leave a member below the threshold: that member stands alone
    return {m: b if m == b or sim[m, b] >= threshold else m for m, b in best.items()}
