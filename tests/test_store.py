"""The SQLite store of one workspace, on real files in tmp_path."""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from kyfs.core import nodes as nodes_mod
from kyfs.core.errors import (
    AlreadyExists,
    InvalidInput,
    IsADirectory,
    KeyNotFound,
    NotADirectory,
    NotEmpty,
    StorageError,
    ValueTooLarge,
)
from kyfs.engine.sql.values import BUFFER_BLOCK as BLOCK_SIZE
from kyfs.engine.sqlite import schema as migrations
from kyfs.engine.sqlite.workspace import SqliteWorkspace


@pytest.fixture
def store(tmp_path: Path) -> SqliteWorkspace:
    s = SqliteWorkspace(tmp_path / "w.db", create=True)
    yield s
    s.close()


def test_file_is_wal_private_and_versioned(store: SqliteWorkspace) -> None:
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations.SCHEMA_VERSION
    conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        SqliteWorkspace(path)


def test_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError):
        SqliteWorkspace(path)


def test_missing_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        SqliteWorkspace(tmp_path / "gone.db")
    assert not (tmp_path / "gone.db").exists()


def test_set_get_binary_round_trip(store: SqliteWorkspace) -> None:
    value = bytes(range(256)) * 3
    store.set("bin", value)
    assert store.get("bin") == value
    assert store.stat("bin").size == len(value)


def test_multi_block_value_and_reads_at_offsets(store: SqliteWorkspace) -> None:
    value = os.urandom(3 * BLOCK_SIZE + 17)
    store.set("big", value)
    entry = store.stat("big")
    assert store.get("big") == value
    for offset, size in [
        (0, 10),
        (BLOCK_SIZE - 5, 10),
        (2 * BLOCK_SIZE + 3, BLOCK_SIZE),
        (len(value) - 4, 100),
    ]:
        assert store.read(entry.id, offset, size) == value[offset : offset + size]
    assert store.read(entry.id, len(value) + 10, 5) == b""


def test_set_from_stream_with_short_reads(store: SqliteWorkspace) -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            take = 7 if n < 0 else min(7, n)  # a pipe: short reads, never more than asked
            piece, self.data = self.data[:take], self.data[take:]
            return piece

    value = os.urandom(BLOCK_SIZE + 100)
    store.set("s", Trickle(value))  # type: ignore[arg-type]
    assert store.get("s") == value


def test_overwrite_replaces_and_keeps_mode(store: SqliteWorkspace) -> None:
    store.set("k", b"first value that is long")
    store.chmod("k", 0o600)
    store.set("k", b"short")
    assert store.get("k") == b"short"
    assert store.stat("k").mode == 0o600


def test_missing_key(store: SqliteWorkspace) -> None:
    with pytest.raises(KeyNotFound) as info:
        store.get("nope")
    assert info.value.exit_code == 1


def test_parents_are_stored_directories(store: SqliteWorkspace) -> None:
    store.set("a/b/c", b"x")
    assert store.stat("a").is_dir and store.stat("a/b").is_dir
    assert [e.name for e in store.children("")] == ["a"]
    assert [e.name for e in store.children("a/b")] == ["c"]
    store.delete("a/b/c")
    assert store.stat("a/b").is_dir  # directories stay, as on a filesystem
    assert store.keys() == []


def test_key_and_directory_conflicts(store: SqliteWorkspace) -> None:
    store.set("a/b", b"x")
    with pytest.raises(IsADirectory):
        store.set("a", b"y")
    with pytest.raises(NotADirectory):
        store.set("a/b/c", b"y")
    with pytest.raises(IsADirectory):
        store.delete("a")
    with pytest.raises(NotEmpty):
        store.rmdir("a")
    with pytest.raises(AlreadyExists):
        store.mkdir("a")
    with pytest.raises(AlreadyExists):
        store.create("a/b", exclusive=True)


def test_keys_by_prefix(store: SqliteWorkspace) -> None:
    for key in ["user.name", "user.email", "token", "users/x"]:
        store.set(key, b"v")
    assert store.keys("user") == ["user.email", "user.name", "users/x"]
    assert store.keys() == ["token", "user.email", "user.name", "users/x"]
    assert store.count_keys() == 4


