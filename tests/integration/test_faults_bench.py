"""bench/faults.py runs: a few seeded cuts per transfer kind, each resumed and checked.

The harness itself raises when a cut transfer does not complete or its replica differs; here it
runs small (two cuts a kind, a 1 MiB stream) so that CI keeps it working, and the figures it
returns must be sane: every cut counted, nothing re-sent beyond the stream itself.
"""

from __future__ import annotations

import pytest

from bench import faults

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # ~25 s idle


def test_every_kind_of_cut_transfer_resumes() -> None:
    results = faults.run(cuts=2, seed=7, size=1024 * 1024, kinds=faults.KINDS, chunk=256 * 1024)
    assert [r["kind"] for r in results] == list(faults.KINDS)
    for r in results:
        assert r["cuts"] == 2
        assert 0 <= r["resent_max"] <= r["stream_bytes"] + 2 * 256 * 1024, r
    store = next(r for r in results if r["kind"] == "store")
    assert store["resent_max"] <= faults.STORE_PACK  # the store keeps what it had stored
