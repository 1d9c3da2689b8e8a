"""One workspace = one PostgreSQL schema: the PostgreSQL implementation of
kyfs.engine.base.Workspace.

Names and nodes, values, history, archive, TTL and schema rules are kyfs.engine.sql's,
run through kyfs.engine.postgres.connection.PgConnection; this module adds what is
PostgreSQL's own: write transactions serialized per workspace by an advisory lock, the
search index (kyfs.engine.postgres.search), telling this connection's history rows from
others' (``history.origin``), the checks, and the workspace's size.

Thread-safety: a workspace is used by one thread at a time; the daemon's threads take
turns through its ``lock`` (an RLock), as with SQLite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from stat import S_ISGID
from typing import Any

from kyfs.core import inodes, names
from kyfs.core.errors import StorageError
from kyfs.core.nodes import DIR, FILE_MODE, MODE_MASK, REG, Entry, Match, Owner
from kyfs.engine.postgres import schema as schema_sql
from kyfs.engine.postgres import search
from kyfs.engine.postgres.connection import PgConnection
from kyfs.engine.sql.archive import ArchiveMixin
from kyfs.engine.sql.check import STRUCTURE_CHECKS, damaged, drop_stray_xattrs, repair_blocks
from kyfs.engine.sql.nodes import process_owner
from kyfs.engine.sql.rules import RulesMixin
from kyfs.engine.sql.snapshots import SnapshotsMixin
from kyfs.engine.sql.vectors import VectorsMixin, repair_vectors
from kyfs.engine.sql.xattrs import XattrsMixin

LOCK_CLASS = 0x6B7966  # "kyf": the first key of kyfs's advisory locks (the second: an id)

# A new empty key in an existing directory, in one statement (what NamespaceMixin.create
# does in several): the directory (the top one by its id, another by its key), the key
# not taken, the node (the directory's group when it is setgid), its name, the
# directory's times, the mark for the search index. No row when anything is otherwise.
_SQL_CREATE_FILE = (
    "WITH parent AS (SELECT id, kind, mode, gid FROM nodes"
    " WHERE id = coalesce(?, (SELECT node FROM entries WHERE key = ?))),"
    " made AS (INSERT INTO nodes (kind, mode, uid, gid, nlink, size, created_ns, mtime_ns,"
    " ctime_ns, atime_ns, target, rdev)"
    " SELECT ?, ?, ?, CASE WHEN p.mode & ? <> 0 THEN p.gid ELSE ? END, 1, 0, ?, ?, ?, ?, NULL, 0"
    " FROM parent p WHERE p.kind = ? AND NOT EXISTS (SELECT 1 FROM entries WHERE key = ?)"
    " RETURNING id, gid),"
    " named AS (INSERT INTO entries (key, parent, node) SELECT ?, ?, id FROM made),"
    " touched AS (UPDATE nodes SET mtime_ns = ?, ctime_ns = ?"
    " WHERE id = (SELECT id FROM parent) AND EXISTS (SELECT 1 FROM made)),"
    " marked AS (INSERT INTO index_pending (node_id) SELECT id FROM made"
    " ON CONFLICT DO NOTHING)"
    " SELECT id, gid FROM made"
)
_SQL_HISTORY_IDS = (
    "SELECT nextval(pg_get_serial_sequence('history', 'id')) FROM entries WHERE node = ?"
)
_SQL_HISTORY_ID = "SELECT nextval(pg_get_serial_sequence('history', 'id'))"
SQL_CHANGES = (
    "SELECT id, key, detail, origin = current_setting('kyfs.origin', true) FROM history"
    " WHERE id > ? ORDER BY id"
)


class PgWorkspace(SnapshotsMixin, ArchiveMixin, RulesMixin, XattrsMixin, VectorsMixin):
    """One workspace's schema on a PostgreSQL server.

    Args:
        url: the libpq URL or connection string (credentials as libpq finds them).
        schema: the workspace's schema (kyfs.engine.postgres.schema).
        lock_id: the catalog id of the workspace: the second key of its advisory lock.
        retention_s: archived entries older than this many seconds are deleted for good
            when the workspace opens; None keeps them all.

    Raises:
        StorageError: (EIO, exit 4) the server cannot be reached or the schema is not a
            kyfs workspace.
    """

    _BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ"
    _SQL_PENDING_TEXT = (
        "SELECT p.node_id, p.gen, t.key, t.value FROM embed_pending p"
        " LEFT JOIN search_text t ON t.id = p.node_id ORDER BY p.node_id LIMIT ?"
    )

    def __init__(
        self, url: str, schema: str, lock_id: int, retention_s: float | None = None
    ) -> None:
        self.path = Path(schema)  # what messages name the workspace by
        self.schema = schema
        self.lock = threading.RLock()  # held by the daemon's threads around each use
        self._lock_id = lock_id
        self._root_id = 0
        self.inode_tag = 0
        self._conn = PgConnection(url, schema)
        try:
            self._load_identity()
            self._upgrade()
            if retention_s is not None:
                self.purge_archive(time.time_ns() - int(retention_s * 1e9))
        except KeyError:
            self._conn.close()
            raise StorageError(f"schema {schema} is not a kyfs workspace") from None
        except BaseException:
            self._conn.close()
            raise

    def _upgrade(self) -> None:
        """Bring a schema of an older layout up to date (kyfs.engine.postgres.schema.migrate,
        one transaction under the workspace's lock).

        Raises:
            StorageError: (EIO, exit 4) the layout is newer than this kyfs knows.
        """
        sql = "SELECT value FROM meta WHERE name = 'pg_schema_version'"
        found = int(self._row(sql)[0])
        if found > schema_sql.SCHEMA_VERSION:
            raise StorageError(
                f"workspace layout {found} in schema {self.schema} is newer than this kyfs"
                f" knows ({schema_sql.SCHEMA_VERSION}); upgrade kyfs"
            )
        if found < schema_sql.SCHEMA_VERSION:
            with self._atomic() as conn:
                current = int(conn.execute(sql).fetchone()[0])  # another daemon may have
                if current < schema_sql.SCHEMA_VERSION:
                    schema_sql.migrate(conn, current)

    def _begin_write(self) -> None:
        """BEGIN, then this workspace's advisory lock: its writers take turns."""
        self._conn.execute("BEGIN")
        self._conn.execute("SELECT pg_advisory_xact_lock(?, ?)", (LOCK_CLASS, self._lock_id))

    def create(
        self, key: str, mode: int = FILE_MODE, exclusive: bool = False, owner: Owner | None = None
    ) -> Entry:
        """NamespaceMixin.create in one round trip when ``key`` is new and its directory
        exists (``tar x``, ``cp -r``): BEGIN, the lock, one statement that makes the key
        (_SQL_CREATE_FILE) and COMMIT go together (the connection's pipeline), and the
        new node's id is read after. Otherwise (the key exists, a directory above it is
        missing or is not one) that statement changed nothing, and the general path
        runs, in a transaction of its own.

        Raises:
            As NamespaceMixin.create.
        """
        names.check_key(key)
        owner = owner or process_owner()
        now = time.time_ns()
        parent = names.parent_of(key)
        bits = mode & MODE_MASK
        with self._atomic() as conn:
            made = conn.execute(
                _SQL_CREATE_FILE,
                (self._root_id if not parent else None, parent,
                 REG, bits, owner.uid, S_ISGID, owner.gid, now, now, now, now, DIR, key,
                 key, parent, now, now),
            )  # fmt: skip
        row = made.fetchone()  # answered with the COMMIT
        if row is None:
            return super().create(key, mode, exclusive, owner)
        node_id = inodes.check_node_id(int(row[0]))
        return Entry(node_id, key, REG, bits, 0, now, now, now, now, owner.uid, int(row[1]),
                     1, 0, 0)  # fmt: skip

    def _history_ids(self, conn: Any, node_id: int) -> Any:
        """One id of history's identity sequence per name of node ``node_id`` (nextval:
        what an insert would take; an id reserved and not used is a gap, as a rollback
        leaves), sent with a commit's first reads (kyfs.engine.sql.values)."""
        return conn.execute(_SQL_HISTORY_IDS, (node_id,))

    def _history_id(self, conn: Any) -> Any:
        """One id of history's identity sequence (as :meth:`_history_ids`), sent with an
        unlink's lookup (kyfs.engine.sql.nodes)."""
        return conn.execute(_SQL_HISTORY_ID)

    def _node_ids_used(self, conn: Any) -> int:
        """The node id sequence's last value, or the highest id in use when higher."""
        row = conn.execute(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence('nodes', 'id')::regclass)"
        ).fetchone()
        return max(int(row[0] or 0), super()._node_ids_used(conn))

    def _after_copy(self, conn: Any, node_ids_used: int) -> None:
        """Move the identity sequences past what was copied (:func:`move_sequences`)."""
        move_sequences(conn, node_ids_used)

    def _glob_clause(self, glob: str) -> tuple[str, Any]:
        """SQLite's GLOB as a POSIX regular expression (PostgreSQL has no GLOB)."""
        return "e.key ~ ?", glob_regex(glob)

    def _others_version(self) -> int:
        """Changes when another connection commits history or extended attributes to
        this workspace, known without a query (PgConnection.others_version: LISTEN)."""
        return int(self._conn.others_version())

    # --- changes (the mount's cache invalidation) -----------------------------------------
    def _watch(self) -> None:
        """Nothing to set up: ``history.origin`` holds the writer's ``kyfs.origin``, a
        random token each connection sets when it connects."""

    def _change_rows(self, cursor: int) -> list[tuple[int, str, str | None, bool]]:
        """History rows after ``cursor`` with whether this connection wrote them."""
        rows = self._rows(SQL_CHANGES, (cursor,))
        return [(int(r[0]), r[1], r[2], bool(r[3])) for r in rows]

    # --- search ------------------------------------------------------------------------
    def flush_index(self, limit: int | None = None) -> int:
        """Bring the search index up to date for up to ``limit`` pending nodes (all when
        None), in one transaction; returns how many."""
        if not self._row("SELECT 1 FROM index_pending LIMIT 1"):
            return 0
        with self._atomic() as conn:
            return search.flush(conn, limit)

    def search(self, match: str, limit: int, with_text: bool = True) -> list[Match]:
        """The best ``limit`` keys for the FTS5-syntax query ``match``, best first (by
        ``ts_rank_cd``; ``Match.bm25`` is its negation, so lower is better as with FTS5);
        pending index work is done first.

        Raises:
            InvalidQuery: (EINVAL, exit 2) bad syntax or what PostgreSQL cannot do
                (kyfs.engine.postgres.search).
        """
        query = search.to_tsquery(match)
        self.flush_index()
        if with_text:
            rows = self._rows(search.SEARCH, (query, limit))
        else:
            rows = self._rows(search.SEARCH_KEYS, (query, limit))
        return [Match(r[0], r[1], int(r[2]), r[3], float(r[4])) for r in rows]

    def search_stats(self, terms: Iterable[str]) -> tuple[int, int, dict[str, int]]:
        """(indexed keys, their total length in tokens, {term: keys holding it}); a term
        ending in ``*`` is a prefix (kyfs.search.query_terms), ``'tok':*`` in tsquery."""
        wanted = sorted(set(terms))
        self.flush_index()
        with self._snapshot() as conn:
            count, total = conn.execute(
                "SELECT count(*), coalesce(sum(key_tokens + value_tokens), 0) FROM search_text"
            ).fetchone()
            docs = {
                term: int(
                    conn.execute(
                        "SELECT count(*) FROM search_text WHERE document @@ CAST(? AS tsquery)",
                        (f"'{term[:-1]}':*" if term.endswith("*") else f"'{term}'",),
                    ).fetchone()[0]
                )
                for term in wanted
            }
        return int(count), int(total), docs

    # --- checking ------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Every problem found, as sentences (``[]`` when sound): kyfs's own rules
        (kyfs.engine.sql.check) and every block against its checksum; PostgreSQL keeps
        its own pages and indexes sound."""
        problems = []
        try:
            for label, sql in STRUCTURE_CHECKS:
                sql = sql.replace("{root}", str(self._root_id))
                count = self._row(f"SELECT count(*) FROM ({sql}) AS broken")[0]
                if count:
                    problems.append(f"{count} {label}")
            with self._snapshot() as conn:
                problems += damaged(conn)
        except StorageError as exc:
            problems = [f"cannot be read: {exc}"]
        return problems

    def repair(self) -> list[str]:
        """Repair the block store's references (kyfs.engine.sql.check.repair_blocks), drop
        the extended attributes of nodes that are gone, and rebuild the search index of
        every key (what can go stale without PostgreSQL noticing); returns what was done.
        The other structural rules are kept by transactions; a workspace that breaks them
        is restored from a backup."""
        with self._atomic() as conn:
            done = repair_blocks(conn, time.time_ns())
            done += drop_stray_xattrs(conn)
            done += repair_vectors(conn)
            conn.execute("DELETE FROM search_text")
            conn.execute(
                "INSERT INTO index_pending (node_id) SELECT id FROM nodes ON CONFLICT DO NOTHING"
            )
            search.flush(conn)
        return [*done, "rebuilt the search index"]

    # --- the rest of the interface ---------------------------------------------------------
    def sync(self) -> None:
        """Nothing to do: a committed transaction is durable on the server
        (synchronous_commit, postgresql.org/docs/current/wal-async-commit.html)."""

    def checkpoint(self) -> bool:
        """Nothing to fold in (the server checkpoints itself); True."""
        return True

    def file_size(self) -> int:
        """Bytes the workspace's tables and their indexes take on the server."""
        return int(self._row(schema_sql.SCHEMA_SIZE, (self.schema,))[0])

    def _index_bytes(self, conn: Any) -> int:
        """Bytes of the search table with its GIN index and TOAST."""
        row = conn.execute(
            "SELECT pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = ? AND c.relname = 'search_text'",
            (self.schema,),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def compact(self) -> int:
        """Give the free space of the workspace's tables back to the operating system now:
        VACUUM FULL of each (postgresql.org/docs/current/sql-vacuum.html; it holds each
        table's lock while it rewrites it; autovacuum makes space reusable meanwhile).
        Returns how many bytes they shrank by.

        Raises:
            StorageError / NoSpace: (EIO / ENOSPC, exit 4).
        """
        before = self.file_size()
        tables = self._rows(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = ? AND c.relkind = 'r' ORDER BY c.relname",
            (self.schema,),
        )
        for (table,) in tables:  # PgConnection raises kyfs errors itself
            self._conn.execute(f"VACUUM FULL {_quote(self.schema)}.{_quote(table)}")
        return max(0, before - self.file_size())

    def backup_to(self, target: Path) -> None:
        """A snapshot in the backup format: the new SQLite workspace file ``target`` with
        this workspace's rows, from one REPEATABLE READ snapshot (kyfs.engine.sql.copy),
        so it is consistent while others write.

        Raises:
            AlreadyExists: (EEXIST) ``target`` exists. StorageError / NoSpace: (exit 4).
        """
        from kyfs.engine.sql.copy import copy_workspace
        from kyfs.engine.sqlite.workspace import SqliteWorkspace

        snapshot = SqliteWorkspace(target, create=True)
        try:
            copy_workspace(self, snapshot)
            snapshot.checkpoint()  # one file: the WAL folded in
        finally:
            snapshot.close()

    def clone_to(self, target: Path) -> bool:
        """Never: a schema on a server shares no storage with a file (PgEngine.fork copies
        inside the server instead). Returns False."""
        return False

    def close(self) -> None:
        """Close the connection; the workspace cannot be used afterwards."""
        self._conn.close()


# The tables with an identity column besides nodes.
SEQUENCED = (
    "history",
    "blocks",
    "vector_chunks",
    "collection_items",
    "snapshots",
    "snapshot_items",
)


def move_sequences(conn: Any, node_ids_used: int) -> None:
    """After rows were copied in with their ids into the current ``search_path`` schema
    (kyfs.engine.sql.copy, PgEngine.fork), inside that transaction: the identity
    sequence of nodes starts past ``node_ids_used`` (the highest node id the source
    ever gave: ids are never reused, archived or not) and past every node copied, those
    of SEQUENCED past their largest id."""
    conn.execute(
        "SELECT setval(pg_get_serial_sequence('nodes', 'id'), GREATEST(?,"
        " (SELECT coalesce(max(id), 1) FROM nodes),"
        " (SELECT coalesce(max(id), 1) FROM archive)))",
        (max(node_ids_used, 1),),
    )
    for table in SEQUENCED:
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" (SELECT coalesce(max(id), 1) FROM {table}))"
        )


