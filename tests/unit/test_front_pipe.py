"""`zfleet sim zfs send ... | zfleet sim zfs receive ...` as separate processes over a pipe.

This is how people try zfleet and how the lab's differential test drives the simulation: the
console script, real processes, the stream through an OS pipe, OpenZFS's exit codes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.errors import StreamIncomplete
from tests.conformance.target import CHUNK
from workers.zfs.errormap import error_from_stderr
from workers.zfs.parse import parse_estimate, parse_get, parse_list

pytestmark = pytest.mark.slow

ZFLEET = str(Path(sys.executable).parent / "zfleet")


class Cli:
    def __init__(self, root: Path) -> None:
        self.env = {**os.environ, "ZFLEET_SIM_ROOT": str(root)}

    def argv(self, program: str, *args: str) -> list[str]:
        return [ZFLEET, "sim", program, *args]

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(program, *args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ok(self, program: str, *args: str) -> str:
        done = self.run(program, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def pipe(
        self, send: list[str], receive: list[str], *, cut_at: int | None = None
    ) -> tuple[int, int, str]:
        """Run send | receive; with ``cut_at`` only that many bytes reach the receiver."""
        sender = subprocess.Popen(
            self.argv("zfs", "send", *send), env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        receiver = subprocess.Popen(
            self.argv("zfs", "receive", *receive), env=self.env, stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert sender.stdout is not None
        assert receiver.stdin is not None and receiver.stderr is not None
        try:
            sent = 0
            while chunk := sender.stdout.read(CHUNK):
                if cut_at is not None and sent + len(chunk) >= cut_at:
                    receiver.stdin.write(chunk[: cut_at - sent])
                    sender.kill()
                    break
                receiver.stdin.write(chunk)
                sent += len(chunk)
            receiver.stdin.close()
            err = receiver.stderr.read().decode()
            return sender.wait(timeout=60), receiver.wait(timeout=60), err
        finally:
            for child in (sender, receiver):
                if child.poll() is None:
                    child.kill()
                child.wait(timeout=60)
                for pipe in (child.stdin, child.stdout, child.stderr):
                    if pipe is not None:
                        pipe.close()

    def guid(self, name: str) -> str:
        return self.ok("zfs", "get", "-Hp", "-o", "value", "guid", name).strip()

    def mountpoint(self, name: str) -> Path:
        return Path(self.ok("zfs", "get", "-H", "-o", "value", "mountpoint", name).strip())


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    shell = Cli(tmp_path / "pools")
    shell.ok("zpool", "create", "tank")
    shell.ok("zfs", "create", "tank/a")
    return shell


def test_send_pipe_receive_full_then_incremental(cli: Cli) -> None:
    data = os.urandom(300_000)
    (cli.mountpoint("tank/a") / "blob.bin").write_bytes(data)
    cli.ok("zfs", "snapshot", "tank/a@s1")
    estimate = parse_estimate(cli.ok("zfs", "send", "-nP", "tank/a@s1"))
    assert estimate >= len(data)
    assert cli.pipe(["tank/a@s1"], ["tank/b"])[:2] == (0, 0)
    assert (cli.mountpoint("tank/b") / "blob.bin").read_bytes() == data
    assert cli.guid("tank/b@s1") == cli.guid("tank/a@s1")
    (cli.mountpoint("tank/a") / "note.txt").write_text("second\n")
    cli.ok("zfs", "snapshot", "tank/a@s2")
    assert cli.pipe(["-i", "@s1", "tank/a@s2"], ["tank/b"])[:2] == (0, 0)
    assert (cli.mountpoint("tank/b") / "note.txt").read_text() == "second\n"
    listed = parse_list(
        cli.ok("zfs", "list", "-Hp", "-t", "snapshot", "-o", "name,guid,type,createtxg", "-r",
               "tank/b"),
        ("name", "guid", "type", "createtxg"),
    )  # fmt: skip
    assert [o.short for o in listed] == ["s1", "s2"]


def test_cut_stream_resumes_from_the_token_it_prints(cli: Cli) -> None:
    data = os.urandom(1_000_000)
    (cli.mountpoint("tank/a") / "blob.bin").write_bytes(data)
    cli.ok("zfs", "snapshot", "tank/a@s1")
    _, code, err = cli.pipe(["tank/a@s1"], ["-s", "tank/b"], cut_at=400_000)
    assert code == 1
    error = error_from_stderr(err, code)
    assert isinstance(error, StreamIncomplete) and error.token
    listed = parse_get(cli.ok("zfs", "get", "-Hp", "receive_resume_token", "tank/b"))
    assert listed["tank/b"]["receive_resume_token"].value == error.token
    assert cli.pipe(["-t", error.token], ["-s", "tank/b"])[:2] == (0, 0)
    assert (cli.mountpoint("tank/b") / "blob.bin").read_bytes() == data


def test_corrupt_token_exits_255_and_bad_option_2(cli: Cli) -> None:
    done = cli.run("zfs", "send", "-t", "1-0-0-789c00")
    assert done.returncode == 255
    assert done.stderr.startswith("cannot resume send: resume token is corrupt")
    assert done.stdout == ""
    done = cli.run("zfs", "list", "-Z")
    assert done.returncode == 2
    assert "invalid option 'Z'" in done.stderr


def test_sim_help_teaches(cli: Cli) -> None:
    done = subprocess.run(
        [ZFLEET, "sim", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert "zfs send tank/data@s1 | zfleet sim zfs receive" in done.stdout
