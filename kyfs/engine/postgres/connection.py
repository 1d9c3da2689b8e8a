"""Connections to a PostgreSQL server, and the adapter that lets kyfs.engine.sql's
statements run on one.

kyfs.engine.sql writes its SQL once with ``?`` placeholders, as sqlite3 takes them;
psycopg 3 takes ``%s`` (psycopg.org/psycopg3/docs/basic/params.html). :class:`PgConnection`
translates each statement once (cached), runs it, and turns every psycopg error into a
kyfs error: NoSpace (ENOSPC) for a full disk (SQLSTATE 53100), StorageError (EIO, exit 4)
for everything else, a lost connection among them. It also reads part of a stored block
for :func:`kyfs.engine.sql.values.read_blocks` (``substr`` on ``bytea``), as SQLite's BLOB
I/O does there.

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

import functools
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from kyfs.core.errors import KyfsError, NoSpace, StorageError

CONNECT_TIMEOUT_S = 10  # seconds libpq waits for the server (connect_timeout)
APPLICATION = "kyfs"  # application_name, as pg_stat_activity shows it


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


def connect(url: str, schema: str | None = None) -> psycopg.Connection[Any]:
    """A new autocommit connection to ``url``; with ``schema``, its ``search_path`` is that
    schema only, so the workspace's tables are found by their plain names.

    Raises:
        StorageError: (EIO, exit 4) the server cannot be reached or refuses.
    """
    try:
        conninfo = make_conninfo(
            url,
            connect_timeout=str(CONNECT_TIMEOUT_S),
            application_name=APPLICATION,
        )
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to {redact(url)}: {_first_line(exc)}") from None
    try:
        # Marks the history rows this connection writes (see PgWorkspace._change_rows).
        conn.execute("SELECT set_config('kyfs.origin', %s, false)", (secrets.token_hex(8),))
        if schema is not None:
            conn.execute("SELECT set_config('search_path', %s, false)", (_quote(schema),))
    except psycopg.Error as exc:
        conn.close()
        raise convert(exc) from None
    return conn


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


class _Blob:
    """Part of one stored block, read with ``substr`` (sqlite3.Blob's seek and read)."""

    def __init__(self, conn: psycopg.Connection[Any], table: str, column: str, row: int) -> None:
        self._conn, self._row, self._at = conn, row, 0
        self._sql = f"SELECT substr({column}, %s, %s) FROM {table} WHERE id = %s"

    def seek(self, offset: int, origin: int = 0, /) -> None:
        self._at = offset

    def read(self, length: int = -1, /) -> bytes:
        found = self._conn.execute(self._sql, (self._at + 1, length, self._row)).fetchone()
        piece = bytes(found[0]) if found and found[0] is not None else b""
        self._at += len(piece)
        return piece


class PgConnection:
    """A psycopg connection as kyfs.engine.sql.base.Connection: ``?`` placeholders, kyfs
    errors, ``in_transaction``, and ``blobopen`` for partial block reads."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    @property
    def in_transaction(self) -> bool:
        """True inside BEGIN ... COMMIT (libpq's transaction status)."""
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        """Run one statement; returns its psycopg cursor (fetchone, fetchall, rowcount).

        Raises:
            StorageError / NoSpace: (EIO / ENOSPC, exit 4) the server failed.
        """
        try:
            return self.raw.execute(translate(sql), parameters or None)
        except psycopg.Error as exc:
            raise convert(exc) from None

    @contextmanager
    def blobopen(
        self, table: str, column: str, row: int, /, *, readonly: bool = False
    ) -> Iterator[_Blob]:
        """A reader of row ``row``'s ``column`` in ``table`` (read only)."""
        yield _Blob(self.raw, table, column, row)

    def close(self) -> None:
        """Close the connection."""
        self.raw.close()
