"""Retention: which snapshots a job may destroy, and which it never may.

Pure. Each rule keeps the newest ``keep`` snapshots whose short name matches its glob; a snapshot
that matches no rule is someone else's and is kept. A protected guid (a target's incremental base,
the newest snapshot being sent, a clone's origin) is never chosen, whatever the counts say.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from fnmatch import fnmatchcase

from coordinator.config import RetentionRule
from coordinator.graph import Snap


def select_prune(
    snapshots: Sequence[Snap],
    rules: Sequence[RetentionRule],
    protected: Collection[int],
) -> list[Snap]:
    """The snapshots to destroy, oldest first. ``snapshots`` may come in any order."""
    claimed: set[int] = set()  # first matching rule owns a snapshot, as in a firewall
    doomed: list[Snap] = []
    ordered = sorted(snapshots, key=lambda s: s.createtxg)
    for rule in rules:
        matching = [
            s for s in ordered if s.guid not in claimed and fnmatchcase(s.short, rule.pattern)
        ]
        claimed.update(s.guid for s in matching)
        excess = matching[: max(0, len(matching) - rule.keep)]
        doomed.extend(s for s in excess if s.guid not in protected)
    return sorted(doomed, key=lambda s: s.createtxg)
