"""Nothing unrecoverable: the archive of deleted keys, the trash of dropped workspaces, fsck."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kyfs.cli import cli
from kyfs.core.errors import AlreadyExists, KeyNotFound, WorkspaceExists, WorkspaceNotFound
from kyfs.engine import open_engine
from kyfs.engine.sql.values import BUFFER_BLOCK as BLOCK_SIZE
from kyfs.engine.sqlite import schema as migrations
from kyfs.engine.sqlite.engine import SqliteEngine
from kyfs.engine.sqlite.workspace import SqliteWorkspace
from kyfs.platform import config, paths
from tests.conftest import Mount


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteWorkspace]:
    s = SqliteWorkspace(tmp_path / "w.db", create=True)
    yield s
    s.close()


@pytest.fixture
def workspaces() -> Iterator[SqliteEngine]:
    w = open_engine()  # as the CLI and the daemon get it: with the configured retention
    yield w
    w.close()


def _fill(workspaces: SqliteEngine, name: str, items: dict[str, bytes]) -> None:
    store = workspaces.open(name)
    try:
        for key, value in items.items():
            store.set(key, value)
    finally:
        store.close()


# --- the archive --------------------------------------------------------------------------
def test_deleted_key_waits_in_the_archive_and_comes_back(store: SqliteWorkspace) -> None:
    value = os.urandom(BLOCK_SIZE + 99)
    store.set("a/secret", value)
    store.delete("a/secret")
    with pytest.raises(KeyNotFound):
        store.get("a/secret")
    archived = store.archived("a/secret")
    assert len(archived) == 1 and archived[0].entry.size == len(value)
    entry = store.restore("a/secret")
    assert store.get("a/secret") == value and entry.key == "a/secret"
    assert store.archived() == []
    with pytest.raises(KeyNotFound):
        store.restore("a/secret")


def test_restore_refuses_to_overwrite_unless_forced(store: SqliteWorkspace) -> None:
    store.set("k", b"old")
    store.delete("k")
    store.set("k", b"new")
    with pytest.raises(AlreadyExists):
        store.restore("k")
    store.restore("k", force=True)
    assert store.get("k") == b"old"
    store.restore("k", force=True)  # the replaced one was archived in turn
    assert store.get("k") == b"new"


def test_rename_over_a_key_archives_the_replaced_value(store: SqliteWorkspace) -> None:
    store.set("draft", b"draft")
    store.set("final", b"precious")
    store.rename("draft", "final")
    assert store.get("final") == b"draft"
    assert [a.entry.key for a in store.archived()] == ["final"]
    store.delete("final")
    store.restore("final")  # the newest archived "final" is the renamed draft
    assert store.get("final") == b"draft"


def test_archive_is_purged_after_retention(store: SqliteWorkspace) -> None:
    store.set("k", b"v" * 10)
    store.delete("k")
    import time

    assert store.purge_archive(time.time_ns() - 10**12) == 0  # not old enough
    assert store.purge_archive(time.time_ns() + 1) == 1
    assert store.archived() == []
    assert store.check() == []  # no orphan blocks left behind


def test_retention_comes_from_config(workspaces: SqliteEngine) -> None:
    workspaces.create("w")
    _fill(workspaces, "w", {"k": b"v"})
    s = workspaces.open("w")
    s.delete("k")
    s.close()
    s = workspaces.open("w")  # default 15 days: still there
    assert len(s.archived()) == 1
    s.close()
    config.save({"archive_retention_days": 0})
    s = workspaces.open("w")
    assert s.archived() == []
    s.close()


# --- the trash ----------------------------------------------------------------------------
def test_drop_goes_to_trash_and_comes_back(workspaces: SqliteEngine) -> None:
    workspaces.create("alpha")
    _fill(workspaces, "alpha", {"k": b"v", "d/x": b"y"})
    trashed = workspaces.drop("alpha")
    assert trashed.parent == paths.trash_dir()
    assert workspaces.names() == []
    [item] = workspaces.trash()
    assert item.name == "alpha" and item.size > 0
    name, restored = workspaces.restore_trash("alpha")
    assert (name, restored) == ("alpha", 0)
    s = workspaces.open("alpha")
    assert s.get("d/x") == b"y"
    s.close()
    assert workspaces.trash() == []
    with pytest.raises(WorkspaceNotFound):
        workspaces.restore_trash("alpha")


def test_restore_under_another_name_and_conflicts(workspaces: SqliteEngine) -> None:
    workspaces.create("alpha")
    workspaces.drop("alpha")
    workspaces.create("alpha")
    with pytest.raises(WorkspaceExists):
        workspaces.restore_trash("alpha")
    assert workspaces.restore_trash("alpha", "alpha2")[0] == "alpha2"
    assert workspaces.names() == ["alpha", "alpha2"]


def test_restore_after_rm_r_brings_back_what_the_teardown_deleted(
    workspaces: SqliteEngine,
) -> None:
    workspaces.create("proj")
    _fill(workspaces, "proj", {"gone-before": b"deleted on purpose"})
    s = workspaces.open("proj")
    s.delete("gone-before")
    s.close()
    _fill(workspaces, "proj", {"a/b/c": b"1", "a/d": b"2", "top": b"3"})
    s = workspaces.open("proj")
    s.mkdir("empty")
    # what rm -r does: every key, then the directories, deepest first
    for key in ("a/b/c", "a/d", "top"):
        s.delete(key)
    for directory in ("a/b", "a", "empty"):
        s.rmdir(directory)
    s.close()
    workspaces.drop("proj", only_if_empty=True)
    _, restored = workspaces.restore_trash("proj")
    assert restored == 6  # 3 keys, 3 directories
    s = workspaces.open("proj")
    assert s.keys() == ["a/b/c", "a/d", "top"]
    assert s.get("a/b/c") == b"1" and s.stat("empty").is_dir
    assert [a.entry.key for a in s.archived()] == ["gone-before"]  # not part of the rm -r
    s.close()


def test_empty_trash(workspaces: SqliteEngine) -> None:
    workspaces.create("a")
    workspaces.drop("a")
    assert workspaces.empty_trash(older_than_s=3600) == []
    assert [t.name for t in workspaces.empty_trash()] == ["a"]
    assert workspaces.trash() == []
    assert list(paths.trash_dir().iterdir()) == []


# --- fsck ---------------------------------------------------------------------------------
def test_fsck_passes_a_sound_workspace(workspaces: SqliteEngine) -> None:
    workspaces.create("w")
    _fill(workspaces, "w", {"k": os.urandom(3 * BLOCK_SIZE)})
    assert workspaces.check("w") == ([], [])


def test_fsck_finds_and_repairs_logical_damage(workspaces: SqliteEngine) -> None:
    workspaces.create("w")
    _fill(workspaces, "w", {"a/b": b"v", "big": os.urandom(2 * BLOCK_SIZE)})
    conn = sqlite3.connect(paths.workspace_file("w"))
    some_block = conn.execute("SELECT min(id) FROM blocks").fetchone()[0]
    conn.execute("INSERT INTO extents (owner, pos, block) VALUES (9999, 0, ?)", (some_block,))
    conn.execute("INSERT INTO extents (owner, pos, block) VALUES (-9999, 0, 424242)")
    conn.execute("UPDATE blocks SET refs = refs + 5 WHERE id = ?", (some_block,))
    conn.execute(
        "UPDATE nodes SET size = 10 WHERE id = (SELECT node FROM entries WHERE key = 'big')"
    )
    conn.execute("DELETE FROM entries WHERE key = 'a'")
    conn.commit()
    conn.close()
    problems, _ = workspaces.check("w")
    assert any("extents that belong to no value" in p for p in problems)
    assert any("extents of no block" in p for p in problems)
    assert any("reference count differs" in p for p in problems)
    assert any("nodes with no name" in p for p in problems)  # the node of 'a' lost its name
    assert any("past the size" in p for p in problems)
    assert any("parent directory is missing" in p for p in problems)
    problems, done = workspaces.check("w", repair=True)
    assert problems == [] and len(done) >= 4
    assert any("counted again the references" in d for d in done)
    s = workspaces.open("w")
    assert s.get("a/b") == b"v" and s.stat("a").is_dir
    s.close()


def test_fsck_notices_a_corrupted_copy(workspaces: SqliteEngine) -> None:
    workspaces.create("w")
    _fill(workspaces, "w", {f"k{i:04d}": os.urandom(2000) for i in range(300)})
    s = workspaces.open("w")
    s.checkpoint()
    s.close()
    path = paths.workspace_file("w")
    data = bytearray(path.read_bytes())
    for page in range(2, len(data) // 4096, 3):  # scribble over every third page
        data[page * 4096 + 100 : page * 4096 + 400] = os.urandom(300)
    path.write_bytes(bytes(data))
    problems, _ = workspaces.check("w")
    assert problems


def test_fsck_notices_a_wrong_schema_version(workspaces: SqliteEngine) -> None:
    workspaces.create("w")
    conn = sqlite3.connect(paths.workspace_file("w"))
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    problems, _ = workspaces.check("w")
    assert len(problems) == 1
    assert (
        f"schema version is 1, but its schema is version {migrations.SCHEMA_VERSION}"
        in (problems[0])
    )
    assert workspaces.check("w", repair=True)[0] == []


# --- the CLI ------------------------------------------------------------------------------
def run(*args: str, input: str | None = None) -> object:
    return CliRunner().invoke(cli, list(args), input=input)


def test_cli_restore_archive_trash_fsck() -> None:
    r = CliRunner()
    assert r.invoke(cli, ["use", "proj", "--create"]).exit_code == 0
    r.invoke(cli, ["set", "k", "v"])
    r.invoke(cli, ["delete", "k"])
    listed = json.loads(r.invoke(cli, ["archive", "--json"]).output)
    assert [(x["key"], x["size"]) for x in listed] == [("k", 1)]
    assert r.invoke(cli, ["restore", "k"]).exit_code == 0
    assert r.invoke(cli, ["get", "k"]).output == "v"
    assert r.invoke(cli, ["restore", "k"]).exit_code == 1
    assert r.invoke(cli, ["fsck"]).exit_code == 0
    assert "proj: ok" in r.invoke(cli, ["fsck", "proj"]).output
    assert r.invoke(cli, ["drop", "proj", "--yes"]).exit_code == 0
    trash = json.loads(r.invoke(cli, ["trash", "--json"]).output)
    assert [t["name"] for t in trash] == ["proj"]
    assert r.invoke(cli, ["trash", "restore", "proj"]).exit_code == 0
    assert r.invoke(cli, ["get", "k"]).output == "v"
    r.invoke(cli, ["drop", "proj", "--yes"])
    assert r.invoke(cli, ["trash", "empty"], input="n\n").exit_code == 1
    assert r.invoke(cli, ["trash", "empty", "--yes"]).exit_code == 0
    assert json.loads(r.invoke(cli, ["trash", "--json"]).output) == []
    r.invoke(cli, ["create", "broken"])
    paths.workspace_file("broken").write_bytes(b"not a database at all" * 500)
    result = r.invoke(cli, ["fsck"])
    assert result.exit_code == 4
    assert "broken:" in result.output and "Traceback" not in result.output


@pytest.mark.mount
def test_rm_r_through_the_mount_then_trash_restore(mounted: Mount) -> None:
    root = mounted.path
    tree = Path(__file__).resolve().parent
    (root / "proj").mkdir()
    subprocess.run(["cp", "-r", str(tree), str(root / "proj" / "tests")], check=True)
    (root / "proj" / "empty-dir").mkdir()
    count = sum(1 for p in (root / "proj").rglob("*") if p.is_file())
    subprocess.run(["rm", "-r", str(root / "proj")], check=True)
    assert not (root / "proj").exists()
    done = mounted.kyfs("trash", "restore", "proj")
    assert done.returncode == 0, done.stderr
    assert (root / "proj" / "empty-dir").is_dir()
    subprocess.run(["diff", "-r", str(tree), str(root / "proj" / "tests")], check=True)
    assert sum(1 for p in (root / "proj").rglob("*") if p.is_file()) == count


@pytest.mark.mount
def test_a_flipped_byte_on_disk_is_eio_for_its_key_alone(kyfs_home: Path, tmp_path: Path) -> None:
    """One byte flipped inside a stored block on disk: reading that key through the
    mount fails with EIO (never wrong bytes) and the daemon's log names the workspace
    and the key; every other key reads fine; kyfs fsck names the key and exits 4."""
    import errno
    import sys

    from tests.conftest import require_mount, start_mount, stop_mount

    require_mount()
    victim = os.urandom(50_000)  # random: stored as it is, so its bytes are in the file
    run = [sys.executable, "-m", "kyfs"]
    subprocess.run([*run, "set", "victim"], input=victim, check=True, capture_output=True)
    subprocess.run([*run, "set", "other", "fine"], check=True, capture_output=True)
    db = paths.workspace_file("default")  # the CLI folded the WAL in as it closed
    data = bytearray(db.read_bytes())
    # 64 bytes of it lie whole on one page for one of these starts (an overflow page
    # holds 1,020 bytes of a 1 KiB page: a slice can straddle two)
    at = max(data.find(victim[start : start + 64]) for start in range(20_000, 22_000, 200))
    assert at > 0, "the value is not in the database file"
    data[at + 10] ^= 0x04
    db.write_bytes(bytes(data))
    mount = start_mount(tmp_path / "mnt", kyfs_home, tmp_path / "daemon.log")
    try:
        with pytest.raises(OSError) as info:
            (mount.path / "default" / "victim").read_bytes()
        assert info.value.errno == errno.EIO
        assert (mount.path / "default" / "other").read_bytes() == b"fine"
        log = mount.log.read_text()
        assert "workspace" in log and "default" in log and "key victim" in log
        done = subprocess.run([*run, "fsck", "default"], capture_output=True, text=True)
        assert done.returncode == 4
        assert "damaged blocks" in done.stdout and "victim" in done.stdout
        got = subprocess.run([*run, "get", "victim"], capture_output=True)
        assert got.returncode == 4 and got.stdout == b""  # not a byte of it
    finally:
        stop_mount(mount, check_log=False)


def _break_overflow_chains(db: Path) -> None:
    """Zero the next-page pointer of every overflow page of the blocks table: SQLite then
    finds a value's chain too short and says "database disk image is malformed" (a
    StorageError, not a DamagedBlock: no checksum of kyfs's is involved)."""
    with sqlite3.connect(db) as probe:
        size = probe.execute("PRAGMA page_size").fetchone()[0]
        query = "SELECT pageno FROM dbstat WHERE name = 'blocks' AND pagetype = 'overflow'"
        pages = [row[0] for row in probe.execute(query)]
    probe.close()
    assert pages, "no overflow page to break"
    data = bytearray(db.read_bytes())
    for page in pages:
        data[(page - 1) * size : (page - 1) * size + 4] = bytes(4)
    db.write_bytes(bytes(data))


