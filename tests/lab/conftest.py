"""Real OpenZFS hosts for the lab tier: N QEMU VMs booted once per test session.

``lab_hosts`` hands tests the hosts (name, ssh port, exec prefix for the real backend, pool).
The image is built on first use when this machine can (root, debootstrap), else the tests skip
locally and fail in CI. Every VM is stopped and reaped when the session ends, also after failures:
a fixture finalizer, an atexit hook, SIGTERM turned into a normal exit, and at the next session's
start the labs of sessions that died without cleaning up are taken down.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Final

import pytest

from tests.conftest import need, need_binary
from workers.lab.lab import Lab, LabHost, reap_orphans
from workers.lab.paths import state_root
from workers.lab.recipe import Image, build_image, find_image

LAB_HOST_COUNT: Final = 2  # CI budget: two TCG VMs, booted once per session
# A lab test's budget includes the session's image build (minutes, once per recipe) and boot
# when it is the first to ask for the hosts.
LAB_TEST_TIMEOUT: Final = 1500
SESSIONS: Final = state_root() / "pytest"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LAB_TEST_TIMEOUT))


def lab_image() -> Image:
    """The cached lab image, built now if missing and this machine can build it."""
    for binary in ("qemu-system-x86_64", "qemu-img", "ssh"):
        need_binary(binary)
    image = find_image()
    if image is not None:
        return image
    can_build = os.geteuid() == 0 and shutil.which("debootstrap") is not None
    need(can_build, "the lab image (build it as root with `zfleet lab build`)")
    SESSIONS.mkdir(parents=True, exist_ok=True)
    with (SESSIONS / "image-build.log").open("w") as log:
        return build_image(log=log)


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _clear_dead_sessions() -> None:
    """Stop the VMs of sessions that died uncleanly, then drop their directories."""
    reap_orphans(SESSIONS)
    if not SESSIONS.is_dir():
        return
    for child in SESSIONS.iterdir():
        match = re.fullmatch(r"session-(\d+)", child.name)
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(child, ignore_errors=True)


@pytest.fixture(scope="session")
def lab_session() -> Iterator[Lab]:
    """The session's lab of ``LAB_HOST_COUNT`` running VMs."""
    image = lab_image()
    _clear_dead_sessions()
    directory = SESSIONS / f"session-{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    started = time.monotonic()
    lab = Lab.up(image, LAB_HOST_COUNT, directory)
    print(f"\nlab: {LAB_HOST_COUNT} hosts ready in {time.monotonic() - started:.1f} s")

    def stop() -> None:
        lab.down()

    atexit.register(stop)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finalizers below

    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield lab
    finally:
        stop()
        atexit.unregister(stop)
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def lab_hosts(lab_session: Lab) -> list[LabHost]:
    """The session's real-ZFS hosts: name, ssh port, exec prefix, pool."""
    return lab_session.hosts
