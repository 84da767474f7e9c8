"""Dedup analysis: how much a collection of look-alike images would shrink re-based on bases.

Each dataset is reduced to fingerprints of its 128 KiB records, read from its data or from send
streams; pairwise shared bytes give a similarity; clusters get a base each (a medoid image);
the figures compare the bytes stored now, after re-basing every member as a clone of its base,
and the record-level lower bound. A :class:`Proposal` carries the plan to the optimizer
(``zfleet rebase --optimize``). The rooms:

    records.py    one record's canonical form and fingerprint; RecordSet per dataset
    lz4block.py   OpenZFS LZ4 blocks (compressed and embedded stream records)
    streams.py    record sets from send streams, applied as a receive would apply them
    sources.py    record sets from a mounted tree or a snapshot through the backend
    sketch.py     Summary: totals plus all records or a bottom-k sample (bounded memory)
    overlap.py    pairwise shared bytes and the collection's union, exact or estimated
    cluster.py    average-linkage clustering, medoid bases, reassignment for bytes
    refine.py     the second pass after sketching: exact figures, better bases
    analyze.py    the figures and the proposal (pure)
    proposal.py   the frozen plan the optimizer consumes
    svg.py        the heatmap picture, plain SVG
"""

from workers.dedup.analyze import DEFAULT_THRESHOLD, Analysis, analyze, summarize_all
from workers.dedup.proposal import ClusterPlan, MemberPlan, Proposal
from workers.dedup.records import RECORD, RecordSet
from workers.dedup.sketch import DEFAULT_K, Summary, summarize

__all__ = [
    "DEFAULT_K",
    "DEFAULT_THRESHOLD",
    "RECORD",
    "Analysis",
    "ClusterPlan",
    "MemberPlan",
    "Proposal",
    "RecordSet",
    "Summary",
    "analyze",
    "summarize",
    "summarize_all",
]