def test_rename_replaces_target_atomically(store: SqliteWorkspace) -> None:
    store.set("a", b"new")
    store.set("b", b"old")
    store.rename("a", "b")
    assert store.get("b") == b"new"
    with pytest.raises(KeyNotFound):
        store.stat("a")


def test_rename_directory_moves_every_key(store: SqliteWorkspace) -> None:
    for key in ["d/x", "d/sub/y", "d/sub/deeper/z", "dz", "d0"]:
        store.set(key, key.encode())
    entry_id = store.stat("d/sub/y").id
    store.rename("d", "e/f")
    assert store.keys() == ["d0", "dz", "e/f/sub/deeper/z", "e/f/sub/y", "e/f/x"]
    assert store.get("e/f/sub/y") == b"d/sub/y"
    assert store.stat("e/f/sub/y").id == entry_id
    assert [e.name for e in store.children("e/f/sub")] == ["deeper", "y"]
    with pytest.raises(KeyNotFound):
        store.stat("d")


def test_rename_errors(store: SqliteWorkspace) -> None:
    store.set("d/x", b"1")
    store.set("k", b"2")
    store.mkdir("full")
    store.set("full/y", b"3")
    with pytest.raises(InvalidInput):
        store.rename("d", "d/inside")
    with pytest.raises(IsADirectory):
        store.rename("k", "d")
    with pytest.raises(NotADirectory):
        store.rename("d", "k")
    with pytest.raises(NotEmpty):
        store.rename("d", "full")
    with pytest.raises(KeyNotFound):
        store.rename("nope", "x")
    assert store.get("d/x") == b"1"


def test_commit_truncates_extends_and_leaves_holes(store: SqliteWorkspace) -> None:
    store.set("f", b"A" * (BLOCK_SIZE + 10))
    entry = store.stat("f")
    # Truncated to 5 while open, then one byte written at 2 blocks + 1.
    assert store.commit(entry.id, size=2 * BLOCK_SIZE + 2, valid=5, changes=[(2, b"\0B")])
    data = store.get("f")
    assert data == b"A" * 5 + bytes(2 * BLOCK_SIZE - 5 + 1) + b"B"


def test_commit_to_deleted_entry_is_dropped(store: SqliteWorkspace) -> None:
    entry = store.create("gone")
    store.delete("gone")
    assert store.commit(entry.id, size=3, valid=0, changes=[(0, b"abc")]) is False
    assert store.keys() == []


def test_truncate_grows_with_zeros_and_shrinks(store: SqliteWorkspace) -> None:
    store.set("t", b"hello")
    store.truncate("t", 8)
    assert store.get("t") == b"hello\0\0\0"
    store.truncate("t", 2)
    assert store.get("t") == b"he"


def test_value_size_limit(store: SqliteWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes_mod, "MAX_VALUE_SIZE", 10)
    store.set("ok", b"x" * 10)
    with pytest.raises(ValueTooLarge) as info:
        store.set("ok", b"x" * 11)
    assert info.value.errno == 27  # EFBIG
    assert store.get("ok") == b"x" * 10  # the refused write changed nothing


def test_times_and_modes(store: SqliteWorkspace) -> None:
    entry = store.set("t", b"1")
    store.utimens("t", 1_000_000_000, 2_000_000_000)
    after = store.stat("t")
    assert (after.atime_ns, after.mtime_ns) == (1_000_000_000, 2_000_000_000)
    assert after.created_ns == entry.created_ns
    store.utimens("t", None, 3_000_000_000)
    assert store.stat("t").atime_ns == 1_000_000_000
    store.chmod("t", 0o100600)
    assert store.stat("t").mode == 0o600


def test_two_connections_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SqliteWorkspace(path, create=True).close()
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        s = SqliteWorkspace(path)
        try:
            for i in range(200):
                s.set(f"{prefix}/{i}", f"{prefix}{i}".encode())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = SqliteWorkspace(path)
    assert s.count_keys() == 600
    assert s.get("b/199") == b"b199"
    s.close()


