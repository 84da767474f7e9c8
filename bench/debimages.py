"""Real Debian image trees for the benchmarks, built by debootstrap and cached.

Each image is its own ``debootstrap --variant=minbase --include=...`` run of Debian bookworm, as
images imported one by one are: the same packages unpack to the same bytes, but every run also
writes its own logs, caches and timestamps. The apt caches (``var/cache/apt/archives``,
``var/lib/apt/lists``) are emptied afterwards, as image builds do, and
``/dev`` is left empty, as in container images (the runtime fills it; the simulated backend keeps
no device nodes).

Trees are cached under ``/var/cache/zfleet-images/trees/<name>`` (``$ZFLEET_IMAGES`` to move it),
together with the downloaded packages, so a rerun builds only what is missing. Building needs
root, debootstrap and a reachable Debian mirror (the one in the machine's apt sources).

    .venv/bin/python bench/debimages.py [--only web,db] [--jobs 2]    # build what is missing
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

SUITE: Final = "bookworm"
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"

# name -> packages on top of minbase: a web server, a database, python, build tools, and mixes
IMAGES: Final[dict[str, tuple[str, ...]]] = {
    "minbase": (),
    "web": ("nginx",),
    "db": ("postgresql",),
    "python": ("python3", "python3-venv"),
    "build": ("build-essential",),
    "cache": ("redis-server",),
    "webpy": ("nginx", "python3"),
    "tools": ("git", "curl", "ca-certificates"),
}


def cache_root() -> Path:
    return Path(os.environ.get("ZFLEET_IMAGES", "/var/cache/zfleet-images"))


def tree_path(name: str) -> Path:
    return cache_root() / "trees" / name


def mirror() -> str:
    """The Debian mirror of this machine's apt sources (the first one), else the default."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"(?:URIs:|^deb)\s+(\S+/debian)\s*$", text, re.MULTILINE):
            return match.group(1)
    return DEFAULT_MIRROR


def build_one(name: str, packages: Sequence[str], log_dir: Path) -> float:
    """debootstrap ``name`` into its cache directory (atomically: a temp dir renamed)."""
    done = tree_path(name)
    if done.is_dir():
        return 0.0
    tmp = done.with_name(done.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    debs = cache_root() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    argv = ["debootstrap", "--variant=minbase", f"--cache-dir={debs}"]
    if packages:
        argv.append("--include=" + ",".join(packages))
    argv += [SUITE, str(tmp), mirror()]
    t0 = time.perf_counter()
    with (log_dir / f"{name}.log").open("wb") as log:
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        raise SystemExit(f"debootstrap {name} failed (exit {rc}); see {log_dir / (name + '.log')}")
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for child in (tmp / sub).glob("*"):
            if child.is_file() and child.name not in ("lock",):
                child.unlink()
    for node in (tmp / "dev").iterdir():  # as container images ship it: the runtime fills /dev
        if not node.is_dir() or node.is_symlink():
            node.unlink()
    tmp.rename(done)
    return time.perf_counter() - t0


def ensure(names: Sequence[str] | None = None, jobs: int = 2) -> dict[str, Path]:
    """Every image's tree, building the missing ones (``jobs`` debootstraps at a time)."""
    wanted = list(IMAGES) if names is None else list(names)
    unknown = [n for n in wanted if n not in IMAGES]
    if unknown:
        raise SystemExit(f"unknown image(s): {', '.join(unknown)}; known: {', '.join(IMAGES)}")
    missing = [n for n in wanted if not tree_path(n).is_dir()]
    if missing:
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            raise SystemExit("building the Debian images needs root and debootstrap "
                             f"(missing: {', '.join(missing)})")  # fmt: skip
        log_dir = cache_root() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        print(f"debootstrap: building {', '.join(missing)} ({jobs} at a time)", flush=True)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            times = list(pool.map(lambda n: build_one(n, IMAGES[n], log_dir), missing))
        for n, s in zip(missing, times, strict=True):
            print(f"  {n}: {s:.0f} s", flush=True)
    return {n: tree_path(n) for n in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", help="comma-separated image names (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else None
    for name, path in ensure(names, args.jobs).items():
        du = ["du", "-sb", str(path)]
        size = subprocess.run(du, check=True, capture_output=True, text=True).stdout
        print(f"{name:8s} {int(size.split()[0]) / (1 << 20):8.1f} MiB  {path}")


if __name__ == "__main__":
    sys.exit(main())
