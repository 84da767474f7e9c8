"""Command-line mistakes and what OpenZFS 2.3.2 answers, as data both tiers check.

Each case sets up a few datasets below a scratch root, runs one `zfs` command line (its stdin
possibly a stream another `zfs send` made) and expects OpenZFS's exit code and exact stderr,
with nothing listed below the root changed. The expectations come from libzfs 2.3.2's source
(lib/libzfs/libzfs_sendrecv.c, libzfs_dataset.c, cmd/zfs/zfs_main.c) and the recordings in
tests/fixtures/zfs-streams/cli-errors.txt. tests/unit/test_cli_cases_sim.py holds the
simulation's front end to them; tests/lab/test_cli_cases_real.py holds real OpenZFS to them, so
an expectation written wrong here fails in the lab.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

# argv (starting with "zfs") and stdin -> exit code, stdout, stderr
Run = Callable[[Sequence[str], bytes], tuple[int, bytes, str]]

USAGE_TRAILER: Final = (
    "\nFor the property list, run: zfs set|get\n"
    "\nFor the delegated permission list, run: zfs allow|unallow\n"
    "\nFor further help on a command or topic, run: zfs help [<topic>]\n"
)
SETUP: Final = (
    ("create", "{root}/a"),
    ("snapshot", "{root}/a@s1"),
    ("snapshot", "{root}/a@s2"),
    ("create", "{root}/b"),
    ("bookmark", "{root}/a@s1", "{root}/a#m1"),
    ("hold", "keep", "{root}/a@s1"),
)


@dataclass(frozen=True)
class CliCase:
    title: str
    argv: tuple[str, ...]
    code: int
    stderr: str
    stdin_from: tuple[str, ...] = ()  # a `zfs send` whose stream is the command's stdin
    stdin: bytes = b""
    setup: tuple[tuple[str, ...], ...] = ()  # after SETUP


CASES: Final[tuple[CliCase, ...]] = (
    CliCase(
        "full stream onto an existing dataset",
        ("receive", "{root}/b"),
        1,
        "cannot receive new filesystem stream: destination '{root}/b' exists\n"
        "must specify -F to overwrite it\n",
        stdin_from=("send", "{root}/a@s1"),
    ),
    CliCase(
        "full stream onto its own dataset",
        ("receive", "{root}/a"),
        1,
        "cannot receive new filesystem stream: destination '{root}/a' exists\n"
        "must specify -F to overwrite it\n",
        stdin_from=("send", "{root}/a@s1"),
    ),
    CliCase(
        "forced full stream onto a dataset with snapshots",
        ("receive", "-F", "{root}/b"),
        1,
        "cannot receive new filesystem stream: destination has snapshots (eg. {root}/b@x)\n"
        "must destroy them to overwrite it\n",
        stdin_from=("send", "{root}/a@s1"),
        setup=(("snapshot", "{root}/b@x"),),
    ),
    CliCase(
        "send -i from the snapshot itself",
        ("send", "-i", "@s1", "{root}/a@s1"),
        1,
        "warning: cannot send '{root}/a@s1': not an earlier snapshot from the same fs\n",
    ),
    CliCase(
        "send -i from a later snapshot",
        ("send", "-i", "@s2", "{root}/a@s1"),
        1,
        "warning: cannot send '{root}/a@s1': not an earlier snapshot from the same fs\n",
    ),
    CliCase(
        "create under a missing parent",
        ("create", "{root}/nope/x"),
        1,
        "cannot create '{root}/nope/x': parent does not exist\n",
    ),
    CliCase(
        "snapshot of a missing dataset",
        ("snapshot", "{root}/nope@s"),
        2,
        "cannot open '{root}/nope': dataset does not exist\nusage:\n"
        "\tsnapshot [-r] [-o property=value] ... <filesystem|volume>@<snap> ...\n" + USAGE_TRAILER,
    ),
    CliCase(
        "invalid character in a name",
        ("create", "{root}/bad name!"),
        1,
        "cannot create '{root}/bad name!': invalid character '!' in name\n",
    ),
    CliCase(
        "clone of a missing snapshot",
        ("clone", "{root}/a@nope", "{root}/c"),
        1,
        "cannot open '{root}/a@nope': dataset does not exist\n",
    ),
    CliCase(
        "garbage on receive",
        ("receive", "{root}/g"),
        1,
        "cannot receive: invalid stream (bad magic number)\n",
        stdin=bytes(range(256)) * 4,
    ),
    CliCase(
        "a stream shorter than its first record",
        ("receive", "{root}/g"),
        1,
        "cannot receive: failed to read from stream\n",
        stdin=b"hello\n",
    ),
    CliCase(
        "an existing bookmark",
        ("bookmark", "{root}/a@s1", "{root}/a#m1"),
        1,
        "cannot create bookmark '{root}/a#m1': bookmark exists\n",
    ),
    CliCase(
        "a bookmark of a missing snapshot",
        ("bookmark", "{root}/a@nope", "{root}/a#n"),
        2,
        "cannot open '{root}/a@nope': dataset does not exist\nusage:\n"
        "\tbookmark <snapshot|bookmark> <newbookmark>\n" + USAGE_TRAILER,
    ),
    CliCase(
        "release on a missing snapshot",
        ("release", "keep", "{root}/a@nope"),
        1,
        "cannot release hold from snapshot '{root}/a@nope': dataset does not exist\n",
    ),
    CliCase(
        "release of a tag not held",
        ("release", "other", "{root}/a@s1"),
        1,
        "cannot release hold from snapshot '{root}/a@s1': no such tag on this dataset\n",
    ),
    CliCase(
        "hold with a tag already held",
        ("hold", "keep", "{root}/a@s1"),
        1,
        "cannot hold snapshot '{root}/a@s1': tag already exists on this dataset\n",
    ),
    CliCase(
        "an invalid property",
        ("set", "bogus=1", "{root}/a"),
        255,  # zfs set's callback returns -1 (seen on OpenZFS 2.3.2 in the lab)
        "cannot set property for '{root}/a': invalid property 'bogus'\n",
    ),
    CliCase(
        "a volume size too large",
        ("create", "-V", "99999999999999999999999", "{root}/vol"),
        1,
        "bad volume size '99999999999999999999999': numeric value is too large\n",
    ),
    CliCase(
        "mount of a mounted filesystem",
        ("mount", "{root}/a"),
        1,
        "cannot mount '{root}/a': filesystem already mounted\n",
    ),
    CliCase(
        "unmount of an unmounted filesystem",
        ("unmount", "{root}/b"),
        1,
        "cannot unmount '{root}/b': not currently mounted\n",
        setup=(("unmount", "{root}/b"),),
    ),
)


def _fill(parts: Sequence[str], root: str) -> list[str]:
    return [p.replace("{root}", root) for p in parts]


def check(case: CliCase, run: Run, root: str) -> None:
    """Set up below ``root`` (an existing, empty dataset), run the case, assert the answer."""
    for argv in (*SETUP, *case.setup):
        code, _, err = run(["zfs", *_fill(argv, root)], b"")
        assert code == 0, f"setup {argv}: {err}"
    stdin = case.stdin
    if case.stdin_from:
        code, stdin, err = run(["zfs", *_fill(case.stdin_from, root)], b"")
        assert code == 0, f"stdin from {case.stdin_from}: {err}"

    def listed() -> bytes:
        return run(["zfs", "list", "-H", "-o", "name", "-t", "all", "-r", root], b"")[1]

    before = listed()
    code, _, err = run(["zfs", *_fill(case.argv, root)], stdin)
    assert (code, err) == (case.code, case.stderr.replace("{root}", root))
    assert listed() == before
