"""Sim vs real: the same seeded operation sequences on SimBackend and on real OpenZFS agree."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.lab.differential import Generator, LocalTree, RemoteTree, Side
from workers.lab.lab import LabHost
from workers.zfs.real import RealBackend

pytestmark = pytest.mark.lab

# CI runs a few short sequences (TCG is slow); set ZFLEET_LAB_DIFF_SEEDS=1-50 for a longer hunt.
SEEDS_ENV = os.environ.get("ZFLEET_LAB_DIFF_SEEDS", "1-2")
STEPS = int(os.environ.get("ZFLEET_LAB_DIFF_STEPS", "20"))

# Divergences found by this test and reported, not yet settled: (operation, sim outcome, real
# outcome) -> what differs. When both sides refused, nothing changed and the sequence goes on;
# a sequence that met one ends as an xfail naming it. Any other divergence fails.
# (The first one found, a sim DatasetExists where OpenZFS says "filesystem has children", is fixed.)
KNOWN_DIVERGENCES: dict[tuple[str, str, str], str] = {}


def _seeds(spec: str) -> list[int]:
    first, _, last = spec.partition("-")
    return list(range(int(first), int(last or first) + 1))


@pytest.fixture
def real_side(lab_hosts: list[LabHost]) -> Iterator[Side]:
    host = lab_hosts[0]
    root = f"{host.pool}/diff-{secrets.token_hex(4)}"
    backend = RealBackend(host.exec_prefix)
    backend.create(root)
    mountpoint = backend.mountpoint(root)
    assert mountpoint is not None
    try:
        yield Side(backend, root, RemoteTree(host.exec_prefix, mountpoint))
    finally:
        # -R: clones made during the run depend on snapshots below the root.
        subprocess.run(
            [*host.exec_prefix, f"zfs destroy -R {root}"],
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def sim_side(tmp_path: Path) -> Side:
    try:
        from workers.zfs.sim import SimBackend
    except ImportError:
        need(False, "the simulated backend (workers.zfs.sim)")
        raise
    backend = SimBackend(tmp_path / "pools")
    backend.create_pool("tank")
    backend.create("tank/diff")
    return Side(backend, "tank/diff", LocalTree())


@pytest.mark.parametrize("seed", _seeds(SEEDS_ENV))
def test_sim_and_real_agree(seed: int, sim_side: Side, real_side: Side) -> None:
    generator = Generator(seed)
    log: list[str] = []
    met: list[str] = []
    seen = real_side.observe()
    sim_side.observe()
    for step in range(STEPS):
        op = generator.next(seen)
        sim_outcome, real_outcome = sim_side.apply(op), real_side.apply(op)
        log.append(f"{step:2d} {op}: sim {sim_outcome}, real {real_outcome}")
        history = "\n".join(log)
        known = KNOWN_DIVERGENCES.get((op.kind, sim_outcome, real_outcome))
        if known is None:
            assert sim_outcome == real_outcome, f"seed {seed}: outcomes differ\n{history}"
        else:
            met.append(f"step {step}: {known}")
            if "ok" in (sim_outcome, real_outcome):  # one side changed: states differ from here
                pytest.xfail(f"seed {seed} " + "; ".join(met))
        seen, sim_seen = real_side.observe(), sim_side.observe()
        differences = sim_seen.differences(seen)
        assert not differences, f"seed {seed}: states differ\n{history}\n" + "\n".join(differences)
    if met:
        pytest.xfail(f"seed {seed} " + "; ".join(met))
