"""Host files through an exec prefix (here ``env``, a prefix that runs the command locally)."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import InvalidOperation
from workers import hostfiles


@pytest.mark.parametrize("prefix", [(), ("env",)])
def test_write_read_mkdirs_through_a_prefix(tmp_path: Path, prefix: tuple[str, ...]) -> None:
    where = tmp_path / "a dir" / "b"
    hostfiles.mkdirs(prefix, where)
    data = bytes(range(256)) * 3
    hostfiles.write_bytes(prefix, where / "x y.box", data)
    assert (where / "x y.box").read_bytes() == data
    assert hostfiles.read_bytes(prefix, where / "x y.box") == data
    assert hostfiles.read_bytes(prefix, where / "missing") is None
    with pytest.raises(InvalidOperation, match="failed"):
        hostfiles.run(prefix, ["false"])


def test_ssh_prefix_quotes_each_word() -> None:
    argv = hostfiles.on(("ssh", "root@h"), ["sh", "-c", "cat > '/a b'"])
    assert argv == ["ssh", "root@h", "sh", "-c", "'cat > '\"'\"'/a b'\"'\"''"]
