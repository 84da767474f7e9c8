"""Seeded, bounded fuzzing of what users type: fleet configs and `zfleet sim zfs` arguments.

Each case is generated from a fixed seed (so a failure names a case that replays), run
in-process, and must end in a clear answer: a config loads or is refused with a ConfigError
naming the file; a `zfs`/`zpool` command exits 0, 1 or 2 (255 for `send -t`, as libzfs) with
OpenZFS-style words. A traceback, an exception escaping, or the front end's own "internal
error" (a bug caught at the last moment) fails the case.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest

from coordinator.config import load_config
from protocol.errors import ConfigError
from workers.zfs.front import Front
from workers.zfs.sim import SimBackend

SEED: Final = 20261202
CONFIG_CASES: Final = 300
ARGV_CASES: Final = 400

GOOD_CONFIG: Final = """\
[hosts.alpha]
backend = "sim"
sim_root = "/tmp/fuzz-alpha"
stream_address = "127.0.0.1:7001"

[hosts.beta]
backend = "real"
exec_prefix = "ssh -o BatchMode=yes root@beta"
stream_address = "127.0.0.1:7002"

[stores.bucket]
kind = "s3"
endpoint = "http://127.0.0.1:8333"
bucket = "zfleet"

[jobs.images]
source = "alpha:tank/images"
targets = ["beta:backup/images", "store:bucket"]
schedule = "15m"
snapshot = "zfleet-%Y%m%dT%H%M%SZ"

