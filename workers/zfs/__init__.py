"""ZFS backends behind one contract (see base.py): real OpenZFS and the userspace simulation."""
