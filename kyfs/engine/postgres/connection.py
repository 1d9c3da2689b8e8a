"""Connections to a PostgreSQL server, and the adapter that lets kyfs.engine.sql's
statements run on one.

kyfs.engine.sql writes its SQL once with ``?`` placeholders, as sqlite3 takes them;
psycopg 3 takes ``%s`` (psycopg.org/psycopg3/docs/basic/params.html). :class:`PgConnection`
translates each statement once (cached), runs it, and turns every psycopg error into a
kyfs error: NoSpace (ENOSPC) for a full disk (SQLSTATE 53100), StorageError (EIO, exit 4)
for everything else, a lost connection among them.

Transactions: the connection is in autocommit mode and the workspace sends BEGIN and
COMMIT itself (as with sqlite3's ``isolation_level=None``). A write transaction takes a
transaction-level advisory lock on its workspace first (``pg_advisory_xact_lock``,
postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS), so the writers of one
workspace take turns, as SQLite's ``BEGIN IMMEDIATE`` makes them: a read-then-write
(create, rename) never races another daemon's. Reads run in READ COMMITTED, several-query
reads in one REPEATABLE READ snapshot.

Credentials come only from the URL or libpq's own sources (PGPASSWORD, PGSERVICE,
~/.pgpass: postgresql.org/docs/current/libpq-envars.html); :func:`redact` takes the
password out of a URL before it is shown or logged.

Thread-safety: a PgConnection is used by one thread at a time (the workspace's lock).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from kyfs.core.errors import KyfsError, NoSpace, StorageError, UnusableDatabase
from kyfs.engine.postgres import trace
from kyfs.engine.postgres.schema import CHANNEL

CONNECT_TIMEOUT_S = 10  # seconds libpq waits for the server (connect_timeout)
LOCK_TIMEOUT_S = 10  # seconds a statement waits for a lock (SQLite's busy timeout: 10 s)
APPLICATION = "kyfs"  # application_name, as pg_stat_activity shows it
# A directory: every connection writes libpq's trace of the messages it exchanges with
# the server to a file of its own there (kyfs.engine.postgres.trace; bench and tests).
TRACE_ENV = "KYFS_PG_TRACE"
_SAFE_AGAIN = ("BEGIN", "SELECT")  # statements that may run again after a lost connection
_DEFAULTS = {  # libpq parameters kyfs sets unless the URL has its own
    "connect_timeout": str(CONNECT_TIMEOUT_S),
    "application_name": APPLICATION,
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": str(CONNECT_TIMEOUT_S * 1000),
}


def redact(url: str) -> str:
    """``url`` (a postgresql:// URL or a libpq connection string) without its password,
    for messages and logs."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://(unreadable connection string)"
    params.pop("password", None)
    host = params.get("host", "")
    return f"postgresql://{params.get('user', '')}@{host}/{params.get('dbname', '')}"


def convert(exc: psycopg.Error) -> KyfsError:
    """The kyfs error for a psycopg error: NoSpace (ENOSPC, exit 4) for a full disk,
    StorageError (EIO, exit 4) for any other."""
    if isinstance(exc, pg_errors.DiskFull):
        return NoSpace(f"PostgreSQL: disk full: {exc}")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageError(f"PostgreSQL: {text}")


def connect(
    url: str, schema: str | None = None, origin: str | None = None
) -> psycopg.Connection[Any]:
    """A new autocommit connection to ``url``; with ``schema``, its ``search_path`` is that
    schema only, so the workspace's tables are found by their plain names. ``origin``
    marks the history rows it writes (``kyfs.origin``; a new random one when None).

    Timeouts, unless the URL sets its own: ``connect_timeout`` CONNECT_TIMEOUT_S; on TCP,
    keepalives and ``tcp_user_timeout`` so that a server that vanishes is noticed within
    about the same time; ``lock_timeout`` LOCK_TIMEOUT_S for a lock another daemon holds
    (as SQLite's busy timeout).

    Raises:
        StorageError: (EIO, exit 4) the server cannot be reached or refuses.
        UnusableDatabase: (EIO, exit 4) the database's encoding is not UTF8.
    """
    try:
        given = conninfo_to_dict(url)
        extra = {k: v for k, v in _DEFAULTS.items() if k not in given}
        conn = psycopg.connect(make_conninfo(url, **extra), autocommit=True)
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to {redact(url)}: {_first_line(exc)}") from None
    trace_dir = os.environ.get(TRACE_ENV)
    if trace_dir:
        trace.start(conn, Path(trace_dir))
    try:
        check_encoding(conn, url)
        # Marks the history rows this connection writes (see PgWorkspace._change_rows).
        conn.execute(
            "SELECT set_config('kyfs.origin', %s, false), set_config('lock_timeout', %s, false)",
            (origin or secrets.token_hex(8), f"{LOCK_TIMEOUT_S}s"),
        )
        if schema is not None:
            conn.execute("SELECT set_config('search_path', %s, false)", (_quote(schema),))
    except psycopg.Error as exc:
        conn.close()
        raise convert(exc) from None
    except BaseException:
        conn.close()
        raise
    return conn


def check_encoding(conn: psycopg.Connection[Any], url: str) -> None:
    """Refuse a database whose encoding is not UTF8. The server reports its encoding as
    the ``server_encoding`` parameter when a session starts (no query is sent). Under
    SQL_ASCII (what ``initdb`` gives under LC_ALL=C) the server checks no text and
    psycopg returns text columns as bytes, so kyfs's names and keys could not be read,
    nor kept to UTF-8 (kyfs.core.names).

    Raises:
        UnusableDatabase: (EIO, exit 4) the encoding and how to make a UTF8 database.
    """
    encoding = conn.info.parameter_status("server_encoding") or "unknown"
    if encoding.upper() == "UTF8":
        return
    name = conninfo_to_dict(url).get("dbname") or "NAME"
    raise UnusableDatabase(
        f"{redact(url)}: the database's encoding is {encoding}; kyfs needs UTF8: make one "
        f"with `createdb -E UTF8 -T template0 {name}` (CREATE DATABASE {name} "
        "ENCODING 'UTF8' TEMPLATE template0) and point KYFS_ENGINE at it"
    )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """A statement with ``?`` placeholders in psycopg's form (``%s``; a literal ``%``
    doubled). kyfs's statements hold no ``?`` or ``%`` inside string literals."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A connection to one schema as kyfs.engine.sql.base.Connection: ``?`` placeholders,
    kyfs errors, ``in_transaction``.

    It reconnects by itself: when the server goes away, the statement under way fails
    with StorageError (EIO, exit 4) and the next one connects again (failing the same way
    while the server is still away, within the connect timeout). A transaction the loss
    cut short is never continued on the new connection: every statement until its
    ROLLBACK fails, so nothing is half written (the server rolled it back already). The
    new connection keeps the same ``kyfs.origin``, so its history rows stay this
    connection's own for ``changes``.

    Args:
        url: the libpq URL or connection string.
        schema: the workspace's schema (None: the catalog connection).

    Raises:
        StorageError: (EIO, exit 4) the first connection failed.
    """

    def __init__(self, url: str, schema: str | None = None) -> None:
        self._url, self._schema = url, schema
        self._origin = secrets.token_hex(8)
        self._others = 0  # see others_version
        self._raw: psycopg.Connection[Any] | None = self._connect()
        self._cut_short = False  # the connection broke inside a transaction
        self._pipeline: psycopg.Pipeline | None = None  # open from BEGIN to COMMIT
        self._pipeline_mode: contextlib.AbstractContextManager[psycopg.Pipeline] | None = None
        # The statements sent since BEGIN while the server answered none (their cursors):
        # what may be sent again on a new connection (_again); None once answered.
        self._batch: list[tuple[str, Sequence[Any], PipelinedCursor | None]] | None = None

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The live psycopg connection, connecting again first when it was lost.

        Raises:
            StorageError: (EIO, exit 4) the server is still away.
        """
        if self._raw is None or self._raw.closed:
            self._raw = self._connect()
        return self._raw

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection (:func:`connect`); on a workspace's schema it listens on
        CHANNEL (kyfs.engine.postgres.schema) for :meth:`others_version`.

        Raises:
            StorageError: (EIO, exit 4) as :func:`connect`.
        """
        conn = connect(self._url, self._schema, self._origin)
        if self._schema is None:
            return conn
        self._others += 1  # what was told while no connection listened is not known
        own = conn.info.backend_pid
        conn.add_notify_handler(lambda told: self._told(told.payload, told.pid, own))
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            conn.close()
            raise convert(exc) from None
        return conn

    def _told(self, payload: str, pid: int, own: int) -> None:
        """A notification on CHANNEL from the server process ``pid``, received by the one
        serving this connection, ``own``: another session committed to ``payload``'s
        schema unless ``pid`` is ``own``."""
        if payload == self._schema and pid != own:
            self._others += 1

    def others_version(self) -> int:
        """A number that changes when another connection commits a change of history or
        of extended attributes to this schema (their triggers NOTIFY on CHANNEL at
        commit), read without a round trip: outside a transaction the notifications
        that reached the socket are taken in first (PQconsumeInput, PQnotifies; no
        wait). A notification still on its way (the other commit's last microseconds)
        is seen at the next call.

        Raises:
            StorageError: (EIO, exit 4) the connection is lost and cannot be made again.
        """
        conn = self.raw
        if self._pipeline is None and not self._cut_short:
            pgconn = conn.pgconn
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                try:
                    pgconn.consume_input()
                    while (told := pgconn.notifies()) is not None:
                        self._told(told.extra.decode(), told.be_pid, conn.info.backend_pid)
                except psycopg.Error:
                    self._others += 1  # the next statement meets the lost connection
        return self._others

    @property
    def in_transaction(self) -> bool:
        """True inside BEGIN ... COMMIT (libpq's transaction status, or a pipeline still
        open), and after a connection lost in a transaction until its ROLLBACK."""
        if self._cut_short or self._pipeline is not None:
            return True
        if self._raw is None or self._raw.closed:
            return False
        return self._raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        """Run one statement; returns its cursor (fetchone, fetchall, rowcount).

        From BEGIN to its COMMIT or ROLLBACK the connection is in pipeline mode
        (psycopg.org/psycopg3/docs/advanced/pipeline.html): a statement is sent without
        waiting for the server, and the connection waits only when its caller reads a
        result (a fetch, ``rowcount``) or at COMMIT, which waits for the whole
        transaction. A statement's error may then be raised by a later call of the same
        transaction (a later ``execute``, a fetch, the COMMIT); the transaction is
        rolled back whole all the same, so nothing half written is committed.

        Raises:
            StorageError / NoSpace: (EIO / ENOSPC, exit 4) the server failed or is away.
        """
        if self._cut_short:
            if sql in ("ROLLBACK", "COMMIT"):  # the transaction ends here: reconnect next
                self._cut_short = False
                if sql == "ROLLBACK":
                    return None
            raise StorageError("PostgreSQL: the connection was lost in this transaction")
        if self._pipeline is not None:
            return self._pipelined(sql, parameters)
        conn = self.raw
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if idle and sql.startswith("BEGIN"):
            return self._begin(conn, sql)
        try:
            return conn.execute(translate(sql), parameters or None)
        except psycopg.Error as exc:
            if not (conn.closed or conn.broken):
                raise convert(exc) from None
            if idle and sql.startswith(_SAFE_AGAIN):
                # The server went away since this connection's last statement (a restart):
                # a read outside a transaction did nothing yet, so it runs once more on a
                # new connection instead of failing the first use afterwards.
                self._drop(conn)
                conn = self.raw  # StorageError when the server is still away
                try:
                    return conn.execute(translate(sql), parameters or None)
                except psycopg.Error as again:
                    raise self._failed(conn, again, cut_short=False) from None
            # Cut short: a statement inside BEGIN ... COMMIT, not the COMMIT itself (which
            # ends the transaction whatever its outcome).
            raise self._failed(conn, exc, cut_short=not idle and sql != "COMMIT") from None

    def _begin(self, conn: psycopg.Connection[Any], sql: str) -> None:
        """Open a transaction with ``sql`` (a BEGIN) in pipeline mode. The BEGIN waits
        for nothing: it goes with the transaction's first statement whose result is read
        (:meth:`_again` covers a server that went away meanwhile)."""
        self._enter_pipeline(conn)
        self._batch = []
        self._pipelined(sql, ())

    def _enter_pipeline(self, conn: psycopg.Connection[Any]) -> None:
        mode = conn.pipeline()
        try:
            self._pipeline = mode.__enter__()
        except psycopg.Error as exc:
            raise self._failed(conn, exc, cut_short=False) from None
        self._pipeline_mode = mode

    def _pipelined(self, sql: str, parameters: Sequence[Any]) -> Any:
        """Send ``sql`` inside the open pipeline; COMMIT and ROLLBACK end it."""
        assert self._pipeline is not None
        conn = self.raw
        if sql == "ROLLBACK":
            self._batch = None
            self._end_pipeline(conn, quiet=True)  # an error of the aborted pipeline: moot
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error as exc:
                    raise self._failed(conn, exc, cut_short=False) from None
            return None
        try:
            cursor = conn.cursor()
            cursor.execute(translate(sql), parameters or None)
        except psycopg.Error as exc:
            if self._again(conn, exc):
                return self._pipelined(sql, parameters)
            self._end_pipeline(conn, quiet=True)
            raise self._failed(conn, exc, cut_short=sql != "COMMIT") from None
        if sql == "COMMIT":
            self._batch = None  # whether a lost COMMIT committed is unknown: never again
            try:
                self._end_pipeline(conn, quiet=False)  # waits for every answer
            except psycopg.Error as exc:
                raise self._failed(conn, exc, cut_short=False) from None
            return cursor
        pending = PipelinedCursor(self, conn, cursor)
        if self._batch is not None:
            self._batch.append((sql, parameters, pending))
        return pending

    def _again(self, conn: psycopg.Connection[Any], exc: psycopg.Error) -> bool:
        """After ``exc`` on ``conn`` inside a pipeline: True when the connection was lost
        before the server answered anything of this transaction (a server restarted since
        the connection's last use) and the transaction's statements so far were sent
        again on a new connection (once; their cursors now read from it), as a BEGIN
        alone was run again before pipelining. The server rolled back whatever of them
        it had run, and no COMMIT was among them.

        Raises:
            StorageError: (EIO, exit 4) the server is still away.
        """
        batch, self._batch = self._batch, None
        if batch is None or not (conn.closed or conn.broken):
            return False
        self._drop(conn)
        fresh = self.raw  # StorageError when the server is still away
        self._enter_pipeline(fresh)
        try:
            for sql, parameters, pending in batch:
                cursor = fresh.cursor()
                cursor.execute(translate(sql), parameters or None)
                if pending is not None:
                    pending.rebind(fresh, cursor)
        except psycopg.Error as again:
            self._end_pipeline(fresh, quiet=True)
            raise self._failed(fresh, again, cut_short=True) from None
        return True

    def _answered(self) -> None:
        """The server answered a statement of this transaction: it may not run again."""
        self._batch = None

    def _end_pipeline(self, conn: psycopg.Connection[Any], quiet: bool) -> None:
        """Leave pipeline mode: send what is queued and wait for every answer. With
        ``quiet`` an error is dropped (a rollback follows)."""
        mode, self._pipeline, self._pipeline_mode = self._pipeline_mode, None, None
        if mode is None:
            return
        try:
            mode.__exit__(None, None, None)
        except psycopg.Error:
            if not quiet:
                raise

    def _read_failed(self, conn: psycopg.Connection[Any], exc: psycopg.Error) -> KyfsError:
        """The kyfs error for a result that could not be read inside a pipeline: the
        transaction is lost (the caller rolls back)."""
        self._batch = None
        self._end_pipeline(conn, quiet=True)
        return self._failed(conn, exc, cut_short=True)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> None:
        """Run one statement for each of ``rows``, pipelined (psycopg sends them without
        waiting for each answer: psycopg.org/psycopg3/docs/advanced/pipeline.html).

        Raises:
            StorageError / NoSpace: (EIO / ENOSPC, exit 4) the server failed or is away.
        """
        if self._cut_short:
            raise StorageError("PostgreSQL: the connection was lost in this transaction")
        conn = self.raw
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        in_pipeline = self._pipeline is not None
        self._batch = None  # (not kept for _again: a transaction with it never runs twice)
        try:
            with conn.cursor() as cursor:
                cursor.executemany(translate(sql), rows)
        except psycopg.Error as exc:
            raise self._failed(conn, exc, cut_short=in_pipeline or not idle) from None

    def _failed(
        self, conn: psycopg.Connection[Any], exc: psycopg.Error, cut_short: bool
    ) -> KyfsError:
        """The kyfs error for ``exc`` on ``conn``; a lost connection is dropped (the next
        statement connects again), ``cut_short`` when it took a transaction with it."""
        if not (conn.closed or conn.broken):
            return convert(exc)
        self._cut_short = cut_short
        self._drop(conn)
        return StorageError(f"PostgreSQL: connection lost: {_first_line(exc)}")

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        with contextlib.suppress(Exception):
            conn.close()
        self._raw = None
        self._pipeline = self._pipeline_mode = None

    def close(self) -> None:
        """Close the connection."""
        self._pipeline = self._pipeline_mode = None
        if self._raw is not None:
            self._raw.close()


class PipelinedCursor:
    """The cursor of a statement sent inside a pipeline: reading its result (a fetch,
    ``rowcount``, iteration) waits for the server's answers up to it, once; psycopg
    errors become kyfs errors (:class:`PgConnection`). When the connection was lost
    before any answer, the transaction's statements are sent again on a new one first
    (PgConnection._again) and the read is made there."""

    def __init__(
        self, owner: PgConnection, conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any]
    ) -> None:
        self._owner, self._conn, self._cursor = owner, conn, cursor

    def rebind(self, conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any]) -> None:
        """Read from ``cursor`` on ``conn`` instead: the statement was sent again there."""
        self._conn, self._cursor = conn, cursor

    def _read(self, how: Callable[[psycopg.Cursor[Any]], Any]) -> Any:
        try:
            got = how(self._cursor)
        except psycopg.Error as exc:
            if not self._owner._again(self._conn, exc):
                raise self._owner._read_failed(self._conn, exc) from None
            try:
                got = how(self._cursor)
            except psycopg.Error as again:
                raise self._owner._read_failed(self._conn, again) from None
        self._owner._answered()
        return got

    @property
    def rowcount(self) -> int:
        """Rows the statement changed or returned (psycopg knows it once the answer is
        read: a fetch reads it, a sync of the pipeline too)."""

        def synced(cursor: psycopg.Cursor[Any]) -> int:
            pipeline = self._owner._pipeline
            if cursor.pgresult is None and pipeline is not None:
                pipeline.sync()
            return cursor.rowcount

        return int(self._read(synced))

    def fetchone(self) -> Any:
        """The next row, or None."""
        return self._read(lambda cursor: cursor.fetchone())

    def fetchall(self) -> list[Any]:
        """Every row left."""
        return list(self._read(lambda cursor: cursor.fetchall()))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())
