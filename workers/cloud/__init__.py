"""The object store: a record-aware, deduplicating, encrypted cloud target for ZFS send streams.

Modules, one idea each: ``targets`` (where objects live: S3 or a local directory), ``crypto``
(repository key, content ids, AEAD), ``packs`` (blobs packed into pack objects, the repository
index), ``manifest`` (per-stream record headers and blob references), ``ingest`` (the sink a
send stream is pushed into), ``restore``, ``verify``, ``prune`` and ``repo`` (opening a repository).
"""