def _quote(identifier: str) -> str:
    """A PostgreSQL identifier, quoted."""
    return '"' + identifier.replace('"', '""') + '"'


def glob_regex(glob: str) -> str:
    """A POSIX regular expression (PostgreSQL's ``~``) that matches what SQLite's GLOB
    matches: ``*`` any run, ``?`` one character, ``[...]`` a set (``[^...]`` its
    complement, ``]`` first stands for itself), anything else itself; case-sensitive."""
    out, at = ["^"], 0
    while at < len(glob):
        char = glob[at]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = at + 1
            if end < len(glob) and glob[end] == "^":
                end += 1
            if end < len(glob) and glob[end] == "]":
                end += 1
            end = glob.find("]", end)
            if end < 0:  # no closing bracket: SQLite's GLOB then matches nothing
                return NEVER
            body = glob[at + 1 : end]
            negate = body.startswith("^")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("[", "\\[")
            if body.startswith("]"):
                body = "\\]" + body[1:]
            out.append(("[^" if negate else "[") + body + "]")
            at = end
        else:
            out.append(_escape(char))
        at += 1
    out.append("$")
    return "".join(out)


NEVER = "^(?!)"  # a regular expression no key matches


def _escape(char: str) -> str:
    return "\\" + char if char in r".^$|()[]{}+*?\\" else char
