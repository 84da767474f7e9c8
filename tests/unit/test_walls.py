"""The walls between packages hold: each package imports only the ones below it.

protocol (the language) imports nothing of ours; bus (the shared Redis records) only protocol;
coordinator (the brain) and workers (the hands) only protocol and bus, never each other; app (the
composition root: CLI, demo, worker assembly) may import everything. Checked on the source, every
import statement (top-level and inside functions), so a late import cannot sneak across either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("protocol", "bus", "coordinator", "workers", "app")
ALLOWED = {
    "protocol": {"protocol"},
    "bus": {"protocol", "bus"},
    "coordinator": {"protocol", "bus", "coordinator"},
    "workers": {"protocol", "bus", "workers"},
    "app": set(OURS),
}


def imported_packages(path: Path) -> set[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((node.lineno, a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.lineno, node.module.split(".")[0]))
    return {(line, top) for line, top in found if top in OURS}


def crossings(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, top in sorted(imported_packages(path)):
            if top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    return bad


@pytest.mark.parametrize("package", OURS)
def test_no_import_crosses_a_wall(package: str) -> None:
    assert crossings(package) == []


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from coordinator import keys\n    import workers.tasks\n")
    assert imported_packages(sample) == {(2, "coordinator"), (3, "workers")}
