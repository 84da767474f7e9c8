"""Job kinds are looked up by name; built-in ones load on first use, unknown ones are refused."""

from __future__ import annotations

import pytest

from coordinator import jobkinds
from coordinator.jobkinds import JobKind
from protocol.errors import JobError


def test_sync_is_built_in_and_loads_on_first_use() -> None:
    sync = jobkinds.get("sync")
    assert sync.name == "sync" and "plan" in sync.local_steps and sync.scheduled is not None


def test_unknown_kinds_are_refused_with_the_known_ones_named() -> None:
    with pytest.raises(JobError, match=r"unknown job kind 'teleport'.*sync"):
        jobkinds.get("teleport")


def test_a_name_cannot_be_registered_twice() -> None:
    first = jobkinds.register(JobKind(name="test-twice"))
    assert jobkinds.get("test-twice") is first
    with pytest.raises(TypeError, match="already registered"):
        jobkinds.register(JobKind(name="test-twice"))