[jobs.images.retention]
"zfleet-*" = 24
"""

# values a user (or a bad editor) puts where a value belongs
ODD_VALUES: Final = (
    '""', "0", "-1", "99999999999999999999999999", "1e400", "nan", "inf", "true", "[]", "{}",
    '"\\u0000"', '"ssh \'root@x"', '"\\\\"', '"' + "x" * 5000 + '"', "[" * 300 + "]" * 300,
    '"99999999999999999999w"', '"0s"', '"*/0 * * * *"', '"61 * * * *"', '"a:b:c"', '"store:"',
    '"alpha:"', '"alpha:/tank"', '"alpha:tank//a"', '"nohost:tank/a"', '"127.0.0.1:99999"',
    '"[::1]:7001"', '"' + "é" * 10 + '"', "{ a = { b = { c = 1 } } }", '["a", 1, true]',
    '"zfleet-%"', '"%Y%Y%Y"', '{ "*" = -5 }', '{ "x" = "y" }', "1979-05-27T07:32:00Z",
)  # fmt: skip
KEYS: Final = (
    "backend", "sim_root", "exec_prefix", "stream_address", "source", "targets", "schedule",
    "snapshot", "retention", "exclude", "incremental", "force_rollback", "kind", "bucket",
    "endpoint", "path", "prefix", "mount_targets", "bogus", "",
)  # fmt: skip


def _mutate_config(rng: random.Random) -> bytes:
    """One bad (or, by chance, good) fleet config."""
    text = GOOD_CONFIG
    lines = text.splitlines()
    kind = rng.randrange(8)
    if kind == 0:  # a key set to an odd value
        i = rng.randrange(len(lines))
        key = rng.choice(KEYS)
        lines.insert(i + 1, f"{key} = {rng.choice(ODD_VALUES)}" if key else "= 1")
        return "\n".join(lines).encode()
    if kind == 1:  # an existing value replaced
        candidates = [i for i, line in enumerate(lines) if " = " in line]
        i = rng.choice(candidates)
        lines[i] = lines[i].split(" = ", 1)[0] + " = " + rng.choice(ODD_VALUES)
        return "\n".join(lines).encode()
    if kind == 2:  # cut short anywhere
        raw = text.encode()
        return raw[: rng.randrange(len(raw))]
    if kind == 3:  # bytes flipped
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if kind == 4:  # another encoding, or none at all
        return rng.choice(
            [
                text.replace("images", "imágenes").encode("latin-1"),
                text.encode("utf-16"),
                bytes(rng.randrange(256) for _ in range(rng.randint(1, 400))),
                b"\x00" * rng.randint(1, 50),
            ]
        )
    if kind == 5:  # tables in odd places
        header = rng.choice(
            ["[hosts]", "[jobs]", "[[jobs.x]]", "[hosts.alpha.x]", "[jobs.images.retention.x]",
             "[settings]", "[stores.bucket.kind]", "[hosts.'bad name']", "[jobs.'']"]
        )  # fmt: skip
        lines.insert(rng.randrange(len(lines) + 1), header)
        return "\n".join(lines).encode()
    if kind == 6:  # deep nesting
        depth = rng.choice([50, 500, 3000])
        return (text + "x = " + "[" * depth + "]" * depth + "\n").encode()
    lines = lines[:]  # lines swapped around
    rng.shuffle(lines)
    return "\n".join(lines).encode()


def _config_cases() -> list[bytes]:
    rng = random.Random(SEED)
    return [_mutate_config(rng) for _ in range(CONFIG_CASES)]


def test_fuzzed_fleet_configs_load_or_are_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    failures = []
    refused = 0
    for n, content in enumerate(_config_cases()):
        path.write_bytes(content)
        try:
            load_config(path)
        except ConfigError as exc:
            refused += 1
            message = str(exc)
            if not message.startswith(str(path)) or len(message) > 500 or "\n" in message:
                failures.append((n, "unclear", message[:200]))
        except Exception as exc:  # nothing else may come out
            failures.append((n, type(exc).__name__, str(exc)[:200]))
    assert failures == []
    assert refused > CONFIG_CASES // 2  # the generator does make bad files


# -- `zfleet sim zfs` / `zpool` arguments --------------------------------------------------------

NAMES: Final = (
    "tank", "tank/a", "tank/a@s1", "tank/a#b1", "tank/nope", "tank/a@nope", "nopool/x", "",
    "tank/", "/tank", "tank//a", "tank/a@", "tank/a@x@y", "tank/a#", "tank/a@s1#b", "tank/%a",
    "tank/" + "x" * 300, "tank/a b", "tank/\x00", "tank/é", "-", "--", "@s1", "#b1", "tank/v",
    "tank/a/b/c/d/e", "tank@s1", "TANK", "1tank", "mirror", "tank/.", "tank/..", "tank/c",
    "tank/\udcff", "tank/a\x01", "tank/a@\udc80x", "user:\udcff",
)  # fmt: skip
VALUES: Final = (
    "1", "0", "-1", "99999999999999999999999", "1.5G", "1e9", "nan", "16E", "17E", "lots",
    "on", "off", "none", "legacy", "/mnt/x", "x" * 2000, "", "=", "a=b", "\x00", "lz4", "12P",
    "\udcff", "caf\u00e9",
)  # fmt: skip
PROPS: Final = (
    "compression", "mountpoint", "canmount", "quota", "volsize", "recordsize", "atime",
    "user:note", "zfleet:role", "bogus", "readonly", "refquota", "copies", "volblocksize",
    "encryption", "keyformat", "origin", "name", "guid", "all", "", "user:\udcff",
)  # fmt: skip
COMMANDS: Final = (
    "list", "get", "set", "inherit", "create", "destroy", "snapshot", "hold", "release",
    "holds", "bookmark", "clone", "promote", "rename", "rollback", "send", "receive", "diff",
    "load-key", "unload-key", "mount", "unmount", "frob",
)  # fmt: skip
FLAGS: Final = (
    "-r", "-R", "-d", "-p", "-f", "-n", "-v", "-H", "-F", "-s", "-u", "-a", "-i", "-I", "-t",
    "-o", "-V", "-b", "-L", "-c", "-w", "-e", "-x", "-S", "-q", "--", "-P", "-?",
)  # fmt: skip


def _shaped(rng: random.Random) -> list[str]:
    """A command with its arguments in the right places, their values wrong."""
    name, other = rng.choice(NAMES), rng.choice(NAMES)
    assign = f"{rng.choice(PROPS)}={rng.choice(VALUES)}"
    maybe = [rng.choice(FLAGS)] if rng.random() < 0.3 else []
    shapes = [
        ["create", *maybe, "-o", assign, name],
        ["create", "-V", rng.choice(VALUES), name],
        ["create", "-p", name],
        ["snapshot", *maybe, f"{name}@x"],
        ["snapshot", "-o", assign, name],
        ["set", assign, name],
        ["get", rng.choice(PROPS), name],
        ["get", "-o", rng.choice(PROPS), "all", name],
        ["list", "-o", rng.choice(PROPS), "-s", rng.choice(PROPS), name],
        ["list", "-d", rng.choice(VALUES), name],
        ["inherit", rng.choice(PROPS), name],
        ["destroy", *maybe, name],
        ["rollback", *maybe, name],
        ["clone", name, other],
        ["clone", "-o", assign, "tank/a@s1", other],
        ["rename", name, other],
        ["promote", name],
        ["bookmark", name, other],
        ["hold", rng.choice(VALUES), name],
        ["release", rng.choice(VALUES), name],
        ["holds", name],
        ["diff", name, other],
        ["send", *maybe, name],
        ["send", "-i", other, name],
        ["send", "-t", rng.choice(VALUES + NAMES)],
        ["send", "-nP", "-I", other, name],
        ["receive", *maybe, name],
        ["receive", "-o", assign, "-x", rng.choice(PROPS), name],
        ["receive", "-A", name],
        ["load-key", "-L", rng.choice(VALUES), name],
        ["unload-key", name],
        ["mount", *maybe, name],
        ["unmount", *maybe, name],
    ]
    return ["zfs", *rng.choice(shapes)]


def _argv(rng: random.Random) -> list[str]:
    """One `zfs` (or `zpool`) command line, mostly wrong."""
    if rng.random() < 0.1:
        return ["zpool", rng.choice(["create", "destroy", "list", "get", "frob"]),
                *rng.sample(NAMES, rng.randint(0, 2))]  # fmt: skip
    if rng.random() < 0.7:
        return _shaped(rng)
    argv = ["zfs", rng.choice(COMMANDS)]
    for _ in range(rng.randint(0, 5)):
        pick = rng.random()
        if pick < 0.3:
            argv.append(rng.choice(FLAGS))
        elif pick < 0.6:
            argv.append(rng.choice(NAMES))
        elif pick < 0.8:
            argv.append(f"{rng.choice(PROPS)}={rng.choice(VALUES)}")
        elif pick < 0.9:
            argv.append(rng.choice(PROPS))
        else:
            argv.append(rng.choice(VALUES))
    return argv


def _shell(tmp_path: Path) -> Callable[[list[str], bytes], tuple[int, str]]:
    backend = SimBackend(tmp_path / "pools")
    backend.create_pool("tank")
    backend.create("tank/a")
    backend.snapshot(["tank/a@s1"])
    backend.bookmark("tank/a@s1", "tank/a#b1")
    backend.create("tank/v", volsize=1 << 20)

    def run(argv: list[str], stdin: bytes) -> tuple[int, str]:
        err = io.StringIO()
        front = Front(backend, stdin=io.BytesIO(stdin), stdout=io.BytesIO(), stderr=err)
        return front.run(argv[0], argv[1:]), err.getvalue()

    return run


def test_fuzzed_sim_zfs_arguments_fail_clearly(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    run = _shell(tmp_path)
    stdin_choices = (b"", b"garbage" * 100, bytes(range(256)) * 2)
    failures = []
    codes: set[int] = set()
    for n in range(ARGV_CASES):
        argv = _argv(rng)
        stdin = rng.choice(stdin_choices)
        try:
            code, err = run(argv, stdin)
        except BaseException as exc:  # nothing may escape
            failures.append((n, argv, f"{type(exc).__name__}: {exc}"[:200]))
            continue
        codes.add(code)
        if code not in (0, 1, 2, 255) or "Traceback" in err or "internal error" in err:
            failures.append((n, argv, code, err[:300]))
        elif code != 0 and not err.strip():
            failures.append((n, argv, code, "failed without a word"))
    assert failures == []
    assert {1, 2} <= codes


@pytest.mark.parametrize(
    "argv",
    [
        ["zfs", "create", "-V", "99999999999999999999999", "tank/vol2"],
        ["zfs", "create", "-V", "16E", "tank/vol2"],
        ["zfs", "set", "volsize=99999999999999999999999", "tank/v"],
        ["zfs", "set", "quota=99999999999999999999999", "tank/a"],
    ],
)
def test_huge_sizes_are_refused_in_words(tmp_path: Path, argv: list[str]) -> None:
    code, err = _shell(tmp_path)(argv, b"")
    # zfs set exits 255 for a refused value (OpenZFS 2.3.2); create 1 or 2
    assert code in ((255,) if argv[1] == "set" else (1, 2)), err
    assert err.startswith(("bad volume size", "cannot "))
    assert "internal error" not in err


def test_fuzzed_configs_through_the_cli_exit_with_a_message(tmp_path: Path) -> None:
    # `zfleet graph` reads the file before it needs Redis; Redis is pointed at a closed port so
    # a config that does load ends at once with "cannot reach Redis" (exit 4)
    from click.testing import CliRunner

    from app.cli import cli

    path = tmp_path / "fleet.toml"
    env = {"ZFLEET_REDIS_URL": "redis://127.0.0.1:9/0", "ZFLEET_CONFIG": ""}
    failures = []
    for n, content in enumerate(_config_cases()[:60]):
        path.write_bytes(content)
        result = CliRunner().invoke(cli, ["graph", "--config", str(path)], env=env)
        if not isinstance(result.exception, SystemExit | None) or result.exit_code not in (2, 4):
            failures.append((n, result.exit_code, repr(result.exception), result.output[-300:]))
        elif "Traceback" in result.output or not result.output.startswith("zfleet: "):
            failures.append((n, result.exit_code, result.output[-300:]))
    assert failures == []
