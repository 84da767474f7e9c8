"""Trees to rebase, and an independent reading of them (not workers.rebase.tree's own)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from workers.zfs.sim import SimBackend

ROOT_USER = os.geteuid() == 0
T0 = 1_700_000_000_000_000_000  # a fixed mtime (ns), so trees built apart can still be equal


def fill_base(root: Path) -> None:
    """A small OS-like tree: dirs, files of several records, a symlink, an empty dir."""
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("NAME=zfleet-test\nVERSION=1\n")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(bytes(range(256)) * 2048)  # 512 KiB: 4 records
    (root / "usr" / "lib").mkdir()
    (root / "usr" / "lib" / "libbig.so").write_bytes(os.urandom(700_000))
    os.symlink("../lib/libbig.so", root / "usr" / "bin" / "big-link")
    (root / "var" / "empty").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").chmod(0o755)
    os.link(root / "usr" / "bin" / "tool", root / "usr" / "bin" / "tool-alias")
    stamp_tree(root)


def stamp_tree(root: Path) -> None:
    """Every path's mtime set to T0 (deepest first, so directories keep theirs)."""
    paths = sorted((p for p in root.rglob("*")), key=lambda p: -len(p.parts))
    for p in [*paths, root]:
        os.utime(p, ns=(T0, T0), follow_symlinks=False)


def copy_tree(src: Path, dst: Path) -> None:
    """A copy with modes and mtimes (``cp -a``: new inodes, new blocks), as an image imported
    as a full copy is."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for d in dirnames:
            full = Path(dirpath) / d
            if full.is_symlink():
                os.symlink(os.readlink(full), dst / rel / d)
            else:
                (dst / rel / d).mkdir()
        for f in filenames:
            full = Path(dirpath) / f
            if full.is_symlink():
                os.symlink(os.readlink(full), dst / rel / f)
            else:
                (dst / rel / f).write_bytes(full.read_bytes())
                os.chmod(dst / rel / f, stat.S_IMODE(full.stat().st_mode))
    for path in [*sorted(src.rglob("*"), key=lambda p: -len(p.parts)), src]:
        st = os.lstat(path)
        os.utime(
            dst / path.relative_to(src), ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False
        )


def listing(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a user would notice about a tree, per path, read with os.walk and sha256."""
    out: dict[str, tuple[object, ...]] = {}
    inode: dict[str, int] = {}
    st = os.lstat(root)
    out["."] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            st = os.lstat(full)
            try:
                xattrs = tuple(
                    sorted(
                        (n, os.getxattr(full, n, follow_symlinks=False))
                        for n in os.listxattr(full, follow_symlinks=False)
                    )
                )
            except OSError:
                xattrs = ()
            common = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, xattrs)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(full), *common)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", *common)
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    inode[rel] = st.st_ino
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
                out[rel] = ("file", digest, st.st_size, *common)
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode), st.st_rdev, *common)
    # hard links: each linked path lists every path of its inode
    for rel, ino in inode.items():
        group = tuple(sorted(r for r, i in inode.items() if i == ino))
        out[rel] = (*out[rel], group)
    return out


def mount(sim: SimBackend, name: str) -> Path:
    where = sim.mountpoint(name)
    assert where is not None
    return Path(where)


def names(sim: SimBackend, root: str) -> list[str]:
    return sorted(o.name for o in sim.list(root))


def used(sim: SimBackend, name: str) -> int:
    return int(sim.get(name, ["used"])["used"].value)
