"""PostgreSQL in a few round trips (issue 27, item 4): what a new file costs on the wire,
counted from libpq's own trace (KYFS_PG_TRACE, kyfs.engine.postgres.trace) through a real
mount, and what pipeline mode must keep: a transaction is still all or nothing, and a
transaction begun on a connection the server cut since its last use still runs.

Counts, never timings: the round trips of a `tar x` per file, those inside transactions
(create, write, chmod, chown, utimens and release: the file's own), and one commit for
the create and one for the close; then every value, mode, owner and mtime as tar left
them, through the mount and through the engine after the unmount. Then the same for an
`rm -rf`: the round trips per file removed, one commit per unlink and rmdir, and every
file in the archive with its history ending in a delete.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from kyfs.core.errors import StorageError
from kyfs.engine.postgres import trace
from kyfs.engine.postgres.connection import TRACE_ENV, PgConnection
from kyfs.engine.postgres.workspace import SQL_CHANGES
from kyfs.engine.sql.history import PRUNE_EVERY
from tests.conftest import Mount, stored_values

FILES = 60  # files of the tar: enough that what the mount costs once does not count
MODES = (0o600, 0o640, 0o644, 0o755, 0o700, 0o444)
# Per new file, measured 2026-12 (docs/design.md, "PostgreSQL in a few round trips"):
# inside transactions 3 (create: 1; close: 2, its reads and its writes with the COMMIT);
# in all 5: with the kernel's LOOKUP of the new name and GETATTR of its directory (whose
# mtime the create changed). Before: about 29 and 42.
TRANSACTION_TRIPS_PER_FILE = 3
TRIPS_PER_FILE = 6
# and one more each time a commit thins its key's history (every PRUNE_EVERY versions)
THINNINGS = FILES // PRUNE_EVERY + 1
# Per file removed by `rm -rf`: inside its one transaction 2 (the key, its directory and a
# history id read with the BEGIN; the writes with the COMMIT); in all 3, with the kernel's
# GETATTR of the directory whose mtime the unlink changed. Before: 4.3 and 6.1.
UNLINK_TRANSACTION_TRIPS_PER_FILE = 2
UNLINK_TRIPS_PER_FILE = 3
# and what rm -rf costs per directory or once, not per file (LOOKUPs and GETATTRs of the
# directories, their READDIRs, statements sent before psycopg prepares them): 57-61 here
RM_RF_ONCE_TRIPS = 80
DIRECTORIES = 3  # x, x/a and x/a/b: an rmdir each, 2 round trips inside its transaction
# A thinning at an unlink reads the settings, then the key's rows: 2 more each.
UNLINK_THINNING_TRIPS = 2


def _watcher(sql: str) -> bool:
    """The change watcher's poll (kyfs.fuse.invalidate): on its own clock, not the files'."""
    return sql.replace("$1", "?") == SQL_CHANGES


def _tree(path: Path) -> dict[str, tuple[bytes, int, int]]:
    """A tar of FILES files in ``a`` and ``a/b`` (no entries for the directories, which
    the test makes first: only files are counted) at ``path``; {name: (value, mode,
    mtime)}."""
    made = {}
    with tarfile.open(path, "w") as tar:
        for n in range(FILES):
            name = f"{'a' if n % 2 else 'a/b'}/f{n:03d}.txt"
            value = (f"file {n}\n" * (n % 7 + 1)).encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(value), MODES[n % len(MODES)]
            info.mtime = 1_600_000_000 + 3_600 * n
            info.uid, info.gid = os.getuid(), os.getgid()
            tar.addfile(info, io.BytesIO(value))
            made[name] = (value, info.mode, info.mtime)
    return made


@pytest.mark.mount
def test_tar_x_on_postgresql_costs_three_round_trips_per_file_and_keeps_everything(
    pg_url: str,
    mount_factory: Callable[..., Mount],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("KYFS_ENGINE", pg_url)
    traces = tmp_path / "traces"
    traces.mkdir()
    monkeypatch.setenv(TRACE_ENV, str(traces))
    expected = _tree(tmp_path / "tree.tar")
    mount = mount_factory()
    target = mount.path / "default" / "x"
    (target / "a" / "b").mkdir(parents=True)
    before = trace.count(traces, _watcher)
    subprocess.run(["tar", "xf", str(tmp_path / "tree.tar"), "-C", str(target)], check=True)
    spent = trace.count(traces, _watcher) - before
    assert spent.commits == 2 * FILES, spent  # a create and a close (with its attributes)
    assert spent.transaction_trips <= TRANSACTION_TRIPS_PER_FILE * FILES + THINNINGS, spent
    assert spent.round_trips <= TRIPS_PER_FILE * FILES, spent
    for name, (value, mode, mtime) in expected.items():
        found = os.stat(target / name)
        assert (found.st_mode, found.st_mtime) == (stat.S_IFREG | mode, mtime), name
        assert (found.st_uid, found.st_gid) == (os.getuid(), os.getgid()), name
        assert (target / name).read_bytes() == value, name
    assert os.stat(target / "a" / "b").st_mode == stat.S_IFDIR | 0o755
    subprocess.run(["fusermount3", "-u", str(mount.path)], check=True)  # all committed
    assert mount.process.wait(timeout=30) == 0
    values = stored_values("default")  # what the engine holds once the daemon is gone
    assert {key: values[key] for key in values if key.startswith("x/")} == {
        f"x/{name}": value for name, (value, _, _) in expected.items()
    }


def test_a_failed_statement_rolls_back_its_whole_pipelined_transaction(pg_url: str) -> None:
    """A statement's error surfaces at a later call (its answer is read later): the
    transaction still commits nothing of it, and the connection serves on."""
    conn = PgConnection(pg_url)
    try:
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("INSERT INTO t VALUES (1)")  # a duplicate: sent, not yet answered
        with pytest.raises(StorageError, match="duplicate key"):
            conn.execute("COMMIT")
        assert conn.in_transaction  # (failed: its caller rolls back)
        conn.execute("ROLLBACK")
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (2)")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # its own insert
        assert conn.execute("UPDATE t SET k = 3 WHERE k = 2").rowcount == 1
        conn.execute("COMMIT")
        assert conn.execute("SELECT k FROM t").fetchall() == [(3,)]
    finally:
        conn.close()


def test_a_transaction_after_a_server_restart_runs_on_a_new_connection(
    pg_cluster: object, pg_url: str
) -> None:
    """A BEGIN sent down a connection the server cut since its last use (a restart): the
    server never answered the batch, so it is sent again on a new connection and the
    transaction runs, as a lone BEGIN ran again before pipelining."""
    conn = PgConnection(pg_url)
    try:
        conn.execute("CREATE TABLE t (k INTEGER)")
        pg_cluster.stop_server()  # type: ignore[attr-defined]
        pg_cluster.start_server()  # type: ignore[attr-defined]
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (7)")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1
        conn.execute("COMMIT")
        assert conn.execute("SELECT k FROM t").fetchall() == [(7,)]
    finally:
        conn.close()


def test_attribute_names_set_by_another_session_are_seen_without_a_query(pg_url: str) -> None:
    """Others' commits to a workspace's history or xattrs bump others_version when their
    notification arrives, not this connection's own; nothing is sent to learn it."""
    import time

    from kyfs.engine.postgres.engine import PgEngine

    engine, peer = PgEngine(pg_url), PgEngine(pg_url)
    try:
        engine.create("w")
        with engine.using("w") as ws:
            ws.set("f", b"v")
            own = ws._conn.others_version()  # type: ignore[attr-defined]
            ws.set_xattr("f", "user.mine", b"1")
            assert ws._conn.others_version() == own  # type: ignore[attr-defined]
            with peer.using("w") as other:
                other.set_xattr("f", "user.theirs", b"2")
            deadline = time.monotonic() + 5
            while ws._conn.others_version() == own and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.001)
            assert ws._conn.others_version() != own  # type: ignore[attr-defined]
            assert ws.xattr_in_use("user.theirs")
    finally:
        engine.close()
        peer.close()


