"""The backend conformance suite (tests/conformance) on the simulated backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import Scenario, scenario_params
from tests.conformance.target import LocalFiles, Target
from workers.zfs.sim import SimBackend

# scenario name -> why the simulation fails it today (run as strict xfail, so a fix shows)
KNOWN_FAILURES: dict[str, str] = {}


@pytest.fixture
def target(tmp_path: Path) -> Target:
    backend = SimBackend(tmp_path / "pools")
    backend.create_pool("tank")
    return Target(backend, "tank", LocalFiles(backend, tmp_path / "scratch"))


@pytest.mark.parametrize("scenario", scenario_params(KNOWN_FAILURES))
def test_scenario(scenario: Scenario, target: Target) -> None:
    scenario(target)