@pytest.mark.mount
def test_eio_of_a_malformed_workspace_is_logged_where_status_says(
    kyfs_home: Path, tmp_path: Path
) -> None:
    """Issue 25: the mount answered EIO for a malformed workspace file and the daemon's
    log stayed empty. Every EIO now logs a line naming the workspace, the key and the
    cause, in the log file that `kyfs status` names; repeats are rate-limited."""
    import errno
    import sys

    from tests.conftest import require_mount, start_mount, stop_mount

    require_mount()
    run = [sys.executable, "-m", "kyfs"]
    subprocess.run([*run, "set", "victim"], input=os.urandom(50_000), check=True)
    subprocess.run([*run, "set", "other", "fine"], check=True)
    _break_overflow_chains(paths.workspace_file("default"))
    mount = start_mount(tmp_path / "mnt", kyfs_home, tmp_path / "daemon.log")
    try:
        for _ in range(5):  # the same cause again and again: one line
            with pytest.raises(OSError) as info:
                (mount.path / "default" / "victim").read_bytes()
            assert info.value.errno == errno.EIO
        assert (mount.path / "default" / "other").read_bytes() == b"fine"
        status = subprocess.run(
            [*run, "status", str(mount.path), "--json"], capture_output=True, check=True
        )
        log_file = Path(json.loads(status.stdout)["log_file"])
        assert log_file == paths.log_file()
        text = subprocess.run([*run, "status", str(mount.path)], capture_output=True).stdout
        assert f"log: {log_file}".encode() in text
        lines = [
            line
            for line in log_file.read_text().splitlines()
            if "workspace default: key victim: " in line and "answered EIO" in line
        ]
        assert lines and "malformed" in lines[0], log_file.read_text()
        assert " WARNING " in lines[0]
        assert len(lines) == 1, lines  # the repeats within 10 s were held back
    finally:
        stop_mount(mount, check_log=False)
