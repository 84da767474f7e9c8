"""From record summaries to the figures, the clusters and the proposal (pure: no I/O).

The three figures, in bytes of 128 KiB records (trailing zeros free, 512-byte sectors):

- now: each dataset stored on its own, the sum of each one's distinct records;
- after: each cluster's base stored whole, each member only for the records it does not share
  with its base (what a clone of the base carrying the member's content costs);
- lower bound: every distinct record of the collection once (what perfect block dedup, e.g.
  ``dedup=on``, would store, at the cost of its table in RAM).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from protocol.errors import ConfigError

from .cluster import Merge, agglomerate, choose_bases
from .overlap import Matrix, overlaps, similarity, union_bytes
from .proposal import ClusterPlan, MemberPlan, Proposal
from .records import RecordSet
from .sketch import UNION_K, Summary, UnionSketch, summarize

DEFAULT_THRESHOLD: Final = 0.25  # a dataset joins a base when a quarter of their union is shared
EXACT_MAX: Final = 64  # above this many datasets, "auto" sketches: pairwise exact work is n^2


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything ``zfleet dedup analyze`` reports."""

    summaries: tuple[Summary, ...]
    shared: Matrix  # bytes shared by each pair (diagonal: each one's unique bytes)
    similarity: Matrix  # byte-weighted Jaccard
    bases: tuple[int, ...]  # index of each dataset's base (its own index for a base)
    merges: tuple[Merge, ...]
    proposal: Proposal

    @property
    def names(self) -> list[str]:
        return [s.dataset for s in self.summaries]

    @property
    def logical(self) -> int:
        """Bytes of every record with repetition: the data as files hold it."""
        return sum(s.logical for s in self.summaries)

    def order(self) -> list[int]:
        """Datasets cluster by cluster (as the proposal lists them), base first: the heatmap's
        rows, so each cluster is a block on the diagonal."""
        index = {s.dataset: i for i, s in enumerate(self.summaries)}
        out: list[int] = []
        for cluster in self.proposal.clusters:
            out.append(index[cluster.base])
            out.extend(index[m.dataset] for m in cluster.members)
        return out

    def cluster_of(self) -> list[int]:
        """Each dataset's cluster number (its place in the proposal)."""
        index = {s.dataset: i for i, s in enumerate(self.summaries)}
        out = [0] * len(self.summaries)
        for number, cluster in enumerate(self.proposal.clusters):
            out[index[cluster.base]] = number
            for m in cluster.members:
                out[index[m.dataset]] = number
        return out


@dataclass(frozen=True, eq=False)
class Collection:
    """The summaries of a collection, and the sketch of its union (for the lower bound)."""

    summaries: tuple[Summary, ...]
    union: UnionSketch


def summarize_all(
    items: Iterable[tuple[str, str | None, RecordSet]],
    *,
    method: str,
    k: int,
    count: int,
    union_k: int = UNION_K,
) -> Collection:
    """Summaries of ``count`` datasets, exact or sketched as ``method`` says (auto: exact up to
    EXACT_MAX datasets). Each record set can be dropped once summarized: memory stays bounded."""
    if method not in ("auto", "exact", "sketch"):
        raise ConfigError(f"method must be auto, exact or sketch, not {method!r}")
    if k < 2:
        raise ConfigError(f"the sketch size must be at least 2, not {k}")
    exact = method == "exact" or (method == "auto" and count <= EXACT_MAX)
    union = UnionSketch(union_k)
    summaries = []
    for dataset, snapshot, records in items:
        summaries.append(summarize(dataset, snapshot, records, None if exact else k))
        if not exact:
            union.add(records)
    return Collection(tuple(summaries), union)


def analyze(
    collection: Collection | Sequence[Summary], *, threshold: float = DEFAULT_THRESHOLD
) -> Analysis:
    """Overlaps, clusters, bases and the figures for a collection (given summaries alone, a
    sketched collection's lower bound comes from the small sketches, with a larger error)."""
    union = collection.union if isinstance(collection, Collection) else None
    summaries = collection.summaries if isinstance(collection, Collection) else collection
    if not summaries:
        raise ConfigError("nothing to analyse: no datasets")
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"the threshold is a similarity in (0, 1], not {threshold}")
    names = [s.dataset for s in summaries]
    if len(set(names)) != len(names):
        raise ConfigError("a dataset appears twice in the collection")
    shared = overlaps(summaries)
    sim = similarity(shared)
    groups, merges = agglomerate(sim, threshold)
    assignment = choose_bases(groups, shared, sim, threshold)
    bases = tuple(assignment[i] for i in range(len(summaries)))
    exact = all(s.exact for s in summaries)
    bound = union_bytes(summaries) if exact or union is None else union.total()
    proposal = build_proposal(summaries, shared, bases, threshold=threshold, bound=round(bound))
    return Analysis(tuple(summaries), shared, sim, bases, tuple(merges), proposal)


def build_proposal(
    summaries: Sequence[Summary],
    shared: Matrix,
    bases: Sequence[int],
    *,
    threshold: float,
    bound: int,
    method: str | None = None,
) -> Proposal:
    """The proposal for given bases: each dataset's figures from ``shared`` with its base."""
    clusters = []
    for base in sorted(set(bases)):
        members = tuple(
            MemberPlan(
                summaries[m].dataset,
                summaries[m].snapshot,
                summaries[m].unique,
                round(float(shared[m, base])),
                summaries[m].unique - round(float(shared[m, base])),
            )
            for m in range(len(summaries))
            if bases[m] == base and m != base
        )
        b = summaries[base]
        clusters.append(ClusterPlan(b.dataset, b.snapshot, b.unique, members))
    # largest saving first, then by name: the order the optimizer works in and the table shows
    clusters.sort(key=lambda c: (c.bytes_after - c.bytes_now, c.base))
    now = sum(s.unique for s in summaries)
    after = sum(c.bytes_after for c in clusters)
    exact = all(s.exact for s in summaries)
    return Proposal(
        tuple(clusters),
        now,
        after,
        bound,
        method or ("exact" if exact else "sketch"),
        threshold,
    )
