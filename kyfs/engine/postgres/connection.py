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
import secrets
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from kyfs.core.errors import KyfsError, NoSpace, StorageError, UnusableDatabase

CONNECT_TIMEOUT_S = 10  # seconds libpq waits for the server (connect_timeout)
LOCK_TIMEOUT_S = 10  # seconds a statement waits for a lock (SQLite's busy timeout: 10 s)
APPLICATION = "kyfs"  # application_name, as pg_stat_activity shows it
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
        self._raw: psycopg.Connection[Any] | None = connect(url, schema, self._origin)
        self._cut_short = False  # the connection broke inside a transaction

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The live psycopg connection, connecting again first when it was lost.

        Raises:
            StorageError: (EIO, exit 4) the server is still away.
        """
        if self._raw is None or self._raw.closed:
            self._raw = connect(self._url, self._schema, self._origin)
        return self._raw

    @property
    def in_transaction(self) -> bool:
        """True inside BEGIN ... COMMIT (libpq's transaction status), and after a
        connection lost in a transaction until its ROLLBACK."""
        if self._cut_short:
            return True
        if self._raw is None or self._raw.closed:
            return False
        return self._raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        """Run one statement; returns its psycopg cursor (fetchone, fetchall, rowcount).

        Raises:
            StorageError / NoSpace: (EIO / ENOSPC, exit 4) the server failed or is away.
        """
        if self._cut_short:
            if sql in ("ROLLBACK", "COMMIT"):  # the transaction ends here: reconnect next
                self._cut_short = False
                if sql == "ROLLBACK":
                    return None
            raise StorageError("PostgreSQL: the connection was lost in this transaction")
        conn = self.raw
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            return conn.execute(translate(sql), parameters or None)
        except psycopg.Error as exc:
            if not (conn.closed or conn.broken):
                raise convert(exc) from None
            if idle and sql.startswith(_SAFE_AGAIN):
                # The server went away since this connection's last statement (a restart):
                # a BEGIN or a read outside a transaction did nothing yet, so it runs once
                # more on a new connection instead of failing the first use afterwards.
                self._drop(conn)
                conn = self.raw  # StorageError when the server is still away
                try:
                    return conn.execute(translate(sql), parameters or None)
                except psycopg.Error as again:
                    raise self._failed(conn, again, cut_short=False) from None
            # Cut short: a statement inside BEGIN ... COMMIT, not the COMMIT itself (which
            # ends the transaction whatever its outcome) nor the BEGIN (whose caller never
            # goes on).
            raise self._failed(conn, exc, cut_short=not idle and sql != "COMMIT") from None

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
        try:
            with conn.cursor() as cursor:
                cursor.executemany(translate(sql), rows)
        except psycopg.Error as exc:
            raise self._failed(conn, exc, cut_short=not idle) from None

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

    def close(self) -> None:
        """Close the connection."""
        if self._raw is not None:
            self._raw.close()
