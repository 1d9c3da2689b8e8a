"""``kyfs fork`` on a file system with reflinks (issue 29: "fork ... O(metadata)"): on XFS
(and btrfs) the fork's file is a clone of its source's (FICLONE), so it adds almost
nothing to the disk whatever the workspace's size, and the two still never see each
other's later writes. ``kyfs backup create`` stages its snapshots the same way.

Each test makes a real XFS file system in a loop device (root, ``mkfs.xfs`` from
Debian's xfsprogs: `make system-deps`) and points KYFS_HOME into it; where the machine
cannot (no loop device, not root), the tests skip, and the copy path (tests/test_fork.py)
still runs everywhere."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kyfs
from kyfs.platform import paths
from tests.conftest import value_digests
from tests.test_fork import kill_forks

MIB = 1 << 20
IMAGE_BYTES = 1536 * MIB  # sparse: XFS wants 300 MB at least


@pytest.fixture
def xfs_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """KYFS_HOME on a fresh XFS file system (reflink=1, xfsprogs' default) in a loop
    device, unmounted at the end whatever happens."""
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        pytest.skip("needs root and mkfs.xfs (xfsprogs) for a loop-mounted XFS")
    image, mountpoint = tmp_path / "xfs.img", tmp_path / "xfs"
    mountpoint.mkdir()
    with image.open("wb") as out:
        out.truncate(IMAGE_BYTES)
    subprocess.run(["mkfs.xfs", "-q", str(image)], check=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
    try:
        home = mountpoint / "kyfs-home"
        home.mkdir()
        monkeypatch.setenv("KYFS_HOME", str(home))
        yield home
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        image.unlink(missing_ok=True)


def used_bytes(home: Path) -> int:
    """Bytes in use on the file system of ``home`` (statvfs), after a sync."""
    os.sync()
    found = os.statvfs(home)
    return (found.f_blocks - found.f_bfree) * found.f_frsize


def fork(*args: str) -> subprocess.CompletedProcess[str]:
    """``kyfs fork ARGS`` as a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "kyfs", "fork", *args],
                          capture_output=True, text=True)  # fmt: skip


def test_a_fork_shares_its_sources_blocks_and_lives_apart(xfs_home: Path) -> None:
    rng = random.Random(29)
    with kyfs.open("src", create=True) as ws:
        for number in range(48):
            ws.set(f"data/v{number:02}", rng.randbytes(MIB))
        ws.set("note", "first")
        ws.snapshot("base")
        ws.set("note", "second")
    source = value_digests("src")
    snapshot = value_digests("src", "base")
    before = used_bytes(xfs_home)
    made = fork("src", "fork")
    assert made.returncode == 0, made.stderr
    added = used_bytes(xfs_home) - before
    assert added < 2 * MIB, f"the fork added {added} bytes: a copy, not a clone"
    assert value_digests("fork") == source
    assert value_digests("fork", "base") == snapshot  # history and snapshots come along
    with kyfs.open("fork") as ws:
        ws.set("data/v00", b"changed in the fork")
        ws.delete("data/v01")
        ws.set("new", "only in the fork")
    with kyfs.open("src") as ws:
        ws.set("note", "third")  # and a write to the source does not reach the fork
    assert value_digests("src", "base") == snapshot
    with kyfs.open("fork") as ws:
        assert ws.get("note") == b"second"
    expected = dict(source, note=value_digests("src")["note"])
    assert value_digests("src") == expected
    # a fork of a snapshot is a clone too, restored to the snapshot in place
    before = used_bytes(xfs_home)
    assert fork("src@base", "old").returncode == 0
    assert used_bytes(xfs_home) - before < 2 * MIB
    assert value_digests("old") == snapshot
    assert not list((xfs_home / "ops").iterdir())  # nothing staged is left behind


