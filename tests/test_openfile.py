"""The open-file write buffer over a real store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kyfs.engine.sql.values import BUFFER_BLOCK as BLOCK_SIZE
from kyfs.engine.sqlite.workspace import SqliteWorkspace
from kyfs.vfs import openfile
from kyfs.vfs.openfile import OpenFile


@pytest.fixture
def store(tmp_path: Path) -> SqliteWorkspace:
    s = SqliteWorkspace(tmp_path / "w.db", create=True)
    yield s
    s.close()


def _open(store: SqliteWorkspace, key: str, tmp_path: Path) -> OpenFile:
    entry = store.create(key)
    return OpenFile(store, entry.id, entry.size, tmp_path / "spill")


def test_writes_are_buffered_until_commit(store: SqliteWorkspace, tmp_path: Path) -> None:
    f = _open(store, "k", tmp_path)
    f.write(0, b"hello ")
    f.write(6, b"world")
    assert f.read(0, 100) == b"hello world"  # read-your-writes through the mount
    assert store.get("k") == b""  # the CLI sees nothing before close
    f.commit()
    assert store.get("k") == b"hello world"
    assert not f.dirty


def test_partial_overwrite_keeps_stored_bytes(store: SqliteWorkspace, tmp_path: Path) -> None:
    value = os.urandom(2 * BLOCK_SIZE + 50)
    store.set("k", value)
    entry = store.stat("k")
    f = OpenFile(store, entry.id, entry.size, tmp_path)
    f.write(BLOCK_SIZE - 2, b"XXXX")
    expected = value[: BLOCK_SIZE - 2] + b"XXXX" + value[BLOCK_SIZE + 2 :]
    assert f.read(0, len(value)) == expected
    f.commit()
    assert store.get("k") == expected


def test_sparse_write_reads_zeros(store: SqliteWorkspace, tmp_path: Path) -> None:
    f = _open(store, "k", tmp_path)
    f.write(3 * BLOCK_SIZE + 1, b"Z")
    assert f.size == 3 * BLOCK_SIZE + 2
    assert f.read(0, 10) == bytes(10)
    f.commit()
    assert store.get("k") == bytes(3 * BLOCK_SIZE + 1) + b"Z"


def test_truncate_then_extend_never_shows_old_bytes(store: SqliteWorkspace, tmp_path: Path) -> None:
    store.set("k", b"S" * (BLOCK_SIZE * 2))
    entry = store.stat("k")
    f = OpenFile(store, entry.id, entry.size, tmp_path)
    f.truncate(3)
    f.write(BLOCK_SIZE + 5, b"!")
    expected = b"SSS" + bytes(BLOCK_SIZE + 2) + b"!"
    assert f.read(0, 2 * BLOCK_SIZE) == expected
    f.commit()
    assert store.get("k") == expected


def test_truncate_shrinks_buffered_block(store: SqliteWorkspace, tmp_path: Path) -> None:
    f = _open(store, "k", tmp_path)
    f.write(0, b"abcdef")
    f.truncate(2)
    f.truncate(4)
    assert f.read(0, 10) == b"ab\0\0"
    f.commit()
    assert store.get("k") == b"ab\0\0"


def test_large_writes_spill_and_stay_exact(
    store: SqliteWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openfile, "MEMORY_BLOCKS", 2)
    f = _open(store, "big", tmp_path)
    value = os.urandom(6 * BLOCK_SIZE + 123)
    step = 100_000
    for offset in range(0, len(value), step):
        f.write(offset, value[offset : offset + step])
    assert len(f._mem) <= 2 and f._spilled  # the rest went to the spill file
    assert f.read(BLOCK_SIZE - 10, 20) == value[BLOCK_SIZE - 10 : BLOCK_SIZE + 10]
    f.truncate(5 * BLOCK_SIZE)  # drops spilled blocks past the cut, keeps slots apart
    f.write(5 * BLOCK_SIZE, b"tail")
    f.commit()
    assert store.get("big") == value[: 5 * BLOCK_SIZE] + b"tail"
    f.close()


def test_clean_reads_see_changes_made_elsewhere(store: SqliteWorkspace, tmp_path: Path) -> None:
    store.set("k", b"old")
    entry = store.stat("k")
    f = OpenFile(store, entry.id, entry.size, tmp_path)
    store.set("k", b"changed by the CLI")
    assert f.read(0, 100) == b"changed by the CLI"
    f.write(0, b"C")  # the first change starts from what is stored now
    f.commit()
    assert store.get("k") == b"Changed by the CLI"


def test_commit_after_delete_is_dropped(store: SqliteWorkspace, tmp_path: Path) -> None:
    f = _open(store, "k", tmp_path)
    f.write(0, b"data")
    store.delete("k")
    f.commit()
    assert store.keys() == []


def test_a_failed_commit_is_final(store: SqliteWorkspace, tmp_path: Path) -> None:
    """close(2) or fsync(2) that answered an error leaves the key as it was, then and at
    every later flush (the buffered changes are dropped, as Linux drops dirty pages)."""
    from kyfs.core.errors import StorageError

    store.set("k", b"before")
    entry = store.stat("k")
    f = OpenFile(store, entry.id, entry.size, tmp_path / "spill")
    real_commit = store.commit
    calls = []

    def locked_once(*args: object, **kwargs: object) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise StorageError("database is locked")  # another process held the write lock
        return real_commit(*args, **kwargs)  # type: ignore[arg-type]

    store.commit = locked_once  # type: ignore[method-assign]
    f.write(0, b"AFTER!!")
    with pytest.raises(StorageError):
        f.commit()  # what close() returns: EIO
    assert not f.dirty and f.read(0, 100) == b"before"
    f.commit()  # a later flush or the release: nothing of the failed write lands
    assert store.get("k") == b"before"
    f.write(0, b"x")  # the file goes on working
    f.commit()
    assert store.get("k") == b"xefore"


def test_all_open_files_share_one_memory_budget(
    store: SqliteWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many files are open, what they keep in memory stays under the daemon's
    budget (the rest spills), every byte still reads back, and closing gives it back."""
    budget = openfile.MemoryBudget(10 * BLOCK_SIZE)
    monkeypatch.setattr(openfile, "BUDGET", budget)
    files, values = [], []
    for n in range(8):
        f = _open(store, f"k{n}", tmp_path)
        value = os.urandom(6 * BLOCK_SIZE + n)
        for at in range(0, len(value), 4096):
            f.write(at, value[at : at + 4096])
            assert budget.used <= budget.limit
        assert len(f._mem) <= openfile.MEMORY_BLOCKS
        files.append(f)
        values.append(value)
    assert budget.used == budget.limit  # spent: later blocks went to spill files
    assert all(f.read(0, len(v)) == v for f, v in zip(files, values, strict=True))
    for n, f in enumerate(files):
        f.commit()
        f.close()
        assert store.get(f"k{n}") == values[n]
    assert budget.used == 0
