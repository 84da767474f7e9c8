"""Node persistence: the nodes table plus the block store, seen as one object store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from protocol.errors import ZfsError

from .blocks import HOLE, BlockStore
from .nodes import Node

BATCH = 500  # SQLite's host-parameter limit is 999 on old builds; stay well below it


class ObjectStore:
    """Nodes (in SQLite) and their records (in the block store) of one pool."""

    def __init__(self, conn: sqlite3.Connection, blocks: BlockStore) -> None:
        self.conn = conn
        self.blocks = blocks

    def put(self, node: Node, size: int) -> bytes:
        """Record ``node`` (its blocks must already be stored) and return its digest."""
        key = node.digest
        self.conn.execute(
            "INSERT OR IGNORE INTO nodes(hash, bonus, blocks, size) VALUES(?,?,?,?)",
            (key, node.bonus, node.blocks_blob(), size),
        )
        return key

    def get_many(self, digests: Iterable[bytes]) -> dict[bytes, Node]:
        """The nodes named by ``digests``; a missing one means the pool lost metadata."""
        wanted = list(set(digests))
        found: dict[bytes, Node] = {}
        for i in range(0, len(wanted), BATCH):
            part = wanted[i : i + BATCH]
            marks = ",".join("?" * len(part))
            for key, bonus, blob in self.conn.execute(
                f"SELECT hash, bonus, blocks FROM nodes WHERE hash IN ({marks})",  # noqa: S608
                part,
            ):
                found[bytes(key)] = Node(bytes(bonus), Node.split_blocks(bytes(blob)))
        if len(found) != len(wanted):
            raise ZfsError(f"pool metadata lost {len(wanted) - len(found)} object(s)")
        return found

    def get(self, digest: bytes) -> Node:
        return self.get_many([digest])[digest]

    def sizes(self, digests: Iterable[bytes]) -> dict[bytes, int]:
        """Allocated bytes of each node."""
        wanted = list(set(digests))
        out: dict[bytes, int] = {}
        for i in range(0, len(wanted), BATCH):
            part = wanted[i : i + BATCH]
            marks = ",".join("?" * len(part))
            for key, size in self.conn.execute(
                f"SELECT hash, size FROM nodes WHERE hash IN ({marks})",  # noqa: S608
                part,
            ):
                out[bytes(key)] = int(size)
        return out

    def content(self, node: Node) -> bytes:
        """The whole content of a (small) object: a directory's entries or a symlink target."""
        size = node.meta.size
        out = bytearray()
        for i, block in enumerate(node.blocks):
            length = node.record_len(i, size)
            out += bytes(length) if block == HOLE else self.blocks.get(block)[:length]
        return bytes(out)
