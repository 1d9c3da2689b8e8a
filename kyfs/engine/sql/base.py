"""The relational model both engines share: the connection a workspace runs its SQL on,
its transactions, and the statements every concern mixin uses.

kyfs.engine.sql holds what one workspace does in SQL that SQLite and PostgreSQL both
speak: names and nodes (nodes.py), the block store (blocks.py), values (values.py),
history (history.py),
the archive (archive.py) and schema rules (rules.py). The SQL is written once, with
``?`` placeholders, in the subset both understand (``INSERT ... ON CONFLICT``,
``RETURNING``, ``substr``, ``coalesce``, ``CASE``). Each engine gives the mixins a
:class:`Connection` and says how a transaction begins and how its driver's errors become
kyfs errors; what only one engine has (SQLite's FTS5 and BLOB I/O, PostgreSQL's
``tsvector`` and LISTEN/NOTIFY, files, schemas) stays in kyfs.engine.sqlite and
kyfs.engine.postgres.

Thread-safety: a workspace's connection is used by one thread at a time; the daemon's
threads take turns through the workspace's ``lock``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from kyfs.core.errors import KyfsError, NoSpace, StorageError

# Seconds a delete that freed no room waits for another process's fold to give room back
# (frees_space). It was 3 s, raised to 10 s for CI's `kyfs delete` exit 4 after writes
# through the mount filled a 256 MiB disk (tests/test_disk_full.py, about 1 run in 10).
# That flake had another cause: a reclaim (SqliteWorkspace.reclaim) whose fold another
# process held back grew the WAL into the room the reserve gave back, so the delete met a
# full disk with no reserve left, and failed at once, before any wait. A disk nobody will
# relieve fails a delete after 10 s.
ROOM_WAIT_S = 10.0


class Cursor(Protocol):
    """The part of a DB-API cursor (PEP 249) the mixins use."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the mixins use: ``execute`` and ``executemany``
    with ``?`` placeholders (sqlite3.Connection's own shortcuts) and whether a
    transaction is open."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...


def _no_conversion(exc: Any) -> KyfsError:
    return StorageError(f"storage error: {exc}")


class Base:
    """A workspace's connection and its transactions; the engines' workspaces build on it.

    An engine sets:
        _conn: the Connection.
        _errors: its driver's exception classes, which :meth:`_convert` turns into
            StorageError (EIO, exit 4) or NoSpace (ENOSPC, exit 4).
        _BEGIN_WRITE / _BEGIN_READ: the statements that open a write transaction (which
            must wait for, not fail on, another writer: SQLite's BEGIN IMMEDIATE) and a
            read transaction that sees one committed state.
    """

    path: Path  # what messages name the workspace by (its file, or its schema)
    # Set by the engine (the SQLite engine's, from its data directory's reserve,
    # kyfs.platform.reserve): ``relieve()`` gives space back to a full disk (True when it
    # did, or another process did and the disk has room: the failed operation may run
    # again); ``short()`` is True while the disk is
    # short of space, and then undo data is not kept (deletes free their blocks at once,
    # writes keep no version).
    relieve: Callable[[], bool] | None = None
    short: Callable[[], bool] = staticmethod(lambda: False)
    # Set by an engine that must know, after each commit, that the file is still the one
    # at the workspace's name (the SQLite daemon's); it raises StorageError when not,
    # and the commit is answered as failed.
    committed: Callable[[], None] | None = None
    _conn: Any
    _errors: ClassVar[tuple[type[Exception], ...]] = ()
    _BEGIN_WRITE: ClassVar[str] = "BEGIN"
    _BEGIN_READ: ClassVar[str] = "BEGIN"
    _convert: Callable[[Any], KyfsError] = staticmethod(_no_conversion)

    @contextmanager
    def _atomic(self) -> Iterator[Any]:
        """One write transaction; rolled back on any exception.

        Raises:
            StorageError / NoSpace: (EIO / ENOSPC) the engine failed; nothing was written.
            StorageError: (EIO) ``committed`` refused the commit: the file at the
                workspace's name is not the one written into.
        """
        try:
            self._begin_write()
            yield self._conn
            self._conn.execute("COMMIT")
        except self._errors as exc:
            self._rollback()
            raise self._convert(exc) from None
        except BaseException:
            self._rollback()
            raise
        if self.committed is not None:
            self.committed()

    def _release_undo(self, before_ns: int | None = None) -> int:
        """Release undo data made before ``before_ns`` (kyfs.engine.sql.history)."""
        raise NotImplementedError

    def _give_back(self) -> None:
        """Return the space freed inside the workspace's storage to the file system now
        (the SQLite engine's free pages and WAL); nothing where the engine cannot."""

    def _begin_write(self) -> None:
        """Open a write transaction (``_BEGIN_WRITE``)."""
        self._conn.execute(self._BEGIN_WRITE)

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        """One read transaction, so that several queries see the same committed state."""
        try:
            self._conn.execute(self._BEGIN_READ)
        except self._errors as exc:
            raise self._convert(exc) from None
        try:
            yield self._conn
        except self._errors as exc:
            raise self._convert(exc) from None
        finally:
            if self._conn.in_transaction:
                try:
                    self._conn.execute("COMMIT")
                except self._errors as exc:  # a damaged page met on the way out
                    raise self._convert(exc) from None

    @contextmanager
    def _bulk_read(self) -> Iterator[None]:
        """Around a read transaction that scans much of the file (a vector search): what
        makes such a scan cheaper where the engine has it (SQLite maps the file); nothing
        by default."""
        yield

    def _history_ids(self, conn: Any, node_id: int) -> Any:
        """Inside a write transaction: send a statement reserving one history id per name
        of node ``node_id`` (its cursor, read later: rows of one id), so that the
        versions a commit records need not read their ids back; None where ids are only
        known at insert (SQLite, whose ``RETURNING`` costs no round trip)."""
        return None

    def _history_id(self, conn: Any) -> Any:
        """Inside a write transaction: send a statement reserving one history id (its
        cursor, read later: one row), as :meth:`_history_ids` does for a commit; None
        where ids are only known at insert (SQLite)."""
        return None

    def _node_ids_used(self, conn: Any) -> int:
        """The highest node id ever given out (an id is never given twice, so a node in
        the archive or purged from it keeps its own): for a copy to go on after it."""
        row = conn.execute(
            "SELECT max(m) FROM (SELECT max(id) AS m FROM nodes"
            " UNION ALL SELECT max(id) FROM archive) AS used"
        ).fetchone()
        return int(row[0] or 0)

    def _after_copy(self, conn: Any, node_ids_used: int) -> None:
        """After rows were copied in with their ids (kyfs.engine.sql.copy), inside the
        copy's transaction: make new ids start past ``node_ids_used`` and past every id
        copied."""

    def _rollback(self) -> None:
        """Roll back the open transaction, if any; nothing when the connection is gone
        (closed under an open file: the engine let go of a replaced file), so the error
        that led here is the one raised."""
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except self._errors:
            pass

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Every row of one statement (itself atomic, no explicit transaction)."""
        try:
            return list(self._conn.execute(sql, args).fetchall())
        except self._errors as exc:
            raise self._convert(exc) from None

    def _row(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first row of one statement, or None."""
        try:
            return self._conn.execute(sql, args).fetchone()
        except self._errors as exc:
            raise self._convert(exc) from None


def frees_space(method: Callable[..., Any]) -> Callable[..., Any]:
    """For a workspace method that frees space (a delete, a purge) and so must work on a
    full disk: when it fails with NoSpace (ENOSPC) and the engine can give space back
    (``relieve``: the data directory's reserve), it runs once more. When that run fails
    too (another process, such as the daemon folding its WAL in, took the room the
    reserve left) the workspace gives its own free pages and WAL back (``_give_back``)
    and the method runs again, with a backoff of 50 ms doubling to 0.5 s, for up to
    ROOM_WAIT_S seconds: the other process gives the room back once its fold is done
    (its WAL restarts). Each run rolled back whole, so running again is safe. While the
    disk is short of space the workspace's undo data goes with it (versions share the
    deleted blocks) and what is freed goes back to the file system at once
    (``_give_back``).

    Raises:
        NoSpace: (ENOSPC, exit 4) still no room after the relief.
    """

    @functools.wraps(method)
    def again_with_room(self: Base, *args: Any, **kwargs: Any) -> Any:
        try:
            done = method(self, *args, **kwargs)
        except NoSpace:
            if self.relieve is None or not self.relieve():
                raise
            try:
                done = method(self, *args, **kwargs)
            except NoSpace:
                for attempt in Retrying(
                    retry=retry_if_exception_type(NoSpace),
                    stop=stop_after_delay(ROOM_WAIT_S),
                    wait=wait_exponential(min=0.05, max=0.5),
                    reraise=True,
                ):
                    with attempt:
                        self._give_back()
                        done = method(self, *args, **kwargs)
        if self.short():  # undo data goes too, and what is freed goes back to the disk now
            with contextlib.suppress(NoSpace):
                self._release_undo()
            self._give_back()
        return done

    return again_with_room


def mark(conn: Connection, node_id: int) -> None:
    """Note, inside the caller's transaction, that node ``node_id``'s search index row
    must be rewritten (its value or names changed, or it went); the engine's
    ``flush_index`` does it."""
    conn.execute(
        "INSERT INTO index_pending (node_id) VALUES (?) ON CONFLICT DO NOTHING", (node_id,)
    )


def names_of(conn: Connection, node_id: int) -> list[str]:
    """Every name (key) of node ``node_id``, in code point order."""
    rows = conn.execute("SELECT key FROM entries WHERE node = ? ORDER BY key", (node_id,))
    return [row[0] for row in rows]


def drop_xattrs(conn: Connection, nodes: str, args: Sequence[object] = ()) -> None:
    """Remove the extended attributes (kyfs.engine.sql.xattrs) of every node the query
    ``nodes`` (SQL selecting one column of node ids, with ``args``) selects, inside the
    caller's transaction: those nodes go for good."""
    conn.execute(f"DELETE FROM xattrs WHERE node IN ({nodes})", args)
