"""One pool's metadata: a SQLite database where one write transaction is one txg.

SQLite in WAL mode gives the simulation what ZFS's transaction groups give the real thing: a
process killed mid-operation leaves the pool as it was before the operation, and two processes
using one pool see each other's committed work and never half of it. Every write operation runs
inside :func:`txg`, which takes the write lock up front (``BEGIN IMMEDIATE``) so that concurrent
writers queue instead of failing with "database is locked" half-way through.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from protocol.errors import ZfsError

DB_NAME: Final = "pool.db"
# Long enough for another process's snapshot of a big dataset to finish.
BUSY_TIMEOUT_MS: Final = 120_000

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value ANY) STRICT;
CREATE TABLE IF NOT EXISTS datasets(
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,               -- filesystem | volume
    guid INTEGER NOT NULL,
    createtxg INTEGER NOT NULL,
    creation INTEGER NOT NULL,
    origin INTEGER,                   -- snapshots.id of a clone's origin
    props TEXT NOT NULL DEFAULT '{}', -- local properties (json)
    received TEXT NOT NULL DEFAULT '{}', -- received properties (json)
    next_obj INTEGER NOT NULL DEFAULT 128,
    mounted INTEGER NOT NULL DEFAULT 1,
    head BLOB,                        -- manifest of the live data while it is not mounted
    scan BLOB,                        -- stat cache of the live data (see tree.py)
    crypt TEXT,                       -- encryption state (json), NULL when not encrypted
    inconsistent INTEGER NOT NULL DEFAULT 0  -- created by a receive that has not finished
) STRICT;
CREATE TABLE IF NOT EXISTS snapshots(
    id INTEGER PRIMARY KEY,
    dataset INTEGER NOT NULL,
    name TEXT NOT NULL,
    guid INTEGER NOT NULL,
    createtxg INTEGER NOT NULL,
    creation INTEGER NOT NULL,
    manifest BLOB NOT NULL,
    referenced INTEGER NOT NULL,
    written INTEGER NOT NULL,
    defer INTEGER NOT NULL DEFAULT 0,
    props TEXT NOT NULL DEFAULT '{}',
    UNIQUE(dataset, name)
) STRICT;
CREATE TABLE IF NOT EXISTS bookmarks(
    id INTEGER PRIMARY KEY,
    dataset INTEGER NOT NULL,
    name TEXT NOT NULL,
    guid INTEGER NOT NULL,
    createtxg INTEGER NOT NULL,
    creation INTEGER NOT NULL,
    manifest BLOB NOT NULL,           -- kept so a bookmark can be an incremental source
    UNIQUE(dataset, name)
) STRICT;
CREATE TABLE IF NOT EXISTS holds(
    snapshot INTEGER NOT NULL,
    tag TEXT NOT NULL,
    created INTEGER NOT NULL DEFAULT 0, -- when the hold was placed (seconds since the epoch)
    PRIMARY KEY(snapshot, tag)
) STRICT;
CREATE TABLE IF NOT EXISTS nodes(
    hash BLOB PRIMARY KEY,            -- BLAKE3 of bonus + block list
    bonus BLOB NOT NULL,
    blocks BLOB NOT NULL,             -- 32 bytes per record, zeros for a hole
    size INTEGER NOT NULL             -- bytes of the records that are not holes
) STRICT;
CREATE TABLE IF NOT EXISTS partial(
    dataset INTEGER PRIMARY KEY,      -- a resumable receive's saved state
    state BLOB NOT NULL
) STRICT;
"""


def connect(pool_dir: Path) -> sqlite3.Connection:
    """Open (creating if needed) the metadata database of the pool in ``pool_dir``."""
    try:
        # Used from several threads (a send read on a data-plane thread); SimBackend's lock
        # keeps the calls apart.
        conn = sqlite3.connect(
            pool_dir / DB_NAME,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        _upgrade(conn)
    except sqlite3.Error as exc:
        raise ZfsError(f"cannot open pool metadata in {pool_dir}: {exc}") from exc
    return conn


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a pool made by an older zfleet up to the schema (columns added since)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(holds)")}
    if "created" not in columns:
        conn.execute("ALTER TABLE holds ADD COLUMN created INTEGER NOT NULL DEFAULT 0")


@contextmanager
def txg(conn: sqlite3.Connection) -> Iterator[int]:
    """One transaction group: yields the new txg number; commits on success, else rolls back."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise ZfsError(f"pool metadata is unavailable: {exc}") from exc
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='txg'").fetchone()
        number = (int(row[0]) if row else 0) + 1
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('txg', ?)", (number,))
        yield number
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


@contextmanager
def reading(conn: sqlite3.Connection) -> Iterator[None]:
    """Reads that all see one committed state, whatever other writers commit meanwhile.

    A WAL read transaction: without it, each SELECT sees the latest commit, so an inventory
    could find a snapshot in one query and miss it (or its dataset) in the next.
    """
    if conn.in_transaction:  # inside a txg (or another read): already one state
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def get_meta(conn: sqlite3.Connection, key: str, default: object = None) -> object:
    """A pool-wide value (size, guid, creation, txg)."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return default if row is None else row[0]


def set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    """Set a pool-wide value; call inside :func:`txg`."""
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))
