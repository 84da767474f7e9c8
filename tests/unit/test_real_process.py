"""RealBackend's process handling, with real child processes standing in for `zfs`.

The children are tiny shell scripts made per test: they let the test control timing (a send
that waits, a receive that fails half-way) in ways a real pool cannot be asked to. The full
path through a zfs-compatible program is covered by test_conformance_real_via_sim.py.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import (
    ConfigError,
    DatasetNotFound,
    DestinationModified,
    InvalidOperation,
    NameError_,
    StreamIncomplete,
)
from workers.zfs.base import ObjType, ReceiveSpec, SendSpec
from workers.zfs.proc import Runner
from workers.zfs.real import RealBackend


def script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def backend_with(tmp_path: Path, zfs_body: str) -> RealBackend:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script(bin_dir, "zfs", zfs_body)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "T": str(tmp_path)}
    return RealBackend(env=env)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_send_streams_before_the_sender_finishes(tmp_path: Path) -> None:
    # the fake sender writes one piece, then waits for a file only the reader creates: a
    # backend that buffered the whole stream would hang here instead of returning the piece
    backend = backend_with(
        tmp_path,
        'printf first; while [ ! -e "$T/go" ]; do sleep 0.05; done; printf second\n',
    )
    stream = backend.send(SendSpec("tank/a@s1"))
    assert stream.read(5) == b"first"
    (tmp_path / "go").touch()
    assert stream.read() == b"second"
    stream.close()


def test_failed_send_raises_its_typed_error_on_close(tmp_path: Path) -> None:
    backend = backend_with(
        tmp_path,
        "echo \"cannot open 'tank/a@s1': dataset does not exist\" >&2; exit 1\n",
    )
    stream = backend.send(SendSpec("tank/a@s1"))
    assert stream.read() == b""
    with pytest.raises(DatasetNotFound, match="dataset does not exist"):
        stream.close()


def test_cancel_kills_the_whole_process_group_and_reaps_it(tmp_path: Path) -> None:
    # the sender starts a grandchild, as `sudo zfs` or `ssh` would
    backend = backend_with(tmp_path, 'sleep 60 & echo $! > "$T/grandchild"; printf x; wait\n')
    stream = backend.send(SendSpec("tank/a@s1"))
    assert stream.read(1) == b"x"
    grandchild = int((tmp_path / "grandchild").read_text())
    started = time.monotonic()
    stream.cancel()
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_receive_gets_every_byte_written(tmp_path: Path) -> None:
    backend = backend_with(
        tmp_path,
        'cat > "$T/received"; echo "receiving full stream of tank/a@s1 into tank/b@s1"\n',
    )
    sink = backend.receive(ReceiveSpec("tank/b"))
    payload = os.urandom(1 << 20)
    for i in range(0, len(payload), 65536):
        sink.write(payload[i : i + 65536])
    result = sink.finish()
    assert (tmp_path / "received").read_bytes() == payload
    assert result.bytes_received == len(payload)
    assert result.snapshot == "tank/b@s1"


def test_receive_refusal_mid_stream_raises_the_typed_error(tmp_path: Path) -> None:
    # the receiver reads a little, then refuses as OpenZFS does for a modified target
    backend = backend_with(
        tmp_path,
        "head -c 10 > /dev/null; echo 'cannot receive incremental stream: destination "
        "tank/b has been modified' >&2; echo 'since most recent snapshot' >&2; exit 1\n",
    )
    sink = backend.receive(ReceiveSpec("tank/b"))
    with pytest.raises(DestinationModified):
        for _ in range(200):  # far more than a pipe buffer: the write must notice the exit
            sink.write(b"\0" * 65536)
        sink.finish()


def test_incomplete_resumable_receive_fetches_the_token_from_the_target(tmp_path: Path) -> None:
    backend = backend_with(
        tmp_path,
        'case "$1" in\n'
        "  receive) cat > /dev/null; echo 'cannot receive new filesystem stream: incomplete "
        "stream' >&2; exit 1 ;;\n"
        "  get) printf 'tank/b\\treceive_resume_token\\t1-abc-de-789c\\t-\\n' ;;\n"
        "esac\n",
    )
    sink = backend.receive(ReceiveSpec("tank/b", resumable=True))
    sink.write(b"partial")
    with pytest.raises(StreamIncomplete) as info:
        sink.finish()
    assert info.value.token == "1-abc-de-789c"


def test_missing_zfs_command_is_a_typed_error(tmp_path: Path) -> None:
    backend = RealBackend(zfs=str(tmp_path / "no-such-zfs"))
    with pytest.raises(InvalidOperation, match="cannot run"):
        backend.list()


def test_ssh_prefix_quotes_each_argument_for_the_remote_shell(tmp_path: Path) -> None:
    # a stand-in ssh that does what ssh does: skip options and host, join the rest with
    # spaces and hand that line to a shell
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script(
        bin_dir,
        "ssh",
        'while [ "${1#-}" != "$1" ]; do shift 2; done; shift; exec sh -c "$*"\n',
    )
    script(bin_dir, "zfs", 'for a in "$@"; do printf "%s\\n" "$a"; done > "$T/args"\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "T": str(tmp_path)}
    backend = RealBackend(["ssh", "-o", "BatchMode=yes", "root@host"], env=env)
    hostile = "two words; touch $T/pwned 'quoted'"
    backend.set("tank/a", {"zfleet:note": hostile})
    assert (tmp_path / "args").read_text().splitlines() == [
        "set",
        f"zfleet:note={hostile}",
        "tank/a",
    ]
    assert not (tmp_path / "pwned").exists()


def test_local_and_sudo_prefixes_are_not_quoted() -> None:
    assert Runner(["sudo", "-n"]).argv(["zfs", "set", "a=b c", "x"]) == [
        "sudo", "-n", "zfs", "set", "a=b c", "x",
    ]  # fmt: skip
    assert Runner(["/usr/bin/ssh", "h"]).argv(["zfs", "a b"]) == [
        "/usr/bin/ssh",
        "h",
        "zfs",
        "'a b'",
    ]
    assert Runner(["mywrapper"], quote=True).argv(["zfs", "a b"]) == ["mywrapper", "zfs", "'a b'"]


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.create("tank/bad name!"),
        lambda b: b.create("-rf"),
        lambda b: b.snapshot(["tank/a@"]),
        lambda b: b.destroy("tank//a"),
        lambda b: b.hold("-r", ["tank/a@s1"]),
        lambda b: b.set("tank/a", {"-o x": "1"}),
        lambda b: b.send(SendSpec("tank/a")),
        lambda b: b.send(SendSpec("tank/a@s2", from_snap="@bad!")),
        lambda b: b.receive(ReceiveSpec("tank/a", origin="tank/b")),
    ],
    ids=[
        "create-char", "create-option", "empty-snap", "empty-component", "option-tag",
        "bad-prop", "send-dataset", "bad-from", "origin-not-snapshot",
    ],
)  # fmt: skip
def test_bad_input_is_refused_before_zfs_runs(tmp_path: Path, call: Any) -> None:
    backend = backend_with(tmp_path, 'echo ran >> "$T/ran"\n')
    with pytest.raises((NameError_, ConfigError)) as info:
        call(backend)
    assert str(info.value)
    assert not (tmp_path / "ran").exists()


def test_reading_after_cancel_ends_the_stream(tmp_path: Path) -> None:
    backend = backend_with(tmp_path, "printf x; sleep 30\n")
    stream = backend.send(SendSpec("tank/a@s1"))
    assert stream.read(1) == b"x"
    stream.cancel()
    assert stream.read(10) == b""
    stream.close()  # nothing left to report after a cancel


def test_user_properties_are_asked_only_of_what_was_listed(tmp_path: Path) -> None:
    row = "\t".join(["tank/a#b1", "bookmark", "1", "2", "3", *["-"] * 7])
    snap = "\t".join(["tank/a@s1", "snapshot", "4", "5", "6", *["-"] * 7])
    backend = backend_with(
        tmp_path,
        'echo "$*" >> "$T/calls"\n'
        'case "$1" in\n'
        f'  list) case "$*" in *@s1) printf "{snap}\\n" ;; *) printf "{row}\\n" ;; esac ;;\n'
        "  get) printf 'tank/a@s1\\tzfleet:role\\tprimary\\tinherited from tank/a\\n' ;;\n"
        "esac\n",
    )
    marks = backend.list("tank/a", recursive=False, types=[ObjType.BOOKMARK])
    assert [m.name for m in marks] == ["tank/a#b1"]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["list"]  # a bookmark has no user properties
    (snap_obj,) = backend.list("tank/a@s1", recursive=False)
    assert snap_obj.user_props == {"zfleet:role": "primary"}
    last = (tmp_path / "calls").read_text().splitlines()[-1]
    assert last.startswith("get") and last.endswith("all tank/a@s1")
