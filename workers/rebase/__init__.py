"""Rebase images onto base snapshots on one host: like ``git rebase``, for datasets.

An image (a filesystem: an OS or container root) becomes a clone of another base snapshot,
either carrying its own changes since its old base, or (``keep_content``) holding exactly the
same files, so that the blocks it shares with the base are stored, and sent, once. The rooms:

    plan.py        pure: two change lists -> conflicts and the operations to replay
    tree.py        file trees: scan, fingerprint, compare, make one path equal another
    build.py       filling the new clone: keep-content sync, or a plan replayed; verification
    swap.py        the atomic, reversible swap of the clone into the image's place; properties
    hooks.py       before/after hooks and the processes that hold an image's files
    apply.py       rebase() and undo() over any ZfsBackend
    collection.py  rebase_collection(): every member onto its cluster's base, bases first
"""

from workers.rebase.apply import RebaseReport, rebase, undo
from workers.rebase.hooks import Hooks, command_hook

__all__ = ["Hooks", "RebaseReport", "command_hook", "rebase", "undo"]
