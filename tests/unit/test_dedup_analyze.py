"""The analysis core on synthetic collections: sketches against exact sets, clusters, the
proposal's JSON form and the heatmap."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from protocol.errors import ConfigError
from workers.dedup import RECORD, Proposal, RecordSet, analyze, summarize_all
from workers.dedup.svg import MAX_CELLS_SIDE, heatmap

SVG = "{http://www.w3.org/2000/svg}"


def _families(
    seed: int, families: int, per_family: int, base_records: int, own_records: int
) -> list[tuple[str, str | None, RecordSet]]:
    """Images in families: each holds most of its family's base plus records of its own."""
    rng = random.Random(seed)
    items: list[tuple[str, str | None, RecordSet]] = []
    for f in range(families):
        base = [rng.getrandbits(64) for _ in range(base_records)]
        for i in range(per_family):
            keep = rng.sample(base, int(base_records * rng.uniform(0.8, 1.0)))
            own = [rng.getrandbits(64) for _ in range(own_records)]
            sizes = {k: RECORD for k in keep} | {k: rng.choice([512, 4096, RECORD]) for k in own}
            items.append((f"tank/f{f}/img{i}", None, RecordSet.of(sizes)))
    return items


def test_sketch_figures_are_close_to_exact() -> None:
    items = _families(5, families=4, per_family=30, base_records=3000, own_records=300)
    exact = analyze(summarize_all(items, method="exact", k=1024, count=len(items)))
    sketch = analyze(summarize_all(items, method="sketch", k=1024, count=len(items)))
    e, s = exact.proposal, sketch.proposal
    assert (e.method, s.method) == ("exact", "sketch")
    assert s.bytes_now == e.bytes_now  # per-dataset bytes are counted exactly either way
    assert s.lower_bound == pytest.approx(e.lower_bound, rel=0.05)
    assert s.bytes_after == pytest.approx(e.bytes_after, rel=0.05)
    assert len(s.clusters) == len(e.clusters) == 4
    off = ~np.eye(len(items), dtype=bool)
    error = abs(sketch.similarity - exact.similarity)[off]
    assert float(error.max()) < 0.06


def test_reread_pass_gives_exact_figures_for_the_plan() -> None:
    from workers.dedup.refine import reread

    items = _families(8, families=3, per_family=12, base_records=400, own_records=40)
    exact = analyze(summarize_all(items, method="exact", k=8, count=len(items)))
    sketch = analyze(summarize_all(items, method="sketch", k=48, count=len(items)))
    reads: list[int] = []

    def read(i: int) -> RecordSet:
        reads.append(i)
        return items[i][2]

    again = reread(sketch, read)
    p = again.proposal
    assert p.method == "sketch+reread"
    sets = {name: set(rs.sizes) for name, _s, rs in items}
    sizes = {k: v for _n, _s, rs in items for k, v in rs.sizes.items()}
    for cluster in p.clusters:
        for m in cluster.members:
            common = sets[m.dataset] & sets[cluster.base]
            assert m.shared_with_base == sum(sizes[k] for k in common)
    unique = np.diag(exact.shared)
    truth = sum(
        unique[m] - (exact.shared[m, b] if m != b else 0) for m, b in enumerate(again.bases)
    )
    assert p.bytes_after == pytest.approx(truth, abs=len(items))  # rounding per member only
    assert p.bytes_after <= exact.proposal.bytes_after * 1.02
    assert len(reads) == len(set(reads)) == len(items)  # each dataset read once
    assert reread(exact, read) is exact


def test_union_sketch_is_exact_until_full_then_close() -> None:
    from workers.dedup.sketch import UnionSketch

    items = _families(6, families=3, per_family=20, base_records=2000, own_records=200)
    truth = float(sum({k: v for _n, _s, rs in items for k, v in rs.sizes.items()}.values()))
    roomy, tight = UnionSketch(1 << 20), UnionSketch(4096)
    for _n, _s, records in items:
        roomy.add(records)
        tight.add(records)
    assert not roomy.truncated and roomy.total() == truth
    assert tight.truncated and tight.total() == pytest.approx(truth, rel=0.05)
    assert len(tight.keys) == 4096


def test_exact_figures_of_a_tiny_collection() -> None:
    a = {1: RECORD, 2: RECORD, 3: 512}
    b = {1: RECORD, 2: RECORD, 4: 4096}
    c = {9: RECORD}
    items = [("p/a", None, RecordSet.of(a)), ("p/b", None, RecordSet.of(b)),
             ("p/c", None, RecordSet.of(c))]  # fmt: skip
    result = analyze(summarize_all(items, method="exact", k=8, count=3), threshold=0.5)
    p = result.proposal
    assert p.bytes_now == (2 * RECORD + 512) + (2 * RECORD + 4096) + RECORD
    assert p.bytes_after == (2 * RECORD + 512) + 4096 + RECORD
    assert p.lower_bound == p.bytes_after
    assert result.similarity[0, 1] == pytest.approx(2 * RECORD / (2 * RECORD + 512 + 4096))
    assert p.rebases() == [("p/b", "p/a")]


def test_threshold_keeps_unlike_datasets_apart() -> None:
    a = {k: RECORD for k in range(10)}
    b = {k: RECORD for k in range(2, 12)}  # 8 of 12 shared: similarity 0.67
    items = [("p/a", None, RecordSet.of(a)), ("p/b", None, RecordSet.of(b))]
    assert len(analyze(summarize_all(items, method="exact", k=8, count=2), threshold=0.6)
               .proposal.clusters) == 1  # fmt: skip
    apart = analyze(summarize_all(items, method="exact", k=8, count=2), threshold=0.7).proposal
    assert len(apart.clusters) == 2 and apart.bytes_after == apart.bytes_now


def test_proposal_round_trips_through_json() -> None:
    items = _families(2, families=2, per_family=3, base_records=50, own_records=5)
    p = analyze(summarize_all(items, method="exact", k=8, count=len(items))).proposal
    again = Proposal.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p
    with pytest.raises(ConfigError, match="not a dedup proposal"):
        Proposal.from_dict({"clusters": [{"base": "x"}]})


def test_bad_arguments_are_config_errors() -> None:
    items = [("p/a", None, RecordSet.of({1: RECORD}))]
    with pytest.raises(ConfigError, match="threshold"):
        analyze(summarize_all(items, method="exact", k=8, count=1), threshold=0)
    with pytest.raises(ConfigError, match="method"):
        summarize_all(items, method="fast", k=8, count=1)
    with pytest.raises(ConfigError, match="nothing to analyse"):
        analyze([])


def test_heatmap_is_svg_with_one_cell_per_pair() -> None:
    items = _families(3, families=3, per_family=4, base_records=40, own_records=4)
    result = analyze(summarize_all(items, method="exact", k=8, count=len(items)))
    root = ET.fromstring(heatmap(result))
    assert root.tag == f"{SVG}svg"
    cells = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "cell"]
    assert len(cells) == len(items) ** 2
    outlines = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "cluster"]
    assert len(outlines) == sum(1 for c in result.proposal.clusters if c.members)


def test_heatmap_of_a_large_collection_goes_cluster_by_cluster() -> None:
    items = _families(4, families=3, per_family=(MAX_CELLS_SIDE // 3) + 1, base_records=20,
                      own_records=2)  # fmt: skip
    result = analyze(summarize_all(items, method="sketch", k=16, count=len(items)))
    root = ET.fromstring(heatmap(result))
    cells = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "cell"]
    assert len(cells) == len(result.proposal.clusters) ** 2
