"""What a conformance scenario runs against: a backend, a dataset root, and the host's files.

A scenario needs to put bytes into a dataset's mountpoint and read them back, as a user or a
container would. For a backend on this machine that is plain file I/O; for a host behind an
exec prefix (``ssh root@host``) it is ``cat`` run through the same prefix.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from workers.zfs.base import ReceiveResult, ReceiveSpec, SendSpec, ZfsBackend, ZfsObject
from workers.zfs.proc import is_remote_shell

CHUNK: Final = 64 * 1024


class HostFiles(Protocol):
    """File access on the host where the backend's datasets are mounted."""

    def write(self, dataset: str, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` (relative) inside ``dataset``'s mountpoint."""
        ...

    def read(self, dataset: str, path: str) -> bytes:
        """The bytes of ``path`` inside ``dataset``'s mountpoint."""
        ...

    def scratch(self, name: str, data: bytes) -> str:
        """Write a file outside every dataset (a key file) and give its absolute path."""
        ...


def _mountpoint(backend: ZfsBackend, dataset: str) -> str:
    where = backend.mountpoint(dataset)
    assert where is not None, f"{dataset} is not mounted"
    return where


@dataclass(frozen=True)
class LocalFiles:
    """Host files for a backend whose mountpoints are on this machine."""

    backend: ZfsBackend
    scratch_dir: Path

    def write(self, dataset: str, path: str, data: bytes) -> None:
        target = Path(_mountpoint(self.backend, dataset)) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def read(self, dataset: str, path: str) -> bytes:
        return (Path(_mountpoint(self.backend, dataset)) / path).read_bytes()

    def scratch(self, name: str, data: bytes) -> str:
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        target = self.scratch_dir / name
        target.write_bytes(data)
        return str(target)


@dataclass(frozen=True)
class CommandFiles:
    """Host files through an exec prefix (``["ssh", "root@host"]``): ``cat`` does the I/O."""

    backend: ZfsBackend
    exec_prefix: Sequence[str]
    scratch_dir: str = "/var/tmp/zfleet-conformance"

    def _sh(self, script: str, data: bytes = b"") -> bytes:
        # ssh hands its arguments to a remote shell: then the script must be one quoted word
        word = shlex.quote(script) if is_remote_shell(self.exec_prefix) else script
        argv = [*self.exec_prefix, "sh", "-c", word]
        done = subprocess.run(argv, input=data, capture_output=True, check=False, timeout=60)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    def write(self, dataset: str, path: str, data: bytes) -> None:
        target = f"{_mountpoint(self.backend, dataset)}/{path}"
        self._sh(f"mkdir -p $(dirname {shlex.quote(target)}) && cat > {shlex.quote(target)}", data)

    def read(self, dataset: str, path: str) -> bytes:
        return self._sh(f"cat {shlex.quote(_mountpoint(self.backend, dataset) + '/' + path)}")

    def scratch(self, name: str, data: bytes) -> str:
        target = f"{self.scratch_dir}/{name}"
        self._sh(f"mkdir -p {shlex.quote(self.scratch_dir)} && cat > {shlex.quote(target)}", data)
        return target


@dataclass(frozen=True)
class Subject:
    """One backend under test: scenarios create everything they need below ``root``.

    ``root`` is an existing dataset (a fresh pool, or a scratch dataset on a lab host's pool) that
    the scenario may fill freely; whoever makes the Subject cleans it up.
    """

    backend: ZfsBackend
    root: str
    files: HostFiles

    def ds(self, name: str) -> str:
        """The full name of ``name`` below the root."""
        return f"{self.root}/{name}"

    def obj(self, name: str) -> ZfsObject:
        """The inventory row for a full name (dataset, snapshot or bookmark)."""
        # as `zfs list NAME`: a dataset, snapshot or bookmark named alone lists just itself
        for found in self.backend.list(name, recursive=False):
            if found.name == name:
                return found
        raise AssertionError(f"{name} is not in the inventory")

    def names(self, under: str) -> set[str]:
        """Every name at or below ``under``."""
        return {o.name for o in self.backend.list(under)}


def transfer(
    source: ZfsBackend,
    send: SendSpec,
    target: ZfsBackend,
    receive: ReceiveSpec,
    *,
    cut_at: int | None = None,
) -> ReceiveResult:
    """Pump one send into one receive, as the data plane does; ``cut_at`` stops after N bytes.

    With ``cut_at`` the sender is cancelled and the receive finished early, as when a
    connection drops; the receive then raises (StreamIncomplete for a resumable one).
    """
    stream = source.send(send)
    try:
        sink = target.receive(receive)
    except BaseException:
        stream.cancel()
        raise
    sent = 0
    try:
        while chunk := stream.read(CHUNK):
            if cut_at is not None and sent + len(chunk) >= cut_at:
                sink.write(chunk[: cut_at - sent])
                stream.cancel()
                return sink.finish()
            sink.write(chunk)
            sent += len(chunk)
        stream.close()
    except BaseException:
        stream.cancel()
        sink.abort()
        raise
    return sink.finish()
