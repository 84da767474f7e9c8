"""The lab image cache: the recipe hash names the image, and only finished builds are found."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from workers.lab.paths import LAB_SOURCE
from workers.lab.recipe import IMAGE_FILES, find_image, load_image, recipe_hash


def _script_hash(lab_dir: Path) -> str:
    done = subprocess.run(
        [str(lab_dir / "build-image.sh"), "--print-hash"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def lab_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "lab"
    shutil.copytree(LAB_SOURCE, copy)
    return copy


def test_python_and_build_script_agree_on_the_hash(lab_copy: Path) -> None:
    # Both sides must name the same cache directory, or `zfleet lab up` would rebuild forever.
    assert recipe_hash(lab_copy) == _script_hash(lab_copy)
    assert recipe_hash(LAB_SOURCE) == _script_hash(LAB_SOURCE)


def test_changing_any_recipe_file_changes_the_hash(lab_copy: Path) -> None:
    before = recipe_hash(lab_copy)
    packages = lab_copy / "recipe" / "packages.txt"
    packages.write_text(packages.read_text() + "htop\n")
    changed = recipe_hash(lab_copy)
    assert changed != before
    assert changed == _script_hash(lab_copy)
    # A new file in the rootfs overlay changes the image too.
    (lab_copy / "recipe" / "rootfs" / "etc" / "motd").write_text("hi\n")
    assert recipe_hash(lab_copy) not in (before, changed)


def test_unchanged_recipe_keeps_its_hash(lab_copy: Path) -> None:
    assert recipe_hash(lab_copy) == recipe_hash(lab_copy)
    (lab_copy / "README-not-in-recipe").write_text("outside lab/recipe: not part of the image")
    assert recipe_hash(lab_copy) == recipe_hash(LAB_SOURCE)


def _fake_build(directory: Path, *, finished: bool) -> None:
    directory.mkdir(parents=True)
    for name in IMAGE_FILES:
        (directory / name).write_bytes(b"x")
    if finished:
        meta = {
            "hash": directory.name,
            "kernel": "6.1.0-1-amd64",
            "zfs": "2.3.2-2~bpo12+1",
            "root_mb": 2000,
            "build_seconds": 270,
            "built_at": 0,
        }
        (directory / "image.json").write_text(json.dumps(meta))


def test_cache_finds_a_finished_image_for_this_recipe(tmp_path: Path, lab_copy: Path) -> None:
    cache = tmp_path / "cache"
    assert find_image(cache, lab_copy) is None
    _fake_build(cache / recipe_hash(lab_copy), finished=True)
    image = find_image(cache, lab_copy)
    assert image is not None
    assert image.root_disk == cache / recipe_hash(lab_copy) / "root.raw"
    assert image.zfs_version.startswith("2.3")
    # After a recipe change the old image is not the answer any more.
    (lab_copy / "recipe" / "packages.txt").write_text("systemd\n")
    assert find_image(cache, lab_copy) is None


def test_unfinished_or_partial_builds_are_not_images(tmp_path: Path) -> None:
    _fake_build(tmp_path / "a", finished=False)
    assert load_image(tmp_path / "a") is None
    _fake_build(tmp_path / "b", finished=True)
    (tmp_path / "b" / "initrd.img").unlink()
    assert load_image(tmp_path / "b") is None
