"""The object store against a real S3 server (weed mini): round trips, concurrency, verify."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.errors import StoreConflict
from tests.conftest import ZFS_STREAMS
from tests.services.s3 import S3Server, s3_server
from workers.cloud import manifest as mf
from workers.cloud.blobstore import S3BlobStore, S3Settings
from workers.cloud.ingest import StreamIngest
from workers.cloud.packs import Index
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_chain, restore_stream
from workers.cloud.verify import verify

pytestmark = pytest.mark.integration
__all__ = ["s3_server"]  # the fixture is used by name

STREAMS = sorted(ZFS_STREAMS.glob("*.zstream"))
ZFLEET = [str(Path(sys.executable).parent / "zfleet")]  # the installed console script


def target(server: S3Server, prefix: str, checksum: str = "when_required") -> S3BlobStore:
    return S3BlobStore(
        S3Settings(
            bucket=server.bucket,
            prefix=prefix,
            request_checksum=checksum,  # type: ignore[arg-type]
            response_checksum=checksum,  # type: ignore[arg-type]
            **server.settings_kwargs(),
        )
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_cli(server: S3Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = server.env() | {"ZFLEET_PASSPHRASE": "pw"}
    return subprocess.run(
        [*ZFLEET, *args], env=env, capture_output=True, text=True, timeout=90, check=False
    )


@pytest.mark.parametrize("checksum", ["when_required", "when_supported"])
def test_every_fixture_round_trips_through_s3(s3_server: S3Server, checksum: str) -> None:
    repo = Repository.init(
        target(s3_server, f"roundtrip-{checksum}", checksum),
        RepoKey(passphrase="pw"),
        pack_size=128 * 1024,
        scrypt_n=2**10,
    )
    refs = {}
    for path in STREAMS:
        sink = StreamIngest(repo)
        data = path.read_bytes()
        for i in range(0, len(data), 100_003):
            sink.write(data[i : i + 100_003])
        refs[path] = sink.finish()
    reopened = Repository.open(target(s3_server, f"roundtrip-{checksum}"), RepoKey(passphrase="pw"))
    found, broken = mf.load_all(reopened.target, reopened.crypto)
    assert not broken
    by_id = {m.id: m for m in found}
    for path, ref in refs.items():
        restored = b"".join(restore_stream(reopened, by_id[ref.manifest]))
        assert sha(restored) == sha(path.read_bytes()), path.stem
    assert verify(reopened).ok


def test_a_second_repository_init_is_refused(s3_server: S3Server) -> None:
    t = target(s3_server, "init-twice")
    Repository.init(t, RepoKey(passphrase="pw"), scrypt_n=2**10)
    with pytest.raises(StoreConflict, match="already exists"):
        Repository.init(t, RepoKey(passphrase="pw"), scrypt_n=2**10)


def test_two_processes_uploading_at_once_keep_the_index_whole(s3_server: S3Server) -> None:
    url = f"s3://{s3_server.bucket}/concurrent"
    r = run_cli(s3_server, "cloud", "--repo", url, "init", "--pack-size-mib", "1")
    assert r.returncode == 0, r.stderr
    # Two real worker processes, each storing several streams, some of them the same snapshot,
    # so both race to create packs and index segments with overlapping content.
    lists = [
        ["full-s1", "incr-s1-s2", "zvol-v1", "full-s1-compressed"],
        ["full-s1-props", "incr-I-s1-s3", "replicate-R-base-s3", "full-s1"],
    ]
    script = (
        "import sys, subprocess\n"
        "for p in sys.argv[2:]:\n"
        f"    r = subprocess.run([{ZFLEET[0]!r}, 'cloud', '--repo',"
        " sys.argv[1], 'put', '--json', p], capture_output=True, text=True)\n"
        "    if r.returncode: sys.exit(r.stderr)\n"
        "    print(r.stdout.strip(), flush=True)\n"
    )
    env = s3_server.env() | {"ZFLEET_PASSPHRASE": "pw"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                url,
                *(str(ZFS_STREAMS / f"{n}.zstream") for n in names),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for names in lists
    ]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=110)
        assert p.returncode == 0, err
        outputs.append([json.loads(line) for line in out.splitlines()])

    repo = Repository.open(target(s3_server, "concurrent"), RepoKey(passphrase="pw"))
    index = Index.load(repo.target, repo.crypto)
    found, broken = mf.load_all(repo.target, repo.crypto)
    assert not broken and len(found) == 8
    # Every blob every manifest needs is in the index, and every stream restores exactly.
    by_id = {m.id: m for m in found}
    for names, refs in zip(lists, outputs, strict=True):
        for name, ref in zip(names, refs, strict=True):
            restored = b"".join(restore_stream(repo, by_id[ref["manifest"]]))
            assert sha(restored) == sha((ZFS_STREAMS / f"{name}.zstream").read_bytes())
    assert len(index) > 0
    assert verify(repo).ok
    assert list(repo.target.list("leases/")) == []


def test_cli_against_s3_with_verify_reporting_a_lost_pack(
    s3_server: S3Server, tmp_path: Path
) -> None:
    url = f"s3://{s3_server.bucket}/cli"
    assert run_cli(s3_server, "cloud", "--repo", url, "init").returncode == 0
    for name in ("full-s1", "incr-s1-s2", "clone-app-from-base-s2"):
        r = run_cli(s3_server, "cloud", "--repo", url, "put", str(ZFS_STREAMS / f"{name}.zstream"))
        assert r.returncode == 0, r.stderr
    r = run_cli(
        s3_server, "cloud", "--repo", url, "restore", "fx/app@a1", "--out-dir", str(tmp_path)
    )
    assert r.returncode == 0, r.stderr
    restored = sorted(tmp_path.iterdir())
    expected = ("full-s1", "incr-s1-s2", "clone-app-from-base-s2")
    assert [sha(p.read_bytes()) for p in restored] == [
        sha((ZFS_STREAMS / f"{n}.zstream").read_bytes()) for n in expected
    ]
    assert run_cli(s3_server, "cloud", "--repo", url, "verify").returncode == 0

    repo = Repository.open(target(s3_server, "cli"), RepoKey(passphrase="pw"))
    chain = restore_chain(repo, "fx/app@a1")
    lost = chain[-1].packs[0]
    repo.target.delete(f"data/{lost[:2]}/{lost}")
    r = run_cli(s3_server, "cloud", "--repo", url, "verify", "--json")
    assert r.returncode == 3, r.stderr
    report = json.loads(r.stdout)
    assert report["missing"] == [lost]
    assert "fx/app@a1" in report["affected"][lost]


def test_wrong_credentials_are_a_clear_error(s3_server: S3Server) -> None:
    env = s3_server.env() | {"ZFLEET_STORE_SECRET_KEY": "wrong", "ZFLEET_PASSPHRASE": "pw"}
    r = subprocess.run(
        [*ZFLEET, "cloud", "--repo", f"s3://{s3_server.bucket}/x", "ls"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert "access denied" in r.stderr and "Traceback" not in r.stderr
