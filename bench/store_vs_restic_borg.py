"""zfleet's object store against restic and borg on the same ZFS send streams.

A realistic dataset (real text and binary files copied from this machine's /usr, about
``--size-mib`` MiB) lives in a simulated ZFS pool (workers/zfs/sim); between ten snapshots a
small share of files is edited, appended to, created or deleted. Each tool then ingests, into
its own fresh repository (all encrypted, default compression):

  fulls: the ten successive full streams (`zfs send pool/fs@sN`)
  chain: the full stream of s0 and the nine incrementals s0->s1->...->s9

  fixtures: the real OpenZFS 2.3.2 streams of tests/fixtures/zfs-streams (small: start-up
            dominates)

Every tool runs as a CLI subprocess reading the stream file (`zfleet cloud put FILE`,
`restic backup --stdin`, `borg create -C zstd,3 ... -`), so start-up and key derivation count
alike; zfleet also stores each scenario's streams in one call (`zfleet cloud put F1 F2 ...`).
Then each tool restores every stream of the fulls scenario to /dev/null (`zfleet cloud restore
SNAP --only-last`, `borg extract --stdout`). Printed: stored bytes, median ingest MB/s per
tool and scenario, restore MB/s, each tool's peak RSS (the largest of its processes, from
wait4), and zfleet's ratios against restic and borg measured in the same run. Also printed:
the in-process StreamIngest rate (a worker's long-lived process, what the data plane's fan-out
sender sees) and in-process restore, against borg's CLI rates; and for reference restic and
borg backing up the files themselves at each snapshot (their natural mode, not stream
storage). Bounded: one pass, temporary directories.

With ``--lab`` the streams come from real OpenZFS instead: one lab VM is booted (under
``$ZFLEET_LAB_STATE``, taken down at the end), a Debian tree (the VM's own /usr, up to
``--size-mib``) is copied into a dataset and changed between snapshots the same way, and its
``zfs send`` streams are compared (the file-level reference is then skipped).

Python processes get compiled bytecode as an installed package has it (this environment may set
PYTHONDONTWRITEBYTECODE; Debian's borg ships compiled): the bench points PYTHONPYCACHEPREFIX at
its work directory, and the fixed-cost runs, first of all, compile it.

    .venv/bin/python bench/store_vs_restic_borg.py [--size-mib 48] [--snapshots 10] [--lab]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.cloud import manifest as mf
from workers.cloud.blobstore import LocalBlobStore
from workers.cloud.ingest import StreamIngest
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.restore import restore_stream
from workers.zfs.base import SendSpec
from workers.zfs.sim import SimBackend

SOURCES = ("/usr/lib/python3.11", "/usr/share/doc", "/usr/bin", "/usr/lib/x86_64-linux-gnu")
PASSWORD = "bench-passphrase"
VENV_BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).resolve().parent.parent / "tests/fixtures/zfs-streams"


def copy_tree(dest: Path, budget: int) -> int:
    """Copy regular files from SOURCES into ``dest`` until ``budget`` bytes; returns bytes."""
    total = 0
    for src in SOURCES:
        for dirpath, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                size = path.stat().st_size
                if size == 0 or size > 8 << 20 or total + size > budget:
                    continue
                target = dest / path.relative_to("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(path, target)
                except OSError:
                    continue
                total += size
            if total >= budget * 0.98:
                return total
    return total


def mutate(root: Path, rng: random.Random, step: int) -> None:
    """Edit about 1 % of the files the way a system changes between snapshots."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in rng.sample(files, max(1, len(files) // 100)):
        data = path.read_bytes()
        action = rng.random()
        if action < 0.4 and len(data) > 8192:  # rewrite a stretch in the middle (a patch)
            at = rng.randrange(0, len(data) - 4096)
            path.write_bytes(data[:at] + rng.randbytes(4096) + data[at + 4096 :])
        elif action < 0.8:  # a log or config line appended
            path.write_bytes(data + f"# change {step} {rng.random()}\n".encode())
        else:
            path.unlink()
    new_dir = root / "var" / f"step{step}"
    new_dir.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        (new_dir / f"new{i}.txt").write_text(
            f"new file {i} at step {step}\n" * rng.randint(10, 400)
        )


