"""The contract of kyfs.engine.base.Workspace: what the mount and the CLI rely on, for any
engine. Only the interface is used here: no SQL, no files."""

from __future__ import annotations

import os
import stat
import time

import pytest

from kyfs.core.errors import (
    AlreadyExists,
    InvalidInput,
    IsADirectory,
    KeyNotFound,
    NotADirectory,
    NotEmpty,
    NotPermitted,
    SchemaViolation,
)
from kyfs.core.nodes import DIR, LNK, REG, Owner
from kyfs.engine.base import Engine, Workspace


def test_values_round_trip_and_stat(ws: Workspace) -> None:
    value = os.urandom(3 * ws.block_size + 17)
    entry = ws.set("a/b/c", value)
    assert ws.get("a/b/c") == value
    assert entry.kind == REG and entry.size == len(value) and entry.nlink == 1
    assert ws.stat("a").kind == DIR and ws.stat("a/b").is_dir
    assert ws.read(entry.id, ws.block_size - 5, 10) == value[ws.block_size - 5 : ws.block_size + 5]
    assert b"".join(ws.iter_value("a/b/c")) == value
    assert ws.keys() == ["a/b/c"] and ws.keys(glob="a/*") == ["a/b/c"]


def test_owners_are_the_callers(ws: Workspace) -> None:
    entry = ws.create("f", 0o640, owner=Owner(1000, 1001))
    assert (entry.uid, entry.gid, entry.mode) == (1000, 1001, 0o640)
    ws.chown("f", 2000, None)
    assert (ws.stat("f").uid, ws.stat("f").gid) == (2000, 1001)
    assert (ws.set("g", b"x").uid, ws.stat("g").gid) == (os.getuid(), os.getgid())
    ws.mkdir("sg", 0o2775, owner=Owner(0, 50))
    inner = ws.create("sg/f", 0o644, owner=Owner(1000, 1000))
    assert inner.gid == 50  # a setgid directory gives its group
    sub = ws.mkdir("sg/sub", 0o755, owner=Owner(1000, 1000))
    assert sub.gid == 50 and sub.mode & stat.S_ISGID  # and its bit to a subdirectory


def test_hard_links(ws: Workspace) -> None:
    ws.set("one", b"v1")
    linked = ws.link("one", "two")
    assert linked.id == ws.stat("one").id and ws.stat("one").nlink == 2
    ws.set("two", b"v2")
    assert ws.get("one") == b"v2"
    assert ws.keys_of(linked.id) == ["one", "two"]
    ws.delete("one")
    assert ws.get("two") == b"v2" and ws.stat("two").nlink == 1
    assert ws.archived() == []  # a name went, the node lives on
    assert [h.action for h in ws.history("two")][-1] == "set"
    ws.mkdir("d")
    with pytest.raises(NotPermitted):
        ws.link("d", "dirlink")
    with pytest.raises(AlreadyExists):
        ws.link("two", "two")
    ws.delete("two")
    assert [a.entry.key for a in ws.archived()] == ["two"]  # the last name: archived


def test_symlinks(ws: Workspace) -> None:
    entry = ws.symlink("ln", b"../some/where", owner=Owner(7, 8))
    assert entry.kind == LNK and entry.size == len(b"../some/where") and entry.mode == 0o777
    assert ws.readlink("ln") == b"../some/where"
    assert ws.get("ln") == b"../some/where"
    with pytest.raises(InvalidInput):
        ws.readlink(ws.set("plain", b"x").key)
    with pytest.raises(AlreadyExists):
        ws.symlink("plain", b"x")
    assert "ln" in ws.keys()
    ws.set("ln", b"now a value")  # set replaces a link with a regular key
    assert ws.stat("ln").kind == REG and ws.get("ln") == b"now a value"


def test_directory_link_counts(ws: Workspace) -> None:
    top = ws.stat("").nlink
    ws.mkdir("d/e/f")
    assert ws.stat("").nlink == top + 1
    assert ws.stat("d").nlink == 3 and ws.stat("d/e").nlink == 3 and ws.stat("d/e/f").nlink == 2
    ws.set("d/file", b"x")
    assert ws.stat("d").nlink == 3  # files do not count
    ws.rename("d/e", "e2")
    assert ws.stat("d").nlink == 2 and ws.stat("").nlink == top + 2
    ws.rmdir("e2/f")
    assert ws.stat("e2").nlink == 2


