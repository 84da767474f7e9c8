"""The object store: a record-aware, deduplicating, encrypted cloud target for ZFS send streams.

Modules, one idea each: ``targets`` (where objects live: S3 or a local directory, conditional
writes), ``crypto`` (repository key, keyed content ids, AEAD), ``packs`` (blobs in compression
groups in pack objects; the repository index), ``records`` (push framing of send-stream records),
``manifest`` (per-stream record headers and blob references; chains), ``leases`` (what prune
must not touch), ``ingest`` (the sink a send stream is pushed into), ``restore``, ``verify``,
``prune`` and ``repo`` (creating and unlocking a repository).

For the data plane: open one :class:`~workers.cloud.repo.Repository` per worker process, and
for each send a :class:`~workers.cloud.ingest.StreamIngest` (``write(bytes)``, ``finish()``,
``abort()``) beside the peer sinks; to restore, replay
:func:`~workers.cloud.restore.restore_chain`'s manifests, full first, each through
:func:`~workers.cloud.restore.restore_stream` into ``zfs receive``.
"""
