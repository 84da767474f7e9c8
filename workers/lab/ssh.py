"""Reaching a lab VM: the ssh exec prefix handed to backends and people, and running commands."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from protocol.errors import LabError

# The guest's host keys are made per image, and every lab VM listens on a fresh loopback port:
# checking or remembering them would only produce warnings.
_QUIET_OPTIONS = (
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
)  # fmt: skip


def exec_prefix(key: Path, port: int, control_path: Path | None = None) -> list[str]:
    """The argv prefix that runs a command as root on the VM whose ssh is on ``port``.

    With ``control_path`` commands go through the master connection listening there (see
    :func:`start_master`), which saves a key exchange per command: a second or more on an
    emulated CPU. Without a master there, ssh connects directly, so the prefix always works.
    """
    argv = ["ssh", "-i", str(key), "-p", str(port), *_QUIET_OPTIONS]
    if control_path is not None:
        # ControlMaster stays "no" here on purpose: a command that became the master would fork
        # into the background holding its caller's pipes open, and the caller would hang.
        argv += ["-o", f"ControlPath={control_path}"]
    return [*argv, "root@127.0.0.1"]


def shell_line(prefix: Sequence[str]) -> str:
    """The exec prefix as one shell-quoted line a person can paste."""
    return shlex.join(prefix)


def run(
    prefix: Sequence[str], command: str, *, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the shell ``command`` on the VM; with ``check`` a non-zero exit is a LabError."""
    try:
        done = subprocess.run(
            [*prefix, command], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{command!r} on the lab VM did not finish in {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        raise LabError(f"{command!r} on the lab VM exited {done.returncode}: {done.stderr.strip()}")
    return done


def _has_control_path(prefix: Sequence[str]) -> bool:
    return any(arg.startswith("ControlPath=") for arg in prefix)


def start_master(prefix: Sequence[str]) -> bool:
    """Start the shared master connection for a prefix made with a control path.

    Its stdio is /dev/null, so nothing waits on it; it exits on :func:`close_master` or within
    about 15 s of the VM going away. Returns whether a master now runs.
    """
    if not _has_control_path(prefix):
        return False
    argv = [
        *prefix[:-1],
        "-M", "-N", "-f",
        "-o", "ControlPersist=yes",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        prefix[-1],
    ]  # fmt: skip
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def close_master(prefix: Sequence[str]) -> None:
    """Stop the master connection behind ``prefix``, if there is one; never raises."""
    if not _has_control_path(prefix):
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            [*prefix[:-1], "-O", "exit", prefix[-1]], capture_output=True, timeout=10, check=False
        )
