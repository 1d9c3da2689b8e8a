"""Full-text search: the index, quoting, ranking across workspaces, the CLI and /.search."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from kyfs import search
from kyfs.cli import cli
from kyfs.core.errors import InvalidQuery
from kyfs.core.nodes import MARK_END, MARK_START
from kyfs.core.tokens import INDEX_VALUE_MAX, tokenize
from kyfs.engine.sqlite import schema as migrations
from kyfs.engine.sqlite.connection import unpack_text
from kyfs.engine.sqlite.engine import SqliteEngine
from kyfs.engine.sqlite.workspace import SqliteWorkspace
from kyfs.platform import paths
from tests.conftest import Mount


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteWorkspace]:
    s = SqliteWorkspace(tmp_path / "w.db", create=True)
    yield s
    s.close()


def keys_of(store: SqliteWorkspace, text: str, raw: bool = False) -> list[str]:
    return [m.key for m in store.search(search.build_query(text, raw), 50)]


def test_tokenize_matches_unicode61() -> None:
    assert tokenize("Café user.name jwt_token ÜBER 42abc") == [
        "cafe", "user", "name", "jwt", "token", "uber", "42abc",
    ]  # fmt: skip
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5 (a)")
    conn.execute("INSERT INTO t VALUES ('Café user.name jwt_token ÜBER 42abc')")
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab (t, 'row')")
    assert sorted(tokenize("Café user.name jwt_token ÜBER 42abc")) == [
        row[0] for row in conn.execute("SELECT term FROM v ORDER BY term")
    ]


def test_keys_and_text_values_are_indexed_binary_by_key_only(store: SqliteWorkspace) -> None:
    store.set("auth/jwt", b"the signing key of the token")
    store.set("notes", "café au lait".encode())
    store.set("blob/token", b"token\x00\xff\xfe")
    store.set("big", b"token " * (INDEX_VALUE_MAX // 6 + 1))
    assert keys_of(store, "jwt") == ["auth/jwt"]  # the key is indexed
    assert keys_of(store, "signing") == ["auth/jwt"]  # and the value
    assert keys_of(store, "cafe") == ["notes"]  # diacritics folded
    assert sorted(keys_of(store, "token")) == ["auth/jwt", "blob/token"]  # binary: key only


def test_index_follows_overwrites_renames_and_deletes(store: SqliteWorkspace) -> None:
    store.set("k", b"old words here")
    store.set("k", b"new words")
    assert keys_of(store, "old") == []  # overwritten: the old text is gone from the index
    assert keys_of(store, "new") == ["k"]
    store.rename("k", "dir/renamed")
    assert keys_of(store, "renamed") == ["dir/renamed"]
    store.set("dir/other", b"new too")
    store.rename("dir", "moved")
    assert sorted(keys_of(store, "moved")) == ["moved/other", "moved/renamed"]
    store.delete("moved/renamed")
    assert keys_of(store, "new") == ["moved/other"]
    store.restore("moved/renamed")
    assert sorted(keys_of(store, "new")) == ["moved/other", "moved/renamed"]
    entry = store.create("opened")  # what an open file commits
    store.commit(entry.id, size=5, valid=0, changes=[(0, b"fresh")])
    assert keys_of(store, "fresh") == ["opened"]
    assert store.check() == []


def test_quoting_and_phrases() -> None:
    assert search.build_query('jwt "api token"') == '"jwt" "api token"'
    assert search.build_query('a"b OR c*') == '"ab" "OR" "c"*'  # a prefix stays one
    assert search.build_query("AND ( NOT") == '"AND" "NOT"'
    with pytest.raises(InvalidQuery):
        search.build_query(" ( ) ")
    assert search.build_query("x OR y", raw=True) == "x OR y"


def test_quoted_words_are_anded_and_phrases_kept(store: SqliteWorkspace) -> None:
    store.set("a", b"api token rotation")
    store.set("b", b"token for the api")
    store.set("c", b"api only")
    assert sorted(keys_of(store, "api token")) == ["a", "b"]
    assert keys_of(store, '"api token"') == ["a"]
    assert keys_of(store, "OR") == []  # a word, not an operator
    assert sorted(keys_of(store, "token OR only", raw=True)) == ["a", "b", "c"]
    with pytest.raises(InvalidQuery):
        store.search("AND (", 5)


def _workspace(workspaces: SqliteEngine, name: str, items: dict[str, str]) -> None:
    workspaces.create(name)
    s = workspaces.open(name)
    for key, value in items.items():
        s.set(key, value.encode())
    s.close()


def test_ranking_is_comparable_across_workspaces() -> None:
    w = SqliteEngine()
    try:
        # "rare" is rare overall but common in "crowded": FTS5's per-workspace bm25
        # would rank crowded's hit low; over the union it ranks by term frequency.
        _workspace(w, "crowded", {f"k{i}": "rare filler words" for i in range(30)})
        _workspace(w, "small", {"once": "rare rare rare", "noise": "nothing here"})
        results = search.search(["crowded", "small"], "rare", limit=5)
        assert results.errors == {}
        assert (results.hits[0].workspace, results.hits[0].key) == ("small", "once")
        scores = [h.score for h in results.hits]
        assert scores == sorted(scores, reverse=True) and len(set(scores[1:])) == 1
        assert MARK_START + "rare" + MARK_END in results.hits[0].snippet
        # The same search, one workspace at a time, gives the same scores.
        alone = search.search(["small"], "rare", limit=1)
        assert alone.hits[0].key == "once"
    finally:
        w.close()


def test_one_broken_workspace_does_not_stop_the_others() -> None:
    w = SqliteEngine()
    try:
        for name in ("a1", "a2", "a3"):
            _workspace(w, name, {"k": f"shared word {name}"})
        _workspace(w, "broken", {"k": "shared word"})
        paths.workspace_file("broken").write_bytes(b"garbage" * 1000)
        results = search.search(["a1", "broken", "a2", "a3"], "shared", limit=10)
        assert sorted(h.workspace for h in results.hits) == ["a1", "a2", "a3"]
        assert list(results.errors) == ["broken"]
    finally:
        w.close()


def test_cli_search() -> None:
    r = CliRunner()
    r.invoke(cli, ["use", "alpha", "--create"])
    r.invoke(cli, ["set", "auth/jwt", "the jwt token is signed"])
    r.invoke(cli, ["set", "unrelated", "nothing"])
    r.invoke(cli, ["create", "beta"])
    r.invoke(cli, ["set", "-w", "beta", "api", "jwt token jwt token"])
    out = r.invoke(cli, ["search", "jwt token"])
    assert out.exit_code == 0 and out.output.startswith("alpha/auth/jwt")
    assert "\x1b[" not in out.output  # not a terminal: no colour
    colored = r.invoke(cli, ["search", "jwt", "--color"])
    assert "\x1b[1;31mjwt\x1b[0m" in colored.output
    lines = r.invoke(cli, ["search", "jwt token", "--all", "--json"]).output.splitlines()
    found = [json.loads(line) for line in lines]
    assert {(f["workspace"], f["key"]) for f in found} == {("alpha", "auth/jwt"), ("beta", "api")}
    assert all(set(f) == {"workspace", "key", "score", "snippet"} for f in found)
    assert r.invoke(cli, ["search", "jwt", "-w", "beta", "--keys-only"]).output == "beta/api\n"
    none = r.invoke(cli, ["search", "absent", "--all"])
    assert none.exit_code == 0 and none.output == ""
    bad = r.invoke(cli, ["search", "jwt AND (", "--raw"])
    assert bad.exit_code == 2 and "invalid search query" in bad.output
    assert r.invoke(cli, ["keys", "--glob", "auth/*"]).output == "auth/jwt\n"


def test_cli_search_reports_a_broken_workspace_and_answers() -> None:
    r = CliRunner()
    r.invoke(cli, ["use", "good", "--create"])
    r.invoke(cli, ["set", "k", "findme"])
    r.invoke(cli, ["create", "bad"])
    paths.workspace_file("bad").write_bytes(b"garbage" * 1000)
    out = r.invoke(cli, ["search", "findme", "--all", "--keys-only"])
    assert out.stdout == "good/k\n"
    assert "cannot search workspace bad" in out.stderr
    assert out.exit_code == 4


def test_migration_indexes_a_workspace_made_before_search(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.m001_entries_and_blocks(conn)
    migrations.m002_archive(conn)
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO entries (key, parent, is_dir, mode, size, created_ns, mtime_ns, ctime_ns,"
        " atime_ns) VALUES ('legacy/note', 'legacy', 0, 420, 11, 0, 0, 0, 0)"
    )
    conn.execute(
        "INSERT INTO entries (key, parent, is_dir, mode, size, created_ns, mtime_ns, ctime_ns,"
        " atime_ns) VALUES ('legacy', '', 1, 493, 0, 0, 0, 0, 0)"
    )
    conn.execute(
        "INSERT INTO blocks (entry_id, idx, data) VALUES (1, 0, CAST('hello world' AS BLOB))"
    )
    conn.close()
    s = SqliteWorkspace(path)
    try:
        assert keys_of(s, "hello") == ["legacy/note"]
        assert s.check() == []
    finally:
        s.close()


def test_fsck_notices_and_rebuilds_a_damaged_index() -> None:
    w = SqliteEngine()
    try:
        _workspace(w, "w", {"a": "alpha words", "b": "beta words"})
        with w.using("w") as indexed:
            assert indexed.flush_index() == 2  # writes only marked them; this writes the rows
        conn = sqlite3.connect(paths.workspace_file("w"))
        conn.create_function("kyfs_text", 1, unpack_text)  # what the triggers call
        conn.execute("DELETE FROM search_text WHERE key = 'a'")  # the triggers keep FTS in sync
        rowid = conn.execute("SELECT id FROM search_text WHERE key = 'b'").fetchone()[0]
        conn.execute("INSERT INTO search_index (search_index, rowid, key, value) "
                     "VALUES ('delete', ?, 'b', 'beta words')", (rowid,))  # fmt: skip
        conn.commit()
        conn.close()
        problems, _ = w.check("w")
        assert any("missing from the search index" in p for p in problems)
        assert any("missing from the full-text index" in p for p in problems)
        problems, done = w.check("w", repair=True)
        assert problems == [] and "rebuilt the search index" in done
        s = w.open("w")
        assert sorted(keys_of(s, "words")) == ["a", "b"]
        s.close()
    finally:
        w.close()


@pytest.mark.mount
def test_search_directory_in_the_mount(mounted: Mount) -> None:
    root = mounted.path
    (root / "default" / "auth").mkdir()
    (root / "default" / "auth" / "jwt").write_text("the jwt token is signed")
    (root / "other").mkdir()
    (root / "other" / "api.token").write_text("jwt token jwt token")
    (root / "other" / "plain").write_text("nothing to see")
    query = root / ".search" / "jwt token"
    names = sorted(os.listdir(query))
    assert names == ["01-other-api.token", "02-default-auth_jwt"]
    assert os.readlink(query / names[1]) == "../../default/auth/jwt"
    cat = subprocess.run(f'cat "{query}"/01-*', shell=True, capture_output=True, check=True)
    assert cat.stdout == b"jwt token jwt token"
    assert ".search" not in os.listdir(root)
    grep = subprocess.run(["grep", "-rl", "jwt", str(root)], capture_output=True, check=True)
    assert sorted(grep.stdout.decode().split()) == [
        str(root / "default" / "auth" / "jwt"),
        str(root / "other" / "api.token"),
    ]
    with pytest.raises(OSError) as info:
        (query / "new").write_text("x")
    assert info.value.errno == 30  # EROFS
    assert os.listdir(root / ".search" / "absent words") == []


def test_counting_tokens_matches_the_tokenizer() -> None:
    from kyfs.core.tokens import count_tokens

    samples = [
        "", "a", "user.name", "a_b__c  d-e", "x" * 300, "Café naïve ☃ façade",
        "e\u0301cole ÉCOLE", "tab\tnew\nline\r\x0bvt", "ABC123def", "émoji 🙂 ok",
        Path(__file__).read_text(),
    ]  # fmt: skip
    for text in samples:
        assert count_tokens(text) == len(tokenize(text)), text[:30]


@pytest.mark.mount
def test_the_daemon_indexes_in_the_background(mounted: Mount) -> None:
    """Writes through the mount only mark their keys; the daemon's indexer thread writes
    the index rows without any search asking (the queue empties by itself)."""
    for n in range(50):
        (mounted.path / "default" / f"f{n}").write_text(f"background words {n}")
    db = sqlite3.connect(paths.workspace_file("default"))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = db.execute("SELECT count(*) FROM index_pending").fetchone()[0]
            indexed = db.execute("SELECT count(*) FROM search_text").fetchone()[0]
            if pending == 0 and indexed == 50:
                break
            time.sleep(0.1)
        assert (pending, indexed) == (0, 50)
    finally:
        db.close()


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(
            st.sampled_from("aZ09 _-.\t\n\x0b\x0c/"),
            st.characters(codec="utf-8"),
            st.sampled_from("éÉ\u0301ß—“”…½①ﬁ☃🙂\u00a0\u2028"),
        )
    )
)
def test_counting_tokens_matches_the_tokenizer_on_any_text(text: str) -> None:
    """Mixed text: only the runs holding a non-ASCII character take the full path; the
    count must be the tokenizer's whatever the mix (separators, marks, ligatures)."""
    from kyfs.core.tokens import count_tokens

    assert count_tokens(text) == len(tokenize(text))


