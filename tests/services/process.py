"""Stopping a service process the tests started: politely first, then for sure."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM ``proc``, give it ``grace`` seconds to exit, then SIGKILL it; always reaped."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
