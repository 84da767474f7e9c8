"""Running `zfs`/`zpool` as child processes: argv building, exec prefixes, process groups.

No shell runs locally. Each child gets its own session (process group), so cancelling kills
everything it started (an ``ssh`` and its helpers, a ``sudo`` and its ``zfs``) and reaps it.
stderr goes to an anonymous temporary file rather than a pipe: a chatty child can then never
block on a full stderr pipe while we stream its stdout, and no reader thread is needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Final

import structlog

from protocol.errors import InvalidOperation

log = structlog.get_logger(__name__)

KILL_GRACE_S: Final = 5.0  # between SIGTERM and SIGKILL when cancelling
PIPE_BYTES: Final = 1 << 20  # stream pipes' kernel buffer (Linux's pipe-max-size default)
_REMOTE_SHELLS: Final = frozenset({"ssh", "rsh"})


def is_remote_shell(prefix: Sequence[str]) -> bool:
    """Whether ``prefix`` runs the command through a remote shell (``ssh ... host``)."""
    return bool(prefix) and os.path.basename(prefix[0]) in _REMOTE_SHELLS


@dataclass(frozen=True)
class Finished:
    """A child that ran to its end."""

    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str


class Runner:
    """Builds argv lines and runs them, locally or through an exec prefix.

    ``quote`` says whether each argument is shell-quoted after the prefix; ``ssh`` joins its
    arguments into one remote shell command line, so it must be. ``None`` detects ssh/rsh.
    """

    def __init__(
        self,
        exec_prefix: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        quote: bool | None = None,
    ) -> None:
        self.exec_prefix = tuple(exec_prefix)
        self.env = dict(env) if env is not None else None
        self.quote = is_remote_shell(self.exec_prefix) if quote is None else quote

    def argv(self, command: Sequence[str]) -> list[str]:
        """The full argv for ``command`` (``["zfs", "list", ...]``)."""
        args = [shlex.quote(a) for a in command] if self.quote else list(command)
        return [*self.exec_prefix, *args]

    def _popen(
        self, command: Sequence[str], *, stdin: int | IO[bytes] | None, stdout: int | IO[bytes]
    ) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
        argv = self.argv(command)
        errfile = tempfile.TemporaryFile()  # noqa: SIM115  (closed by the caller's wait)
        try:
            child = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=errfile,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            errfile.close()
            raise InvalidOperation(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        return child, errfile

    def run(
        self, command: Sequence[str], *, input_bytes: bytes | None = None, timeout: float = 600.0
    ) -> Finished:
        """Run ``command`` to its end and collect its output (small outputs only)."""
        child, errfile = self._popen(
            command,
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        try:
            out, _ = child.communicate(input_bytes, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(child)
            errfile.close()
            raise InvalidOperation(
                f"{command[0]} {command[1]} timed out after {timeout:g}s"
            ) from None
        except BaseException:
            kill_group(child)
            errfile.close()
            raise
        err = read_all(errfile)
        return Finished(tuple(command), child.returncode, out.decode(errors="replace"), err)

    def spawn(
        self, command: Sequence[str], *, stdin: int | IO[bytes] | None, stdout: int | IO[bytes]
    ) -> Child:
        """Start ``command`` with the given stdin/stdout (``subprocess.PIPE`` to stream)."""
        child, errfile = self._popen(command, stdin=stdin, stdout=stdout)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                widen_pipe(pipe)
        log.debug("zfs.spawned", argv=command[:2], pid=child.pid)
        return Child(child, errfile)


def widen_pipe(pipe: IO[bytes]) -> None:
    """Give a stream pipe 1 MiB of buffer (Linux's default is 64 KiB), where allowed.

    Fewer, larger transfers between zfs and us: about half the context switches per MiB.
    """
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is None:
        return
    with contextlib.suppress(OSError):  # beyond /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(pipe.fileno(), setpipe, PIPE_BYTES)


def read_all(errfile: IO[bytes]) -> str:
    """What the child wrote to its stderr file; closes the file."""
    try:
        errfile.seek(0)
        return errfile.read().decode(errors="replace")
    finally:
        errfile.close()


def kill_group(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL it after a grace period, and reap."""
    if child.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            break
        try:
            child.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    child.wait()


class Child:
    """A running child whose stdout or stdin the caller streams."""

    def __init__(self, popen: subprocess.Popen[bytes], errfile: IO[bytes]) -> None:
        self.popen = popen
        self._errfile = errfile
        self._stderr: str | None = None

    @property
    def stdout(self) -> io.BufferedReader:
        """The child's stdout pipe (buffered: Popen's default), for reading a stream."""
        assert isinstance(self.popen.stdout, io.BufferedReader)
        return self.popen.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.popen.stdin is not None
        return self.popen.stdin

    def wait(self) -> tuple[int, str]:
        """Close our ends of its pipes, wait for its exit; its exit code and stderr."""
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None and not pipe.closed:
                # BrokenPipe: it exited before reading all we wrote; its exit code says why
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
        code = self.popen.wait()
        if self._stderr is None:
            self._stderr = read_all(self._errfile)
        return code, self._stderr

    def kill(self) -> None:
        """Kill its process group and reap it; safe to call twice."""
        kill_group(self.popen)
        self.wait()
