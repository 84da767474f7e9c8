"""A userspace ZFS: pools as directories, datasets as real mountpoints, OpenZFS send streams.

``SimBackend(root)`` implements :class:`workers.zfs.base.ZfsBackend` for every pool under
``root`` (``create_pool``/``destroy_pool`` are ``zpool create``/``destroy``). The rooms:

    backend.py     the contract: name checks, pool routing, one call = one operation
    pool.py        one pool on disk: rows, mountpoints, capture/install of live data, GC
    db.py          SQLite metadata in WAL mode; one write transaction = one txg
    blocks.py      content-addressed 128 KiB records (BLAKE3), temp file + rename
    nodes.py       objects (file/dir/symlink), their bonus encoding, manifests
    objects.py     the nodes table plus the block store
    tree.py        scan a mountpoint (stat cache: cost follows the change) / materialize one
    datasets.py    create, snapshot, clone, promote, rename, rollback
    destroy.py     destroy (held, clones, deferred), bookmarks and snapshots too
    props.py       the property table; properties.py: get/set/inherit with sources
    space.py       referenced / written / used from record identities
    send.py        planning a send (-i/-I/-p/-t); replicate.py: -R; emit.py: the records
    receive.py     the receive sink; targets.py: where a substream lands and the refusals;
                   replicate_recv.py: compound streams; partial.py: resumable state
    crypto.py      wrapping/master keys, sealed records; keys.py: load-key / unload-key
    diff.py        zfs diff

What it does not model: compression ratios (records are stored as written; -c only sets
feature bits), quotas and reservations (stored, not enforced), readonly (stored, not enforced),
``WRITE_EMBEDDED``/``WRITE_BYREF``/``SPILL`` records, and streams from real OpenZFS (refused
with a clear error: their objects are system attribute buffers and ZAP directories). A process
killed while it rewrites a mountpoint leaves the metadata as before the operation and the
mountpoint partly rewritten, which the next receive reports as "modified" (``-F`` repairs it).
"""

from workers.zfs.sim.backend import SimBackend

__all__ = ["SimBackend"]
