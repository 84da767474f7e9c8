"""Where the lab keeps its image cache and the state of running VMs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

# The repository's lab/ directory: the image recipe and its build script.
LAB_SOURCE: Final[Path] = Path(__file__).resolve().parents[2] / "lab"


def _is_root() -> bool:
    return os.geteuid() == 0


def cache_root() -> Path:
    """The image cache: ``$ZFLEET_LAB_CACHE``, else a system cache as root, else the user's.

    The same rule as ``lab/build-image.sh``, so both find one cache.
    """
    if env := os.environ.get("ZFLEET_LAB_CACHE"):
        return Path(env)
    if _is_root():
        return Path("/var/cache/zfleet-lab")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zfleet-lab"


def state_root() -> Path:
    """Where ``zfleet lab up`` keeps its VMs' overlays, pool disks, pidfiles and serial logs."""
    if env := os.environ.get("ZFLEET_LAB_STATE"):
        return Path(env)
    if _is_root():
        return Path("/var/lib/zfleet-lab")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "zfleet-lab"
