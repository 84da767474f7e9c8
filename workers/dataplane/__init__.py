"""The data plane: framed, compressed, resumable streams between host workers and to storage.

``push_transfer`` runs on the source host (one ``zfs send`` fanned out to many targets);
``StreamServer`` runs on every host and applies granted streams with ``zfs receive -s``.
"""
