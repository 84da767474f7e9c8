"""Shared test plumbing: where the fixtures are, and how a missing service is treated.

A test that needs a service this machine lacks is skipped locally and fails when CI=true
(as dramatiq's conftest does): CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ZFS_STREAMS = FIXTURES / "zfs-streams"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) unless ``condition`` holds; ``what`` names the service."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required service missing in CI: {what}")
    pytest.skip(f"service missing: {what}")


def need_binary(name: str) -> str:
    """The path of an executable the test needs, or skip/fail as ``need`` does."""
    path = shutil.which(name)
    need(path is not None, f"executable {name!r} on PATH")
    assert path is not None
    return path
