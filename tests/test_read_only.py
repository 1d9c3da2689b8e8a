"""A read-only data directory (issue 25): the data directory on a small tmpfs, filled,
then remounted read-only (chmod would not stop root). Writes fail with EROFS through the
mount and with one line and exit 4 through the CLI; reads go on."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kyfs.core.errors import EXIT_STORAGE
from tests.conftest import Mount, require_mount


@pytest.fixture
def frozen_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], Path]]:
    """The data directory (KYFS_DATA; KYFS_HOME, with the config and the logs, stays
    writable) on a tmpfs of its own; calling the fixture's value remounts it read-only
    and returns it. Unmounted in teardown, lazily if something still holds it."""
    require_mount()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(data)],
                   check=True)  # fmt: skip
    monkeypatch.setenv("KYFS_DATA", str(data))

    def freeze() -> Path:
        subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
        return data

    try:
        yield freeze
    finally:
        if subprocess.run(["umount", str(data)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(data)], check=False)


def kyfs(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "kyfs", *args], input=input, capture_output=True, timeout=60
    )


def _fill() -> None:
    for args in (("set", "a", "hello"), ("set", "dir/b", "world"), ("create", "other")):
        done = kyfs(*args)
        assert done.returncode == 0, done.stderr


def _refused(done: subprocess.CompletedProcess[bytes]) -> None:
    """One line, exit 4, says read-only, no traceback."""
    assert done.returncode == EXIT_STORAGE, done
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "read-only" in lines[0].lower(), lines


@pytest.mark.mount
def test_the_cli_reads_and_refuses_writes_on_a_read_only_data_directory(
    frozen_data: Callable[[], Path],
) -> None:
    _fill()
    frozen_data()
    got = kyfs("get", "a")
    assert got.returncode == 0 and got.stdout == b"hello", got.stderr
    assert kyfs("get", "dir/b").stdout == b"world"
    listed = kyfs("keys", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(listed.stdout)) == ["a", "dir/b"]
    assert kyfs("search", "hello").returncode == 0  # what was indexed, nothing flushed
    assert kyfs("history", "a").returncode == 0
    assert kyfs("fsck").returncode == 0
    _refused(kyfs("set", "c", "x"))
    _refused(kyfs("set", "a", "changed"))
    _refused(kyfs("delete", "a"))
    _refused(kyfs("create", "third"))
    _refused(kyfs("drop", "other", "--yes"))
    assert kyfs("get", "a").stdout == b"hello"


@pytest.mark.mount
def test_the_mount_answers_erofs_and_reads_on_a_read_only_data_directory(
    frozen_data: Callable[[], Path], mount_factory: Callable[..., Mount]
) -> None:
    _fill()
    frozen_data()
    mount = mount_factory()
    ws = mount.path / "default"
    assert (ws / "a").read_bytes() == b"hello"
    assert (ws / "dir" / "b").read_bytes() == b"world"
    assert sorted(os.listdir(mount.path)) == ["default", "other", "shared"]
    attempts: list[Callable[[], object]] = [
        lambda: (ws / "new").write_bytes(b"x"),
        lambda: (ws / "a").write_bytes(b"changed"),
        lambda: (ws / "a").unlink(),
        lambda: (ws / "d").mkdir(),
        lambda: (mount.path / "third").mkdir(),
        lambda: (ws / "a").rename(ws / "moved"),
        lambda: os.utime(ws / "a", (1, 1)),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS, info.value
    assert (ws / "a").read_bytes() == b"hello"
    log = (mount.home / "state" / "kyfs.log").read_text()
    assert "workspace default: key new: create answered EROFS" in log, log


def test_sqlite_readonly_is_read_only_storage(tmp_path: Path) -> None:
    """SQLITE_READONLY ("attempt to write a readonly database") is EROFS, exit 4, on any
    file system; an OSError EROFS, EACCES or EPERM on the data directory too."""
    import sqlite3

    from kyfs.core.errors import ReadOnlyStorage, storage_error
    from kyfs.engine.sqlite.connection import convert

    db = tmp_path / "w.db"
    sqlite3.connect(db).close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        with pytest.raises(sqlite3.Error) as info:
            conn.execute("CREATE TABLE t (x)")
    finally:
        conn.close()
    error = convert(info.value, tmp_path)
    assert isinstance(error, ReadOnlyStorage) and error.errno == errno.EROFS
    assert error.exit_code == EXIT_STORAGE
    for number in (errno.EROFS, errno.EACCES, errno.EPERM):
        refused = storage_error(OSError(number, os.strerror(number), str(db)))
        assert isinstance(refused, ReadOnlyStorage) and str(db) in str(refused)
    assert type(storage_error(OSError(errno.EIO, "I/O error"))).__name__ == "StorageError"
