"""Headless Chromium (Debian's ``chromium``) as a test client: the DOM its scripts built, a PNG.

Each call starts a fresh browser with its own profile directory and no background traffic
(no component updates, sync or first-run pages), loads one URL, lets the page's scripts run for a
virtual-time budget (timers and network complete; Chromium waits for pending fetches), and prints
the serialised DOM or writes a PNG. No driver or websocket client is needed for either.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from tests.conftest import need

FLAGS: Final = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)  # fmt: skip


def chromium_binary() -> str:
    """The chromium to run (skip locally, fail in CI, when there is none)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    need(path is not None, "chromium (Debian package; scripts/system-deps installs it)")
    assert path is not None
    return path


def _run(args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="zfleet-chromium-") as profile:
        return subprocess.run(
            [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


def dump_dom(url: str, *, budget_ms: int = 4000, timeout: float = 90) -> str:
    """The page's DOM as HTML once its scripts had ``budget_ms`` of (virtual) time."""
    done = _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout=timeout)
    if done.returncode != 0 or "<html" not in done.stdout:
        raise RuntimeError(f"chromium --dump-dom failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def screenshot(url: str, path: Path, *, budget_ms: int = 4000, size: str = "1400,1800",
               timeout: float = 90) -> Path:  # fmt: skip
    """A PNG of the page at ``path`` (window ``size`` "W,H") after ``budget_ms`` of scripts."""
    done = _run([f"--virtual-time-budget={budget_ms}", f"--window-size={size}",
                 f"--screenshot={path}", url], timeout=timeout)  # fmt: skip
    if done.returncode != 0 or not path.exists() or path.stat().st_size == 0:
        raise RuntimeError(f"chromium --screenshot failed ({done.returncode}): "
                           f"{done.stderr[-2000:]}")
    return path
