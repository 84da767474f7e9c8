"""Running shell commands on lab hosts from tests."""

from __future__ import annotations

import subprocess

from workers.lab.lab import LabHost


def on_host(host: LabHost, command: str, *, timeout: float = 120) -> str:
    """Run a shell ``command`` on ``host``; return stdout, fail the test on a non-zero exit."""
    done = subprocess.run(
        [*host.exec_prefix, command], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{host.name}: {command!r} -> {done.returncode}: {done.stderr}"
    return done.stdout
