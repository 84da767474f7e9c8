"""What the front end prints for a failure reads back as the same typed error.

The front end speaks OpenZFS's words so that anything reading `zfs` output (zfleet's real
backend included) understands the simulation; workers.zfs.errormap is that reader, and it was
written against real OpenZFS output. Each message must also keep OpenZFS's exit code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import (
    ConfigError,
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    DestinationHasSnapshots,
    DestinationModified,
    HasDependentClones,
    KeyNotLoaded,
    NameError_,
    NoCommonSnapshot,
    OriginMissing,
    StreamChecksumError,
    StreamFormatError,
    StreamIncomplete,
    TokenError,
    ZfleetError,
)
from workers.zfs.errormap import error_from_stderr
from workers.zfs.front_errors import Context, render
from workers.zfs.sim import SimBackend

CASES: list[tuple[ZfleetError, Context]] = [
    (NoCommonSnapshot("x"), Context("receive", "tank/b", new_stream=False)),
    (DatasetExists("x"), Context("receive", "tank/b")),
    (DestinationModified("x"), Context("receive", "tank/b", new_stream=False)),
    (DestinationHasSnapshots("x"), Context("receive", "tank/b")),
    (OriginMissing("x"), Context("receive", "tank/b")),
    (StreamIncomplete("x", token="1-abc-12-789c"), Context("receive", "tank/b")),
    (StreamIncomplete("x"), Context("receive", "tank/b")),
    (StreamChecksumError("x"), Context("receive", "tank/b")),
    (StreamFormatError("x"), Context("receive", "tank/b")),
    (TokenError("bad checksum"), Context("resume send", "")),
    (HasDependentClones("x"), Context("destroy", "tank/a@s1")),
    (DestinationHasSnapshots("x"), Context("rollback", "tank/a@s1")),
    (DatasetBusy("x"), Context("destroy", "tank/a@s1")),
    (DatasetBusy("x"), Context("destroy", "tank/a")),
    (DatasetNotFound("x"), Context("open", "tank/nope")),
    (DatasetExists("x"), Context("create", "tank/a")),
    (KeyNotLoaded("x"), Context("mount", "tank/secret")),
    (NameError_("tank/a!", "component 'a!' contains invalid character '!'"), Context("create", "")),
    (NameError_("tank/a@", "empty component (after '@')"), Context("create snapshot", "")),
]


@pytest.fixture
def backend(tmp_path: Path) -> SimBackend:
    sim = SimBackend(tmp_path)
    sim.create_pool("tank")
    return sim


@pytest.mark.parametrize(
    ("error", "ctx"), CASES, ids=[f"{type(e).__name__}-{c.verb}" for e, c in CASES]
)
def test_rendered_message_reads_back_as_the_same_error(
    error: ZfleetError, ctx: Context, backend: SimBackend
) -> None:
    message, code = render(error, ctx, backend)
    back = error_from_stderr(message + "\n", code)
    assert type(back) is type(error), message
    assert code in (1, 255)
    if isinstance(error, StreamIncomplete):
        assert isinstance(back, StreamIncomplete)
        assert back.token == error.token


def test_send_resume_with_a_corrupt_token_exits_255(backend: SimBackend) -> None:
    _, code = render(TokenError("x"), Context("resume send", ""), backend)
    assert code == 255


def test_bad_arguments_exit_2(backend: SimBackend) -> None:
    message, code = render(ConfigError("bad numeric value 'x'"), Context("create", "t"), backend)
    assert code == 2
    assert "bad numeric value" in message


def test_dependent_clone_refusal_lists_the_clones(backend: SimBackend) -> None:
    backend.create("tank/base")
    backend.snapshot(["tank/base@s1"])
    backend.clone("tank/base@s1", "tank/app")
    backend.snapshot(["tank/app@a1"])
    message, _ = render(HasDependentClones("x"), Context("destroy", "tank/base@s1"), backend)
    assert message.splitlines()[1:] == [
        "use '-R' to destroy the following datasets:", "tank/app@a1", "tank/app",
    ]  # fmt: skip


def test_rollback_refusal_lists_the_newer_snapshots(backend: SimBackend) -> None:
    backend.create("tank/a")
    for n in (1, 2, 3):
        backend.snapshot([f"tank/a@s{n}"])
    message, _ = render(DestinationHasSnapshots("x"), Context("rollback", "tank/a@s1"), backend)
    assert message.splitlines()[2:] == ["tank/a@s2", "tank/a@s3"]
    error = error_from_stderr(message + "\n", 1)
    assert "tank/a@s2" in str(error) and "tank/a@s3" in str(error)
