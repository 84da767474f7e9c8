"""The neutral ground both sides share through Redis: the key schema, step-state records the
worker may read, step events, progress, inventories, heartbeats, leases and queue names.

Imports protocol/ only; coordinator/ and workers/ both import it, never each other.
"""
