"""The demo's data: a small but realistic hierarchy on alpha, and the changes made to it later.

``tank/images/base`` is an OS-like image (``etc/`` configuration, ``usr/bin`` binaries,
``usr/lib`` libraries, ``usr/share/doc`` text, symlinks; a few MiB) with a snapshot per release;
application images are clones of base releases; ``tank/home`` and ``tank/log`` hold user data and
logs. Everything is generated from a seed, so two runs build the same bytes; binaries mix random
and repetitive bytes so that compression and deduplication have realistic work to do.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from workers.zfs.base import ZfsBackend

SEED: Final = 20261128
_VOCABULARY: Final = (
    "the system package file configuration service daemon network kernel module user group "
    "mount snapshot clone pool dataset replica stream record block checksum compression disk "
    "update release security patch library binary manual option default value path log rotate "
    "start stop reload socket timer unit target boot image container host fleet storage"
)
WORDS: Final = tuple(_VOCABULARY.split())
BINARIES: Final = (
    "bash", "dash", "ls", "cp", "mv", "tar", "gzip", "grep", "sed", "awk", "find", "ssh", "curl",
    "python3", "vim.basic", "systemctl", "journalctl", "ip",
)  # fmt: skip
LIBS: Final = ("libc.so.6", "libssl.so.3", "libcrypto.so.3", "libz.so.1", "libsystemd.so.0")


@dataclass(frozen=True)
class App:
    """An application image: a clone of a base release with its own files."""

    name: str
    origin: str  # the base snapshot it is cloned from
    files: dict[str, int]  # path -> size


APPS: Final = (
    App("web", "v1", {"etc/nginx/nginx.conf": 3_000, "usr/sbin/nginx": 300_000,
                      "var/www/index.html": 8_000}),
    App("db", "v2", {"etc/postgresql/postgresql.conf": 30_000, "usr/lib/postgresql/postgres":
                     500_000, "var/lib/postgresql/base/1/1259": 200_000}),
    App("ci", "v2", {"etc/ci/runner.toml": 2_000, "usr/bin/runner": 250_000}),
)  # fmt: skip


def text(rng: random.Random, size: int) -> bytes:
    """Readable, compressible text of about ``size`` bytes."""
    out: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + ".\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def binary(rng: random.Random, size: int) -> bytes:
    """ELF-looking bytes: a header, then runs of random code and repeated tables."""
    out = bytearray(b"\x7fELF\x02\x01\x01\x00" + bytes(8))
    while len(out) < size:
        if rng.random() < 0.6:
            out += rng.randbytes(rng.randint(512, 8192))
        else:
            out += rng.randbytes(16) * rng.randint(32, 256)
    return bytes(out[:size])


def write(root: Path, rel: str, data: bytes, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def link(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def os_tree(root: Path, rng: random.Random, release: int) -> None:
    """Write (or update to) base release ``release`` of the OS image under ``root``."""
    write(root, "etc/os-release", f'NAME="zfleet demo OS"\nVERSION_ID="{release}"\n'.encode())
    write(root, "etc/hostname", b"image\n")
    write(root, "etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n"
          + b"".join(f"u{i}:x:{1000 + i}:{1000 + i}::/home/u{i}:/bin/sh\n".encode()
                     for i in range(20)))  # fmt: skip
    for name in ("fstab", "hosts", "resolv.conf", "sysctl.conf", "ssh/sshd_config",
                 "systemd/journald.conf", "apt/sources.list", "default/grub"):  # fmt: skip
        write(root, f"etc/{name}", text(rng, rng.randint(200, 4000)))
    # A release updates a third of the binaries and every library (a security release).
    for name in BINARIES:
        if release == 1 or rng.random() < 0.33:
            write(root, f"usr/bin/{name}", binary(rng, rng.randint(40_000, 160_000)), 0o755)
    for name in LIBS:
        write(root, f"usr/lib/x86_64-linux-gnu/{name}", binary(rng, rng.randint(150_000, 300_000)))
    for name in BINARIES[: 10 + 2 * release]:
        write(root, f"usr/share/doc/{name}/README", text(rng, rng.randint(3_000, 30_000)))
        write(root, f"usr/share/doc/{name}/changelog", text(rng, 2_000 * release))
    link(root, "bin", "usr/bin")
    link(root, "lib", "usr/lib")
    link(root, "usr/bin/sh", "dash")
    link(root, "usr/bin/vi", "vim.basic")
    link(root, "etc/localtime", "/usr/share/zoneinfo/Etc/UTC")


def home_tree(root: Path, rng: random.Random) -> None:
    for user in ("alice", "bob", "carol"):
        write(root, f"{user}/.profile", text(rng, 600))
        write(root, f"{user}/notes.md", text(rng, rng.randint(5_000, 40_000)))
        write(root, f"{user}/data.bin", rng.randbytes(rng.randint(50_000, 150_000)))


def log_tree(root: Path, rng: random.Random, lines: int) -> None:
    for name in ("syslog", "auth.log", "nginx/access.log"):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as fh:
            for i in range(lines):
                words = f"{rng.choice(WORDS)} {rng.choice(WORDS)}"
                fh.write(f"2026-11-28T08:{i % 60:02d}:00Z host {words} "
                         f"id={rng.getrandbits(32):08x}\n".encode())  # fmt: skip


@dataclass
class Hierarchy:
    """What the scenario built: dataset names, for the narration and the checks."""

    base: str
    apps: dict[str, str]  # clone dataset -> origin snapshot
    others: list[str]


def _mount(backend: ZfsBackend, dataset: str) -> Path:
    mp = backend.mountpoint(dataset)
    if mp is None:
        raise RuntimeError(f"{dataset} is not mounted")
    return Path(mp)


def build(backend: ZfsBackend, pool: str, say: Callable[[str], None]) -> Hierarchy:
    """Create the hierarchy on ``pool`` of the source host (an empty pool)."""
    rng = random.Random(SEED)
    base = f"{pool}/images/base"
    backend.create(f"{pool}/images", parents=True)
    backend.create(base)
    for release in (1, 2):
        os_tree(_mount(backend, base), rng, release)
        backend.snapshot([f"{base}@v{release}"])
    say(f"{base}: OS image, snapshots @v1 @v2")
    apps: dict[str, str] = {}
    for app in APPS:
        clone = f"{pool}/images/{app.name}"
        backend.clone(f"{base}@{app.origin}", clone)
        root = _mount(backend, clone)
        for rel, size in app.files.items():
            write(root, rel, binary(rng, size) if "bin" in rel or "sbin" in rel or "lib" in rel
                  else text(rng, size))  # fmt: skip
        backend.snapshot([f"{clone}@release-1"])
        apps[clone] = f"{base}@{app.origin}"
        say(f"{clone}: clone of {base}@{app.origin}, snapshot @release-1")
    others = [f"{pool}/home", f"{pool}/log"]
    backend.create(others[0])
    home_tree(_mount(backend, others[0]), rng)
    backend.create(others[1])
    log_tree(_mount(backend, others[1]), rng, 2_000)
    say(f"{others[0]}, {others[1]}: user files and logs")
    return Hierarchy(base=base, apps=apps, others=others)


def change(backend: ZfsBackend, h: Hierarchy, say: Callable[[str], None]) -> None:
    """A day later: base release 3, a web deploy, new user files, more log lines."""
    rng = random.Random(SEED + 1)
    os_tree(_mount(backend, h.base), rng, 3)
    backend.snapshot([f"{h.base}@v3"])
    say(f"{h.base}: security release, snapshot @v3")
    web = next(c for c in h.apps if c.endswith("/web"))
    root = _mount(backend, web)
    write(root, "var/www/index.html", text(rng, 9_000))
    write(root, "var/www/app.js", text(rng, 40_000))
    say(f"{web}: new site deployed")
    home = _mount(backend, h.others[0])
    write(home, "alice/report.txt", text(rng, 20_000))
    (home / "bob" / "data.bin").unlink()
    say(f"{h.others[0]}: alice wrote a report, bob removed a file")
    log_tree(_mount(backend, h.others[1]), rng, 500)
    say(f"{h.others[1]}: 1,500 more log lines")
