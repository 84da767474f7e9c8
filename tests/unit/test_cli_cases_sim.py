"""The command-line cases of tests/conformance/cli_cases.py on the simulation's front end."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conformance.cli_cases import CASES, CliCase, check
from workers.zfs.front import Front
from workers.zfs.sim import SimBackend


@pytest.mark.parametrize("case", CASES, ids=[c.title for c in CASES])
def test_the_front_end_answers_as_openzfs(tmp_path: Path, case: CliCase) -> None:
    backend = SimBackend(tmp_path / "pools")
    backend.create_pool("tank")
    backend.create("tank/t")

    def run(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, str]:
        out, err = io.BytesIO(), io.StringIO()
        front = Front(backend, stdin=io.BytesIO(stdin), stdout=out, stderr=err)
        return front.run(argv[0], argv[1:]), out.getvalue(), err.getvalue()

    check(case, run, "tank/t")
