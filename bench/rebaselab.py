"""The Debian collection on real OpenZFS: independent datasets, dedup=on, zfleet --optimize.

Run by ``bench/rebase.py --lab`` (a benchmark, not a test: it takes a long time on emulated CPUs).
Two lab VMs are booted (``$ZFLEET_LAB_STATE``, else the lab's own state directory; a 16 GB pool
each). On zlab1, with ``compression=off`` everywhere so that bytes compare with the record-level
lower bound and the simulated backend (which models no compression):

1. every tree of bench/debimages.py is copied in (tar over the ssh prefix) as its own dataset
   ``tank/img/<name>`` with a snapshot ``@import``: the pool's allocated bytes and the images'
   ``used``; every image sent whole to zlab2 (``zfs send | zfs recv`` through this machine,
   bytes counted);
2. the same trees copied again inside zlab1 into ``tank/dd/<name>`` with ``dedup=on``: the pool's
   allocated bytes for them, the DEDUP ratio, and the DDT: entries and their in-core size from
   ``zpool status -D`` (the RAM the table wants); then ``tank/dd`` is destroyed;
3. ``zfleet rebase --optimize tank/img/... --drop-old --real --json`` (every image named) run
   inside zlab1 (this project's code and the Python it needs are copied into the VM first):
   used and allocated after, the
   analysis's record-level lower bound; every image's tree hash checked against before;
4. a fresh second host's bytes after: each base whole, each member as the incremental from its
   base's snapshot, received on zlab2 and checked there too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

from workers.lab import ssh  # noqa: E402
from workers.lab.lab import Lab  # noqa: E402
from workers.lab.paths import state_root  # noqa: E402
from workers.lab.recipe import build_image, find_image  # noqa: E402

MIB = 1 << 20
REMOTE_ROOT = "/opt/zfleet"  # the project's code inside the VM

# Inside the VM: one hash of an image's whole tree (the rebase module's fingerprint).
TREE_HASH = (
    "import sys; from pathlib import Path; "
    "from workers.rebase.tree import fingerprint, tree_hash; "
    "print(tree_hash(fingerprint(Path(sys.argv[1]))))"
)


def run(prefix: Sequence[str], command: str, timeout: float = 1800) -> str:
    return ssh.run(prefix, command, timeout=timeout).stdout


def push_tree(prefix: Sequence[str], src: Path, dest: str) -> None:
    pack = subprocess.Popen(["tar", "-C", str(src), "--xattrs", "--numeric-owner", "-cf", "-", "."],
                            stdout=subprocess.PIPE)  # fmt: skip
    unpack = f"tar -C {shlex.quote(dest)} --xattrs --xattrs-include='*' --numeric-owner -xpf -"
    done = subprocess.run([*prefix, unpack], stdin=pack.stdout, capture_output=True, check=False)
    assert pack.stdout is not None
    pack.stdout.close()
    if pack.wait() != 0 or done.returncode != 0:
        sys.exit(f"copying {src} into the VM failed: {done.stderr.decode(errors='replace')}")


def pipe_send(src: Sequence[str], send: str, dst: Sequence[str], recv: str) -> int:
    """``send`` on one VM into ``recv`` on the other, through this machine; the stream's bytes."""
    sender = subprocess.Popen([*src, send], stdout=subprocess.PIPE)
    receiver = subprocess.Popen([*dst, recv], stdin=subprocess.PIPE)
    assert sender.stdout is not None and receiver.stdin is not None
    total = 0
    while chunk := sender.stdout.read(1 << 20):
        receiver.stdin.write(chunk)
        total += len(chunk)
    receiver.stdin.close()
    if sender.wait() != 0 or receiver.wait() != 0:
        sys.exit(f"{send!r} | {recv!r} failed")
    return total