def test_times_follow_posix(ws: Workspace) -> None:
    ws.mkdir("d")
    old = 1_000_000_000 * 10**9
    ws.utimens("d", old, old)
    ws.set("d/f", b"x")
    assert ws.stat("d").mtime_ns > old and ws.stat("d").ctime_ns > old  # create
    for change in (
        lambda: ws.delete("d/f"),
        lambda: ws.mkdir("d/sub"),
        lambda: ws.rmdir("d/sub"),
        lambda: ws.symlink("d/ln", b"x"),
    ):
        ws.utimens("d", old, old)
        change()
        assert ws.stat("d").mtime_ns > old
    ws.set("g", b"x")
    for change in (
        lambda: ws.chmod("g", 0o600),
        lambda: ws.chown("g", 1, 1),
        lambda: ws.link("g", "g2"),
    ):
        before = ws.stat("g").ctime_ns
        time.sleep(0.002)
        change()
        assert ws.stat("g").ctime_ns > before
    ws.utimens("g", 5, None)
    assert ws.stat("g").atime_ns == 5
    ws.get("g")
    assert ws.stat("g").atime_ns == 5  # noatime: reads leave it


def test_rename_follows_rename_2(ws: Workspace) -> None:
    ws.set("a", b"A")
    ws.set("b", b"B")
    node = ws.stat("a").id
    ws.rename("a", "b")
    assert ws.get("b") == b"A" and ws.stat("b").id == node
    with pytest.raises(KeyNotFound):
        ws.stat("a")
    ws.link("b", "c")
    ws.rename("b", "c")  # two names of one node: nothing happens
    assert ws.get("b") == ws.get("c") == b"A"
    ws.mkdir("dir/sub")
    with pytest.raises(InvalidInput):
        ws.rename("dir", "dir/sub/x")
    with pytest.raises(IsADirectory):
        ws.rename("c", "dir")
    with pytest.raises(NotADirectory):
        ws.rename("dir", "c")
    ws.mkdir("full/x")
    with pytest.raises(NotEmpty):
        ws.rename("dir", "full")
    ws.rename("dir", "moved")
    assert ws.stat("moved/sub").is_dir


def test_archive_restore_and_teardown(ws: Workspace) -> None:
    ws.set("k", b"value")
    ws.delete("k")
    with pytest.raises(KeyNotFound):
        ws.get("k")
    assert ws.restore("k").key == "k" and ws.get("k") == b"value"
    ws.set("x/y", b"1")
    ws.delete("x/y")
    ws.rmdir("x")
    ws.delete("k")
    assert ws.restore_teardown() == 3 and ws.get("x/y") == b"1"


def test_history_versions_and_restore(ws: Workspace) -> None:
    for text in (b"v1", b"v2", b"v3"):
        ws.set("h", text)
    sets = [h for h in ws.history("h") if h.action == "set"]
    assert [ws.version_value(h.id or 0) for h in sets] == [b"v1", b"v2", b"v3"]
    assert [h.size for h in sets] == [2, 2, 2]
    assert sets[0].id is not None
    ws.restore_version("h", version=sets[0].id)
    assert ws.get("h") == b"v1"


def test_versions_keep_the_most_restrictive_mode_since(ws: Workspace) -> None:
    def modes(key: str) -> list[int | None]:
        return [h.mode for h in ws.history(key) if h.size is not None]

    ws.set("f", b"secret")  # 0644, then made private: the secret's version follows
    ws.chmod("f", 0o600)
    ws.chmod("f", 0o644)  # made public again: what was private stays so
    ws.set("f", b"public")
    assert modes("f") == [0o600, 0o644]
    ws.set("f", b"private", mode=0o640)  # a write that sets the mode narrows too
    assert modes("f") == [0o600, 0o640, 0o640]

    ws.set("g", b"old")  # an editor's save: a private file renamed over the name
    ws.set("g.tmp", b"new", mode=0o600)
    ws.rename("g.tmp", "g")
    assert modes("g") == [0o600, 0o600]

    ws.set("q", b"was public")
    ws.delete("q")
    ws.set("p", b"private", mode=0o600)
    ws.link("p", "q")  # a link onto a name narrows its older versions
    ws.chmod("p", 0o400)  # a chmod narrows every name of the node
    assert modes("q") == [0o400] and modes("p") == [0o400]

    entry = ws.create("open", 0o644)  # an open file's chmod comes with its commit
    ws.commit(entry.id, size=6, valid=0, changes=[(0, b"secret")])
    ws.commit(entry.id, size=6, valid=0, changes=[(0, b"secret")], mode=0o600)
    assert modes("open")[-2:] == [0o600, 0o600]


