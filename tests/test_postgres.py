"""The PostgreSQL engine from outside: choosing it (--engine, KYFS_ENGINE, config.toml),
credentials never shown, an unreachable server, FTS5 queries as tsquery, and search
scores that are the same on both engines for the same data. The engine's contract is in
tests/contract and its mount in tests/test_mount.py (both engines)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kyfs.core.errors import InvalidInput, InvalidQuery
from kyfs.engine.postgres.search import to_tsquery
from kyfs.platform import config
from tests.conftest import alive


def kyfs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kyfs", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_engine_setting_precedence_and_refusal(
    kyfs_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config.engine_url() is None  # SQLite by default
    (kyfs_home / "config.toml").write_text('engine = "postgresql://a@/x?host=/run/cfg"\n')
    assert config.engine_url() == "postgresql://a@/x?host=/run/cfg"
    monkeypatch.setenv("KYFS_ENGINE", "sqlite")
    assert config.engine_url() is None  # the environment wins
    monkeypatch.setenv("KYFS_ENGINE", "host=/run/pg dbname=kyfs")
    assert config.engine_url() == "host=/run/pg dbname=kyfs"
    monkeypatch.setenv("KYFS_ENGINE", "mysql://root:hunter2@db/x")
    with pytest.raises(InvalidInput) as info:
        config.engine_url()
    assert "hunter2" not in str(info.value)


def test_an_unreachable_server_is_exit_4_and_the_password_never_shows(tmp_path: Path) -> None:
    url = f"postgresql://kyfs:s3cr3t-pw@/kyfs?host={tmp_path}/nowhere"
    for args in (("--engine", url, "workspaces"), ("set", "k", "v")):
        env = {} if args[0] == "--engine" else {"KYFS_ENGINE": url}
        done = kyfs(*args, env=env)
        assert done.returncode == 4, done.stderr
        assert "s3cr3t-pw" not in done.stderr + done.stdout
        assert "Traceback" not in done.stderr
        assert "cannot connect" in done.stderr


@pytest.fixture
def sql_ascii_url(pg_cluster: object) -> Any:
    """A database made WITH ENCODING 'SQL_ASCII' (what initdb gives under LC_ALL=C)."""
    import psycopg

    base = pg_cluster.url  # type: ignore[attr-defined]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute("CREATE DATABASE ascii_db WITH ENCODING 'SQL_ASCII' TEMPLATE template0"
                      " LC_COLLATE 'C' LC_CTYPE 'C'")  # fmt: skip
    try:
        yield base.replace("/kyfs?", "/ascii_db?")
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS ascii_db WITH (FORCE)")


def test_a_sql_ascii_database_is_refused_with_the_fix(sql_ascii_url: str, tmp_path: Path) -> None:
    """Issue 25: a SQL_ASCII database failed with 'relation meta does not exist' (and a
    TypeError, psycopg giving bytes): it is refused at connect, one line, exit 4, naming
    the encoding and how to make a UTF8 one; nothing is created in it."""
    import psycopg

    mountpoint = tmp_path / "mnt"
    try:
        for args in (("set", "a", "b"), ("get", "a"), ("workspaces",), ("mount", str(mountpoint))):
            done = kyfs(*args, env={"KYFS_ENGINE": sql_ascii_url})
            assert done.returncode == 4, (args, done.stderr)
            lines = done.stderr.splitlines()
            assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
            assert "encoding is SQL_ASCII" in lines[0]
            assert "createdb -E UTF8 -T template0 ascii_db" in lines[0]
    finally:  # the daemon is refused before it mounts; should it ever mount, unmount
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False)
    assert not os.path.ismount(mountpoint)
    with psycopg.connect(sql_ascii_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog',"
            " 'information_schema')"
        ).fetchone()
    assert tables == (0,)


def test_the_cli_works_on_postgresql_and_scores_match_sqlite(pg_url: str) -> None:
    notes = {
        "auth/jwt": "the jwt token is rotated weekly; jwt secrets live in the vault",
        "auth/session": "session token expiry is one hour",
        "docs/readme": "how to rotate a token by hand",
        "misc": "nothing about it here",
    }
    answers = {}
    for engine in ("sqlite", pg_url):
        env = {"KYFS_ENGINE": engine}
        for key, value in notes.items():
            assert kyfs("set", key, value, env=env).returncode == 0
        done = kyfs("search", "token", "--json", env=env)
        assert done.returncode == 0, done.stderr
        answers[engine] = done.stdout
    import json

    def hits(lines: str) -> list[tuple[str, float]]:  # JSON Lines, one hit each
        return [(h["key"], h["score"]) for h in map(json.loads, lines.splitlines())]

    sqlite_hits, pg_hits = hits(answers["sqlite"]), hits(answers[pg_url])
    assert sorted(k for k, _ in sqlite_hits) == ["auth/jwt", "auth/session", "docs/readme"]
    assert pg_hits == sqlite_hits  # the same keys, the same BM25 scores
    done = kyfs("search", "NEAR(a b)", "--raw", env={"KYFS_ENGINE": pg_url})
    assert done.returncode == 2 and "not supported" in done.stderr


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"jwt"', "'jwt'"),
        ('"api token" "jwt"', "(('api' <-> 'token') & 'jwt')"),
        ("jwt OR session NOT expiry", "('jwt' | ('session' & !'expiry'))"),
        ("(a OR b) AND c", "(('a' | 'b') & 'c')"),
        ("tok*", "'tok':*"),
        ('"Café User.name"', "('cafe' <-> 'user' <-> 'name')"),
        ('"a b"*', "('a' <-> 'b':*)"),
    ],
)
def test_fts5_queries_become_tsquery(query: str, expected: str) -> None:
    assert to_tsquery(query) == expected


@pytest.mark.parametrize("query", ["NEAR(a b)", "key:jwt", "^start", "a + b", '"open', "(a", ""])
def test_fts5_queries_postgresql_cannot_run_are_refused(query: str) -> None:
    with pytest.raises(InvalidQuery):
        to_tsquery(query)


@pytest.mark.mount
def test_a_server_that_goes_away_is_eio_and_the_daemon_reconnects(
    pg_cluster: object, pg_url: str, mount_factory: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the server is away, the mount answers EIO and the CLI exits 4, at once (a
    refused connection; a vanished TCP peer takes up to the connect timeout); when it is
    back, the same daemon serves again without a remount, and nothing half written shows."""
    monkeypatch.setenv("KYFS_ENGINE", pg_url)
    mount = mount_factory()  # type: ignore[operator]
    workspace = mount.path / "default"
    (workspace / "kept").write_bytes(b"before")
    pg_cluster.stop_server()  # type: ignore[attr-defined]
    try:
        with pytest.raises(OSError) as info:
            (workspace / "never-read").read_bytes()  # a name the kernel never cached
        assert info.value.errno == 5  # EIO
        with pytest.raises(OSError) as info:
            (workspace / "new").write_bytes(b"x")
        assert info.value.errno == 5
        done = mount.kyfs("get", "kept")
        assert done.returncode == 4 and b"cannot connect" in done.stderr
    finally:
        pg_cluster.start_server()  # type: ignore[attr-defined]
    (workspace / "after").write_bytes(b"back")  # the same daemon, connected again
    assert (workspace / "after").read_bytes() == b"back"
    assert sorted(os.listdir(workspace)) == ["after", "kept"]
    assert mount.kyfs("get", "after").stdout == b"back"


