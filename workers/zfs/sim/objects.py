"""Node persistence: the nodes table plus the block store, seen as one object store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

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
        for key, bonus, blob in self._select("bonus, blocks", wanted):
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
        for key, size in self._select("size", wanted):
            out[bytes(key)] = int(size)
        return out

    def _select(self, columns: str, wanted: list[bytes]) -> Iterator[tuple[Any, ...]]:
        """Rows ``(hash, <columns>)`` of the nodes in ``wanted``, asked for in batches."""
        for i in range(0, len(wanted), BATCH):
            part = wanted[i : i + BATCH]
            marks = ",".join("?" * len(part))
            yield from self.conn.execute(
                f"SELECT hash, {columns} FROM nodes WHERE hash IN ({marks})",  # noqa: S608
                part,
            )

    def content(self, node: Node) -> bytes:
        """The whole content of a (small) object: a directory's entries or a symlink target."""
        size = node.meta.size
        out = bytearray()
        for i, block in enumerate(node.blocks):
            length = node.record_len(i, size)
            out += bytes(length) if block == HOLE else self.blocks.get(block)[:length]
        return bytes(out)
