"""Re-record part of the OpenZFS corpus on a lab VM and hold it to the committed recording.

tests/fixtures/zfs-corpus/corpus.txt is what OpenZFS answered when it was recorded; if OpenZFS
(or the lab image) now answers differently, the simulation is being held to stale behaviour.
A bounded subset (a few scenarios of different themes, spread over the corpus; a scenario takes
tens of seconds on TCG) is re-recorded on the session's first lab host and must match line for
line. Re-record the whole corpus with
`python -m tests.conformance.corpus_record` (see that module) when this fails for a good reason.
"""

from __future__ import annotations

import re
from typing import Final

import pytest

from tests.conformance.corpus import THEMES, Agreement, compare, load
from tests.conformance.corpus_record import record
from workers.lab.lab import LabHost

pytestmark = pytest.mark.lab

SUBSET: Final = 3  # scenarios re-recorded: a minute or two on TCG
# lines where OpenZFS itself answers differently from run to run: the snapshot a refused
# `receive -F` names as an example comes from a ZAP walk hashed with a per-dataset random salt
VARIES_BY_RUN: Final = re.compile(r"destination has snapshots \(eg\. ")
SIGPIPE_EXIT: Final = 141


def varies_by_run(want: str, got: str) -> bool:
    """A line OpenZFS may answer either way: the example snapshot above, or the exit code of a
    `zfs send` whose receiver refused the stream and quit (0 if the sender had written all into
    the pipe by then, 141 if it was still writing: a race between the two processes)."""
    if VARIES_BY_RUN.search(want) and VARIES_BY_RUN.search(got):
        return True
    if not (want.startswith("exit ") and got.startswith("exit ")):
        return False
    was, now = want.split()[1:], got.split()[1:]
    if len(was) != len(now) or len(was) < 2 or was[-1] != now[-1] or was[-1] == "0":
        return False
    return all(a == b or {a, b} == {"0", str(SIGPIPE_EXIT)} for a, b in zip(was, now, strict=True))


def test_openzfs_still_answers_as_recorded(lab_hosts: list[LabHost]) -> None:
    committed = load()
    # scenario n has theme (n - 1) % len(THEMES); take one of each theme, from across the corpus
    step = max(1, len(committed) // SUBSET)
    chosen = [committed[min(i * step + i % len(THEMES), len(committed) - 1)] for i in range(SUBSET)]
    fresh = record(lab_hosts[0].exec_prefix, [r.scenario for r in chosen])
    agreement = Agreement()
    for old, new in zip(chosen, fresh, strict=True):
        compare(old, new, agreement)
    print(f"\nre-recorded: {agreement.summary()}")
    changed = [m for m in agreement.mismatches if not varies_by_run(m[2], m[3])]
    shown = "\n".join(
        f"{title}: $ {command}\n  then: {want}\n  now:  {got}"
        for title, command, want, got in changed[:20]
    )
    assert not changed, shown
