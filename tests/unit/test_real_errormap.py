"""Every OpenZFS failure recorded in the fixtures maps to its typed error.

The messages are read from tests/fixtures/zfs-streams (real OpenZFS 2.3.2 output); this file only
says which error each recorded case must become.
"""

from __future__ import annotations

import pytest

from protocol.errors import (
    DatasetBusy,
    DatasetExists,
    DestinationHasSnapshots,
    DestinationModified,
    HasDependentClones,
    HostUnreachable,
    InvalidOperation,
    NameError_,
    NoCommonSnapshot,
    OriginMissing,
    RetryableError,
    StreamChecksumError,
    StreamFormatError,
    StreamIncomplete,
    TokenError,
    ZfleetError,
)
from tests.conformance.recorded import recorded_failures, recorded_samples
from workers.zfs.errormap import error_from_stderr

EXPECTED: dict[str, type[ZfleetError]] = {
    "receive incremental onto dataset lacking the from-snapshot": NoCommonSnapshot,
    "receive full into existing dataset without -F": DatasetExists,
    "modify target then receive incremental": DestinationModified,
    "clone stream where origin missing": OriginMissing,
    "truncated stream without -s": StreamIncomplete,
    "corrupted byte": StreamChecksumError,
    "garbage": StreamFormatError,
    "resume with stale token": TokenError,
    "abort partial": StreamIncomplete,
    "rollback needing -r": DestinationHasSnapshots,
}


def test_every_recorded_failure_has_an_expectation() -> None:
    assert set(recorded_failures()) == set(EXPECTED)


@pytest.mark.parametrize("title", sorted(EXPECTED))
def test_recorded_failure_maps_to_its_typed_error(title: str) -> None:
    case = recorded_failures()[title]
    error = error_from_stderr(case.stderr, case.exit_code)
    assert type(error) is EXPECTED[title]
    # OpenZFS's words stay available to the user
    assert str(error).split(" (")[0] in " ".join(case.stderr.split())


def test_saved_partial_receive_carries_the_token_openzfs_printed() -> None:
    case = recorded_failures()["abort partial"]
    error = error_from_stderr(case.stderr, case.exit_code)
    assert isinstance(error, StreamIncomplete)
    token_line = next(x for x in case.stderr.splitlines() if "zfs send -t" in x)
    assert error.token == token_line.split()[-1]
    assert error.token is not None and error.token.startswith("1-")


def test_truncated_stream_without_resume_has_no_token() -> None:
    case = recorded_failures()["truncated stream without -s"]
    error = error_from_stderr(case.stderr, case.exit_code)
    assert isinstance(error, StreamIncomplete)
    assert error.token is None


def test_rollback_refusal_names_the_snapshots_that_would_go() -> None:
    case = recorded_failures()["rollback needing -r"]
    error = error_from_stderr(case.stderr, case.exit_code)
    listed = case.stderr.split("snapshots and bookmarks:\n", 1)[1].split("\n")
    for name in filter(None, listed):
        assert name in str(error)


@pytest.mark.parametrize(
    ("reason", "expected"), [("dependent clones", HasDependentClones), ("held", DatasetBusy)]
)
def test_destroy_refusals_map(reason: str, expected: type[ZfleetError]) -> None:
    error = error_from_stderr(recorded_samples()[reason], 1)
    assert type(error) is expected


def test_dependent_clone_refusal_names_the_clones() -> None:
    stderr = recorded_samples()["dependent clones"]
    error = error_from_stderr(stderr, 1)
    for clone in stderr.split("datasets:\n", 1)[1].split():
        assert clone in str(error)


def test_zfs_errors_keep_stderr_and_exit_code() -> None:
    case = recorded_failures()["modify target then receive incremental"]
    error = error_from_stderr(case.stderr, case.exit_code)
    assert isinstance(error, DestinationModified)
    assert error.stderr == case.stderr
    assert error.exit_code == case.exit_code


def test_name_refusal_says_which_rule() -> None:
    error = error_from_stderr("cannot create 'tank/a b!': invalid character '!' in name\n", 2)
    assert isinstance(error, NameError_)
    assert error.name == "tank/a b!"
    assert "invalid character" in error.rule


def test_unknown_message_keeps_openzfs_words() -> None:
    error = error_from_stderr("cannot frobnicate 'tank/a': the moon is full\n", 1)
    assert isinstance(error, InvalidOperation)
    assert "the moon is full" in str(error)


def test_unreachable_ssh_host_is_retryable_but_a_corrupt_token_is_not() -> None:
    down = "ssh: connect to host lab1 port 22: Connection refused\n"
    error = error_from_stderr(down, 255)
    assert isinstance(error, HostUnreachable)
    assert isinstance(error, RetryableError)
    # zfs send -t exits 255 too; its words, not the code, decide
    token = recorded_failures()["resume with stale token"]
    assert not isinstance(error_from_stderr(token.stderr, token.exit_code), RetryableError)