def make_streams(
    work: Path, size_mib: int, snapshots: int, on_snapshot: Callable[[int, Path], None]
) -> tuple[list[Path], list[Path]]:
    """The full streams of every snapshot and the incremental chain (full s0 first).

    ``on_snapshot(n, mountpoint)`` runs right after snapshot n is taken (file-level backups).
    """
    backend = SimBackend(work / "pools")
    backend.create_pool("tank")
    backend.create("tank/os")
    mnt = Path(backend.mountpoint("tank/os") or "")
    copied = copy_tree(mnt, size_mib << 20)
    print(f"dataset: {copied / 2**20:.1f} MiB of files from {', '.join(SOURCES)}")
    rng = random.Random(7)
    for n in range(snapshots):
        if n:
            mutate(mnt, rng, n)
        backend.snapshot([f"tank/os@s{n}"])
        on_snapshot(n, mnt)
    streams = work / "streams"
    streams.mkdir()

    def save(spec: SendSpec, name: str) -> Path:
        out = streams / name
        stream = backend.send(spec)
        with open(out, "wb") as f:
            while chunk := stream.read(1 << 20):
                f.write(chunk)
        stream.close()
        return out

    fulls = [save(SendSpec(f"tank/os@s{n}"), f"full-s{n}") for n in range(snapshots)]
    chain = [fulls[0]] + [
        save(SendSpec(f"tank/os@s{n}", from_snap=f"tank/os@s{n - 1}"), f"incr-s{n}")
        for n in range(1, snapshots)
    ]
    shutil.rmtree(work / "pools")
    return fulls, chain


# Run on a lab VM (real OpenZFS): a Debian tree (the VM's own /usr) copied into a dataset up to
# a budget, then between snapshots about 1 % of its files patched, appended to or deleted and a
# few created, as make_streams does on the simulator. $1 dataset, $2 budget KiB, $3 snapshots.
LAB_TREE_SCRIPT = r"""
set -eu
ds=$1; budget=$2; snaps=$3
zfs destroy -r "$ds" 2>/dev/null || true
zfs create -o mountpoint=/bench-tree -o compression=off "$ds"
find /usr/lib/python3 /usr/share/doc /usr/bin /usr/lib/x86_64-linux-gnu /usr/share /usr/lib \
    -xdev -type f -size -8M -printf '%s %p\n' 2>/dev/null \
  | awk -v budget=$((budget * 1024)) '{ total += $1; if (total > budget) exit;
                                         print substr($0, index($0, " ") + 1) }' \
  | tar -cf - --no-recursion -T - 2>/dev/null | tar -xf - -C /bench-tree
RANDOM=7
n=0
while [ "$n" -lt "$snaps" ]; do
  if [ "$n" -gt 0 ]; then
    find /bench-tree -type f -size +0 > /tmp/bench-files
    total=$(wc -l < /tmp/bench-files)
    pick=$((total / 100 + 1))
    shuf -n "$pick" --random-source=<(yes "$n") /tmp/bench-files | while read -r f; do
      case $((RANDOM % 5)) in
        0|1) size=$(stat -c %s "$f")
             [ "$size" -gt 8192 ] && dd if=/dev/urandom of="$f" bs=4096 count=1 \
               seek=$((RANDOM % (size / 4096))) conv=notrunc status=none || echo "# $n" >> "$f" ;;
        2|3) echo "# change $n $RANDOM" >> "$f" ;;
        4) rm -f "$f" ;;
      esac
    done
    mkdir -p "/bench-tree/var/step$n"
    for i in 0 1 2 3 4; do yes "new file $i at step $n" | head -n $((RANDOM % 400 + 10)) \
      > "/bench-tree/var/step$n/new$i.txt"; done
  fi
  zfs snapshot "$ds@s$n"
  n=$((n + 1))
done
du -sk /bench-tree | cut -f1
"""


