"""The language zfleet speaks: messages, frames, the ZFS send-stream codec and name rules.

Pure code: no sockets, no Redis, no subprocesses.
"""