def _rich_workspace(ws: object) -> None:
    """A workspace with every kind of thing a copy must keep."""
    from kyfs.core.nodes import Owner

    w: Any = ws
    w.set("big", os.urandom(3 * w.block_size + 5))
    for version in (b"v1", b"v2", b"v3"):
        w.set("notes/versioned", version)
    w.link("notes/versioned", "notes/hardlink")
    w.symlink("notes/ln", b"../big")
    w.mknod("dev/null", stat.S_IFCHR, 0o666, os.makedev(1, 3))
    w.mknod("dev/fifo", stat.S_IFIFO, 0o600, owner=Owner(1000, 1001))
    w.mknod("dev/gone", stat.S_IFBLK, 0o660, os.makedev(8, 1))
    w.delete("dev/gone")  # an archived device node keeps its number
    w.mkdir("empty/dir", 0o700, owner=Owner(1234, 5678))
    w.create("owned", 0o640, owner=Owner(1000, 1001))
    w.set("brief", b"ttl", ttl_s=3600)
    w.set_xattr("notes/hardlink", "user.mime", b"text/plain")  # extended attributes,
    w.set_xattr("", "trusted.top", bytes(range(256)))  # on the top directory too
    w.set("gone", b"archived value")
    w.set_xattr("gone", "user.archived", b"kept")  # and on an archived node
    w.delete("gone")
    w.utimens("owned", 5, 7)
    w.set_meta("history_days", "7")
    w.set_schema("users/*", {"type": "object"})
    w.create_collection("docs", 3)
    w.put_items("docs", [(f"d{i}", [1, i, -i], {"i": i}, f"doc {i}") for i in range(1500)])
    w.delete_items("docs", ["d7"])