def test_ttl(ws: Workspace) -> None:
    ws.set("t", b"x", ttl_s=0.01)
    ws.link("t", "t2")
    assert ws.expiry("t") is not None
    time.sleep(0.02)
    assert ws.sweep_expired() == 1
    assert ws.keys() == []  # every name of the node went


def test_schema_rules_refuse_and_change_nothing(ws: Workspace) -> None:
    ws.set_schema("users/*", {"type": "object", "required": ["name"]})
    ws.set("users/a", b'{"name": "A"}')
    with pytest.raises(SchemaViolation):
        ws.set("users/a", b'{"age": 3}')
    assert ws.get("users/a") == b'{"name": "A"}'


def test_search_finds_every_name(ws: Workspace) -> None:
    ws.set("notes/a", b"the jwt token lives here")
    ws.link("notes/a", "notes/b")
    assert [m.key for m in ws.search('"jwt"', 10)] == ["notes/a", "notes/b"]
    ws.delete("notes/a")
    assert [m.key for m in ws.search('"jwt"', 10)] == ["notes/b"]


def test_commit_is_all_or_nothing(ws: Workspace) -> None:
    entry = ws.create("f")
    assert ws.commit(entry.id, size=5, valid=0, changes=[(0, b"hello")])
    assert ws.get("f") == b"hello"
    ws.delete("f")
    assert not ws.commit(entry.id, size=1, valid=0, changes=[(0, b"x")])  # the node is gone


def test_commit_sets_the_attributes_given_and_keeps_the_rest(ws: Workspace) -> None:
    entry = ws.create("f", 0o600)
    assert ws.commit(
        entry.id, size=2, valid=0, changes=[(0, b"hi")], mtime_ns=9_000_000_000,
        mode=0o104755, uid=1234, gid=5678,
    )  # fmt: skip
    stored = ws.stat("f")
    assert (stored.mode, stored.uid, stored.gid) == (0o4755, 1234, 5678)
    assert stored.mtime_ns == 9_000_000_000 and stored.ctime_ns > entry.ctime_ns
    assert ws.commit(entry.id, size=3, valid=2, changes=[(0, b"hi!")])
    again = ws.stat("f")
    assert (again.mode, again.uid, again.gid) == (0o4755, 1234, 5678)


def test_engine_lifecycle(engine: Engine) -> None:
    engine.create("a", owner=Owner(1000, 1000), mode=0o700)
    with engine.using("a") as top:
        assert (top.stat("").uid, top.stat("").mode) == (1000, 0o700)
        top.set("k", b"v")
    engine.rename("a", "b")
    assert engine.names() == ["b"]
    assert engine.info("b").keys == 1
    assert engine.check("b") == ([], [])
    engine.drop("b")
    assert engine.names() == []


def test_index_work_waits_but_searches_see_every_write(ws: Workspace) -> None:
    ws.set("notes/new", b"pending words")
    assert ws.check() == []  # a mark waiting in the queue is no damage
    assert [m.key for m in ws.search('"pending"', 10)] == ["notes/new"]  # drained first
    assert ws.flush_index() == 0
    ws.delete("notes/new")
    assert ws.search('"pending"', 10) == []


def test_changes_name_what_others_and_expiry_changed(engine: Engine, peer: Engine) -> None:
    """Workspace.changes (the mount's cache invalidation): names another connection set,
    renamed or deleted, and names that expired, but not this connection's own writes."""
    engine.create("w")
    with engine.using("w") as ws:
        cursor, names = ws.changes(None)
        assert names == []
        ws.set("own", b"1")
        with peer.using("w") as other:
            other.set("theirs", b"2")
            other.set("moved", b"3")
            other.rename("moved", "there")
        ws.set("brief", b"x")
        ws.set_ttl("brief", 0.001)
        time.sleep(0.01)
        ws.sweep_expired()
        cursor, names = ws.changes(cursor)
        assert set(names) == {"theirs", "moved", "there", "brief"}
        assert ws.changes(cursor) == (cursor, [])


@pytest.mark.parametrize(
    "glob",
    ["*", "a*", "*.txt", "a?c", "[ab]*", "[^a]*", "[]x]*", "d/*/f", "*[0-9]", "a.c", "x[", "A*"],
)
def test_keys_match_globs_as_sqlite_glob(ws: Workspace, glob: str) -> None:
    """keys(glob=...) matches as SQLite's GLOB on every engine: case-sensitive, ``*``
    crosses ``/``, ``[^...]`` negates, ``]`` first in a set is itself, ``.`` is itself."""
    import sqlite3

    stored = ["abc", "a.c", "axc", "b.txt", "]x", "d/e/f", "k9", "Abc", "x["]
    for key in stored:
        ws.set(key, b"v")
    expected = sorted(
        k
        for k in stored
        if sqlite3.connect(":memory:").execute("SELECT ? GLOB ?", (k, glob)).fetchone()[0]
    )
    assert ws.keys(glob=glob) == expected


