"""Every scenario of the recorded OpenZFS corpus replayed on the simulation, line by line.

tests/fixtures/zfs-corpus/corpus.txt was recorded on real OpenZFS 2.3.2 in the lab
(tests/conformance/corpus_record.py); a line the simulation answers differently fails here unless
tests/fixtures/zfs-corpus/known-differences.txt explains it, and an explanation that no longer
matches anything fails too (it must leave the list). The agreement figure is printed
(`pytest -s`), and by `python -m tests.conformance.corpus_sim`.
"""

from __future__ import annotations

import pytest

from tests.conformance.corpus import CORPUS_FILE, THEMES, generate, load, load_known
from tests.conformance.corpus_record import SEED
from tests.conformance.corpus_sim import explained, replay_all


@pytest.mark.timeout(900)  # about a second per scenario on a busy machine
def test_the_simulation_answers_every_recorded_line_as_openzfs() -> None:
    recordings = load(CORPUS_FILE)
    assert {r.scenario.theme for r in recordings} == set(THEMES), "every theme is recorded"
    known = load_known()
    agreement, unexplained = replay_all(recordings, known)
    print(f"\ncorpus agreement: {agreement.summary()}")
    shown = "\n".join(
        f"{title}: $ {command}\n  real: {want}\n  sim:  {got}"
        for title, command, want, got in unexplained[:20]
    )
    assert not unexplained, f"{len(unexplained)} lines differ from OpenZFS:\n{shown}"
    used = {id(explained(known, *m)) for m in agreement.mismatches}
    stale = [k.reason for k in known if id(k) not in used]
    assert not stale, f"no longer differ, drop them from known-differences.txt: {stale}"


def test_the_generator_still_makes_the_recorded_scenarios() -> None:
    """The generator is seeded and deterministic: re-recording makes the same command lines."""
    recordings = load(CORPUS_FILE)
    made = generate(SEED, max(r.scenario.number for r in recordings))
    for recorded in recordings:
        assert made[recorded.scenario.number - 1] == recorded.scenario
