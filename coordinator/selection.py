"""Which datasets a job covers, and in which order they are planned.

Recursion and include/exclude globs (matched on the full name or the name below the source; an
excluded dataset takes its descendants with it); then parents before children and origins before
clones, so that whatever a dataset's first stream needs on the target is planned before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from coordinator.config import DatasetRef, JobConfig
from coordinator.graph import Dataset, FleetGraph


def select_datasets(graph: FleetGraph, src: DatasetRef, job: JobConfig) -> list[Dataset]:
    """The source's datasets the job covers (recursion, include and exclude applied)."""
    found = graph.subtree(src.host, src.dataset, recursive=job.recursive)
    out = []
    excluded: list[str] = []
    for ds in found:
        rel = ds.name[len(src.dataset) :].lstrip("/")
        if any(ds.name.startswith(e + "/") for e in excluded):
            continue
        if any(fnmatchcase(ds.name, p) or fnmatchcase(rel, p) for p in job.exclude):
            excluded.append(ds.name)
            continue
        if job.include and not any(fnmatchcase(ds.name, p) or fnmatchcase(rel, p)
                                   for p in job.include):  # fmt: skip
            continue
        out.append(ds)
    return out


def order_datasets(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Parents before children and origins before clones (a stable topological order)."""
    by_name = {d.name: d for d in datasets}
    done: set[str] = set()
    out: list[Dataset] = []

    def visit(ds: Dataset, path: frozenset[str]) -> None:
        if ds.name in done or ds.name in path:
            return  # already placed, or a cycle (cannot happen in ZFS; do not loop on it)
        inner = path | {ds.name}
        parent = ds.name.rsplit("/", 1)[0] if "/" in ds.name else None
        for dep in (parent, ds.origin_dataset):
            if dep and dep in by_name:
                visit(by_name[dep], inner)
        done.add(ds.name)
        out.append(ds)

    for ds in sorted(datasets, key=lambda d: d.name):
        visit(ds, frozenset())
    return out