def test_migrate_engine_round_trip_is_lossless(
    pg_url: str, kyfs_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kyfs migrate engine: SQLite -> PostgreSQL -> SQLite (another data directory) keeps
    everything (kyfs.engine.sql.copy.fingerprint: values by SHA-256, names, owners, links,
    times, TTLs, history, archive, settings); and the same st_ino."""
    from kyfs.engine import open_engine_at
    from kyfs.engine.sql.copy import differences, fingerprint

    sqlite = open_engine_at(None)
    sqlite.create("rich")
    with sqlite.using("rich") as ws:
        _rich_workspace(ws)
        before = fingerprint(ws)
        inode = ws.inode(ws.stat("big").id)
    sqlite.close()
    done = kyfs("migrate", "engine", "--from", "sqlite", "--to", pg_url, "--json")
    assert done.returncode == 0, done.stderr
    import json

    report = json.loads(done.stdout)
    assert [(r["workspace"], r["ok"]) for r in report] == [("rich", True)]
    again = kyfs("migrate", "engine", "--from", "sqlite", "--to", pg_url, "-w", "rich")
    assert again.returncode == 0, again.stderr  # there already, equal: a rerun's no-op
    assert "not copied again" in again.stdout
    assert kyfs("-w", "rich", "set", "later", "x").returncode == 0
    changed = kyfs("migrate", "engine", "--from", "sqlite", "--to", pg_url, "-w", "rich")
    assert changed.returncode == 3  # there with other content: refused, nothing copied
    assert kyfs("-w", "rich", "delete", "later").returncode == 0
    monkeypatch.setenv("KYFS_HOME", str(tmp_path / "second-home"))
    back = kyfs("migrate", "engine", "--from", pg_url, "--to", "sqlite", "-w", "rich")
    assert back.returncode == 0, back.stderr
    assert "validated" in back.stdout
    second = open_engine_at(None)
    with second.using("rich") as ws:
        assert differences(before, fingerprint(ws)) == []
        assert ws.inode(ws.stat("big").id) == inode
        (best,) = ws.query_items("docs", [1, 8, -8], 1)
        assert (best.name, best.metadata, best.document) == ("d8", {"i": 8}, "doc 8")
        ws.put_items("docs", [("new", [0, 0, 1], None, None)])  # a new item after the copy
        assert ws.count_items("docs") == 1500
        assert ws.search('"archived"', 5) == []  # an archived value is not live...
        assert [a.entry.key for a in ws.archived()] == ["gone", "dev/gone"]
        assert ws.restore("gone").key == "gone" and ws.get("gone") == b"archived value"
        device = ws.restore("dev/gone")
        assert (device.kind, device.rdev) == (stat.S_IFBLK, os.makedev(8, 1))
        assert ws.get_xattr("gone", "user.archived") == b"kept"
        assert ws.get_xattr("notes/versioned", "user.mime") == b"text/plain"
        assert [m.key for m in ws.search('"ttl"', 5)] == ["brief"]  # index rebuilt
        used = [n["node"][-1] for n in before["names"].values()]
        used += [a[0] for a in before["archived"]]
        ws.set("new", b"x")  # new node ids go on past every id copied, archived ones too
        assert ws.stat("new").id > max(used)
    second.close()
    server = open_engine_at(pg_url)
    with server.using("rich") as ws:
        ws.set("new", b"x")  # the same on PostgreSQL, whose sequences the copy moved on
        assert ws.stat("new").id > max(used)
        assert ws.history("new")[-1].id > max(h[0] for rows in before["history"].values()
                                              for h in rows)  # fmt: skip
    server.close()


def test_a_copy_that_differs_is_found(pg_url: str) -> None:
    """The validation can fail: a value changed in the copy is reported."""
    from kyfs.engine import open_engine_at
    from kyfs.engine.sql.copy import copy_workspace, differences, fingerprint

    source, target = open_engine_at(None), open_engine_at(pg_url)
    try:
        source.create("w")
        target.create("w")
        with source.using("w") as src, target.using("w") as dst:
            _rich_workspace(src)
            copy_workspace(src, dst)
            assert differences(fingerprint(src), fingerprint(dst)) == []
            dst.set("notes/versioned", b"tampered")
            found = differences(fingerprint(src), fingerprint(dst))
            assert "different: notes/versioned" in found and "the history differs" in found
            dst.set_xattr("big", "user.tampered", b"")  # an attribute counts too
            assert "different: big" in differences(fingerprint(src), fingerprint(dst))
    finally:
        source.close()
        target.close()


def test_backups_move_between_engines(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kyfs backup create on PostgreSQL writes the same format as on SQLite (SQLite
    workspace files in a .tar.gz); it restores into PostgreSQL (under another name) and
    into SQLite files, everything kept."""
    from kyfs.engine import open_engine_at
    from kyfs.engine.sql.copy import differences, fingerprint

    server = open_engine_at(pg_url)
    server.create("rich")
    with server.using("rich") as ws:
        _rich_workspace(ws)
        before = fingerprint(ws)
    server.close()
    archive = tmp_path / "b.tar.gz"
    env = {"KYFS_ENGINE": pg_url}
    done = kyfs("backup", "create", "-o", str(archive), "-w", "rich", "-q", env=env)
    assert done.returncode == 0, done.stderr
    assert kyfs("backup", "verify", str(archive)).returncode == 0
    done = kyfs("backup", "restore", str(archive), "-w", "rich", "--as", "again", env=env)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("KYFS_HOME", str(tmp_path / "sqlite-home"))
    done = kyfs("backup", "restore", str(archive), "-w", "rich")  # into SQLite files
    assert done.returncode == 0, done.stderr
    for url in (pg_url, None):
        engine = open_engine_at(url)
        with engine.using("again" if url else "rich") as ws:
            got, expected = fingerprint(ws), before
            if url:  # beside its original: another inode tag (kyfs.core.inodes), all else kept
                assert got["meta"].pop("inode_tag") != before["meta"]["inode_tag"]
                meta = {k: v for k, v in before["meta"].items() if k != "inode_tag"}
                expected = {**before, "meta": meta}
            assert differences(expected, got) == []
        engine.close()


def test_a_throwaway_server_stops_with_nothing_left(pg_cluster: object) -> None:
    """Cluster.stop ends the server (as its own user: pg_ctl refuses root) and removes its
    directory: the tests and the bench leave no server behind."""
    from kyfs.engine.postgres.cluster import Cluster

    cluster = Cluster().start()
    pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    assert alive(pid)
    cluster.stop()
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, "the server is still running"
        time.sleep(0.05)
    assert not cluster.dir.exists()


def test_a_layout_1_workspace_moves_into_the_block_store(pg_url: str) -> None:
    """A schema of layout 1 (fixed 256 KiB blocks, history rows holding whole values) is
    brought to the current layout as it is opened: every value, version and hole reads
    back, versions get their key's mode (layout 3), and nodes a device number of 0
    (layout 4)."""
    import psycopg

    from kyfs.engine.postgres import schema as pg_schema
    from kyfs.engine.postgres.engine import PgEngine

    engine = PgEngine(pg_url)
    try:
        engine.create("old")
        with engine.using("old") as ws:
            ws.set("tmp", b"x")  # the node ids the test uses
            name = ws.schema
    finally:
        engine.close()
    big = os.urandom(300_000)
    versions = [b"first value", b"second, longer value"]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{name}"')
        node = conn.execute("SELECT node FROM entries WHERE key = 'tmp'").fetchone()[0]
        conn.execute("UPDATE entries SET key = 'big', parent = '' WHERE node = %s", (node,))
        conn.execute("UPDATE nodes SET size = %s WHERE id = %s", (len(big) + 100_000, node))
        conn.execute("DROP TABLE blocks, extents, xattrs")  # back to layout 1's tables
        conn.execute(  # layout 7's
            "DROP TABLE vector_spaces, vector_chunks, vector_slots, embed_pending, collection_items"
        )
        conn.execute("DROP TABLE snapshots, snapshot_items, snapshot_xattrs")  # layout 9's
        conn.execute(
            "CREATE TABLE blocks (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " node_id BIGINT NOT NULL, idx BIGINT NOT NULL, data BYTEA NOT NULL,"
            " UNIQUE (node_id, idx))"
        )
        step = 256 * 1024
        for idx, at in ((0, 0), (1, step)):  # a hole after them, up to the size
            conn.execute(
                "INSERT INTO blocks (node_id, idx, data) VALUES (%s, %s, %s)",
                (node, idx, big[at : at + step]),
            )
        conn.execute(
            "ALTER TABLE history DROP COLUMN size, DROP COLUMN pid, DROP COLUMN since_ns,"
            " DROP COLUMN shared, DROP COLUMN mode,"
            " DROP COLUMN source, DROP COLUMN user_name, DROP COLUMN comm"  # layout 8's
        )
        conn.execute("ALTER TABLE history ADD COLUMN value BYTEA")
        conn.execute("ALTER TABLE nodes DROP COLUMN rdev")  # layout 4
        conn.execute("ALTER TABLE archive DROP COLUMN rdev")
        conn.execute("ALTER TABLE nodes DROP COLUMN stored")  # layout 5's
        conn.execute("DELETE FROM history")
        for n, value in enumerate(versions):
            conn.execute(
                "INSERT INTO history (key, action, value, time_ns) VALUES ('big', 'set', %s, %s)",
                (value, n + 1),
            )
        conn.execute("UPDATE meta SET value = '1' WHERE name = 'pg_schema_version'")
    engine = PgEngine(pg_url)
    try:
        with engine.using("old") as ws:
            assert ws.meta()["pg_schema_version"] == str(pg_schema.SCHEMA_VERSION)
            assert ws.get("big") == big + bytes(100_000)
            kept = [h for h in ws.history("big") if h.size is not None]
            assert [ws.version_value(h.id or 0) for h in kept] == versions
            assert [h.mode for h in kept] == [0o644, 0o644]  # layout 3: the key's mode
            assert ws.stat("big").rdev == 0  # layout 4
            assert ws.stat("big").stored == len(big)  # layout 5: the hole costs nothing
            ws.set_xattr("big", "user.layout", b"4")  # layout 6: extended attributes
            assert ws.get_xattr("big", "user.layout") == b"4"
            assert ws.check() == []
    finally:
        engine.close()
