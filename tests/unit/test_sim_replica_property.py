"""Random file-system histories replicate exactly: full, then incremental after each change."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.sim_helpers import new_sim, snapshot_tree
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

NAMES = st.sampled_from(["a", "b", "c", "d/e", "d/f", "g/h/i"])
OPS = st.one_of(
    st.tuples(st.just("write"), NAMES, st.integers(0, 300_000), st.integers(0, 255)),
    st.tuples(st.just("sparse"), NAMES, st.integers(0, 1 << 21), st.integers(1, 255)),
    st.tuples(st.just("delete"), NAMES),
    st.tuples(st.just("rename"), NAMES, NAMES),
    st.tuples(st.just("chmod"), NAMES, st.sampled_from([0o600, 0o644, 0o755, 0o700])),
    st.tuples(st.just("mkdir"), NAMES),
    st.tuples(st.just("symlink"), NAMES, NAMES),
    st.tuples(st.just("link"), NAMES, NAMES),
    st.tuples(st.just("truncate"), NAMES, st.integers(0, 200_000)),
)


def apply(root: Path, op: tuple[object, ...]) -> None:
    """One user action; actions that make no sense in the current tree are skipped."""
    kind, name = op[0], root / str(op[1])
    try:
        if kind in ("write", "sparse", "mkdir", "symlink", "link"):
            name.parent.mkdir(parents=True, exist_ok=True)
        if kind == "write":
            assert isinstance(op[2], int) and isinstance(op[3], int)
            name.write_bytes(bytes([op[3]]) * op[2])
        elif kind == "sparse":
            assert isinstance(op[2], int) and isinstance(op[3], int)
            with open(name, "wb") as fp:
                fp.seek(op[2])
                fp.write(bytes([op[3]]) * 10)
        elif kind == "delete":
            if name.is_dir() and not name.is_symlink():
                shutil.rmtree(name)
            else:
                name.unlink()
        elif kind == "rename":
            target = root / str(op[2])
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(name, target)
        elif kind == "chmod":
            assert isinstance(op[2], int)
            os.chmod(name, op[2], follow_symlinks=False)
        elif kind == "mkdir":
            name.mkdir()
        elif kind == "symlink":
            os.symlink(str(op[2]), name)
        elif kind == "link":
            os.link(root / str(op[2]), name, follow_symlinks=False)
        elif kind == "truncate":
            assert isinstance(op[2], int)
            os.truncate(name, op[2])
    except (OSError, NotImplementedError):
        pass


def transfer(sim: SimBackend, spec: SendSpec, target: str) -> None:
    stream = sim.send(spec)
    sink = sim.receive(ReceiveSpec(target))
    while chunk := stream.read(100_000):
        sink.write(chunk)
    stream.close()
    sink.finish()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(OPS, min_size=1, max_size=8), min_size=2, max_size=4))
def test_random_histories_replicate_exactly(rounds: list[list[tuple[object, ...]]]) -> None:
    with tempfile.TemporaryDirectory(prefix="sim-prop-") as tmp:
        sim = new_sim(Path(tmp), ["src", "dst"], ["src/fs"])
        src = Path(str(sim.mountpoint("src/fs")))
        previous = None
        for i, ops in enumerate(rounds):
            for op in ops:
                apply(src, op)
            sim.snapshot([f"src/fs@r{i}"])
            spec = SendSpec(
                f"src/fs@r{i}", from_snap=f"@r{previous}" if previous is not None else None
            )
            transfer(sim, spec, "dst/fs")
            previous = i
            dst = Path(str(sim.mountpoint("dst/fs")))
            assert snapshot_tree(dst) == snapshot_tree(src), f"after round {i}"
        sizes = [o.referenced for o in sim.list("src/fs")][1:]
        assert sizes == [o.referenced for o in sim.list("dst/fs")][1:]