def make_lab_streams(
    prefix: list[str], dataset: str, work: Path, size_mib: int, snapshots: int
) -> tuple[list[Path], list[Path]]:
    """The full and incremental streams of a changing Debian tree made by real OpenZFS on the
    lab host behind ``prefix`` (its exec prefix) in ``dataset``, saved under ``work``."""
    made = subprocess.run(
        [*prefix, f"bash -s {dataset} {size_mib << 10} {snapshots}"],
        input=LAB_TREE_SCRIPT.encode(),
        capture_output=True,
        timeout=3600,
        check=False,
    )
    if made.returncode:
        raise SystemExit(f"making the tree on the lab VM failed: {made.stderr.decode()[-500:]}")
    print(f"dataset (lab): {int(made.stdout.split()[-1]) / 1024:.1f} MiB of the VM's /usr")
    streams = work / "streams"
    streams.mkdir()

    def save(args: str, name: str) -> Path:
        out = streams / name
        with open(out, "wb") as f:
            subprocess.run([*prefix, f"zfs send {args}"], stdout=f, timeout=3600, check=True)
        return out

    fulls = [save(f"{dataset}@s{n}", f"full-s{n}") for n in range(snapshots)]
    chain = [fulls[0]] + [
        save(f"-i @s{n - 1} {dataset}@s{n}", f"incr-s{n}") for n in range(1, snapshots)
    ]
    return fulls, chain


def lab_streams(work: Path, size_mib: int, snapshots: int) -> tuple[str, list[Path], list[Path]]:
    """make_lab_streams on a lab VM booted for the purpose (own ZFLEET_LAB_STATE), then down."""
    from workers.lab.lab import Lab
    from workers.lab.recipe import find_image

    image = find_image()
    if image is None:
        raise SystemExit("no lab image: build it first (`zfleet lab build`, as root)")
    if not os.environ.get("ZFLEET_LAB_STATE"):
        raise SystemExit("--lab boots its own VM: export ZFLEET_LAB_STATE=/var/lib/zfleet-lab-NAME")
    t0 = time.perf_counter()
    lab = Lab.up(image, 1, Path(os.environ["ZFLEET_LAB_STATE"]) / "store-bench")
    try:
        host = lab.hosts[0]
        print(
            f"lab: {host.name} up in {time.perf_counter() - t0:.0f} s, OpenZFS {host.zfs_version}"
        )
        dataset = f"{host.pool}/bench"
        fulls, chain = make_lab_streams(list(host.exec_prefix), dataset, work, size_mib, snapshots)
    finally:
        lab.down()
    return dataset, fulls, chain


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


TIME = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
PEAK_RSS_KIB: dict[str, int] = {}  # "<tool> <what>" -> the largest peak RSS of its processes
BORG_COMPRESSION = "zstd,3"


def run(
    args: list[str],
    env: dict[str, str],
    stdin: Path | None = None,
    cwd: Path | None = None,
    *,
    rss: str | None = None,
) -> None:
    """Run a command to its end (output discarded); with ``rss``, keep its peak RSS under
    that name. The peak is GNU time's report: a child forked from this (large) process would
    count this process's pages until its exec, time's own children start small."""
    with (
        open(stdin or os.devnull, "rb") as f,
        tempfile.NamedTemporaryFile("r") as peak,
        open(os.devnull, "wb") as out,
    ):
        timed = [TIME, "-f", "%M", "-o", peak.name, *args] if rss and TIME else args
        r = subprocess.run(
            timed, env=env, stdin=f, stdout=out, stderr=subprocess.PIPE, cwd=cwd, check=False
        )
        if r.returncode:
            raise SystemExit(f"{args[0]} failed: {r.stderr.decode(errors='replace')[-500:]}")
        if rss and TIME:
            kib = int(peak.read().split()[-1])
            PEAK_RSS_KIB[rss] = max(PEAK_RSS_KIB.get(rss, 0), kib)


