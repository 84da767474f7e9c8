"""Replay corpus scenarios on the simulation's `zfs` front end and compare with the recording.

Each scenario runs on a fresh simulated pool ``tank`` (scratch root ``tank/cz``), in process:
a pipeline's stages run one after the other, each reading the bytes the one before wrote, which
is what a shell pipe carries; the one thing a pipe adds, a sender killed by a reader that went
away, is reproduced from how much of the stream the reader consumed (a kernel pipe holds 64 KiB,
so a sender with more left than that would still be writing when the reader exits). The
simulation's mountpoints are shown below ``/tank`` as on the recording host.

    python -m tests.conformance.corpus_sim [-v]

prints the agreement figure (scenarios identical / total, lines equal / total) and the
mismatches not explained in tests/fixtures/zfs-corpus/known-differences.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from protocol.log import configure_logging
from tests.conformance.corpus import (
    CORPUS_FILE,
    DATA_DIR,
    GET_PROPS,
    LIST_COLUMNS,
    POOL,
    ROOT,
    Agreement,
    Known,
    Normalizer,
    Pipeline,
    Recording,
    Scenario,
    Step,
    compare,
    data_files,
    files_by_dataset,
    load,
    load_known,
    observes_props,
    observes_state,
    parse_step,
    state_lines,
    step_lines,
)
from workers.zfs.front import Front
from workers.zfs.sim import SimBackend

PIPE_CAPACITY: Final = 65536
# a zfs send whose reader went away dies of SIGPIPE, silently (recorded: exit 141 from bash)
BROKEN_PIPE_EXIT: Final = 128 + 13


class SimHost:
    """One scenario's simulated host: the pool, the data files, a way to run a step."""

    def __init__(self, workdir: Path) -> None:
        self.backend = SimBackend(workdir / "pools")
        self.backend.create_pool(POOL)
        self.data = workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        for name, blob in data_files().items():
            (self.data / name).write_bytes(blob)
        mount = self.backend.mountpoint(POOL)
        assert mount is not None
        self.mount = mount.rstrip("/")

    def shown(self, text: str) -> str:
        return text.replace(self.mount, "/" + POOL)

    def arg(self, value: str) -> str:
        value = value.replace(DATA_DIR, str(self.data))
        if value.startswith("$(") and value.endswith(")"):
            _, out, _, _ = self.zfs(shlex.split(value[2:-1]), b"")
            return out.decode(errors="replace").rstrip("\n")
        return value

    def zfs(self, argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, str, int]:
        """Run one `zfs`/`zpool` command line: exit code, stdout, stderr, stdin bytes read."""
        source = io.BytesIO(stdin)
        out, err = io.BytesIO(), io.StringIO()
        front = Front(self.backend, stdin=source, stdout=out, stderr=err)
        code = front.run(argv[0], list(argv[1:]))
        return code, out.getvalue(), self.shown(err.getvalue()), source.tell()

    def write(self, args: Sequence[str]) -> tuple[int, str]:
        dataset, path, blob = args
        code, out, _, _ = self.zfs(["zfs", "get", "-H", "-o", "value", "mounted", dataset], b"")
        if code != 0 or out.strip() != b"yes":
            return 1, f"write: {dataset} is not mounted\n"
        mount = self.backend.mountpoint(dataset)
        assert mount is not None
        target = Path(mount) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((self.data / blob).read_bytes())
        return 0, ""

    def run(self, pipe: Pipeline) -> tuple[list[int], str, str]:
        """A step's recorded exit codes, its stdout and its recorded stderr."""
        codes: list[int] = []
        errors: list[str] = []
        data = b""
        for i, raw in enumerate(pipe.stages):
            argv = [self.arg(a) for a in raw]
            err = ""
            if argv[0] == "write":
                code, err = self.write(argv[1:])
                data = b""
            elif argv[0] == "head":
                count = int(argv[2])
                data = (Path(argv[3]).read_bytes() if len(argv) > 3 else data)[:count]
                code = 0
            else:
                code, out, err, read = self.zfs(argv, data)
                if i > 0 and len(data) - read > PIPE_CAPACITY and i - 1 in pipe.recorded:
                    # the sender had more than a pipe holds left when this reader exited
                    codes[-1], errors[-1] = BROKEN_PIPE_EXIT, ""
                data = out
            if i in pipe.recorded:
                codes.append(code)
                errors.append(err)
        stdout = "" if pipe.discard else self.shown(data.decode(errors="replace"))
        return codes, stdout, "".join(errors)

    def state(self, norm: Normalizer, props: bool) -> list[str]:
        listed = self.zfs(["zfs", "list", "-H", "-t", "all", "-r", "-o", LIST_COLUMNS, ROOT], b"")
        listing = self.shown(listed[1].decode(errors="replace") + listed[2])
        got = ""
        if props:
            argv = ["zfs", "get", "-H", "-r", "-t", "filesystem,volume"]
            argv += ["-o", "name,property,value,source", GET_PROPS, ROOT]
            shown = self.zfs(argv, b"")
            got = self.shown(shown[1].decode(errors="replace") + shown[2])
        return state_lines(listing, got, files_by_dataset(listing, self.sums()), norm)

    def sums(self) -> str:
        """``sha256sum`` lines for the files each mounted filesystem shows (paths as shown)."""
        argv = ["zfs", "list", "-H", "-o", "name,mounted", "-t", "filesystem", "-r", ROOT]
        out = self.zfs(argv, b"")[1].decode()
        mounted = [row.split("\t")[0] for row in out.splitlines() if row.endswith("\tyes")]
        mounts = [m for n in mounted if (m := self.backend.mountpoint(n)) is not None]
        others = {os.path.realpath(m) for m in mounts}
        lines = []
        for top in mounts:
            for here, dirs, files in os.walk(top):
                dirs[:] = [
                    d
                    for d in dirs
                    if d != ".zfs" and os.path.realpath(os.path.join(here, d)) not in others
                ]
                for file in files:
                    full = os.path.join(here, file)
                    digest = hashlib.sha256(Path(full).read_bytes()).hexdigest()
                    lines.append(f"{digest}  {self.shown(full)}")
        return "\n".join(lines)


