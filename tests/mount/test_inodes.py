"""Inode numbers through a real mount (issue 28 item 6): every st_ino below 2**53 (the
largest integer a JavaScript number holds exactly), stable across a remount, distinct
across workspaces; workspaces with a tag of the old rule or another's tag are mended when
the daemon starts; and Node.js's numeric ``fs.statSync().ino`` tells 10,000 files apart
(2,000 on PostgreSQL, NODE_FILES).
Every test runs on both engines (tests/conftest.py, both_engines)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mount, stop_mount

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("both_engines")]

LIMIT = 1 << 53
OLD_TAG = (1 << 23) - 5  # a tag of the old rule (st_ino = tag << 40 | id)


def _inodes(root: Path) -> dict[str, int]:
    """Relative path -> st_ino of everything under ``root`` (lstat, and readdir's d_ino)."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            found[str(path.relative_to(root))] = path.lstat().st_ino
        with os.scandir(directory) as listing:
            for entry in listing:
                assert entry.inode() < LIMIT, entry.path
    return found


def _fill(mount: Mount) -> None:
    for workspace in ("one", "two", "three"):
        (mount.path / workspace).mkdir()
        (mount.path / workspace / "dir").mkdir()
        for i in range(20):
            (mount.path / workspace / "dir" / f"f{i}").write_bytes(b"x" * i)
        os.symlink("dir/f1", mount.path / workspace / "link")


def test_st_ino_below_2_53_distinct_and_stable_across_remount(
    mount_factory: Callable[..., Mount],
) -> None:
    mount = mount_factory()
    _fill(mount)
    before = _inodes(mount.path)
    assert all(ino < LIMIT for ino in before.values())
    assert len(set(before.values())) == len(before)  # distinct, across workspaces too
    os.link(mount.path / "one" / "dir" / "f1", mount.path / "one" / "hard")
    assert (mount.path / "one" / "hard").stat().st_ino == before["one/dir/f1"]
    os.rename(mount.path / "two" / "dir" / "f2", mount.path / "two" / "moved")
    assert (mount.path / "two" / "moved").stat().st_ino == before["two/dir/f2"]
    stop_mount(mount)
    again = _inodes(mount_factory().path)
    assert again["one/dir/f3"] == before["one/dir/f3"]
    assert again["two/moved"] == before["two/dir/f2"]
    assert again["three/link"] == before["three/link"]


def _set_tag(name: str, tag: int) -> None:
    """Write ``name``'s inode tag in-process, as an old kyfs or a copied file left it."""
    from kyfs.engine import open_engine

    engine = open_engine()
    try:
        with engine.using(name) as workspace:
            workspace.set_inode_tag(tag)  # type: ignore[attr-defined]
    finally:
        engine.close()


def test_old_and_duplicate_tags_are_mended_when_the_daemon_starts(
    mount_factory: Callable[..., Mount],
) -> None:
    mount = mount_factory()
    _fill(mount)
    stop_mount(mount)
    _set_tag("one", OLD_TAG)
    _set_tag("two", 77)
    _set_tag("three", 77)
    mount = mount_factory()
    found = _inodes(mount.path)
    assert all(ino < LIMIT for ino in found.values())
    assert len(set(found.values())) == len(found)
    assert "inode tag" in mount.log.read_text()  # the daemon said what it changed


NODE_SCRIPT = r"""
const fs = require('fs'), path = require('path');
const dir = process.argv[1], count = Number(process.argv[2]);  // (-e: no script path)
const seen = new Set();
for (let i = 0; i < count; i++) {
  const file = path.join(dir, 'f' + i);
  fs.writeFileSync(file, '');
  seen.add(fs.statSync(file).ino);
}
let big = 0;
for (const v of seen) if (!Number.isSafeInteger(v)) big++;
console.log(JSON.stringify({distinct: seen.size, unsafe: big}));
"""


# Files test_node_tells_many_files_apart makes, per engine (KYFS_NODE_FILES: every
# engine). Fewer on PostgreSQL: a new empty file there costs about 30 statements, each a
# round-trip to the server (10 s per 1,000 files in CI against 2 s on SQLite), and
# 2,000 files show the same: a file's id is its low bits, so an st_ino over 2**53 (which
# the test also counts) would make neighbouring ids one number and fewer than all distinct.
NODE_FILES = {"sqlite": 10_000, "postgresql": 2_000}


def test_node_tells_many_files_apart(
    mount_factory: Callable[..., Mount], both_engines: str
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    count = int(os.environ.get("KYFS_NODE_FILES", NODE_FILES[both_engines]))
    mount = mount_factory()
    target = mount.path / "default" / "many"
    target.mkdir(parents=True)
    done = subprocess.run(
        [node, "-e", NODE_SCRIPT, str(target), str(count)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'{{"distinct":{count},"unsafe":0}}'
