"""The store comparison's streams made by real OpenZFS: zfleet, borg and restic each store and
give back, byte for byte, the send streams of a changing Debian tree on a lab host.

The timed comparison is ``bench/store_vs_restic_borg.py --lab`` (a benchmark, not a test); this
checks, on the lab tier, that its lab path makes real streams every tool takes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench import store_vs_restic_borg as bench
from tests.conftest import need_binary
from tests.lab.remote import on_host
from workers.lab.lab import LabHost

pytestmark = pytest.mark.lab


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _out(args: list[str], env: dict[str, str]) -> bytes:
    done = subprocess.run(args, env=env, capture_output=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]
    return done.stdout


def test_lab_streams_round_trip_through_zfleet_borg_and_restic(
    lab_hosts: list[LabHost], tmp_path: Path
) -> None:
    for binary in ("borg", "restic"):
        need_binary(binary)
    host = lab_hosts[0]
    dataset = f"{host.pool}/storebench"
    try:
        fulls, chain = bench.make_lab_streams(list(host.exec_prefix), dataset, tmp_path, 8, 3)
    finally:
        on_host(host, f"zfs destroy -r {dataset} 2>/dev/null || true")
    assert all(s.read_bytes()[:4] == b"\x00\x00\x00\x00" for s in fulls + chain)  # BEGIN
    assert chain[1].stat().st_size < fulls[1].stat().st_size  # incrementals are incremental
    env = {
        **os.environ,
        "ZFLEET_PASSPHRASE": bench.PASSWORD,
        "RESTIC_PASSWORD": bench.PASSWORD,
        "RESTIC_CACHE_DIR": str(tmp_path / "restic-cache"),
        "BORG_PASSPHRASE": bench.PASSWORD,
        "BORG_BASE_DIR": str(tmp_path / "borg-base"),
    }
    for tool in bench.tools(env):
        repo = tmp_path / f"repo-{tool.name}"
        tool.init(repo)
        for n, stream in enumerate(fulls):
            tool.put(repo, stream, n)
        assert bench.du(repo) > 0
    zfleet = str(bench.VENV_BIN / "zfleet")
    for n, stream in enumerate(fulls):
        want = _sha(stream.read_bytes())
        got = _out(
            [zfleet, "cloud", "--repo", str(tmp_path / "repo-zfleet"), "restore",
             f"{dataset}@s{n}", "--only-last"], env)  # fmt: skip
        assert _sha(got) == want
        got = _out(["borg", "extract", "--stdout", f"{tmp_path / 'repo-borg'}::s{n}"], env)
        assert _sha(got) == want
    restic = ["restic", "-q", "-r", str(tmp_path / "repo-restic"), "dump", "latest", "/stream"]
    assert _sha(_out(restic, env)) == _sha(fulls[-1].read_bytes())
    # The incremental chain, stored in one `put`, comes back as the chain.
    repo = tmp_path / "repo-zfleet-chain"
    _out([zfleet, "cloud", "--repo", str(repo), "init"], env)
    bench.zfleet_put(repo, chain, env)
    out = tmp_path / "restored"
    _out([zfleet, "cloud", "--repo", str(repo), "restore", f"{dataset}@s{len(chain) - 1}",
          "--out-dir", str(out)], env)  # fmt: skip
    assert [_sha(p.read_bytes()) for p in sorted(out.iterdir())] == [
        _sha(s.read_bytes()) for s in chain
    ]
    shutil.rmtree(tmp_path / "streams")