def python_files() -> list[str]:
    """Every file the zfleet CLI's rebase and dedup paths load: this Python, its stdlib, the
    third-party packages imported, and the shared libraries behind them."""
    probe = (
        "import sys, app.cli, app.cli.rebase, app.cli.dedup, app.cli.rebasefleet, "
        "workers.rebase, workers.rebase.collection, workers.dedup.refine, workers.dedup.sources, "
        "workers.zfs.real\n"
        "print('\\n'.join(sorted({getattr(m, '__file__', None) or '' for m in "
        "list(sys.modules.values())} - {''})))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         check=True).stdout.split()  # fmt: skip
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    files: set[str] = {os.path.realpath(sys.executable)}
    stdlib = str(Path(os.__file__).parent)
    for path in out:
        if path.startswith(str(ROOT) + "/") and "/.venv/" not in path:
            continue  # the project's own tree goes across whole
        if path.startswith(site + "/"):
            top = path[len(site) + 1 :].split("/", 1)[0]
            files.add(os.path.join(site, top))
        elif not path.startswith(stdlib):
            files.add(path)
    files.add(stdlib)  # whole, but for its tests (below)
    libs: set[str] = set()
    for f in [os.path.realpath(sys.executable), *_shared_objects(files)]:
        ldd = subprocess.run(["ldd", f], capture_output=True, text=True, check=False).stdout
        libs.update(os.path.normpath(m.group(1)) for m in re.finditer(r"=> (/\S+)", ldd))
    return sorted(files | libs)


def _shared_objects(paths: set[str]) -> list[str]:
    out = []
    for p in paths:
        if p.endswith(".so") or ".so." in p:
            out.append(p)
        elif os.path.isdir(p):
            for d, dirs, names in os.walk(p):
                dirs[:] = [x for x in dirs if x != "site-packages"]  # the interpreter's own
                out += [os.path.join(d, n) for n in names if n.endswith(".so")]
    return out


def push_zfleet(prefix: Sequence[str]) -> str:
    """Copy the project and the Python it runs on into the VM; returns the command prefix."""
    files = python_files()
    missing = run(prefix, "for f in " + " ".join(shlex.quote(f) for f in files if "/lib" in f
                  and ".so" in f) + '; do test -e "$f" || echo "$f"; done').split()  # fmt: skip
    keep = [f for f in files if ".so" not in f or "/python3" in f or f in missing]
    # the interpreter's own site-packages (everything installed beside it) stays behind: the
    # packages zfleet imports come from the venv's, one by one
    own_site = os.path.join(str(Path(os.__file__).parent), "site-packages").lstrip("/")
    pack = subprocess.Popen(["tar", "-C", "/", "--exclude=__pycache__", "--exclude=test",
                             "--exclude=idlelib", "--exclude=tkinter", f"--exclude={own_site}",
                             "-chf", "-", *[f.lstrip("/") for f in keep]],
                            stdout=subprocess.PIPE)  # fmt: skip
    done = subprocess.run([*prefix, "tar -C / -xf -"], stdin=pack.stdout, check=False)
    assert pack.stdout is not None
    pack.stdout.close()
    if pack.wait() != 0 or done.returncode != 0:
        sys.exit("copying Python into the VM failed")
    project = subprocess.Popen(["tar", "-C", str(ROOT), "--exclude=__pycache__", "-cf", "-",
                                "protocol", "bus", "coordinator", "workers", "app"],
                               stdout=subprocess.PIPE)  # fmt: skip
    done = subprocess.run([*prefix, f"mkdir -p {REMOTE_ROOT} && tar -C {REMOTE_ROOT} -xf -"],
                          stdin=project.stdout, check=False)  # fmt: skip
    assert project.stdout is not None
    project.stdout.close()
    if project.wait() != 0 or done.returncode != 0:
        sys.exit("copying zfleet into the VM failed")
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    python = os.path.realpath(sys.executable)
    return f"PYTHONPATH={REMOTE_ROOT}:{site} {python}"


def props(prefix: Sequence[str], names: Sequence[str], *fields: str) -> dict[str, list[int]]:
    out = run(prefix, f"zfs get -Hp -o name,value {','.join(fields)} " + " ".join(names))
    got: dict[str, list[int]] = {}
    for line in out.splitlines():
        name, value = line.split("\t")
        got.setdefault(name, []).append(int(value))
    return got


def allocated(prefix: Sequence[str], pool: str) -> int:
    run(prefix, f"zpool sync {pool}")
    return int(run(prefix, f"zpool list -Hp -o allocated {pool}").strip())


def ddt(prefix: Sequence[str], pool: str) -> tuple[int, int, int, str]:
    """DDT entries, bytes on disk and bytes in core per entry (zpool status -D), the DEDUP ratio."""
    status = run(prefix, f"zpool status -D {pool}")
    ratio = run(prefix, f"zpool list -H -o dedupratio {pool}").strip()
    m = re.search(r"DDT entries (\d+), size (\d+)B? on disk, (\d+)B? in core", status)
    if m is None:  # sizes in human units on some versions: read them back
        m2 = re.search(r"DDT entries (\d+), size ([\d.]+\w?) on disk, ([\d.]+\w?) in core", status)
        if m2 is None:
            sys.exit(f"cannot read the DDT from zpool status -D:\n{status}")
        return int(m2.group(1)), _human(m2.group(2)), _human(m2.group(3)), ratio
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), ratio


