"""The set of workspaces in one PostgreSQL database: list, create, drop, rename, open.

The catalog ``kyfs.workspaces`` (kyfs.engine.postgres.schema) names each workspace's
schema. Every change to the set is one transaction on the catalog under an advisory lock
(``LOCK_CLASS``, 0), so two daemons or CLI commands never create, rename or drop at once,
and, PostgreSQL's DDL being transactional, a workspace is never seen half made or half
dropped. A rename changes the catalog only: a connection open on the workspace's schema
goes on serving it under its new name, as an open SQLite file follows its rename. A drop
moves the workspace to the trash (its row gets ``dropped_ns``; the schema stays until the
trash is emptied).

So the cross-process lock SQLite needs around every use by name is not needed here:
:meth:`PgEngine.shared` holds nothing. A daemon's cached workspace is checked against the
catalog when it is opened by name (one indexed query), so a workspace renamed or dropped
by another machine is noticed at its next use.

Thread-safety: as kyfs.engine.sqlite.engine: one engine shared by the daemon's threads,
a mutex around the cache and the catalog connection, each workspace under its own lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import psycopg

from kyfs.core import inodes
from kyfs.core.errors import (
    InvalidInput,
    NotEmpty,
    StorageError,
    WorkspaceExists,
    WorkspaceNotFound,
)
from kyfs.core.names import check_stored_name
from kyfs.core.nodes import DIR_MODE, Owner
from kyfs.engine.base import TrashedWorkspace, WorkspaceInfo
from kyfs.engine.postgres import schema
from kyfs.engine.postgres.connection import PgConnection, connect, redact
from kyfs.engine.postgres.workspace import LOCK_CLASS, PgWorkspace, move_sequences
from kyfs.engine.sql.history import cache_ttl
from kyfs.engine.sql.nodes import process_owner
from kyfs.engine.sweep import Sweeper
from kyfs.platform import paths

log = logging.getLogger(__name__)

_LIVE = "SELECT id, schema_name FROM kyfs.workspaces WHERE name = ? AND dropped_ns IS NULL"
_ALL_LIVE = "SELECT name, schema_name FROM kyfs.workspaces WHERE dropped_ns IS NULL"
_TAG_OF = "SELECT value FROM \"{schema}\".meta WHERE name = 'inode_tag'"
_SET_TAG = "UPDATE \"{schema}\".meta SET value = ? WHERE name = 'inode_tag'"


class PgEngine:
    """The workspaces of one PostgreSQL database.

    Args:
        url: a ``postgresql://`` URL or a libpq connection string; credentials only from
            it or libpq's own sources (PGPASSWORD, PGSERVICE, ~/.pgpass).
        cache: keep workspaces open between uses (the daemon).
        retention_s: the archive retention in seconds (None: keep), read at each open.

    Raises:
        StorageError: (EIO, exit 4) the server cannot be reached.
    """

    def __init__(
        self,
        url: str,
        *,
        cache: bool = False,
        retention_s: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.url = url
        self._cache_enabled = cache
        self._retention_s = retention_s
        self._cache: dict[str, PgWorkspace] = {}
        self._mutex = threading.RLock()  # the cache and the catalog connection
        self._sweeper = Sweeper(cache)
        # The local data directory: the mount's statfs and its root's mtime read it.
        self.directory = paths.workspaces_dir()
        paths.make_private_dir(self.directory)
        self._catalog = PgConnection(url)
        self._listener: psycopg.Connection[Any] | None = None  # wait_for_changes's own
        self._listening = False  # the listener is up: catalog NOTIFYs clear the cache
        self._catalog_cache: dict[str, tuple[int, str]] = {}  # name -> (id, schema)
        self._ensure_catalog()

    def __repr__(self) -> str:
        return f"PgEngine({redact(self.url)})"

    def describe(self) -> str:
        """Where the workspaces live, without credentials."""
        return redact(self.url)

    # --- the catalog -----------------------------------------------------------------------
    @contextmanager
    def _changing(self) -> Iterator[PgConnection]:
        """One catalog transaction under the catalog's advisory lock; this engine's cache
        of the catalog is forgotten."""
        with self._mutex:
            self._catalog_cache.clear()
            self._catalog.execute("BEGIN")
            try:
                self._catalog.execute("SELECT pg_advisory_xact_lock(?, 0)", (LOCK_CLASS,))
                yield self._catalog
                self._catalog.execute("COMMIT")
            except BaseException:
                if self._catalog.in_transaction:
                    self._catalog.execute("ROLLBACK")
                raise

    # --- inode tags (kyfs.core.inodes) ---------------------------------------------------
    @staticmethod
    def _stored_tags(conn: PgConnection) -> dict[str, tuple[str, int]]:
        """name -> (schema, inode tag) of every live workspace, read in the catalog
        transaction ``conn`` (a schema without a numeric tag is left out)."""
        found = {}
        for name, schema_name in conn.execute(_ALL_LIVE).fetchall():
            row = conn.execute(_TAG_OF.format(schema=schema_name)).fetchone()
            try:
                found[name] = (schema_name, int(row[0]))
            except (TypeError, ValueError):
                continue
        return found

    def _apply_tags(self, conn: PgConnection, changes: dict[str, tuple[str, int]]) -> None:
        """Write each change (name -> (schema, new tag)) in the catalog transaction."""
        for schema_name, tag in changes.values():
            conn.execute(_SET_TAG.format(schema=schema_name), (str(tag),))

    def _tags_taken(self, changes: dict[str, tuple[str, int]]) -> None:
        """After the commit: workspaces this engine holds open take their new tags."""
        with self._mutex:
            for name, (schema_name, tag) in changes.items():
                cached = self._cache.get(name)
                if cached is not None and cached.schema == schema_name:
                    cached.inode_tag = tag

    def _settle_in(self, conn: PgConnection, name: str) -> dict[str, tuple[str, int]]:
        """Give live workspace ``name`` a tag of the current rule that no other live
        workspace has (kyfs.core.inodes.settled_tag), in the catalog transaction ``conn``
        (which holds the catalog's advisory lock: one process at a time hands out tags);
        returns the change (empty: none was needed).

        Raises:
            OutOfInodes: (ENOSPC, exit 4) every tag is taken.
        """
        tags = self._stored_tags(conn)
        if name not in tags:
            return {}
        schema_name, old = tags.pop(name)
        tag = inodes.settled_tag(old, {t for _, t in tags.values()})
        if tag == old:
            return {}
        changes = {name: (schema_name, tag)}
        self._apply_tags(conn, changes)
        log.info("workspace %s: inode tag %d is now %d", name, old, tag)
        return changes

    def _settle_tag(self, name: str) -> list[str]:
        """:meth:`_settle_in` in a catalog transaction of its own; returns what was done,
        as sentences."""
        with self._changing() as conn:
            changes = self._settle_in(conn, name)
        self._tags_taken(changes)
        return [f"gave the workspace the inode tag {tag}" for _, tag in changes.values()]

    def settle_tags(self) -> list[str]:
        """Make every live workspace's inode tag valid and unique (the daemon at mount);
        returns what was changed, as sentences.

        Raises:
            OutOfInodes: (ENOSPC, exit 4) no tag is free for one that needs it.
        """
        with self._changing() as conn:
            stored = self._stored_tags(conn)
            new = inodes.resettled({name: tag for name, (_, tag) in stored.items()})
            changes = {name: (stored[name][0], tag) for name, tag in new.items()}
            self._apply_tags(conn, changes)
        self._tags_taken(changes)
        return [
            f"workspace {name}: inode tag {stored[name][1]} is now {tag}"
            for name, (_, tag) in changes.items()
        ]

    def _ensure_catalog(self) -> None:
        if self._catalog.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = 'workspaces_notify'"
            " AND tgrelid = to_regclass('kyfs.workspaces')"
        ).fetchone():
            return
        with self._changing() as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS kyfs")
            conn.execute(schema.NOTIFY_FUNCTION)
            for statement in schema.statements(schema.CATALOG_DDL):
                conn.execute(statement)

    def short(self) -> bool:
        """False: a PostgreSQL server keeps its own room (kyfs keeps no reserve for it)."""
        return False

    def fold_limit(self, names: Iterable[str]) -> int:
        """0: a server folds its own WAL in."""
        return 0

    def ensure_reserve(self) -> bool:
        """False: kyfs keeps no disk-full reserve for a server."""
        return False

    def checkpoint(self, names: Iterable[str], idle: bool = False) -> list[str]:
        """Nothing to fold: the server's own checkpointer writes its WAL into the tables
        (postgresql.org/docs/current/wal-configuration.html), and autovacuum makes freed
        space reusable. Returns []."""
        return []

    # --- changes -------------------------------------------------------------------------
    def wait_for_changes(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for another connection's commit that changed a
        workspace's history or the catalog (LISTEN on schema.CHANNEL,
        postgresql.org/docs/current/sql-listen.html); True when one came. The daemon's
        watcher calls it between rounds, so a change made anywhere shows at once instead
        of at the next poll. While the server is away it waits out the time and says
        False; it listens again once the server is back.
        """
        try:
            if self._listener is None:
                self._listener = connect(self.url)
                self._listener.execute(f"LISTEN {schema.CHANNEL}")
                self._forget_catalog()  # what changed while nobody listened is unknown
                self._listening = True
            told = [n.payload for n in self._listener.notifies(timeout=timeout_s, stop_after=1)]
            if told:  # take what else came meanwhile, without waiting
                told += [n.payload for n in self._listener.notifies(timeout=0)]
            if schema.CATALOG in told:
                self._forget_catalog()
            return bool(told)
        except (psycopg.Error, StorageError):
            self._listening = False
            self._forget_catalog()
            if self._listener is not None:
                with contextlib.suppress(psycopg.Error):
                    self._listener.close()
            self._listener = None
            time.sleep(timeout_s)
            return False

    def _forget_catalog(self) -> None:
        with self._mutex:
            self._catalog_cache.clear()

    def _live(self, name: str) -> tuple[int, str]:
        """(catalog id, schema) of live workspace ``name``. While :meth:`wait_for_changes`
        listens (the daemon's watcher), answers come from a cache that every catalog
        change's NOTIFY clears; else one indexed query."""
        with self._mutex:
            found = self._catalog_cache.get(name)
            if found is not None:
                return found
            check_stored_name(name)
            row = self._catalog.execute(_LIVE, (name,)).fetchone()
            if row is None:
                raise WorkspaceNotFound(f"workspace not found: {name}")
            found = (int(row[0]), str(row[1]))
            if self._listening and len(self._catalog_cache) < 4096:
                self._catalog_cache[name] = found
            return found

    # --- coordination ------------------------------------------------------------------------
    def shared(self) -> AbstractContextManager[None]:
        """Nothing to hold: every change to the set is one catalog transaction."""
        return nullcontext()

    # --- the set -------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every workspace name, sorted (by code point)."""
        with self._mutex:
            rows = self._catalog.execute(
                "SELECT name FROM kyfs.workspaces WHERE dropped_ns IS NULL ORDER BY name"
            ).fetchall()
        return [row[0] for row in rows]

    def strays(self) -> list[Path]:
        """Nothing strays in a catalog (SQLite's engine lists odd files here)."""
        return []

    def exists(self, name: str) -> bool:
        """True when workspace ``name`` exists. Raises InvalidName for a bad name."""
        try:
            self._live(name)
        except WorkspaceNotFound:
            return False
        return True

    def create(self, name: str, owner: Owner | None = None, mode: int | None = None) -> None:
        """Create the empty workspace ``name``: a schema of its own, its tables and its top
        directory (owned by ``owner``, default this process; bits ``mode``, default 0755).

        Raises:
            InvalidName: (EINVAL, exit 2). WorkspaceExists: (EEXIST, exit 3).
        """
        import secrets

        check_stored_name(name)
        schema_name = f"kyfs_w_{secrets.token_hex(8)}"
        with self._changing() as conn:
            if conn.execute(_LIVE, (name,)).fetchone():
                raise WorkspaceExists(f"workspace exists: {name}")
            conn.execute(
                "INSERT INTO kyfs.workspaces (name, schema_name, created_ns) VALUES (?, ?, ?)",
                (name, schema_name, time.time_ns()),
            )
            conn.execute(f'CREATE SCHEMA "{schema_name}"')
            conn.execute("SELECT set_config('search_path', ?, true)", (f'"{schema_name}"',))
            schema.create_workspace(
                conn, owner or process_owner(), DIR_MODE if mode is None else mode
            )
            self._settle_in(conn, name)

    def fork(self, source: str, new: str) -> None:
        """Make workspace ``new`` a copy of ``source`` inside the server, in one catalog
        transaction (PostgreSQL's DDL is transactional: a fork is whole or not at all):
        a schema of its own, then every table copied with ``INSERT ... SELECT`` while the
        source's advisory lock keeps its writers waiting (one consistent state, no row
        through the client), as kyfs.engine.sql.copy copies between engines: the search
        index is rebuilt from the values, the new workspace gets a tag of its own. A
        64 MB workspace took 6.1 s through a staged SQLite file before.

        Raises:
            InvalidName: (EINVAL, exit 2). WorkspaceExists: (EEXIST, exit 3).
            WorkspaceNotFound: (ENOENT, exit 1) no ``source``.
        """
        import secrets

        from kyfs.core.nodes import REG
        from kyfs.engine.sql.copy import ENGINE_META, TABLES

        check_stored_name(new)
        schema_name = f"kyfs_w_{secrets.token_hex(8)}"
        with self._changing() as conn:
            found = conn.execute(_LIVE, (source,)).fetchone()
            if found is None:
                raise WorkspaceNotFound(f"workspace not found: {source}")
            if conn.execute(_LIVE, (new,)).fetchone():
                raise WorkspaceExists(f"workspace exists: {new}")
            source_id, source_schema = int(found[0]), str(found[1])
            conn.execute("SELECT pg_advisory_xact_lock(?, ?)", (LOCK_CLASS, source_id))
            conn.execute(
                "INSERT INTO kyfs.workspaces (name, schema_name, created_ns) VALUES (?, ?, ?)",
                (new, schema_name, time.time_ns()),
            )
            conn.execute(f'CREATE SCHEMA "{schema_name}"')
            conn.execute("SELECT set_config('search_path', ?, true)", (f'"{schema_name}"',))
            schema.create_workspace(conn, process_owner(), DIR_MODE)
            conn.execute("DELETE FROM nodes")  # the source's top directory comes instead
            tables = {**TABLES, "blocks": "id, hash, refs, size, codec, data"}
            for table, columns in tables.items():
                conn.execute(
                    f"INSERT INTO {table} ({columns})"
                    f' SELECT {columns} FROM "{source_schema}".{table}'
                )
            marks = ", ".join("?" * len(ENGINE_META))
            conn.execute(
                f'INSERT INTO meta (name, value) SELECT name, value FROM "{source_schema}".meta'
                f" WHERE name NOT IN ({marks})"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                tuple(ENGINE_META),
            )
            conn.execute(
                "INSERT INTO index_pending (node_id) SELECT id FROM nodes WHERE kind = ?", (REG,)
            )
            used = conn.execute(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(?, 'id')::regclass)",
                (f'"{source_schema}".nodes',),
            ).fetchone()[0]
            move_sequences(conn, int(used or 0))
            self._settle_in(conn, new)

    def drop(self, name: str, *, only_if_empty: bool = False) -> str:
        """Move workspace ``name`` into the trash; return its schema's name.

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1).
            NotEmpty: (ENOTEMPTY, exit 3) ``only_if_empty`` and it holds keys or directories.
        """
        check_stored_name(name)
        with self._changing() as conn:
            row = conn.execute(_LIVE + " FOR UPDATE", (name,)).fetchone()
            if row is None:
                raise WorkspaceNotFound(f"workspace not found: {name}")
            if (
                only_if_empty
                and conn.execute(f'SELECT 1 FROM "{row[1]}".entries LIMIT 1').fetchone()
            ):
                raise NotEmpty(f"workspace not empty: {name}")
            conn.execute(
                "UPDATE kyfs.workspaces SET dropped_ns = ? WHERE id = ?", (time.time_ns(), row[0])
            )
        self._forget(name)
        return str(row[1])

    def rename(self, old: str, new: str) -> None:
        """Rename workspace ``old`` to ``new`` (the catalog only).

        Raises:
            InvalidName: (exit 2). WorkspaceNotFound: (ENOENT, exit 1).
            WorkspaceExists: (EEXIST, exit 3) ``new`` exists.
        """
        check_stored_name(old)
        check_stored_name(new)
        with self._changing() as conn:
            row = conn.execute(_LIVE, (old,)).fetchone()
            if row is None:
                raise WorkspaceNotFound(f"workspace not found: {old}")
            if old == new:
                return
            if conn.execute(_LIVE, (new,)).fetchone():
                raise WorkspaceExists(f"workspace exists: {new}")
            conn.execute("UPDATE kyfs.workspaces SET name = ? WHERE id = ?", (new, row[0]))
        with self._mutex:
            cached = self._cache.pop(old, None)
            if cached is not None:
                self._cache[new] = cached

    # --- the trash -------------------------------------------------------------------------
    def trash(self) -> list[TrashedWorkspace]:
        """Every dropped workspace still in the trash, newest first (``path``: its schema)."""
        with self._mutex:
            rows = self._catalog.execute(
                "SELECT name, dropped_ns, schema_name FROM kyfs.workspaces"
                " WHERE dropped_ns IS NOT NULL ORDER BY dropped_ns DESC, id DESC"
            ).fetchall()
            sizes = [
                int(self._catalog.execute(schema.SCHEMA_SIZE, (row[2],)).fetchone()[0])
                for row in rows
            ]
        return [
            TrashedWorkspace(
                name, dt.datetime.fromtimestamp(dropped / 1e9, dt.UTC), size, Path(schema_name)
            )
            for (name, dropped, schema_name), size in zip(rows, sizes, strict=True)
        ]

    def restore_trash(self, name: str, new_name: str | None = None) -> tuple[str, int]:
        """Bring back the newest dropped workspace ``name`` as ``new_name`` (default
        ``name``), and the entries deleted while it was emptied (as SQLite's engine does);
        returns (its name, how many entries came back).

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1) none of that name in the trash.
            WorkspaceExists: (EEXIST, exit 3) the target name is taken.
        """
        check_stored_name(name)
        target = new_name or name
        check_stored_name(target)
        with self._changing() as conn:
            row = conn.execute(
                "SELECT id FROM kyfs.workspaces WHERE name = ? AND dropped_ns IS NOT NULL"
                " ORDER BY dropped_ns DESC, id DESC LIMIT 1",
                (name,),
            ).fetchone()
            if row is None:
                raise WorkspaceNotFound(f"no workspace named {name} in the trash")
            if conn.execute(_LIVE, (target,)).fetchone():
                raise WorkspaceExists(
                    f"workspace exists: {target} (restore under another name with --as)"
                )
            conn.execute(
                "UPDATE kyfs.workspaces SET name = ?, dropped_ns = NULL WHERE id = ?",
                (target, row[0]),
            )
            changes = self._settle_in(conn, target)  # its tag taken by another meanwhile?
        self._tags_taken(changes)
        with self.using(target) as workspace, workspace.lock:
            return target, workspace.restore_teardown()

    def empty_trash(
        self, older_than_s: float | None = None, names: Collection[str] | None = None
    ) -> list[TrashedWorkspace]:
        """Drop for good (DROP SCHEMA ... CASCADE) the workspaces dropped more than
        ``older_than_s`` seconds ago (all when None), of the names ``names`` (all when None); return
        what was deleted."""
        now = dt.datetime.now(dt.UTC)
        deleted = []
        for item in self.trash():
            if older_than_s is not None and (now - item.dropped).total_seconds() <= older_than_s:
                continue
            if names is not None and item.name not in names:
                continue
            with self._changing() as conn:
                conn.execute(
                    "DELETE FROM kyfs.workspaces WHERE schema_name = ? AND dropped_ns IS NOT NULL",
                    (str(item.path),),
                )
                conn.execute(f'DROP SCHEMA IF EXISTS "{item.path}" CASCADE')
            deleted.append(item)
        return deleted

    def stage(self, source: Path, directory: Path) -> Path:
        """A workspace file from a backup, checked and copied as the SQLite engine does
        (kyfs.engine.sqlite.engine.stage_file, into ``directory``: the backup format's
        files are SQLite workspace files), ready for :meth:`adopt`.

        Raises:
            UnsoundInput: (EINVAL, exit 2) not a sound kyfs workspace file.
        """
        from kyfs.engine.sqlite.engine import stage_file

        return stage_file(source, directory)

    def adopt(self, name: str, staged: Path) -> None:
        """Make the staged workspace file ``staged`` the workspace ``name``: a new schema,
        the file's rows copied in (kyfs.engine.sql.copy) and validated against it.

        Raises:
            WorkspaceExists: (EEXIST, exit 3). StorageError: (EIO, exit 4) the copy does
                not validate (it goes to the trash).
        """
        from kyfs.engine.sql.copy import copy_workspace, differences, fingerprint
        from kyfs.engine.sqlite.workspace import SqliteWorkspace

        self.create(name)
        source = SqliteWorkspace(staged, retention_s=None)
        try:
            with self.using(name) as workspace, workspace.lock:
                copy_workspace(source, workspace)
                problems = differences(fingerprint(source), fingerprint(workspace))
        finally:
            source.close()
        if problems:
            self.drop(name)
            raise StorageError(f"{name}: the restored copy does not validate: {problems[0]}")
        self._settle_tag(name)  # the copy carries the backup's tag: another's now?

    # --- using one -----------------------------------------------------------------------
    @contextmanager
    def using(self, name: str) -> Iterator[PgWorkspace]:
        """Workspace ``name`` for one ``with`` block; closed at its end unless this engine
        caches workspaces (the daemon).

        Raises:
            InvalidName: (exit 2). WorkspaceNotFound: (ENOENT, exit 1). StorageError.
        """
        workspace = self.open(name)
        try:
            yield workspace
        finally:
            if not self._cache_enabled:
                workspace.close()

    def using_file(self, path: Path) -> AbstractContextManager[PgWorkspace]:
        """Workspace files are SQLite's.

        Raises:
            InvalidInput: (EINVAL, exit 2) always: ``--db`` needs the SQLite engine.
        """
        raise InvalidInput(f"{path}: --db opens a SQLite workspace file; use the sqlite engine")

    def open(self, name: str) -> PgWorkspace:
        """Workspace ``name``: cached and checked against the catalog, or newly opened.
        Without ``cache`` the caller closes it.

        Raises:
            InvalidName: (exit 2). WorkspaceNotFound: (ENOENT, exit 1). StorageError.
        """
        lock_id, schema_name = self._live(name)
        with self._mutex:
            cached = self._cache.get(name)
            if cached is not None and cached.schema != schema_name:
                del self._cache[name]  # dropped and made anew, or renamed over
                cached = None
        if cached is not None:
            self._sweeper.sweep(name, cached)
            return cached
        workspace = PgWorkspace(self.url, schema_name, lock_id, self._retention_s())
        if not inodes.valid_tag(workspace.inode_tag):  # the 23-bit rule's (st_ino > 2**53)
            try:
                with self._changing() as conn:
                    changes = self._settle_in(conn, name)
            except BaseException:
                workspace.close()
                raise
            for _, tag in changes.values():
                workspace.inode_tag = tag
        if self._cache_enabled:
            workspace.start_watching()  # the daemon: its watcher misses nothing from here on
            with self._mutex:
                raced = self._cache.get(name)
                if raced is not None and raced.schema == schema_name:
                    workspace.close()
                    return raced
                self._cache[name] = workspace
        self._sweeper.sweep(name, workspace)
        return workspace

    def cached(self) -> list[str]:
        """Names of the workspaces this engine keeps open (the daemon's), sorted."""
        with self._mutex:
            return sorted(self._cache)

    def _forget(self, name: str) -> None:
        with self._mutex:
            cached = self._cache.pop(name, None)
        if cached is not None:
            with cached.lock:
                cached.close()

    def check(self, name: str, repair: bool = False) -> tuple[list[str], list[str]]:
        """Check workspace ``name``; with ``repair`` repair first. Returns (problems left,
        repairs done).

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1).
        """
        lock_id, schema_name = self._live(name)
        try:
            workspace = PgWorkspace(self.url, schema_name, lock_id)
        except StorageError as exc:
            return [str(exc)], []
        try:
            done = workspace.repair() if repair else []
        except BaseException:
            workspace.close()
            raise
        try:
            if repair:
                done += self._settle_tag(name)
            return workspace.check(), done
        finally:
            workspace.close()

    def info(self, name: str) -> WorkspaceInfo:
        """Key count and bytes on the server of ``name``.

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1).
        """
        with self.using(name) as workspace:
            meta = workspace.meta()
            return WorkspaceInfo(
                name, workspace.count_keys(), workspace.file_size(),
                Path(workspace.schema), meta.get("project_path"), cache_ttl(meta),
            )  # fmt: skip

    def close(self) -> None:
        """Close every cached workspace and the catalog connection."""
        with self._mutex:
            for workspace in self._cache.values():
                workspace.close()
            self._cache.clear()
            self._catalog.close()
            if self._listener is not None:
                self._listener.close()