def test_without_autocheckpoint_commits_leave_the_wal_to_engine_checkpoint(
    tmp_path: Path,
) -> None:
    """The daemon's engine (autocheckpoint=False) never folds the WAL in at commit;
    Engine.checkpoint does, once per change."""
    from kyfs.engine.sqlite.engine import SqliteEngine

    engine = SqliteEngine(tmp_path / "ws", cache=True, autocheckpoint=False)
    engine.create("w")
    database = tmp_path / "ws" / "w.db"
    value = os.urandom(8 << 20)  # 2,048 pages: SQLite's own limit is 1,000
    try:
        with engine.using("w") as ws:
            ws.set("big", value)
        assert database.stat().st_size < len(value)  # still in the WAL only
        assert engine.checkpoint(["w"]) == ["w"]
        assert database.stat().st_size > len(value)  # folded into the database
        assert engine.checkpoint(["w"]) == []  # nothing new since
        with engine.using("w") as ws:
            ws.set("small", b"x")
        assert engine.checkpoint(["w", "gone"]) == ["w"]  # a missing one is passed over
        with engine.using("w") as ws:
            assert ws.get("big") == value
    finally:
        engine.close()


def test_by_default_a_big_commit_folds_the_wal_in_itself(tmp_path: Path) -> None:
    store = SqliteWorkspace(tmp_path / "w.db", create=True)
    try:
        store.set("big", os.urandom(8 << 20))
        assert (tmp_path / "w.db").stat().st_size > 8 << 20
    finally:
        store.close()


def test_the_checkpointer_folds_the_wal_in_when_the_mount_pauses() -> None:
    """While requests keep coming (idle 0 s) the Checkpointer folds a workspace at most
    every BUSY_EVERY seconds; once the mount is quiet it folds it in at once."""
    import time

    from kyfs.app import Checkpointer
    from kyfs.engine.sqlite.engine import SqliteEngine
    from kyfs.platform import paths

    daemon = SqliteEngine(cache=True, autocheckpoint=False)  # as the daemon's, kept open
    daemon.create("w")
    database = paths.workspaces_dir() / "w.db"
    try:
        with daemon.using("w") as ws:
            ws.set("big", os.urandom(8 << 20))
        busy = Checkpointer(lambda: ["w"], idle_s=lambda: 0.0)
        busy.INTERVAL, busy.BUSY_EVERY = 0.05, 60.0
        busy.start()
        try:
            time.sleep(0.5)
            assert database.stat().st_size < 8 << 20, "folded in while the mount was busy"
        finally:
            busy.stop()
        busy = Checkpointer(lambda: ["w"], idle_s=lambda: 0.0)
        busy.INTERVAL, busy.BUSY_EVERY = 0.05, 0.3
        busy.start()
        try:
            deadline = time.monotonic() + 5
            while database.stat().st_size < 8 << 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert database.stat().st_size >= 8 << 20, "never folded while the mount was busy"
        finally:
            busy.stop()
        with daemon.using("w") as ws:
            ws.set("more", os.urandom(8 << 20))
        folded = database.stat().st_size
        quiet = Checkpointer(lambda: ["w"], idle_s=lambda: 60.0)
        quiet.INTERVAL = 0.05
        quiet.start()
        try:
            deadline = time.monotonic() + 5
            while database.stat().st_size < folded + (8 << 20) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert database.stat().st_size >= folded + (8 << 20)
        finally:
            quiet.stop()
    finally:
        daemon.close()


def test_close_waits_for_a_thread_holding_the_lock(store: SqliteWorkspace) -> None:
    """The daemon's checkpointer runs PRAGMAs on a cached workspace under its lock while
    unmount closes the engine: close waits for it (a connection closed under a running
    statement crashed the daemon with SIGSEGV, 1 unmount in 6 on a full disk), and the
    holder's next use is a StorageError, never a crash."""
    holding, closed = threading.Event(), threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.lock:
            holding.set()
            release.wait(5)
            store.fold_after(100)  # still open: the close waits

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    closer = threading.Thread(target=lambda: (store.close(), closed.set()))
    closer.start()
    assert not closed.wait(0.3)  # waiting for the holder
    release.set()
    holder.join(5)
    assert closed.wait(5)
    closer.join(5)
    with store.lock, pytest.raises(StorageError):
        store.fold_after(100)