def test_a_fork_takes_commits_still_in_the_wal_and_none_half_made(xfs_home: Path) -> None:
    """The source's last commits sit in its WAL (a connection holds it open, so nothing
    folds them in): the clone carries them. A writer commits values meanwhile: the fork
    holds each value whole, old or new, and passes SQLite's integrity check."""
    with kyfs.open("src", create=True) as ws:
        for number in range(20):
            ws.set(f"k{number}", value(number, 0))
        ws.set("marker", "in the WAL only")
        wal = paths.workspaces_dir() / "src.db-wal"
        assert wal.stat().st_size > 100_000  # commits not folded into the database
        assert fork("src", "f0").returncode == 0
        with kyfs.open("f0") as made:
            assert made.get("marker") == b"in the WAL only"
        writing = xfs_home / "writing"
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(writing)],
                                  cwd=Path(__file__).parent.parent)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not writing.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert writing.exists(), "the writer never wrote"
            for number in range(1, 3):
                assert fork("src", f"f{number}").returncode == 0
        finally:
            writer.kill()
            writer.wait()
    whole = {value(n, version) for n in range(20) for version in (0, 1)}
    for number in range(3):
        name = f"f{number}"
        with kyfs.open(name) as ws:
            values = [ws.get(f"k{n}") for n in range(20)]
        assert all(value in whole for value in values), name
        conn = sqlite3.connect(paths.workspaces_dir() / f"{name}.db")
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()


def value(number: int, version: int) -> bytes:
    """Value ``version`` (0 or 1) of key ``k{number}``: 300 kB that do not compress."""
    return random.Random(number * 2 + version).randbytes(300_000)


# Rewrites k0..k19 with their other values, one commit each, over and over, until killed.
WRITER = """
import pathlib, sys
import kyfs
from tests.test_fork_reflink import value
with kyfs.open("src") as ws:
    while True:
        for version in (1, 0):
            for n in range(20):
                ws.set(f"k{n}", value(n, version))
                pathlib.Path(sys.argv[1]).touch()  # it is writing
"""


def test_a_killed_clone_fork_is_finished_or_undone(xfs_home: Path) -> None:
    """SIGKILL at random moments of ``kyfs fork`` on XFS, as tests/test_fork.py does on
    a copy: the fork is whole or absent afterwards, nothing big is left behind."""
    kill_forks(xfs_home, int(os.environ.get("KYFS_KILLS", "6")), earliest=0.05)


def test_a_backup_stages_clones_and_restores_every_byte(xfs_home: Path) -> None:
    """``kyfs backup create`` on XFS, where each workspace's snapshot is staged as a
    clone: the archive verifies, and a restore under another name gives every key's
    bytes as they were at the backup, commits still in the source's WAL included."""
    rng = random.Random(25)
    with kyfs.open("src", create=True) as ws:
        for number in range(24):
            ws.set(f"data/v{number:02}", rng.randbytes(MIB))
        ws.set("note", "in the WAL only")  # the connection stays open: the WAL holds it
        source = value_digests("src")
        archive = xfs_home.parent / "backup.tar.gz"
        create = [sys.executable, "-m", "kyfs", "backup", "create", "-o", str(archive), "--quiet"]
        made = subprocess.run(create, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        ws.set("note", "after the backup")
    kyfs_cli = [sys.executable, "-m", "kyfs", "backup"]
    assert subprocess.run([*kyfs_cli, "verify", str(archive)], capture_output=True).returncode == 0
    restored = subprocess.run([*kyfs_cli, "restore", str(archive), "-w", "src", "--as", "copy"],
                              capture_output=True, text=True)  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert value_digests("copy") == source
    assert not list((xfs_home / "ops").iterdir())


def test_a_clone_is_whole_or_not_made(tmp_path: Path) -> None:
    """kyfs.platform.reflink.clone where tmp_path lies (ext4 here: not made; XFS or btrfs:
    the same bytes), and never over an existing file."""
    from kyfs.platform import reflink

    source, target = tmp_path / "source", tmp_path / "target"
    source.write_bytes(random.Random(1).randbytes(200_000))
    if reflink.clone(source, target):
        assert target.read_bytes() == source.read_bytes()
    else:
        assert not target.exists()
    with pytest.raises(FileExistsError):
        reflink.clone(source, source)
    assert source.read_bytes() == random.Random(1).randbytes(200_000)