def replay(scenario: Scenario, workdir: Path) -> Recording:
    """Run ``scenario`` on a fresh simulated host in ``workdir``; its recording."""
    host = SimHost(workdir)
    code, _, err, _ = host.zfs(["zfs", "create", ROOT], b"")
    if code != 0:
        raise RuntimeError(f"cannot create {ROOT}: {err}")
    norm = Normalizer()
    steps, previous = [], None
    for command in scenario.steps:
        pipe = parse_step(command)
        codes, stdout, stderr = host.run(pipe)
        state = host.state(norm, observes_props(pipe)) if observes_state(pipe) else None
        lines, previous = step_lines(codes, stdout, stderr, state, previous)
        steps.append(Step(command, tuple(lines)))
    return Recording(scenario, tuple(steps))


def explained(
    known: Sequence[Known], title: str, command: str, want: str, got: str
) -> Known | None:
    """The known difference that covers a mismatched line: its pattern finds the recorded or
    the replayed line, or (a pattern starting ``\\$ ``) the step's command line."""
    number = title.split(" ", maxsplit=1)[0]
    for k in known:
        if k.scenario not in ("*", number):
            continue
        if k.pattern.pattern.startswith("\\$ "):
            if k.pattern.search(f"$ {command}") and (want.startswith("! ") or got == "<missing>"):
                return k
        elif k.pattern.search(want) or k.pattern.search(got):
            return k
    return None


def replay_all(
    recordings: Sequence[Recording], known: Sequence[Known]
) -> tuple[Agreement, list[tuple[str, str, str, str]]]:
    """The agreement over ``recordings`` and the mismatches no known difference explains."""
    agreement = Agreement()
    with tempfile.TemporaryDirectory(prefix="zfleet-corpus-") as tmp:
        for recorded in recordings:
            workdir = Path(tmp) / recorded.scenario.title.replace(" ", "-")
            compare(recorded, replay(recorded.scenario, workdir), agreement)
    unexplained = [m for m in agreement.mismatches if explained(known, *m) is None]
    return agreement, unexplained


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show every mismatch")
    parser.add_argument("--only", help="scenario numbers, comma-separated")
    parser.add_argument("--corpus", type=Path, default=CORPUS_FILE, help="the recording")
    args = parser.parse_args(argv)
    configure_logging(level="WARNING", stream=sys.stderr)
    recordings = load(args.corpus)
    if args.only:
        wanted = {int(x) for x in args.only.split(",")}
        recordings = [r for r in recordings if r.scenario.number in wanted]
    agreement, unexplained = replay_all(recordings, load_known())
    shown = agreement.mismatches if args.verbose else unexplained
    last = None
    for title, command, want, got in shown:
        if (title, command) != last:
            print(f"--- {title}: $ {command}")
            last = (title, command)
        print(f"  real: {want}\n  sim:  {got}")
    print(agreement.summary())
    print(f"unexplained mismatches: {len(unexplained)}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
