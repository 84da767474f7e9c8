"""The lab image: its recipe hash, the cache lookup, and the build.

The image is named by a hash of its recipe (``lab/build-image.sh`` and every file under
``lab/recipe/``), so an unchanged recipe is found in the cache and a changed one is rebuilt. The
hash is computed here exactly as the build script computes it (``sha256sum`` lines, sorted by
path, hashed again); a unit test holds the two to the same answer.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from protocol.errors import LabError
from workers.lab.paths import LAB_SOURCE, cache_root

HASH_DIGITS: Final = 16
BUILD_SCRIPT: Final = "build-image.sh"
# Files the image directory holds once a build has finished; image.json is written last.
IMAGE_FILES: Final = ("root.raw", "vmlinuz", "initrd.img", "id_ed25519", "id_ed25519.pub")


def recipe_files(lab_dir: Path = LAB_SOURCE) -> list[str]:
    """The recipe's files, relative to ``lab_dir``, in the bytewise order the script uses."""
    paths = [BUILD_SCRIPT]
    # Regular files only, as `find -type f` lists them: a symlink is not followed.
    paths += [
        str(p.relative_to(lab_dir))
        for p in (lab_dir / "recipe").rglob("*")
        if p.is_file() and not p.is_symlink()
    ]
    return sorted(paths, key=lambda p: p.encode())


def hash_listing(entries: Iterable[tuple[str, bytes]]) -> str:
    """The recipe hash of ``(relative path, content)`` pairs given in the script's order."""
    listing = "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n" for path, data in entries)
    return hashlib.sha256(listing.encode()).hexdigest()[:HASH_DIGITS]


def recipe_hash(lab_dir: Path = LAB_SOURCE) -> str:
    """The hash naming the image that ``lab_dir``'s recipe builds."""
    return hash_listing((p, (lab_dir / p).read_bytes()) for p in recipe_files(lab_dir))


@dataclass(frozen=True)
class Image:
    """A built lab image in the cache."""

    directory: Path
    hash: str
    kernel: str
    zfs_version: str
    build_seconds: int

    @property
    def root_disk(self) -> Path:
        return self.directory / "root.raw"

    @property
    def kernel_file(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def private_key(self) -> Path:
        return self.directory / "id_ed25519"


def load_image(directory: Path) -> Image | None:
    """The image in ``directory``, or None when it is absent or its build never finished."""
    try:
        meta = json.loads((directory / "image.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((directory / name).is_file() for name in IMAGE_FILES):
        return None
    return Image(
        directory=directory,
        hash=str(meta["hash"]),
        kernel=str(meta["kernel"]),
        zfs_version=str(meta["zfs"]),
        build_seconds=int(meta["build_seconds"]),
    )


def find_image(cache: Path | None = None, lab_dir: Path = LAB_SOURCE) -> Image | None:
    """The cached image for the current recipe, or None if it must be built."""
    return load_image((cache or cache_root()) / recipe_hash(lab_dir))


def build_image(
    cache: Path | None = None,
    *,
    force: bool = False,
    log: TextIO | None = None,
    lab_dir: Path = LAB_SOURCE,
) -> Image:
    """Build the image for the current recipe unless it is cached; return it.

    The build runs ``lab/build-image.sh`` niced (it compiles OpenZFS with DKMS and takes
    minutes); its output goes to ``log`` (default: inherited). Raises :class:`LabError` if the
    build fails.
    """
    directory = (cache or cache_root()) / recipe_hash(lab_dir)
    if not force and (found := load_image(directory)) is not None:
        return found
    argv = ["nice", "-n", "10", str(lab_dir / BUILD_SCRIPT), "--cache-dir", str(directory.parent)]
    if force:
        argv.append("--force")
    done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT if log else None, check=False)
    if done.returncode != 0:
        raise LabError(f"image build failed (exit {done.returncode}); see the build output")
    image = load_image(directory)
    if image is None:
        raise LabError(f"image build finished but {directory} holds no complete image")
    return image