@pytest.mark.mount
def test_rm_rf_on_postgresql_costs_two_round_trips_per_file_and_archives_everything(
    pg_url: str,
    mount_factory: Callable[..., Mount],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("KYFS_ENGINE", pg_url)
    traces = tmp_path / "traces"
    traces.mkdir()
    monkeypatch.setenv(TRACE_ENV, str(traces))
    expected = _tree(tmp_path / "tree.tar")
    mount = mount_factory()
    target = mount.path / "default" / "x"
    (target / "a" / "b").mkdir(parents=True)
    subprocess.run(["tar", "xf", str(tmp_path / "tree.tar"), "-C", str(target)], check=True)
    before = trace.count(traces, _watcher)
    subprocess.run(["rm", "-rf", str(target)], check=True)
    spent = trace.count(traces, _watcher) - before
    assert spent.commits == FILES + DIRECTORIES, spent  # one transaction per unlink, rmdir
    assert spent.transaction_trips <= (
        UNLINK_TRANSACTION_TRIPS_PER_FILE * FILES
        + 2 * DIRECTORIES
        + UNLINK_THINNING_TRIPS * THINNINGS
    ), spent
    assert spent.round_trips <= UNLINK_TRIPS_PER_FILE * FILES + RM_RF_ONCE_TRIPS, spent
    assert not target.exists()
    subprocess.run(["fusermount3", "-u", str(mount.path)], check=True)
    assert mount.process.wait(timeout=30) == 0
    from kyfs.engine import open_engine

    engine = open_engine()  # what the engine holds once the daemon is gone
    try:
        workspace = engine.open("default")
        try:
            assert not [key for key in workspace.keys() if key.startswith("x/")]
            archived = {found.entry.key: found.entry for found in workspace.archived()}
            for name, (value, mode, _) in expected.items():
                key = f"x/{name}"
                assert (archived[key].mode & 0o7777, archived[key].size) == (mode, len(value)), key
                assert workspace.history(key)[-1].action == "delete", key
            assert {"x", "x/a", "x/a/b"} <= set(archived)
            workspace.restore("x/a/f001.txt")  # a value deleted is a value kept
            assert workspace.get("x/a/f001.txt") == expected["a/f001.txt"][0]
        finally:
            workspace.close()
    finally:
        engine.close()
