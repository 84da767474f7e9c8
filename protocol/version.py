"""zfleet's own version, as installed (workers put it in their heartbeat; the API shows it).

Mixed versions are how a rolling upgrade looks from the outside, so every process reports its own.
"""

from __future__ import annotations

import importlib.metadata
from functools import cache


@cache
def zfleet_version() -> str:
    """The installed distribution's version, or ``unknown`` when run from an uninstalled tree."""
    try:
        return importlib.metadata.version("zfleet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