def _human(text: str) -> int:
    units = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    m = re.fullmatch(r"([\d.]+)(\w?)", text)
    assert m is not None
    return int(float(m.group(1)) * units[m.group(2)])


def main_lab(trees: dict[str, Path], memory_mb: int = 2048) -> None:
    image = find_image()
    if image is None:
        if os.geteuid() != 0:
            sys.exit("--lab needs the lab image: build it as root with `zfleet lab build`")
        with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as log:
            print(f"building the lab image (log {log.name})", flush=True)
            image = build_image(log=log)
    directory = state_root() / "bench-rebase"
    stale = Lab.load(directory)
    if stale is not None:
        stale.down()
    t0 = time.perf_counter()
    lab = Lab.up(image, 2, directory, memory_mb=memory_mb, pool_gb=16, timeout=1200)
    try:
        _measure(lab, trees, time.perf_counter() - t0)
    finally:
        lab.down()


def _measure(lab: Lab, trees: dict[str, Path], boot_s: float) -> None:
    one, two = (h.exec_prefix for h in lab.hosts)
    pool = lab.pool
    print(f"lab: 2 VMs up in {boot_s:.0f} s, OpenZFS {lab.hosts[0].zfs_version}", flush=True)
    run(one, f"zfs create -o compression=off {pool}/img && "
             f"zfs create -o compression=off {pool}/dd")  # fmt: skip
    run(two, f"zfs create -o compression=off {pool}/before && "
             f"zfs create -o compression=off {pool}/after")  # fmt: skip
    names = [f"{pool}/img/{n}" for n in trees]
    empty = allocated(one, pool)
    t0 = time.perf_counter()
    for name, src in zip(names, trees.values(), strict=True):
        run(one, f"zfs create {name}")
        push_tree(one, src, f"/{name}")
        run(one, f"zfs snapshot {name}@import")
    print(f"copied {len(names)} trees in {time.perf_counter() - t0:.0f} s", flush=True)
    zf = push_zfleet(one)
    hashes = {n: run(one, f"{zf} -c {shlex.quote(TREE_HASH)} /{n}").strip() for n in names}
    alloc_before = allocated(one, pool) - empty
    used_before = sum(v[0] for v in props(one, names, "used").values())
    t0 = time.perf_counter()
    sent_before = {n: pipe_send(one, f"zfs send {n}@import", two,
                                f"zfs recv -u {n.replace('/img/', '/before/')}")
                   for n in names}  # fmt: skip
    send_s = time.perf_counter() - t0
    run(two, f"zfs destroy -r {pool}/before")

    # dedup=on: the same bytes written again, into a dedup dataset (tar, so no block cloning)
    pre_dd = allocated(one, pool)
    t0 = time.perf_counter()
    run(one, f"zfs set dedup=on {pool}/dd")
    for n in names:
        dd = n.replace("/img/", "/dd/")
        run(one, f"zfs create {dd} && tar -C /{n} --xattrs --numeric-owner -cf - . | "
                 f"tar -C /{dd} --xattrs --xattrs-include='*' --numeric-owner -xpf -")  # fmt: skip
    dd_s = time.perf_counter() - t0
    alloc_dd = allocated(one, pool) - pre_dd
    entries, on_disk, in_core, ratio = ddt(one, pool)
    run(one, f"zfs destroy -r {pool}/dd")

    t0 = time.perf_counter()
    out = run(one, f"{zf} -c 'from app.cli import main; main()' rebase --optimize "
                   f"{' '.join(names)} --drop-old --real --json", timeout=7200)  # fmt: skip
    optimize_s = time.perf_counter() - t0
    report: dict[str, Any] = json.loads(out)
    if report.get("failed"):
        sys.exit(f"--optimize failed for some images: {report['failed']}")
    alloc_after = allocated(one, pool) - empty
    used_after = sum(v[0] for v in props(one, names, "used").values())
    for n in names:
        if run(one, f"{zf} -c {shlex.quote(TREE_HASH)} /{n}").strip() != hashes[n]:
            sys.exit(f"{n}: its tree changed in the rebase")
    analysis = report.get("analysis") or {}
    lower = int(analysis.get("lower_bound") or 0)

    sent_after: dict[str, int] = {}
    rebased = {r["image"]: r for r in report["rebased"]}
    bases = sorted({r["onto"] for r in rebased.values()})
    for base in bases:
        ds = base.split("@")[0]
        if ds not in rebased:
            sent_after[ds] = pipe_send(one, f"zfs send {base}", two,
                                       f"zfs recv -u {ds.replace('/img/', '/after/')}")  # fmt: skip
    for r in report["rebased"]:  # bases first, as the collection ran them
        target = r["image"].replace("/img/", "/after/")
        sent_after[r["image"]] = pipe_send(
            one, f"zfs send -i {r['onto']} {r['snapshot']}", two, f"zfs recv -u {target}"
        )
    for n in names:
        if n not in sent_after:
            sent_after[n] = pipe_send(one, f"zfs send {n}@import", two,
                                      f"zfs recv -u {n.replace('/img/', '/after/')}")  # fmt: skip
    run(two, "zfs mount -a")
    for n in names:  # the replicas' trees: zfleet is not on zlab2, so compare file lists' sums
        a = run(one, f"cd /{n} && find . -xdev -type f -print0 | sort -z | xargs -0 sha256sum | "
                     "sha256sum")  # fmt: skip
        b = run(two, f"cd /{n.replace('/img/', '/after/')} && find . -xdev -type f -print0 | "
                     "sort -z | xargs -0 sha256sum | sha256sum")  # fmt: skip
        if a != b:
            sys.exit(f"{n}: the replica on zlab2 differs")

    full = sum(sent_before.values())
    after = sum(sent_after.values())
    members_before = sum(sent_before[n] for n in rebased)
    members_after = sum(sent_after[n] for n in rebased)

    def mib(n: float) -> str:
        return f"{n / MIB:9.1f} MiB"

    print(f"real OpenZFS {lab.hosts[0].zfs_version}, compression=off; {len(names)} images; "
          f"--optimize bases: {', '.join(bases)} ({optimize_s:.0f} s in the VM)")  # fmt: skip
    print(f"record-level lower bound          : {mib(lower)}")
    print(f"independent: pool allocated       : {mib(alloc_before)}  (images' used "
          f"{mib(used_before).strip()})")  # fmt: skip
    print(f"dedup=on: pool allocated          : {mib(alloc_dd)}  ratio "
          f"{alloc_dd / alloc_before:.3f}  DEDUP {ratio}  ({dd_s:.0f} s to write)")  # fmt: skip
    print(f"dedup=on: DDT entries x in core    : {entries} x {in_core} B = "
          f"{mib(entries * in_core).strip()} of RAM; {mib(entries * on_disk).strip()} on disk")
    print(f"--optimize: pool allocated        : {mib(alloc_after)}  ratio "
          f"{alloc_after / alloc_before:.3f}  (images' used {mib(used_after).strip()}; "
          f"x{alloc_after / lower if lower else 0:.2f} of the lower bound; no DDT)")  # fmt: skip
    print(f"second host before (full streams) : {mib(full)}  ({send_s:.0f} s)")
    print(f"second host after (bases + deltas): {mib(after)}  ratio {after / full:.3f}")
    print(f"second host holding the bases     : {mib(members_before)} -> {mib(members_after)}  "
          f"ratio {members_after / members_before:.3f}")
    print("every image's tree hash equals its hash from before; every replica's files match")
