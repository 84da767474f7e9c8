"""A recorded corpus of OpenZFS behaviour: generated scenarios, their text format, comparison.

A scenario is a short sequence of shell-level steps below the scratch root ``tank/cz``: `zfs`
and `zpool` command lines (``zfs send ... | zfs receive ...`` pipes, ``head -c N`` to cut a
stream, ``> /dev/null`` to drop one) and one pseudo-command, ``write DATASET PATH BLOB``, that
copies one of a few fixed data blobs into a mounted filesystem. ``generate(seed, count)`` makes
them deterministically, each on a theme (receives onto existing and modified targets, resume,
raw and compressed sends, holds, bookmarks, promote, rename, destroy, properties, mounts, common
mistakes) plus random steps, error paths included.

After every step a recording holds the exit codes, stdout and stderr, then the state below the
root: ``L`` rows from `zfs list -t all` (guids renumbered in order of appearance, resume tokens
replaced), ``P`` rows from `zfs get` (value and source of the properties the scenarios touch)
and ``F`` rows (each file of each mounted filesystem and its sha256). "state unchanged" stands
for a state equal to the one before.

tests/conformance/corpus_record.py records scenarios on real OpenZFS (a lab VM);
tests/conformance/corpus_sim.py replays them on the simulation's front end. The committed
recording is tests/fixtures/zfs-corpus/corpus.txt.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.conftest import FIXTURES

ROOT: Final = "tank/cz"
POOL: Final = "tank"
CORPUS_DIR: Final = FIXTURES / "zfs-corpus"
CORPUS_FILE: Final = CORPUS_DIR / "corpus.txt"
KNOWN_FILE: Final = CORPUS_DIR / "known-differences.txt"
DATA_DIR: Final = "/var/tmp/czdata"  # where the blobs and the key live on the recording host
KEY: Final = "correct horse battery staple"
USER_PROP: Final = "cz:tag"
LIST_COLUMNS: Final = (
    "name,type,origin,guid,mounted,mountpoint,userrefs,receive_resume_token,compression,"
    + USER_PROP
)
GET_PROPS: Final = f"compression,{USER_PROP},canmount,mountpoint,recordsize"
CUT: Final = 100_000  # bytes of a stream kept by `head -c` (the big blobs make larger streams)


def _blob(name: str, size: int, text: bool) -> bytes:
    rng = random.Random(f"corpus-blob-{name}")
    if text:
        line = b"the quick brown fox jumps over the lazy dog %d\n"
        out = b"".join(line % i for i in range(size // 40 + 1))
        return out[:size]
    return rng.randbytes(size)


BLOBS: Final[dict[str, bytes]] = {
    "empty": b"",
    "small": _blob("small", 100, True),
    "mid": _blob("mid", 5000, False),
    "big": _blob("big", 70_000, False),
    "huge": _blob("huge", 400_000, False),
    "text": _blob("text", 300_000, True),
}


def data_files() -> dict[str, bytes]:
    """The files a recording or replay host needs in ``DATA_DIR``: the blobs and the key."""
    return {**BLOBS, "key": KEY.encode()}


@dataclass(frozen=True)
class Scenario:
    number: int
    theme: str
    steps: tuple[str, ...]

    @property
    def title(self) -> str:
        return f"{self.number:04d} {self.theme}"


# -- generation ----------------------------------------------------------------------------------


@dataclass
class _Model:
    """A rough picture of what the steps so far made, to choose plausible arguments."""

    rng: random.Random
    fs: list[str] = field(default_factory=list)  # full names below ROOT
    snaps: dict[str, list[str]] = field(default_factory=dict)
    marks: dict[str, list[str]] = field(default_factory=dict)
    held: list[tuple[str, str]] = field(default_factory=list)
    counter: int = 0
    steps: list[str] = field(default_factory=list)

    def new_name(self, stem: str, parent: str = ROOT) -> str:
        self.counter += 1
        return f"{parent}/{stem}{self.counter}"

    def add(self, step: str) -> None:
        self.steps.append(step)

    def pick(self, items: Sequence[str]) -> str:
        return self.rng.choice(list(items))

    def any_fs(self) -> str:
        return self.pick(self.fs) if self.fs else ROOT

    def create(self, name: str | None = None, opts: str = "") -> str:
        name = name or self.new_name(self.pick("abcdef"))
        self.add(f"zfs create {opts + ' ' if opts else ''}{name}")
        self.fs.append(name)
        self.snaps[name] = []
        self.marks[name] = []
        return name

    def write(self, fs: str, blob: str | None = None) -> None:
        path = self.pick(("a.txt", "b.bin", "sub/c.txt", "d"))
        self.add(f"write {fs} {path} {blob or self.pick(tuple(BLOBS))}")

    def snapshot(self, fs: str, recursive: bool = False) -> str:
        self.counter += 1
        snap = f"s{self.counter}"
        self.add(f"zfs snapshot {'-r ' if recursive else ''}{fs}@{snap}")
        for name in self.fs:
            if name == fs or (recursive and name.startswith(fs + "/")):
                self.snaps.setdefault(name, []).append(snap)
        return snap

    def filled(self, blob: str | None = None, snaps: int = 1) -> str:
        """A new filesystem with a file and ``snaps`` snapshots (another file before each)."""
        fs = self.create()
        for _ in range(snaps):
            self.write(fs, blob)
            self.snapshot(fs)
        return fs

    def snap_of(self, fs: str) -> str | None:
        return f"{fs}@{self.pick(self.snaps[fs])}" if self.snaps.get(fs) else None


def _send_flags(m: _Model) -> str:
    flags = m.rng.choice(("", "", "-c ", "-p ", "-L -e ", "-c -p ", "-w "))
    return flags


def theme_recv_existing(m: _Model) -> None:
    src = m.filled(snaps=2)
    s1, s2 = m.snaps[src]
    dst = m.create() if m.rng.random() < 0.7 else m.new_name("n")
    if m.rng.random() < 0.5:
        m.write(dst)
    if m.rng.random() < 0.4 and dst in m.fs:
        m.snapshot(dst)
    force = m.rng.choice(("", "-F ", "-F "))
    m.add(f"zfs send {_send_flags(m)}{src}@{s1} | zfs receive {force}{dst}")
    m.add(f"zfs send -i @{s1} {src}@{s2} | zfs receive {m.rng.choice(('', '-F '))}{dst}")
    m.add(f"zfs send {src}@{s2} | zfs receive -F {dst}")
    m.add(f"zfs send -I @{s1} {src}@{s2} | zfs receive {dst}")


def theme_recv_modified(m: _Model) -> None:
    src = m.filled(snaps=1)
    (s1,) = m.snaps[src]
    dst = m.new_name("r")
    m.add(f"zfs send {src}@{s1} | zfs receive {dst}")
    m.fs.append(dst)
    m.snaps[dst] = [s1]
    m.write(src)
    s2 = m.snapshot(src)
    how = m.rng.choice(("write", "snapshot", "set", "none"))
    if how == "write":
        m.write(dst)
    elif how == "snapshot":
        m.snapshot(dst)
    elif how == "set":
        m.add(f"zfs set {USER_PROP}=changed {dst}")
    m.add(f"zfs send -i @{s1} {src}@{s2} | zfs receive {dst}")
    m.add(f"zfs send -i @{s1} {src}@{s2} | zfs receive -F {dst}")
    if m.rng.random() < 0.5:
        m.add(f"zfs rollback {dst}@{s1}")
        m.add(f"zfs send -i {src}@{s1} {src}@{s2} | zfs receive {dst}")


def theme_resume(m: _Model) -> None:
    src = m.filled(blob="huge", snaps=1)
    (s1,) = m.snaps[src]
    dst = m.new_name("r")
    m.add(f"zfs send {src}@{s1} | head -c {CUT} | zfs receive -s {dst}")
    token = f'"$(zfs get -H -o value receive_resume_token {dst})"'
    choice = m.rng.random()
    if choice < 0.5:
        m.add(f"zfs send -t {token} | zfs receive -s {dst}")
    elif choice < 0.7:
        m.add(f"zfs send -t {token} | head -c {CUT} | zfs receive -s {dst}")
        m.add(f"zfs send -t {token} | zfs receive -s {dst}")
    else:
        m.add(f"zfs receive -A {dst}")
        m.add(f"zfs receive -A {dst}")
    if m.rng.random() < 0.5:
        m.add(f"zfs send {src}@{s1} | head -c {CUT} | zfs receive {m.new_name('t')}")
    if m.rng.random() < 0.4:
        m.add(f"zfs send {src}@{s1} | zfs receive -s {dst}")


def theme_raw(m: _Model) -> None:
    enc = m.create(
        opts=f"-o encryption=on -o keyformat=passphrase -o keylocation=file://{DATA_DIR}/key"
    )
    m.write(enc)
    s1 = m.snapshot(enc)
    dst = m.new_name("w")
    m.add(f"zfs send -w {enc}@{s1} | zfs receive {m.rng.choice(('', '-u '))}{dst}")
    m.add(f"zfs send {enc}@{s1} | zfs receive {m.new_name('p')}")
    m.write(enc)
    s2 = m.snapshot(enc)
    m.add(f"zfs send -w -i @{s1} {enc}@{s2} | zfs receive {dst}")
    if m.rng.random() < 0.5:
        m.add(f"zfs send -i @{s1} {enc}@{s2} | zfs receive {dst}")
    plain = m.filled(snaps=1)
    m.add(f"zfs send -w {plain}@{m.snaps[plain][0]} | zfs receive {m.new_name('q')}")


def theme_compressed(m: _Model) -> None:
    src = m.create(opts=m.rng.choice(("", "-o compression=lz4", "-o compression=off")))
    m.write(src, "text")
    s1 = m.snapshot(src)
    flags = m.rng.choice(("-c", "-c -L", "-L -e", "-c -e -L", "-p -c"))
    dst = m.new_name("c")
    m.add(f"zfs send {flags} {src}@{s1} | zfs receive {dst}")
    m.write(src, "huge")
    s2 = m.snapshot(src)
    m.add(f"zfs send {flags} -i @{s1} {src}@{s2} | zfs receive {dst}")
    m.add(f"zfs send -c -i @{s2} {src}@{s1} > /dev/null")


def theme_holds(m: _Model) -> None:
    src = m.filled(snaps=2)
    s1, s2 = m.snaps[src]
    tag = m.pick(("keep", "backup"))
    m.add(f"zfs hold {tag} {src}@{s1}")
    m.add(f"zfs holds -H {src}@{s1}")
    m.add(f"zfs destroy {src}@{s1}")
    m.add(f"zfs hold {tag} {src}@{s1}")
    m.add(f"zfs hold -r other {src}@{s2}")
    if m.rng.random() < 0.5:
        m.add(f"zfs destroy -d {src}@{s1}")
    m.add(f"zfs release {tag} {src}@{s1}")
    m.add(f"zfs release {tag} {src}@{s1}")
    m.add(f"zfs destroy -r {src}")
    m.add(f"zfs release other {src}@{s2}")
    m.add(f"zfs holds {src}@{s2}")


def theme_bookmarks(m: _Model) -> None:
    src = m.filled(snaps=1)
    (s1,) = m.snaps[src]
    m.add(f"zfs bookmark {src}@{s1} {src}#m1")
    m.add(f"zfs bookmark {src}@{s1} {src}#m1")
    m.add(f"zfs bookmark {src}#m1 {src}#m2")
    dst = m.new_name("b")
    m.add(f"zfs send {src}@{s1} | zfs receive {dst}")
    m.add(f"zfs destroy {src}@{s1}")
    m.write(src)
    s2 = m.snapshot(src)
    m.add(f"zfs send -i {src}#m1 {src}@{s2} | zfs receive {dst}")
    if m.rng.random() < 0.5:
        m.add(f"zfs send -I {src}#m1 {src}@{s2} > /dev/null")
    m.add(f"zfs destroy {src}#m2")
    m.add(f"zfs destroy {src}#m9")
    m.add(f"zfs bookmark {src}@{s2} {m.new_name('x')}#m3")


def theme_promote(m: _Model) -> None:
    base = m.filled(snaps=2)
    s1, s2 = m.snaps[base]
    clone = m.new_name("k")
    m.add(f"zfs clone {base}@{m.rng.choice((s1, s2))} {clone}")
    m.write(clone)
    m.snapshot(clone)
    m.add(f"zfs destroy {base}")
    m.add(f"zfs promote {clone}")
    m.add(f"zfs promote {clone}")
    m.add(f"zfs promote {base}")
    if m.rng.random() < 0.5:
        m.add(f"zfs destroy {base}")
        m.add(f"zfs destroy -R {base}")
    else:
        m.add(f"zfs promote {base}")


def theme_rename(m: _Model) -> None:
    parent = m.create()
    child = m.create(f"{parent}/kid")
    m.write(child)
    snap = m.snapshot(parent, recursive=True)
    m.add(f"zfs rename -r {parent}@{snap} @later")
    m.add(f"zfs rename {parent}@later {parent}@again")
    m.add(f"zfs rename {parent} {m.new_name('moved')}")
    m.add(f"zfs rename {child} {m.new_name('gone')}")
    other = m.create()
    m.add(f"zfs rename {other} {parent}")
    m.add(f"zfs rename -p {other} {m.new_name('deep')}/x/y")
    m.add(f"zfs rename -r {other}@nope @x")


def theme_destroy(m: _Model) -> None:
    parent = m.create()
    child = m.create(f"{parent}/kid")
    m.write(child)
    snap = m.snapshot(parent, recursive=True)
    s2 = m.snapshot(parent, recursive=True)
    clone = m.new_name("k")
    if m.rng.random() < 0.6:
        m.add(f"zfs clone {child}@{snap} {clone}")
    m.add(f"zfs destroy {parent}")
    m.add(f"zfs destroy {parent}@{snap}%{s2}")
    m.add(f"zfs destroy -r {parent}@{snap}")
    m.add(f"zfs destroy -d {parent}@{s2}")
    m.add(f"zfs destroy -r {parent}")
    m.add(f"zfs destroy -R {parent}")
    m.add(f"zfs destroy {parent}")


def theme_props(m: _Model) -> None:
    parent = m.create(opts=m.rng.choice(("", "-o compression=off", f"-o {USER_PROP}=top")))
    child = m.create(f"{parent}/kid")
    m.add(f"zfs set {USER_PROP}=one {parent}")
    m.add(f"zfs set compression={m.pick(('gzip', 'zstd', 'lz4', 'off'))} {parent}")
    m.add(f"zfs set recordsize=32K {child}")
    m.add(f"zfs get -H -o name,property,value,source compression,{USER_PROP} {child}")
    m.add(f"zfs inherit {m.pick(('', '-r '))}compression {parent}")
    m.add(f"zfs inherit {USER_PROP} {child}")
    m.add(f"zfs inherit -r {USER_PROP} {parent}")
    m.add(f"zfs set compression=bogus {child}")
    m.add(f"zfs set recordsize=3 {child}")
    m.add(f"zfs inherit nosuchprop {child}")
    m.write(child)
    s1 = m.snapshot(parent, recursive=True)
    dst = m.new_name("p")
    m.add(f"zfs send -p {child}@{s1} | zfs receive {dst}")
    m.add(f"zfs send -R {parent}@{s1} | zfs receive {m.new_name('rr')}")
    m.add(f"zfs inherit compression {dst}")
    m.add(f"zfs inherit -S compression {dst}")


def theme_mount(m: _Model) -> None:
    fs = m.filled(snaps=1)
    kid = m.create(f"{fs}/kid")
    m.write(kid)
    m.add(f"zfs unmount {fs}")
    m.add(f"zfs unmount {kid}")
    m.add(f"zfs unmount {kid}")
    m.add(f"zfs mount {fs}")
    m.add(f"zfs mount {fs}")
    m.add(f"zfs set canmount={m.pick(('noauto', 'off'))} {kid}")
    m.add(f"zfs mount {kid}")
    m.add(f"zfs set mountpoint=none {fs}")
    m.add(f"zfs mount {fs}")
    m.add(f"zfs inherit mountpoint {fs}")
    m.add(f"zfs mount {fs}")
    m.add(f"zfs umount {m.new_name('nope')}")


def theme_errors(m: _Model) -> None:
    fs = m.filled(snaps=2)
    s1, s2 = m.snaps[fs]
    mistakes = [
        f"zfs create {ROOT}/nope/x",
        f"zfs create {fs}",
        f"zfs create '{ROOT}/bad name!'",
        f"zfs snapshot {ROOT}/nope@s",
        f"zfs snapshot {fs}@{s1}",
        f"zfs clone {fs}@nope {ROOT}/c",
        f"zfs send -i @{s2} {fs}@{s1} > /dev/null",
        f"zfs send -i @{s1} {fs}@{s1} > /dev/null",
        f"zfs send {fs}@nope > /dev/null",
        f"head -c 1000 {DATA_DIR}/mid | zfs receive {ROOT}/g",
        f"head -c 6 {DATA_DIR}/small | zfs receive {ROOT}/g",
        f"zfs rollback {fs}@{s1}",
        f"zfs rollback {fs}@nope",
        f"zfs destroy {ROOT}/nope",
        f"zfs destroy {fs}@nope",
        f"zfs rename {fs} {ROOT}/nope/x",
        f"zfs rename {fs}@{s1} {fs}@{s2}",
        f"zfs promote {fs}",
        f"zfs hold t {fs}@nope",
        f"zfs release t {fs}@{s1}",
        f"zfs set {USER_PROP} {fs}",
        f"zfs get -H -o value nosuch {fs}",
        f"zfs receive {fs}@x < /dev/null",
        f"zfs send {fs}@{s1} | zfs receive {ROOT}/nope/x",
        f"zfs send {fs}@{s1} | zfs receive {fs}",
        f"zfs send {fs}@{s1} | zfs receive -d {ROOT}/d",
        f"zfs list -H -o name {ROOT}/nope",
        f"zfs create -V 1M {ROOT}/vol",
        f"zfs list -H -o name,type,volsize -r {ROOT}",
        f"zfs destroy -f {fs}",
        "zpool list -H -o name nosuchpool",
        f"zfs bookmark {fs}@{s2} {fs}#bad#name",
    ]
    for step in m.rng.sample(mistakes, k=8):
        m.add(step)


THEMES: Final = {
    "recv-existing": theme_recv_existing,
    "recv-modified": theme_recv_modified,
    "resume": theme_resume,
    "raw": theme_raw,
    "compressed": theme_compressed,
    "holds": theme_holds,
    "bookmarks": theme_bookmarks,
    "promote": theme_promote,
    "rename": theme_rename,
    "destroy": theme_destroy,
    "props": theme_props,
    "mount": theme_mount,
    "errors": theme_errors,
}


def _random_step(m: _Model) -> None:
    fs = m.any_fs()
    roll = m.rng.random()
    snap = m.snap_of(fs) if fs in m.snaps else None
    if roll < 0.2:
        m.create()
    elif roll < 0.4 and fs != ROOT:
        m.write(fs)
    elif roll < 0.55:
        m.snapshot(fs, recursive=m.rng.random() < 0.3)
    elif roll < 0.65 and snap:
        m.add(f"zfs clone {snap} {m.new_name('k')}")
    elif roll < 0.75 and snap:
        m.add(f"zfs send {snap} | zfs receive {m.pick(('', '-F '))}{m.new_name('x')}")
    elif roll < 0.85 and snap:
        m.add(f"zfs rollback {m.pick(('', '-r '))}{snap}")
    elif roll < 0.9:
        m.add(f"zfs set {USER_PROP}={m.pick(('x', 'y'))} {fs}")
    elif snap:
        m.add(f"zfs destroy {snap}")


def generate(seed: int, count: int) -> list[Scenario]:
    """``count`` scenarios, the same for the same seed; themes in turn, then random steps."""
    scenarios = []
    names = list(THEMES)
    for number in range(1, count + 1):
        rng = random.Random(f"{seed}-{number}")
        theme = names[(number - 1) % len(names)]
        model = _Model(rng)
        for _ in range(rng.randint(0, 1)):
            _random_step(model)
        THEMES[theme](model)
        for _ in range(rng.randint(0, 2)):
            _random_step(model)
        scenarios.append(Scenario(number, theme, tuple(model.steps)))
    return scenarios


# -- recordings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    command: str
    lines: tuple[str, ...]  # exit line, stdout/stderr lines, state lines


@dataclass(frozen=True)
class Recording:
    scenario: Scenario
    steps: tuple[Step, ...]

    def text(self) -> str:
        out = [f"=== {self.scenario.title}"]
        for step in self.steps:
            out.append(f"$ {step.command}")
            out.extend(step.lines)
        return "\n".join(out) + "\n"


_DEFAULT: Final = re.compile(r"\t(default|-)$")
_GUID: Final = re.compile(r"^\d{6,20}$")
_TOKEN: Final = re.compile(r"\b1-[0-9a-f]+-[0-9a-f]+-[0-9a-f]{16,}\b")
_TIME: Final = re.compile(r"\b[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d?:\d\d \d{4}\b")


class Normalizer:
    """Per scenario: guids renumbered G1, G2... in order of appearance; tokens and times masked."""

    def __init__(self) -> None:
        self.guids: dict[str, str] = {}

    def text(self, line: str) -> str:
        return _TIME.sub("<time>", _TOKEN.sub("<token>", line))

    def list_row(self, row: str) -> str:
        cells = row.split("\t")
        if len(cells) > 7:
            if _GUID.match(cells[3]):
                cells[3] = self.guids.setdefault(cells[3], f"G{len(self.guids) + 1}")
            if cells[7] not in ("-", ""):
                cells[7] = "<token>"
        return "\t".join(cells)


def state_lines(listed: str, props: str, files: Sequence[str], norm: Normalizer) -> list[str]:
    """The ``L``/``P``/``F`` rows of one observation (``P`` only for sources not default)."""
    rows = [f"L {norm.list_row(r)}" for r in listed.splitlines() if r]
    # a property's source only where it is not the default: a wrong one shows on either side
    rows += [f"P {norm.text(r)}" for r in props.splitlines() if r and not _DEFAULT.search(r)]
    rows += [f"F {r}" for r in files]
    return rows


def files_by_dataset(listed: str, sums: str) -> list[str]:
    """``sha256sum`` lines (absolute paths) as ``dataset, path, digest`` rows: each file goes
    to the mounted filesystem with the deepest mountpoint above it, as `zfs list` showed."""
    mounts = []
    for row in listed.splitlines():
        cells = row.split("\t")
        if len(cells) > 5 and cells[1] == "filesystem" and cells[4] == "yes":
            mounts.append((cells[0], cells[5].rstrip("/") + "/"))
    mounts.sort(key=lambda m: -len(m[1]))
    found = []
    for line in sums.splitlines():
        digest, _, path = line.partition("  ")
        for name, mount in mounts:
            if path.startswith(mount):
                found.append((name, path[len(mount) :], digest[:16]))
                break
    order = {name: i for i, (name, _) in enumerate(sorted(mounts))}
    found.sort(key=lambda f: (order[f[0]], f[1].encode()))
    return [f"{n}\t{p}\t{d}" for n, p, d in found]


_READ_ONLY: Final = frozenset({"list", "get", "holds"})
_PROP_CHANGES: Final = frozenset(
    {"set", "inherit", "receive", "recv", "create", "clone", "promote", "rename"}
)


def _verbs(pipe: Pipeline) -> set[str]:
    return {s[1] for s in pipe.stages if s[0] in ("zfs", "zpool") and len(s) > 1}


def observes_state(pipe: Pipeline) -> bool:
    """Whether a step's state is recorded: not after commands that only read."""
    verbs = _verbs(pipe)
    return pipe.stages[0][0] == "write" or not verbs <= _READ_ONLY or not verbs