def test_names_up_to_path_max(ws: Workspace) -> None:
    """A key of 4,095 bytes (Linux's PATH_MAX less the NUL) under 15 directories of 255
    bytes: stored, listed, renamed and removed like any other."""
    parts = [os.urandom(128).hex()[:255] for _ in range(15)]  # incompressible, as pjdfstest's
    directory = "/".join(parts)
    key = directory + "/" + os.urandom(128).hex()[: 4095 - len(directory) - 1]
    assert len(key.encode()) == 4095
    ws.set(key, b"deep")
    assert ws.get(key) == b"deep" and ws.keys() == [key]
    assert [e.key for e in ws.children(directory)] == [key]
    moved = key[:-1] + ("y" if key[-1] != "y" else "x")
    ws.rename(key, moved)
    ws.link(moved, "short")
    assert ws.keys_of(ws.stat("short").id) == [moved, "short"]
    ws.delete(moved)
    assert ws.history(moved)[-1].action == "delete"


def test_wait_for_changes_wakes_on_another_connections_commit(
    request: pytest.FixtureRequest, engine: Engine, peer: Engine
) -> None:
    """Engine.wait_for_changes: PostgreSQL is told of another connection's commit at once
    (LISTEN/NOTIFY); SQLite cannot be and says False after the time (the watcher polls)."""
    told_by_server = request.node.callspec.params["engine"] == "postgresql"
    engine.create("w")
    assert engine.wait_for_changes(0.05) is False  # nothing since it began listening
    with peer.using("w") as other:
        other.set("k", b"v")
    started = time.monotonic()
    assert engine.wait_for_changes(5.0 if told_by_server else 0.1) is told_by_server
    if told_by_server:
        assert time.monotonic() - started < 1.0
    assert engine.wait_for_changes(0.05) is False  # told once per commit


def test_changes_start_where_watching_started(engine: Engine, peer: Engine) -> None:
    """A change another connection makes after the daemon's engine opened the workspace
    (start_watching) but before its watcher first looks is still reported: a CLI `set`
    right after the first use through a mount once stayed stale for 30 s."""
    engine.create("w")
    with engine.using("w") as ws:
        ws.start_watching()
        ws.set("own", b"1")
        with peer.using("w") as other:
            other.set("early", b"2")
        cursor, names = ws.changes(None)
        assert names == []
        assert ws.changes(cursor)[1] == ["early"]


def test_exchange_swaps_two_names_of_any_types(ws: Workspace) -> None:
    """RENAME_EXCHANGE (renameat2(2)): each name then names what the other did, with
    everything below a directory, and directory link counts follow a subdirectory that
    moved between parents."""
    ws.set("a/file", b"file value")
    ws.set("b/dir/x", b"x")
    ws.set("b/dir/deep/y", b"y")
    file_id, dir_id = ws.stat("a/file").id, ws.stat("b/dir").id
    links = (ws.stat("a").nlink, ws.stat("b").nlink)
    ws.exchange("a/file", "b/dir")
    assert ws.stat("a/file").id == dir_id and ws.stat("a/file").is_dir
    assert ws.stat("b/dir").id == file_id and ws.get("b/dir") == b"file value"
    assert ws.get("a/file/x") == b"x" and ws.get("a/file/deep/y") == b"y"
    assert ws.keys("b/dir/") == [] and sorted(ws.keys("a/")) == ["a/file/deep/y", "a/file/x"]
    assert [e.key for e in ws.children("a/file/deep")] == ["a/file/deep/y"]
    assert (ws.stat("a").nlink, ws.stat("b").nlink) == (links[0] + 1, links[1] - 1)
    ws.set("c/d/z", b"z")
    ws.exchange("c", "a/file")  # two directories with entries below both
    assert ws.get("c/x") == b"x" and ws.get("a/file/d/z") == b"z"
    assert ws.keys("c/d/") == [] and ws.check() == []
    with pytest.raises(KeyNotFound):
        ws.exchange("c", "missing")
    with pytest.raises(InvalidInput):
        ws.exchange("c", "c/deep")  # one inside the other
    ws.link("c/x", "c/x2")
    ws.exchange("c/x", "c/x2")  # two names of one node: nothing changes
    assert ws.get("c/x") == b"x" and ws.stat("c/x").nlink == 2
