"""A userspace ZFS: pools as directories, datasets as real mountpoints, OpenZFS send streams.

See backend.py for the entry point (:class:`SimBackend`) and DESIGN.md for what it promises.
"""

from workers.zfs.sim.backend import SimBackend

__all__ = ["SimBackend"]
