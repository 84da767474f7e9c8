"""Space accounting as ZFS reports it: referenced, written, and the used of snapshots.

A record is identified by (object, index, block id): the simulation's stand-in for a block
pointer. ``written`` of a snapshot counts records not in the previous snapshot; ``used`` of a
snapshot counts records neither its predecessor nor its successor (nor the live data) hold, so
it is what destroying that snapshot alone would free, as in ZFS.
"""

from __future__ import annotations

from collections.abc import Sequence

from .blocks import HOLE
from .nodes import Manifest, Node
from .objects import ObjectStore


def referenced(store: ObjectStore, manifest: Manifest) -> int:
    """Bytes of all non-hole records of a manifest."""
    sizes = store.sizes(d for d in manifest.values() if d)
    return sum(sizes.get(d, 0) for d in manifest.values())


def unique_bytes(store: ObjectStore, target: Manifest, others: Sequence[Manifest]) -> int:
    """Bytes of ``target``'s records that none of ``others`` holds at the same place."""
    candidates: dict[int, bytes] = {}
    for obj, digest in target.items():
        if not digest or any(o.get(obj) == digest for o in others):
            continue
        candidates[obj] = digest
    if not candidates:
        return 0
    wanted = set(candidates.values())
    for other in others:
        wanted.update(other[obj] for obj in candidates if other.get(obj))
    nodes = store.get_many(wanted)
    total = 0
    for obj, digest in candidates.items():
        node = nodes[digest]
        size = node.meta_size()
        theirs: list[Node] = [nodes[o[obj]] for o in others if o.get(obj)]
        for i, block in enumerate(node.blocks):
            if block == HOLE:
                continue
            if any(i < len(t.blocks) and t.blocks[i] == block for t in theirs):
                continue
            total += node.record_len(i, size)
    return total