class Tool:
    def __init__(
        self, name: str, init: Callable[[Path], None], put: Callable[[Path, Path, int], None]
    ):
        self.name, self.init, self.put = name, init, put


def zfleet_put(repo: Path, files: list[Path], env: dict[str, str]) -> None:
    zfleet = str(VENV_BIN / "zfleet")
    run([zfleet, "cloud", "--repo", str(repo), "put", *map(str, files)], env, rss="zfleet put")


def tools(env: dict[str, str]) -> list[Tool]:
    zfleet = str(VENV_BIN / "zfleet")
    return [
        Tool(
            "zfleet",
            lambda repo: run([zfleet, "cloud", "--repo", str(repo), "init"], env),
            lambda repo, f, n: zfleet_put(repo, [f], env),
        ),
        Tool(
            "restic",
            lambda repo: run(["restic", "-q", "-r", str(repo), "init"], env),
            lambda repo, f, n: run(
                [
                    "restic",
                    "-q",
                    "-r",
                    str(repo),
                    "backup",
                    "--stdin",
                    "--stdin-filename",
                    "stream",
                ],
                env,
                stdin=f,
                rss="restic backup",
            ),
        ),
        Tool(
            "borg",
            lambda repo: run(["borg", "init", "-e", "repokey", str(repo)], env),
            lambda repo, f, n: run(
                ["borg", "create", "-C", BORG_COMPRESSION, f"{repo}::s{n}", "-"],
                env,
                stdin=f,
                rss="borg create",
            ),
        ),
    ]