def observes_props(pipe: Pipeline) -> bool:
    """Whether a step's property sources are recorded: after commands that can change them."""
    return bool(_verbs(pipe) & _PROP_CHANGES)


def step_lines(
    codes: Sequence[int],
    stdout: str,
    stderr: str,
    state: list[str] | None,
    previous: list[str] | None,
) -> tuple[list[str], list[str] | None]:
    """The lines of one step; also the state, to say "unchanged" next time."""
    norm = Normalizer()
    lines = ["exit " + " ".join(str(c) for c in codes)]
    lines += [f"> {norm.text(x)}" for x in stdout.splitlines()]
    lines += [f"! {norm.text(x)}" for x in stderr.splitlines()]
    if state is None:
        return lines, previous
    if not any(x.startswith("P ") for x in state) and previous is not None:
        previous = [x for x in previous if not x.startswith("P ")]
    if previous is not None and state == previous:
        lines.append("state unchanged")
    else:
        lines.append("state")
        lines += [f"  {x}" for x in state]
    return lines, state


def parse(text: str) -> list[Recording]:
    """Recordings back from the corpus format."""
    recordings: list[Recording] = []
    title: str | None = None
    steps: list[Step] = []
    command: str | None = None
    lines: list[str] = []

    def close_step() -> None:
        nonlocal command, lines
        if command is not None:
            steps.append(Step(command, tuple(lines)))
        command, lines = None, []

    def close_scenario() -> None:
        nonlocal steps
        close_step()
        if title is not None:
            number, _, theme = title.partition(" ")
            cmds = tuple(s.command for s in steps)
            recordings.append(Recording(Scenario(int(number), theme, cmds), tuple(steps)))
        steps = []

    for line in text.splitlines():
        if line.startswith("=== "):
            close_scenario()
            title = line[4:]
        elif line.startswith("$ "):
            close_step()
            command = line[2:]
        elif line.startswith("#") and command is None:
            continue
        else:
            lines.append(line)
    close_scenario()
    return recordings


