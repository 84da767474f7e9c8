"""The command-line cases of tests/conformance/cli_cases.py on a lab VM (real OpenZFS 2.3.2).

The same expectations the simulation's front end is held to in tests/unit/test_cli_cases_sim.py:
a case that passes there and fails here is a wrong expectation or a divergence to fix.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator, Sequence

import pytest

from tests.conformance.cli_cases import CASES, CliCase, Run, check
from workers.lab.lab import LabHost
from workers.zfs.real import RealBackend

pytestmark = pytest.mark.lab


@pytest.fixture
def scratch(lab_hosts: list[LabHost]) -> Iterator[tuple[Run, str]]:
    """A way to run `zfs` on the first lab host, and a scratch root destroyed afterwards."""
    host = lab_hosts[0]
    backend = RealBackend(host.exec_prefix)
    root = f"{host.pool}/cli-{secrets.token_hex(4)}"
    backend.create(root)
    runner = backend.runner

    def run(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, str]:
        done = subprocess.run(
            runner.argv(argv), input=stdin, capture_output=True, timeout=120, check=False
        )
        return done.returncode, done.stdout, done.stderr.decode(errors="replace")

    try:
        yield run, root
    finally:
        _release_all(run, root)
        backend.destroy(root, recursive=True)


def _release_all(run: Run, root: str) -> None:
    # the cases hold snapshots ("keep"); a held snapshot would stop the recursive destroy
    code, out, _ = run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", root], b"")
    for snap in out.decode().split() if code == 0 else []:
        run(["zfs", "release", "keep", snap], b"")


@pytest.mark.parametrize("case", CASES, ids=[c.title for c in CASES])
def test_real_openzfs_answers_as_expected(case: CliCase, scratch: tuple[Run, str]) -> None:
    run, root = scratch
    check(case, run, root)
