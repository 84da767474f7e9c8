"""Files on a ZFS host, here or through its exec prefix (``ssh root@host``, ``sudo``).

The real backend reaches a host through an exec prefix; what zfleet writes into a mountpoint
(a sealed box, overlayfs's directories) must go the same way. Without a prefix this is plain
local file access.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from protocol.errors import InvalidOperation
from workers.zfs.proc import is_remote_shell


def on(exec_prefix: Sequence[str], argv: Sequence[str]) -> list[str]:
    """``argv`` run through ``exec_prefix``; quoted for ssh, which hands a remote shell one line."""
    if is_remote_shell(exec_prefix):
        return [*exec_prefix, *(shlex.quote(a) for a in argv)]
    return [*exec_prefix, *argv]


def run(exec_prefix: Sequence[str], argv: Sequence[str], data: bytes = b"") -> bytes:
    done = subprocess.run(on(exec_prefix, argv), input=data, capture_output=True, check=False,
                          timeout=120)  # fmt: skip
    if done.returncode != 0:
        raise InvalidOperation(
            f"{' '.join(argv[:3])} failed: {done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout


def write_bytes(exec_prefix: Sequence[str], path: Path, data: bytes) -> None:
    if not exec_prefix:
        path.write_bytes(data)
        return
    run(exec_prefix, ["sh", "-c", f"cat > {shlex.quote(str(path))}"], data)


def read_bytes(exec_prefix: Sequence[str], path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    if not exec_prefix:
        return path.read_bytes() if path.exists() else None
    quoted = shlex.quote(str(path))
    out = run(exec_prefix, ["sh", "-c", f"if [ -e {quoted} ]; then echo y; cat {quoted}; "
                                        "else echo n; fi"])  # fmt: skip
    return out[2:] if out.startswith(b"y\n") else None


def mkdirs(exec_prefix: Sequence[str], *paths: Path) -> None:
    if not exec_prefix:
        for p in paths:
            p.mkdir(parents=True, exist_ok=True)
        return
    run(exec_prefix, ["mkdir", "-p", *(str(p) for p in paths)])
