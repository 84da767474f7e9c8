"""What uses an image: hooks that stop and start it, and the processes holding its files.

A rebase swaps the dataset under the image's users, so they must let go first. ``Hooks.before``
stops them (a container, a service) and may refuse by raising :class:`ImageInUse` (a command
hook refuses by exiting non-zero); ``Hooks.after`` starts them again, on the rebased image, or on
the old one when the rebase was rolled back. After ``before``, :func:`processes_using` looks
through ``/proc`` (as ``fuser -m`` does) for a process whose working directory, root or open
files lie under the mountpoint, and the rebase refuses while there is one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocol.errors import ImageInUse

Hook = Callable[[str, str | None], None]  # (image dataset, its mountpoint or None)
HOOK_TIMEOUT: Final = 300.0


@dataclass(frozen=True)
class Hooks:
    before: Hook | None = None  # stop what uses the image; raise ImageInUse to refuse
    after: Hook | None = None  # start it again (also after a rollback)


def command_hook(argv: Sequence[str], *, timeout: float = HOOK_TIMEOUT) -> Hook:
    """A hook that runs ``argv`` with ``ZFLEET_IMAGE`` and ``ZFLEET_MOUNTPOINT`` set; a
    non-zero exit (or a command that cannot start) raises :class:`ImageInUse`."""
    args = list(argv)
    if not args:
        raise ValueError("a command hook needs a command")

    def run(image: str, mountpoint: str | None) -> None:
        env = {**os.environ, "ZFLEET_IMAGE": image, "ZFLEET_MOUNTPOINT": mountpoint or ""}
        try:
            done = subprocess.run(
                args, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ImageInUse(f"hook {args[0]!r} for '{image}' failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise ImageInUse(
                f"hook {args[0]!r} for '{image}' exited {done.returncode}: {tail[0]}".rstrip(": ")
            )

    return run


def processes_using(mountpoint: str, *, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """``(pid, command)`` of every other process with its cwd, root or an open file under
    ``mountpoint``. Processes this user may not inspect are skipped."""
    mine = os.getpid()
    top = os.path.realpath(mountpoint)
    found: list[tuple[int, str]] = []
    try:
        pids = [int(p.name) for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return []
    for pid in sorted(pids):
        if pid == mine:
            continue
        base = proc / str(pid)
        links = [base / "cwd", base / "root"]
        with contextlib.suppress(OSError):  # gone, or not ours to look at
            links += list((base / "fd").iterdir())
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target == top or target.startswith(top + "/"):
                try:
                    comm = (base / "comm").read_text().strip()
                except OSError:
                    comm = "?"
                found.append((pid, comm))
                break
    return found


def refuse_if_busy(image: str, mountpoint: str | None) -> None:
    """Raise :class:`ImageInUse` naming the processes that hold files under the image."""
    if mountpoint is None:
        return
    users = processes_using(mountpoint)
    if users:
        shown = ", ".join(f"{pid} ({comm})" for pid, comm in users[:8])
        raise ImageInUse(
            f"cannot rebase '{image}': {mountpoint} is in use by {shown}; stop them first "
            "(or give a --before hook that does)"
        )
