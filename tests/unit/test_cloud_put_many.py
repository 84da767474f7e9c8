"""`zfleet cloud put` of several streams in one call: one repository opening, every stream kept."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from app.cli import cli
from tests.conftest import ZFS_STREAMS
from workers.cloud import manifest as mf
from workers.cloud.blobstore import LocalBlobStore
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_stream

ENV = {"ZFLEET_PASSPHRASE": "pw"}
NAMES = ("full-s1", "incr-s1-s2", "zvol-v1")


def _init(tmp_path: Path) -> list[str]:
    base = ["cloud", "--repo", str(tmp_path / "r")]
    Repository.init(LocalBlobStore(tmp_path / "r"), RepoKey(passphrase="pw"), scrypt_n=2**10)
    return base


def test_several_streams_in_one_put_each_restore_byte_for_byte(tmp_path: Path) -> None:
    base = _init(tmp_path)
    files = [str(ZFS_STREAMS / f"{n}.zstream") for n in NAMES]
    r = CliRunner().invoke(cli, [*base, "put", "--json", *files], env=ENV)
    assert r.exit_code == 0, r.output
    refs = [json.loads(line) for line in r.output.splitlines()]
    assert [ref["size"] for ref in refs] == [Path(f).stat().st_size for f in files]
    repo = Repository.open(LocalBlobStore(tmp_path / "r"), RepoKey(passphrase="pw"))
    by_id = {m.id: m for m in mf.load_all(repo.target, repo.crypto)[0]}
    for ref, path in zip(refs, files, strict=True):
        assert b"".join(restore_stream(repo, by_id[ref["manifest"]])) == Path(path).read_bytes()


def test_stdin_is_still_the_default(tmp_path: Path) -> None:
    base = _init(tmp_path)
    data = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
    r = CliRunner().invoke(cli, [*base, "put"], input=data, env=ENV)
    assert r.exit_code == 0 and "stored fx/base@s1" in r.output, (r.output, r.exception)


def test_a_damaged_stream_fails_the_call_and_keeps_the_ones_before_it(tmp_path: Path) -> None:
    base = _init(tmp_path)
    good = ZFS_STREAMS / "full-s1.zstream"
    data = bytearray(good.read_bytes())
    data[5000] ^= 0xFF  # inside a record: its checksum no longer matches
    bad = tmp_path / "bad.zstream"
    bad.write_bytes(bytes(data))
    r = CliRunner().invoke(cli, [*base, "put", str(good), str(bad)], env=ENV)
    assert r.exit_code == 1 and "checksum" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, [*base, "ls", "--json"], env=ENV)
    assert [s["snapshot"] for s in json.loads(r.output)["streams"]] == ["fx/base@s1"]
