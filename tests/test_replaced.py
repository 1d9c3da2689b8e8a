"""A workspace's ``.db`` replaced or removed under a running daemon (issue 25, item 3).

Real mounts, real programs: the workspace ``ws`` is written through the mount (so the
daemon holds it open, with frames in its WAL), then its file is replaced with ``cp`` over
it (same inode, new bytes), ``mv`` over it (new inode; the old ``-wal`` and ``-shm`` stay
at the name) or removed with ``rm``, while idle or while a writer process keeps writing
through the mount. Afterwards:

- a read through the mount gives the new file's bytes, or an error (EIO, ENOENT), never
  the old file's bytes nor a mix;
- a write whose close(2) returned 0 after the replacement is in the file at the path;
- the file at the path passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kyfs.platform import paths
from tests.conftest import Mount, stop_mount

pytestmark = pytest.mark.mount

KEYS = [f"k{i}" for i in range(8)]
OLD = {key: f"old {key} ".encode() * 300 for key in KEYS}  # 2-3 KiB: several pages
NEW = {key: f"new {key} ".encode() * 250 for key in KEYS}

# Writes w00000, w00001, ... through the mount until told to stop; one line per write:
# its key, whether close(2) returned 0, and the monotonic time it ended.
WRITER = r"""
import os, sys, time
folder, out, stop = sys.argv[1], sys.argv[2], sys.argv[3]
with open(out, "w") as log:
    n = 0
    while not os.path.exists(stop):
        key = f"w{n:05d}"
        ok = True
        try:
            fd = os.open(os.path.join(folder, key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                os.write(fd, key.encode() * 200)
            finally:
                os.close(fd)
        except OSError:
            ok = False
        log.write(f"{key} {int(ok)} {time.monotonic()}\n")
        log.flush()
        n += 1
        time.sleep(0.002)
"""


def _write(folder: Path, values: dict[str, bytes]) -> None:
    for key, value in values.items():
        (folder / key).write_bytes(value)


def _new_file(mount: Mount, tmp_path: Path) -> Path:
    """A standalone workspace file holding NEW (made through the mount as ``other``,
    copied with SQLite's backup API, which writes a file with no WAL beside it)."""
    other = mount.path / "other"
    other.mkdir()
    _write(other, NEW)
    made = tmp_path / "new.db"
    source = sqlite3.connect(f"file:{paths.workspaces_dir() / 'other.db'}?mode=ro", uri=True)
    target = sqlite3.connect(made)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    assert not Path(f"{made}-wal").exists()
    return made


def _replace(how: str, new: Path, target: Path) -> None:
    command = {
        "cp": ["cp", str(new), str(target)],
        "mv": ["mv", str(new), str(target)],
        "rm": ["rm", str(target)],
    }[how]
    subprocess.run(command, check=True)


def _read(path: Path) -> bytes | int:
    """The bytes of ``path`` through the mount, or the errno reading it met."""
    try:
        return path.read_bytes()
    except OSError as exc:
        return exc.errno or -1


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def _stored(path: Path) -> dict[str, bytes]:
    """Every key's value in the workspace file ``path``, read in-process."""
    from kyfs.engine.sqlite.workspace import SqliteWorkspace

    workspace = SqliteWorkspace(path, migrate=False)
    try:
        return {key: workspace.get(key) for key in workspace.keys()}
    finally:
        workspace.close()


def _check_reads(folder: Path, how: str) -> None:
    """Every key reads as the new file has it, or fails; never the old bytes."""
    for key in KEYS:
        got = _read(folder / key)
        if isinstance(got, int):
            assert got in (errno.EIO, errno.ENOENT), (key, errno.errorcode.get(got))
        else:
            assert how != "rm" and got == NEW[key], (key, got[:40])


# cp over the file writes new bytes into the same inode: nothing in the file's identity
# changes, and the daemon's connection still pairs them with the old -wal and -shm (SQLite
# cannot tell, sqlite.org/howtocorrupt.html); not detected yet (docs/design.md, "A
# workspace file replaced under the daemon": use mv, or kyfs backup restore).
_SAME_INODE = pytest.mark.xfail(
    reason="cp over a workspace file in use is not detected (same inode)", strict=False
)
CASES = [
    pytest.param(how, busy, id=f"{'writing' if busy else 'idle'}-{how}", marks=marks)
    for how in ("cp", "mv", "rm")
    for busy in (False, True)
    for marks in [[_SAME_INODE] if how == "cp" else []]
]


@pytest.mark.parametrize(("how", "busy"), CASES)
def test_a_replaced_workspace_file_is_never_mixed_with_its_old_wal(
    mount_factory: Callable[..., Mount], tmp_path: Path, how: str, busy: bool
) -> None:
    mount = mount_factory()
    folder = mount.path / "ws"
    folder.mkdir()
    _write(folder, OLD)
    new = _new_file(mount, tmp_path)
    target = paths.workspaces_dir() / "ws.db"
    stop, log = tmp_path / "stop", tmp_path / "writes.log"
    writer = None
    if busy:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(log), str(stop)])
        time.sleep(0.3)
    else:
        _write(folder, {"last": b"frames in the WAL"})  # the WAL holds frames of the old file
    assert Path(f"{target}-wal").exists()

    _replace(how, new, target)
    replaced_at = time.monotonic()
    if writer is not None:
        time.sleep(0.4)
        stop.touch()
        assert writer.wait(timeout=30) == 0
    time.sleep(0.3)  # the daemon's watcher invalidates the kernel's caches (every 0.25 s)
    _check_reads(folder, how)
    late = _write_after(folder, how)
    time.sleep(1.0)  # the checkpointer folds the WAL in meanwhile (after 0.5 s idle)
    _check_reads(folder, how)

    acknowledged = []
    if writer is not None:
        for line in log.read_text().splitlines():
            key, ok, ended = line.split()
            if ok == "1" and float(ended) > replaced_at:
                acknowledged.append(key)
    stop_mount(mount)  # the daemon closes every workspace

    if how == "rm" and not target.exists():
        assert not acknowledged and late is None, "a write after rm reported success"
        return
    assert _integrity(target) == "ok"
    stored = _stored(target)
    for key in KEYS:
        assert stored.get(key) in (NEW[key], None) if how == "rm" else stored[key] == NEW[key]
    for key in acknowledged:
        assert stored.get(key) == key.encode() * 200, f"{key} acknowledged, not stored"
    if late is not None:
        assert stored.get("late") == late


def _write_after(folder: Path, how: str) -> bytes | None:
    """Write ``late`` through the mount after the replacement; its value when the write
    reported success, None when it failed."""
    value = b"written after the replacement"
    try:
        (folder / "late").write_bytes(value)
    except OSError as exc:
        assert exc.errno in (errno.EIO, errno.ENOENT), exc
        return None
    assert how != "rm" or (paths.workspaces_dir() / "ws.db").exists()
    return value


def test_a_workspace_made_again_after_rm_does_not_take_the_old_wal(
    mount_factory: Callable[..., Mount],
) -> None:
    mount = mount_factory()
    folder = mount.path / "ws"
    folder.mkdir()
    _write(folder, OLD)
    target = paths.workspaces_dir() / "ws.db"
    assert Path(f"{target}-wal").exists()
    target.unlink()
    time.sleep(0.3)
    assert _read(folder / "k0") in (errno.ENOENT, errno.EIO)
    folder.mkdir()
    assert sorted(os.listdir(folder)) == []
    _write(folder, {"fresh": b"fresh"})
    stop_mount(mount)
    assert _integrity(target) == "ok"
    assert _stored(target) == {"fresh": b"fresh"}


def test_a_file_moved_away_under_the_daemon_keeps_its_last_writes(
    mount_factory: Callable[..., Mount], tmp_path: Path
) -> None:
    """``mv ws.db elsewhere`` (a backup by hand, say) while the daemon's WAL holds the
    last writes: the daemon folds them into the moved file through its own descriptors
    before it lets go, so the moved file holds them and is sound; the name is free."""
    mount = mount_factory()
    folder = mount.path / "ws"
    folder.mkdir()
    _write(folder, OLD)
    target = paths.workspaces_dir() / "ws.db"
    away = tmp_path / "away.db"
    _write(folder, {"last": b"frames in the WAL"})
    subprocess.run(["mv", str(target), str(away)], check=True)  # its -wal stays at the name
    assert Path(f"{target}-wal").exists()
    assert _read(folder / "k0") in (errno.ENOENT, errno.EIO)  # the daemon looks: gone
    time.sleep(0.3)
    assert not Path(f"{target}-wal").exists() and not Path(f"{target}-shm").exists()
    stop_mount(mount)
    assert _integrity(away) == "ok"
    assert _stored(away) == {**OLD, "last": b"frames in the WAL"}