def restore_rates(
    streams: list[Path], work: Path, env: dict[str, str], dataset: str
) -> dict[str, float]:
    """Median MB/s of restoring each stream to /dev/null, zfleet's CLI against borg's."""
    zfleet = str(VENV_BIN / "zfleet")
    zrepo, brepo = work / "restore-zfleet", work / "restore-borg"
    run([zfleet, "cloud", "--repo", str(zrepo), "init"], env)
    run(["borg", "init", "-e", "repokey", str(brepo)], env)
    zfleet_put(zrepo, streams, env)
    for n, stream in enumerate(streams):
        run(["borg", "create", "-C", BORG_COMPRESSION, f"{brepo}::s{n}", "-"], env, stdin=stream)
    rates: dict[str, list[float]] = {"zfleet": [], "borg": []}
    for n, stream in enumerate(streams):
        mb = stream.stat().st_size / 1e6
        t0 = time.perf_counter()
        run(
            [zfleet, "cloud", "--repo", str(zrepo), "restore", f"{dataset}@s{n}", "--only-last"],
            env,
            rss="zfleet restore",
        )
        rates["zfleet"].append(mb / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        run(["borg", "extract", "--stdout", f"{brepo}::s{n}"], env, rss="borg extract")
        rates["borg"].append(mb / (time.perf_counter() - t0))
    shutil.rmtree(zrepo)
    shutil.rmtree(brepo)
    return {name: statistics.median(r) for name, r in rates.items()}


def measure(tool: Tool, streams: list[Path], repo: Path) -> tuple[int, float, float]:
    """(stored bytes, median MB/s per stream, total seconds) for one tool and scenario."""
    tool.init(repo)
    rates = []
    started = time.perf_counter()
    for n, stream in enumerate(streams):
        t0 = time.perf_counter()
        tool.put(repo, stream, n)
        rates.append(stream.stat().st_size / 1e6 / (time.perf_counter() - t0))
    return du(repo), statistics.median(rates), time.perf_counter() - started


def fixed_cost(tool: Tool, repo: Path) -> float:
    """Median seconds one invocation costs on a tiny stream: process start, key derivation..."""
    tool.init(repo)
    tiny = FIXTURES / "clone-app-from-base-s2.zstream"
    times = []
    for n in range(3):
        t0 = time.perf_counter()
        tool.put(repo, tiny, 100 + n)
        times.append(time.perf_counter() - t0)
    shutil.rmtree(repo)
    return statistics.median(times)


class TreeBackups:
    """restic and borg backing up the dataset's files themselves, their natural mode."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.env = env
        self.repos = {"restic": work / "restic-tree", "borg": work / "borg-tree"}
        run(["restic", "-q", "-r", str(self.repos["restic"]), "init"], env)
        run(["borg", "init", "-e", "repokey", str(self.repos["borg"])], env)
        self.seconds = {"restic": 0.0, "borg": 0.0}
        self.tree_bytes = 0

    def __call__(self, n: int, mnt: Path) -> None:
        self.tree_bytes += du(mnt)
        for name, args in (
            ("restic", ["restic", "-q", "-r", str(self.repos["restic"]), "backup", "."]),
            (
                "borg",
                ["borg", "create", "-C", BORG_COMPRESSION, f"{self.repos['borg']}::s{n}", "."],
            ),
        ):
            t0 = time.perf_counter()
            run(args, self.env, cwd=mnt)
            self.seconds[name] += time.perf_counter() - t0

    def report(self) -> None:
        print(f"\n== reference: file-level backups of the same {self.tree_bytes / 1e6:.1f} MB")
        for name, repo in self.repos.items():
            stored = du(repo)
            rate = self.tree_bytes / 1e6 / self.seconds[name]
            print(f"{name:<8} {stored:>14,} {stored / self.tree_bytes:>9.2%} {rate:>12.1f} MB/s")


def in_process_rates(streams: list[Path], repo: Path) -> tuple[float, float]:
    """Median MB/s of StreamIngest fed 1 MiB chunks (the data plane's view), and of restore."""
    r = Repository.init(LocalBlobStore(repo), RepoKey(passphrase=PASSWORD))
    rates = []
    refs = []
    for stream in streams:
        t0 = time.perf_counter()
        sink = StreamIngest(r)
        with open(stream, "rb") as f:
            while chunk := f.read(1 << 20):
                sink.write(chunk)
        refs.append(sink.finish())
        rates.append(stream.stat().st_size / 1e6 / (time.perf_counter() - t0))
    by_id = {m.id: m for m in mf.load_all(r.target, r.crypto)[0]}
    restore_rates = []
    for stream, ref in zip(streams, refs, strict=True):
        t0 = time.perf_counter()
        digest = hashlib.sha256()
        for chunk in restore_stream(r, by_id[ref.manifest]):
            digest.update(chunk)
        restore_rates.append(ref.size / 1e6 / (time.perf_counter() - t0))
        if digest.digest() != hashlib.sha256(stream.read_bytes()).digest():
            raise SystemExit(f"restore of {stream.name} differs from the original")
    return statistics.median(rates), statistics.median(restore_rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=48)
    ap.add_argument("--snapshots", type=int, default=10)
    ap.add_argument(
        "--lab",
        action="store_true",
        help="make the streams with real OpenZFS on a lab VM (boots one under $ZFLEET_LAB_STATE)",
    )
    opts = ap.parse_args()
    if opts.snapshots < 2 or opts.size_mib < 1:
        ap.error("--snapshots must be at least 2 and --size-mib at least 1")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="zfleet-bench-") as tmp:
        work = Path(tmp)
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "PYTHONPYCACHEPREFIX": str(work / "pycache"),
            "ZFLEET_PASSPHRASE": PASSWORD,
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_CACHE_DIR": str(work / "restic-cache"),
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_BASE_DIR": str(work / "borg-base"),
        }
        # Each CLI run pays process start-up and key derivation; on small streams that dominates.
        fixed = {t.name: fixed_cost(t, work / f"{t.name}-tiny") for t in tools(env)}
        print(
            "per-invocation fixed cost (median of 3 puts of a 10 KiB stream): "
            + ", ".join(f"{name} {secs:.2f} s" for name, secs in fixed.items())
        )
        trees: TreeBackups | None = None
        if opts.lab:
            dataset, fulls, chain = lab_streams(work, opts.size_mib, opts.snapshots)
        else:
            trees = TreeBackups(work, env)
            dataset = "tank/os"
            fulls, chain = make_streams(work, opts.size_mib, opts.snapshots, trees)
        fixtures = sorted(FIXTURES.glob("*.zstream"))
        borg_rates: dict[str, float] = {}
        for label, streams in (("fulls", fulls), ("chain", chain), ("fixtures", fixtures)):
            total = sum(s.stat().st_size for s in streams)
            print(f"\n== {label}: {len(streams)} streams, {total / 1e6:.1f} MB")
            head = f"{'tool':<8} {'stored bytes':>14} {'stored %':>9} {'median MB/s':>12}"
            print(f"{head} {'total MB/s':>11} {'total s':>8}")
            results = {}
            for tool in tools(env):
                repo = work / f"{tool.name}-{label}"
                stored, rate, secs = measure(tool, streams, repo)
                results[tool.name] = (stored, rate, total / 1e6 / secs)
                row = f"{tool.name:<8} {stored:>14,} {stored / total:>9.2%} {rate:>12.1f}"
                print(f"{row} {total / 1e6 / secs:>11.1f} {secs:>8.1f}")
                shutil.rmtree(repo)
            repo = work / f"zfleet-one-call-{label}"
            tools(env)[0].init(repo)
            t0 = time.perf_counter()
            zfleet_put(repo, streams, env)
            one_call = total / 1e6 / (time.perf_counter() - t0)
            shutil.rmtree(repo)
            borg_rates[label] = results["borg"][1]
            print(
                f"zfleet, all {len(streams)} streams in one `put`: {one_call:.1f} MB/s total, "
                f"{one_call / results['borg'][2]:.2f}x borg's total, "
                f"{one_call / results['borg'][1]:.2f}x borg's median per stream"
            )
            z_stored, z_rate, z_total = results["zfleet"]
            for base in ("restic", "borg"):
                b_stored, b_rate, b_total = results[base]
                print(
                    f"zfleet vs {base}: stores {z_stored / b_stored:.3f}x the bytes "
                    f"({b_stored / z_stored:.2f}x less); ingest {z_rate / b_rate:.2f}x as fast "
                    f"(median per stream), {z_total / b_total:.2f}x (total)"
                )
            rate, back = in_process_rates(streams, work / f"inproc-{label}")
            print(
                f"zfleet in process (a worker's StreamIngest, no CLI start-up): ingest median "
                f"{rate:.1f} MB/s = {rate / results['borg'][1]:.2f}x borg's median, "
                f"restore median {back:.1f} MB/s (every restore SHA-256 checked)"
            )
            shutil.rmtree(work / f"inproc-{label}")
        back = restore_rates(fulls, work, env, dataset)
        print(
            f"\n== restore of the {len(fulls)} full streams to /dev/null, CLI, median MB/s\n"
            f"zfleet {back['zfleet']:.1f}, borg {back['borg']:.1f}: "
            f"zfleet {back['zfleet'] / back['borg']:.2f}x borg"
        )
        print("\n== peak RSS (MiB, largest process)")
        for what, kib in sorted(PEAK_RSS_KIB.items()):
            print(f"{what:<16} {kib / 1024:8.1f}")
        for z, b in (("zfleet put", "borg create"), ("zfleet restore", "borg extract")):
            if z in PEAK_RSS_KIB and b in PEAK_RSS_KIB:
                print(f"{z} / {b}: {PEAK_RSS_KIB[z] / PEAK_RSS_KIB[b]:.2f}x")
        if trees is not None:
            trees.report()


if __name__ == "__main__":
    main()
