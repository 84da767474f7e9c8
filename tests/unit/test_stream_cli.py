"""`zfleet stream dump` / `zfleet stream token`: the user's view of the codec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from tests.conftest import ZFS_STREAMS
from tests.unit.test_stream_fixtures import STREAM_IDS, STREAMS, dump_of

ZFLEET = Path(sys.executable).parent / "zfleet"


def _run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["stream", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("stream", STREAMS, ids=STREAM_IDS)
def test_dump_json_matches_zstream_dump(stream: Path) -> None:
    code, out, _ = _run("dump", "--json", str(stream))
    assert code == 0
    data = json.loads(out)
    facts = dump_of(stream)
    for name, (count, size) in facts.records.items():
        assert data["records"][name] == {"count": count, "payload_bytes": size}
    assert data["total_length"] == facts.total_length
    assert [b["toname"] for b in data["begin"]] == [b["toname"] for b in facts.begins]
    assert [b["toguid"] for b in data["begin"]] == [int(b["toguid"], 16) for b in facts.begins]
    assert [b["flags"] for b in data["begin"]] == [int(b["flags"], 16) for b in facts.begins]
    assert [b["features"] for b in data["begin"]] == [int(b["features"], 16) for b in facts.begins]


def test_dump_text_reads_stdin_and_shows_begin_and_summary() -> None:
    stream = ZFS_STREAMS / "incr-s1-s2.zstream"
    code, out, _ = _run("dump", "-", stdin=stream.read_bytes())
    assert code == 0
    facts = dump_of(stream)
    assert f"toname = {facts.begins[0]['toname']}" in out
    assert f"fromguid = {facts.begins[0]['fromguid']}" in out
    count, size = facts.records["DRR_WRITE"]
    assert f"Total DRR_WRITE records = {count} ({size} bytes)" in out
    assert f"Total stream length = {facts.total_length}" in out
    assert "all verified" in out


def test_damaged_stream_exits_1_with_one_line_naming_the_offset(tmp_path: Path) -> None:
    data = bytearray((ZFS_STREAMS / "full-s1.zstream").read_bytes())
    data[5000] ^= 1
    bad = tmp_path / "bad.zstream"
    bad.write_bytes(bytes(data))
    code, out, err = _run("dump", str(bad))
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "checksum" in err and "offset" in err


def test_truncated_and_garbage_and_missing_inputs_exit_1(tmp_path: Path) -> None:
    cut = (ZFS_STREAMS / "full-s1.zstream").read_bytes()[:10_000]
    code, _, err = _run("dump", "-", stdin=cut)
    assert code == 1 and "offset 10000" in err and "ends inside" in err
    code, _, err = _run("dump", "-", stdin=b"hello world" * 100)
    assert code == 1 and "not a ZFS send stream" in err
    code, _, err = _run("dump", str(tmp_path / "nope.zstream"))
    assert code == 1 and "No such file" in err


def test_token_decodes_the_fixture() -> None:
    token = (ZFS_STREAMS / "resume-token.txt").read_text().strip()
    code, out, _ = _run("token", "--json", token)
    assert code == 0
    data = json.loads(out)
    assert data["toname"] == "fx/base@s1" and data["bytes"] == 0x21F68 and data["object"] == 0x24
    code, out, _ = _run("token", "-", stdin=token.encode())
    assert code == 0 and "toguid = 0x5ec22a1df8e9c54b" in out


def test_bad_token_exits_1() -> None:
    code, _, err = _run("token", "1-abc-10-00ff")
    assert code == 1 and "resume token" in err


def test_real_subprocess_pipes_a_stream_through_zfleet() -> None:
    stream = ZFS_STREAMS / "replicate-R-base-s3.zstream"
    done = subprocess.run(
        [str(ZFLEET), "stream", "dump", "--json", "-"],
        input=stream.read_bytes(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["total_length"] == dump_of(stream).total_length
    bad = subprocess.run(
        [str(ZFLEET), "stream", "dump", "-"],
        input=stream.read_bytes()[:777],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.decode().count("\n") == 1 and b"offset 777" in bad.stderr