def _pending(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM index_pending").fetchone()[0])
    finally:
        conn.close()


def _wait_until(check, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_background_indexer_yields_to_a_busy_mount_but_not_for_long() -> None:
    """While requests keep coming (idle 0 s) the indexer waits, up to MAX_WAIT; when the
    mount is quiet it indexes at once. Search never depends on it (it drains first)."""
    from kyfs.app import BackgroundIndexer
    from kyfs.platform import paths

    engine = SqliteEngine()
    engine.create("w")
    with engine.using("w") as workspace:
        workspace.set("note", b"written while the mount is busy")
    engine.close()
    path = paths.workspaces_dir() / "w.db"
    assert _pending(path) == 1

    busy = BackgroundIndexer(idle_s=lambda: 0.0)
    busy.INTERVAL, busy.MAX_WAIT = 0.05, 1.5
    busy.start()
    try:
        time.sleep(0.5)
        assert _pending(path) == 1, "indexed while the mount was busy"
        assert _wait_until(lambda: _pending(path) == 0), "waited past MAX_WAIT"
    finally:
        busy.stop()

    engine = SqliteEngine()
    with engine.using("w") as workspace:
        workspace.set("later", b"written while the mount is quiet")
    engine.close()
    assert _pending(path) == 1
    quiet = BackgroundIndexer(idle_s=lambda: 60.0)
    quiet.INTERVAL = 0.05
    quiet.start()
    try:
        assert _wait_until(lambda: _pending(path) == 0, timeout=5.0)
    finally:
        quiet.stop()


def test_the_background_indexer_lives_through_a_foreign_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error that is no kyfs error (psycopg's bytes on a SQL_ASCII database met a
    TypeError; any bug) is logged with its traceback and the thread goes on."""
    from kyfs.app import BackgroundIndexer
    from kyfs.engine.sqlite.workspace import SqliteWorkspace
    from kyfs.platform import paths

    engine = SqliteEngine()
    engine.create("w")
    with engine.using("w") as workspace:
        workspace.set("note", b"indexed after the error")
    engine.close()
    path = paths.workspaces_dir() / "w.db"
    original = SqliteWorkspace.flush_index
    failures = []

    def flaky(self: SqliteWorkspace, limit: int | None = None) -> int:
        if not failures:
            failures.append(1)
            raise TypeError("not a kyfs error")
        return original(self, limit)

    monkeypatch.setattr(SqliteWorkspace, "flush_index", flaky)
    indexer = BackgroundIndexer(idle_s=lambda: 60.0)
    indexer.INTERVAL = 0.05
    indexer.start()
    try:
        assert _wait_until(lambda: _pending(path) == 0, timeout=5.0)
    finally:
        indexer.stop()
    assert failures and "indexing w failed" in caplog.text and "TypeError" in caplog.text