def load(path: Path = CORPUS_FILE) -> list[Recording]:
    return parse(path.read_text())


@dataclass(frozen=True)
class Known:
    """One explained difference: the scenario step (``NNNN:step``, ``*`` for any) and why."""

    scenario: str
    pattern: re.Pattern[str]
    reason: str


def load_known(path: Path = KNOWN_FILE) -> list[Known]:
    """``known-differences.txt``: ``<scenario> | <regex over the recorded line> | <reason>``."""
    known = []
    for raw in path.read_text().splitlines() if path.exists() else []:
        if not raw.strip() or raw.startswith("#"):
            continue
        scenario, pattern, reason = (x.strip() for x in raw.split(" | ", 2))
        known.append(Known(scenario, re.compile(pattern), reason))
    return known


@dataclass
class Agreement:
    scenarios: int = 0
    identical: int = 0
    lines: int = 0
    equal: int = 0
    # title, command, recorded line, replayed line
    mismatches: list[tuple[str, str, str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"scenarios identical {self.identical}/{self.scenarios}, "
            f"lines equal {self.equal}/{self.lines}"
        )


def compare(recorded: Recording, replayed: Recording, agreement: Agreement) -> None:
    """Count equal lines step by step (a step's lines by position); note each mismatch."""
    agreement.scenarios += 1
    same = True
    for want, got in zip(recorded.steps, _padded(replayed.steps, len(recorded.steps)), strict=True):
        wanted = _expand(want.lines)
        gotten = _expand(got.lines)
        for i, line in enumerate(wanted):
            other = gotten[i] if i < len(gotten) else "<missing>"
            agreement.lines += 1
            if line == other:
                agreement.equal += 1
            else:
                same = False
                agreement.mismatches.append((recorded.scenario.title, want.command, line, other))
        if len(gotten) > len(wanted):
            same = False
            extra = gotten[len(wanted)]
            agreement.mismatches.append((recorded.scenario.title, want.command, "<none>", extra))
    agreement.identical += same


def _padded(steps: Sequence[Step], n: int) -> Iterator[Step]:
    yield from steps[:n]
    for _ in range(n - len(steps)):
        yield Step("", ())


def _expand(lines: Sequence[str]) -> list[str]:
    return list(lines)


# -- steps as pipelines --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """One step: its stages' argv, where stdin comes from, whether stdout is dropped."""

    stages: tuple[tuple[str, ...], ...]
    stdin_null: bool = False
    discard: bool = False

    @property
    def recorded(self) -> tuple[int, ...]:
        """Which stages' exit codes and stderr are recorded: not a sender cut by `head`,
        whose broken pipe depends on timing."""
        return tuple(
            i
            for i, stage in enumerate(self.stages)
            if not (i + 1 < len(self.stages) and self.stages[i + 1][0] == "head")
        )


def parse_step(command: str) -> Pipeline:
    """A step's text as a pipeline (``write`` is a one-stage pipeline of its own)."""
    import shlex

    text = command.strip()
    discard = text.endswith("> /dev/null")
    if discard:
        text = text[: -len("> /dev/null")].strip()
    stdin_null = text.endswith("< /dev/null")
    if stdin_null:
        text = text[: -len("< /dev/null")].strip()
    stages = tuple(tuple(shlex.split(part)) for part in text.split(" | "))
    return Pipeline(stages, stdin_null, discard)
