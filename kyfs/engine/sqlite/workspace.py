"""One workspace = one SQLite file: keys, directories and their values.

The interface kyfs.fuse.adapter and kyfs.cli rely on is :class:`Store`; a second storage
engine (PostgreSQL, later) implements the same methods. Keys are ``/``-separated
text (kyfs.core.names); values are bytes, stored in blocks of BLOCK_SIZE bytes so
that no single BLOB reaches SQLite's 10^9-byte SQLITE_MAX_LENGTH and a read at
an offset touches only the blocks it needs (through SQLite's incremental BLOB
I/O, ``Connection.blobopen``).

Directories are stored: a ``set`` of ``a/b/c`` also records directories ``a``
and ``a/b``, and they stay when their last key goes (as on a filesystem; only
``rmdir`` removes a directory). Every change runs in one ``BEGIN IMMEDIATE``
transaction, so a second writer waits for the busy timeout instead of failing
(see ../shared/STYLE.md); reads that touch several rows run in one read
transaction so they see one snapshot.

Durability: WAL (checked: ``PRAGMA journal_mode=WAL`` must answer ``wal``) with
``synchronous=NORMAL``: a committed transaction survives the process being
killed; :meth:`Store.sync` (called on fsync) also makes it survive power loss
(sqlite.org/pragma.html#pragma_synchronous).

Thread-safety: a Store is used by one thread at a time. The connection is
opened with ``check_same_thread=False`` so that the FUSE loop may use a Store
built on another thread, but callers must not share it concurrently.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from kyfs.core import names
from kyfs.core.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidQuery,
    IsADirectory,
    KeyNotFound,
    NoSpace,
    NotADirectory,
    NotEmpty,
    SchemaViolation,
    StorageError,
    ValueTooLarge,
)
from kyfs.core.tokens import tokenize
from kyfs.engine.sqlite import schema as migrations

BLOCK_SIZE = 256 * 1024  # bytes per stored block of a value
HISTORY_VALUE_MAX = 16 * 1024**2  # bytes: a longer value's versions are recorded without it
HISTORY_VERSIONS = 100  # versions kept per key at least (meta history_versions)
HISTORY_DAYS = 30  # days of versions kept at least (meta history_days)
PRUNE_EVERY = 16  # history rows between two prunings of the key just written
MAX_VALUE_SIZE = 16 * 1024**3  # bytes; a larger value is refused with EFBIG
BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another one, milliseconds
INLINE_READ_MAX = 64 * 1024  # blocks up to this size are read in the query, not by BLOB I/O
FILE_MODE = 0o644
DIR_MODE = 0o755
ROOT = ""  # the key of the workspace's own top directory

_ENTRY_COLUMNS = "id, key, is_dir, mode, size, created_ns, mtime_ns, ctime_ns, atime_ns"
_SQL_STAT = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE key = ?"
_SQL_STAT_ID = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id = ?"
_SQL_CHILDREN = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE parent = ? ORDER BY key"
_SQL_HAS_CHILD = "SELECT 1 FROM entries WHERE parent = ? LIMIT 1"
_SQL_INSERT = (
    "INSERT INTO entries (key, parent, is_dir, mode, size, created_ns, mtime_ns, ctime_ns,"
    " atime_ns) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)"
)
_SQL_INSERT_DIR_IF_MISSING = (
    "INSERT INTO entries (key, parent, is_dir, mode, size, created_ns, mtime_ns, ctime_ns,"
    " atime_ns) VALUES (?, ?, 1, ?, 0, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING"
)
_SQL_BLOCKS = (
    "SELECT idx, id, length(data), CASE WHEN length(data) <= ? THEN data END"
    " FROM blocks WHERE entry_id = ? AND idx BETWEEN ? AND ? ORDER BY idx"
)
# kyfs's own consistency rules: each query selects the ids breaking one rule.
_CHECKS = [
    (
        "blocks that belong to no entry",
        "SELECT b.id FROM blocks b WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.id ="
        " b.entry_id) AND NOT EXISTS (SELECT 1 FROM archive a WHERE a.id = b.entry_id)",
    ),
    (
        "blocks past the size of their value",
        f"SELECT b.id FROM blocks b JOIN entries e ON e.id = b.entry_id"
        f" WHERE b.idx * {BLOCK_SIZE} >= e.size",
    ),
    (
        "blocks longer than the block size",
        f"SELECT id FROM blocks WHERE length(data) > {BLOCK_SIZE}",
    ),
    (
        "entries whose parent directory is missing",
        "SELECT e.key FROM entries e WHERE e.parent != '' AND NOT EXISTS"
        " (SELECT 1 FROM entries d WHERE d.key = e.parent AND d.is_dir = 1)",
    ),
    (
        "keys missing from the search index",
        "SELECT e.id FROM entries e WHERE e.is_dir = 0 AND NOT EXISTS"
        " (SELECT 1 FROM search_text t WHERE t.id = e.id AND t.key = e.key)",
    ),
    (
        "search index rows of no key",
        "SELECT t.id FROM search_text t WHERE NOT EXISTS"
        " (SELECT 1 FROM entries e WHERE e.id = t.id AND e.is_dir = 0)",
    ),
    # FTS5 keeps one row per indexed document in its shadow table %_docsize; before
    # SQLite 3.44 'integrity-check' does not compare the index with its content table.
    (
        "keys missing from the full-text index",
        "SELECT t.id FROM search_text t WHERE NOT EXISTS"
        " (SELECT 1 FROM search_index_docsize d WHERE d.id = t.id)",
    ),
    (
        "full-text index rows of no key",
        "SELECT d.id FROM search_index_docsize d WHERE NOT EXISTS"
        " (SELECT 1 FROM search_text t WHERE t.id = d.id)",
    ),
]
_SQL_SEARCH = (
    "SELECT t.key, t.value, t.key_tokens + t.value_tokens,"
    " snippet(search_index, -1, ?, ?, '…', 12), bm25(search_index)"
    " FROM search_index JOIN search_text t ON t.id = search_index.rowid"
    " WHERE search_index MATCH ? ORDER BY rank LIMIT ?"
)
_SQL_SEARCH_KEYS = (
    "SELECT t.key, NULL, t.key_tokens + t.value_tokens, t.key, bm25(search_index)"
    " FROM search_index JOIN search_text t ON t.id = search_index.rowid"
    " WHERE search_index MATCH ? ORDER BY rank LIMIT ?"
)
MARK_START, MARK_END = "\x02", "\x03"  # around matches in snippets

# An open file keeps reading an entry deleted under it: its value waits in the archive.
_SQL_SIZE_ANY = (
    "SELECT size FROM entries WHERE id = ? UNION ALL SELECT size FROM archive WHERE id = ? LIMIT 1"
)
_SQL_ARCHIVE = (
    "INSERT INTO archive (id, key, is_dir, mode, size, created_ns, mtime_ns, ctime_ns, deleted_ns)"
    " SELECT id, key, is_dir, mode, size, created_ns, mtime_ns, ctime_ns, ? FROM entries"
    " WHERE id = ?"
)
_ARCHIVE_COLUMNS = "id, key, is_dir, mode, size, created_ns, mtime_ns, ctime_ns, deleted_ns"
_SQL_ONE_BLOCK = (
    "SELECT e.size, length(b.data), CASE WHEN length(b.data) <= ? THEN b.data END"
    " FROM entries e LEFT JOIN blocks b ON b.entry_id = e.id AND b.idx = ? WHERE e.id = ?"
)
_SQL_UPSERT_BLOCK = (
    "INSERT INTO blocks (entry_id, idx, data) VALUES (?, ?, ?)"
    " ON CONFLICT (entry_id, idx) DO UPDATE SET data = excluded.data"
)
_SQL_DROP_BLOCKS_FROM = "DELETE FROM blocks WHERE entry_id = ? AND idx >= ?"
_SQL_CUT_BLOCK = "UPDATE blocks SET data = substr(data, 1, ?) WHERE entry_id = ? AND idx = ?"
_SQL_SET_SIZE = "UPDATE entries SET size = ?, mtime_ns = ?, ctime_ns = ? WHERE id = ?"
_SQL_COUNT_KEYS = "SELECT count(*) FROM entries WHERE is_dir = 0"


class Entry(NamedTuple):
    """What is stored about one key or directory.

    Attributes:
        id: the row id, stable for the entry's life and across renames (per workspace).
        key: its full key within the workspace (``""`` for the workspace's top).
        is_dir: a directory rather than a key with a value.
        mode: permission bits (``0o7777`` mask), without the file type.
        size: value length in bytes (0 for directories).
        created_ns, mtime_ns, ctime_ns, atime_ns: nanoseconds since the epoch, UTC.
    """

    id: int
    key: str
    is_dir: bool
    mode: int
    size: int
    created_ns: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int

    @property
    def name(self) -> str:
        """The last component of the key."""
        return self.key.rpartition(names.SEP)[2]


class ImportItem(NamedTuple):
    """A key to import: its value (bytes), and optionally its mode and times (ns, UTC)."""

    key: str
    value: bytes
    mode: int | None = None
    created_ns: int | None = None
    mtime_ns: int | None = None


class HistoryEntry(NamedTuple):
    """One recorded change of a key: ``action`` is "set" (with ``value``, None when it
    was too large to keep), "delete" or "rename"; ``detail`` says more (the other name
    of a rename, "expired", "restored ..."); ``id`` is the stable version number."""

    key: str
    action: str
    value: bytes | None
    time_ns: int
    detail: str | None = None
    id: int | None = None


class Match(NamedTuple):
    """One full-text match in a workspace.

    Attributes:
        key: the matching key.
        text: the value's indexed text (None when binary, too long, or not asked for).
        length: the document's length in tokens (key and value), for scoring.
        snippet: a short extract, matches between MARK_START and MARK_END.
        bm25: SQLite FTS5's bm25 within this workspace (lower is better).
    """

    key: str
    text: str | None
    length: int
    snippet: str
    bm25: float


class Archived(NamedTuple):
    """A deleted key or directory waiting in the archive: the entry as it was, and when
    it was deleted (``deleted_ns``, nanoseconds since the epoch, UTC)."""

    entry: Entry
    deleted_ns: int


def _archived(row: tuple[int, str, int, int, int, int, int, int, int]) -> Archived:
    # archive rows have no atime: report the modification time for it.
    entry = Entry(row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6], row[7], row[6])
    return Archived(entry, row[8])


def _entry(row: tuple[int, str, int, int, int, int, int, int, int]) -> Entry:
    return Entry(row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6], row[7], row[8])


def _convert(exc: sqlite3.Error) -> StorageError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return NoSpace(f"disk full: {exc}")
    return StorageError(f"storage error: {exc}")


def check_size(size: int) -> None:
    """Raise ValueTooLarge (EFBIG, exit 2) when ``size`` bytes is over MAX_VALUE_SIZE."""
    if size > MAX_VALUE_SIZE:
        raise ValueTooLarge(f"value of {size} bytes is over the limit of {MAX_VALUE_SIZE} bytes")
    if size < 0:
        raise InvalidInput(f"negative size {size}")


class Store:
    """One workspace's SQLite file (see the module docstring for threads and durability).

    Args:
        path: the ``.db`` file.
        create: create the file (mode 0600); it must not exist yet.
        retention_s: archived entries older than this many seconds are deleted for
            good when the store opens; None keeps them all.
        migrate: bring the schema up to date on open (off for fsck, which only looks).

    Raises:
        StorageError: (EIO, exit 4) the file cannot be opened, is not a SQLite
            database, or WAL mode could not be switched on.
    """

    def __init__(
        self,
        path: Path,
        create: bool = False,
        retention_s: float | None = None,
        migrate: bool = True,
    ) -> None:
        self.path = path
        self.block_size = BLOCK_SIZE
        try:
            if create:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            # mode=rw: never create a file behind a workspace that was renamed or dropped.
            uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=rw"
            self._conn = sqlite3.connect(
                uri,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except FileExistsError:
            raise AlreadyExists(f"file exists: {path}") from None
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open workspace file {path}: {exc}") from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{path}: WAL mode refused (journal_mode={mode})")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            if migrate:
                migrations.apply(self._conn)
            if migrate and retention_s is not None:
                self.purge_archive(time.time_ns() - int(retention_s * 1e9))
        except sqlite3.Error as exc:
            self._conn.close()
            raise StorageError(f"{path}: not a usable workspace file: {exc}") from None
        except BaseException:
            self._conn.close()
            raise

    # --- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection; the Store cannot be used afterwards."""
        self._conn.close()

    @contextmanager
    def _atomic(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE); rolled back on any exception."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _convert(exc) from None
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _convert(exc) from None
        except BaseException:
            self._rollback()
            raise

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction, so that several queries see the same state."""
        try:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _convert(exc) from None

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _query_one(self, sql: str, args: tuple[object, ...]) -> Entry | None:
        try:
            row = self._conn.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise _convert(exc) from None
        return _entry(row) if row else None

    def _root(self) -> Entry:
        stat = self.path.stat()
        return Entry(
            0,
            ROOT,
            True,
            DIR_MODE,
            0,
            stat.st_mtime_ns,
            stat.st_mtime_ns,
            stat.st_mtime_ns,
            stat.st_mtime_ns,
        )

    # --- lookups --------------------------------------------------------------------------
    def stat(self, key: str) -> Entry:
        """The entry stored at ``key`` (``""`` is the workspace's top directory).

        Raises:
            KeyNotFound: (ENOENT, exit 1) nothing is stored there.
        """
        if key == ROOT:
            return self._root()
        entry = self._query_one(_SQL_STAT, (key,))
        if entry is None:
            raise KeyNotFound(f"key not found: {key}")
        return entry

    def stat_id(self, entry_id: int) -> Entry | None:
        """The entry with row id ``entry_id``, or None when it was deleted."""
        return self._query_one(_SQL_STAT_ID, (entry_id,))

    def children(self, directory: str) -> list[Entry]:
        """The entries directly inside ``directory``, sorted by key.

        Raises:
            KeyNotFound: (ENOENT) no such directory. NotADirectory: (ENOTDIR) it is a key.
        """
        if directory != ROOT and not self.stat(directory).is_dir:
            raise NotADirectory(f"not a directory: {directory}")
        try:
            return [_entry(row) for row in self._conn.execute(_SQL_CHILDREN, (directory,))]
        except sqlite3.Error as exc:
            raise _convert(exc) from None

    def keys(self, prefix: str = "", glob: str | None = None) -> list[str]:
        """Every key (not directory) that starts with ``prefix`` and, when given, matches
        the glob ``glob`` (SQLite GLOB: ``*`` ``?`` ``[...]``, case-sensitive, ``*``
        crosses ``/``), sorted by code point."""
        sql, args = "SELECT key FROM entries WHERE is_dir = 0", []
        if prefix:
            sql += " AND key >= ? AND key < ?"
            args += [prefix, prefix + "\U0010ffff"]
        if glob is not None:
            sql += " AND key GLOB ?"
            args.append(glob)
        try:
            return [row[0] for row in self._conn.execute(sql + " ORDER BY key", args)]
        except sqlite3.Error as exc:
            raise _convert(exc) from None

    def count_keys(self) -> int:
        """How many keys (not directories) the workspace holds."""
        try:
            return int(self._conn.execute(_SQL_COUNT_KEYS).fetchone()[0])
        except sqlite3.Error as exc:
            raise _convert(exc) from None

    def file_size(self) -> int:
        """Bytes on disk: the database file plus its WAL."""
        from kyfs.platform.paths import sidecar_files

        total = 0
        for part in (self.path, *sidecar_files(self.path)[:1]):
            with suppress(FileNotFoundError):
                total += part.stat().st_size
        return total

    # --- values -----------------------------------------------------------------------------
    def read(self, entry_id: int, offset: int, size: int, valid: int | None = None) -> bytes:
        """Up to ``size`` bytes of the value of entry ``entry_id`` from byte ``offset``.

        Only the blocks that hold the range are read, and a block larger than
        INLINE_READ_MAX is read by BLOB I/O at the offset, never whole.
        Without ``valid`` the result stops at the stored size. With ``valid``
        (bytes) the result is exactly ``size`` bytes and every byte at or past
        ``min(valid, stored size)`` is zero (an open file truncated below the
        stored size, or grown past it). Holes read as zeros. An unknown
        ``entry_id`` reads as empty (or zeros with ``valid``).
        """
        if valid is None and size > 0 and offset // BLOCK_SIZE == (offset + size - 1) // BLOCK_SIZE:
            fast = self._read_one_block(entry_id, offset, size)
            if fast is not None:
                return fast
        with self._snapshot() as conn:
            row = conn.execute(_SQL_SIZE_ANY, (entry_id, entry_id)).fetchone()
            stored = row[0] if row else 0
            if valid is None:
                end, stored_end = min(offset + size, stored), stored
            else:
                end, stored_end = offset + size, min(stored, valid)
            if end <= offset:
                return b""
            return self._read_blocks(conn, entry_id, offset, end, stored_end)

    def _read_one_block(self, entry_id: int, offset: int, size: int) -> bytes | None:
        """A read inside one small block in a single statement (no explicit transaction):
        the common cat of a small key. None when the general path is needed (a large
        block read by BLOB I/O, or an entry that is only in the archive)."""
        idx, within = divmod(offset, BLOCK_SIZE)
        try:
            row = self._conn.execute(_SQL_ONE_BLOCK, (INLINE_READ_MAX, idx, entry_id)).fetchone()
        except sqlite3.Error as exc:
            raise _convert(exc) from None
        if row is None:
            return None
        stored, length, data = row
        end = min(offset + size, stored)
        if end <= offset:
            return b""
        if length is None:  # a hole
            return bytes(end - offset)
        if data is None:  # a large block: BLOB I/O in a snapshot
            return None
        piece = bytes(data[within : within + end - offset])
        return piece + bytes(end - offset - len(piece))

    def _read_blocks(
        self, conn: sqlite3.Connection, entry_id: int, start: int, end: int, stored_end: int
    ) -> bytes:
        out = bytearray(end - start)  # zeros: holes and bytes past stored_end stay zero
        take_end = min(end, stored_end)
        if take_end <= start:
            return bytes(out)
        first, last = start // BLOCK_SIZE, (take_end - 1) // BLOCK_SIZE
        for idx, rowid, length, inline in conn.execute(
            _SQL_BLOCKS, (INLINE_READ_MAX, entry_id, first, last)
        ):
            base = idx * BLOCK_SIZE
            lo = max(start, base) - base
            hi = min(take_end, base + length) - base
            if hi <= lo:
                continue
            if inline is not None:
                piece = inline[lo:hi]
            else:
                with conn.blobopen("blocks", "data", rowid, readonly=True) as blob:
                    blob.seek(lo)
                    piece = blob.read(hi - lo)
            at = base + lo - start
            out[at : at + len(piece)] = piece
        return bytes(out)

    def iter_value(self, key: str) -> Iterator[bytes]:
        """The value of ``key`` as consecutive pieces of at most BLOCK_SIZE bytes.

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3).
        """
        entry = self.stat(key)
        if entry.is_dir:
            raise IsADirectory(f"is a directory: {key}")
        for offset in range(0, entry.size, BLOCK_SIZE):
            length = min(BLOCK_SIZE, entry.size - offset)
            yield self.read(entry.id, offset, length, valid=entry.size)

    def get(self, key: str) -> bytes:
        """The whole value of ``key`` (use iter_value for large ones).

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3).
        """
        return b"".join(self.iter_value(key))

    # --- writes -----------------------------------------------------------------------------
    def _ensure_parents(self, conn: sqlite3.Connection, key: str, now: int) -> None:
        """Record every missing directory above ``key``; fail if one of them is a key."""
        for directory in names.ancestors(key):
            row = conn.execute("SELECT is_dir FROM entries WHERE key = ?", (directory,)).fetchone()
            if row is None:
                conn.execute(
                    _SQL_INSERT_DIR_IF_MISSING,
                    (directory, names.parent_of(directory), DIR_MODE, now, now, now, now),
                )
            elif not row[0]:
                raise NotADirectory(f"not a directory: {directory}")

    def _insert(self, conn: sqlite3.Connection, key: str, is_dir: bool, mode: int) -> int:
        now = time.time_ns()
        self._ensure_parents(conn, key, now)
        cur = conn.execute(
            _SQL_INSERT, (key, names.parent_of(key), int(is_dir), mode & 0o7777, now, now, now, now)
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def create(self, key: str, mode: int = FILE_MODE, exclusive: bool = False) -> Entry:
        """Make ``key`` exist as a key; an empty value when it is new.

        Returns the entry. When the key exists it is returned unchanged, unless
        ``exclusive`` (O_EXCL). Missing directories above it are created.

        Raises:
            AlreadyExists: (EEXIST) ``exclusive`` and the key exists.
            IsADirectory: (EISDIR) a directory has that key.
            NotADirectory: (ENOTDIR) a key stands where a directory above it should.
        """
        names.check_key(key)
        with self._atomic() as conn:
            row = conn.execute(_SQL_STAT, (key,)).fetchone()
            if row is not None:
                entry = _entry(row)
                if entry.is_dir:
                    raise IsADirectory(f"is a directory: {key}")
                if exclusive:
                    raise AlreadyExists(f"key exists: {key}")
                return entry
            entry_id = self._insert(conn, key, False, mode)
            migrations.index_entry(conn, entry_id, key, 0, b"")
            return _entry(conn.execute(_SQL_STAT_ID, (entry_id,)).fetchone())

    def set(
        self,
        key: str,
        value: bytes | BinaryIO,
        mode: int | None = None,
        ttl_s: float | None = None,
    ) -> Entry:
        """Store ``value`` at ``key``, creating or replacing it in one transaction.

        ``value`` is bytes or a binary file object read to its end in
        BLOCK_SIZE pieces (so stdin of any size streams in bounded memory).
        ``mode`` (permission bits) defaults to 0644 for a new key and is kept
        for an existing one. The key expires ``ttl_s`` seconds from now (None: a
        cache workspace's TTL, else never: a set without a TTL clears the old one).

        Raises:
            InvalidName, NameTooLong, IllegalByteSequence: (exit 2) a bad key.
            IsADirectory / NotADirectory: (exit 3) the path conflicts with a directory or key.
            ValueTooLarge: (EFBIG, exit 2) over MAX_VALUE_SIZE; nothing is written.
        """
        names.check_key(key)
        with self._atomic() as conn:
            entry_id = self._put(conn, key, value, mode, ttl_s=ttl_s)
            return _entry(conn.execute(_SQL_STAT_ID, (entry_id,)).fetchone())

    def _put(
        self,
        conn: sqlite3.Connection,
        key: str,
        value: bytes | BinaryIO,
        mode: int | None,
        created_ns: int | None = None,
        mtime_ns: int | None = None,
        ttl_s: float | None = None,
        detail: str | None = None,
    ) -> int:
        """Create or replace ``key`` with ``value`` inside the caller's transaction; the
        key's TTL becomes ``ttl_s`` (None: none, or the cache workspace's)."""
        now = time.time_ns()
        row = conn.execute(_SQL_STAT, (key,)).fetchone()
        if row is not None:
            entry = _entry(row)
            if entry.is_dir:
                raise IsADirectory(f"is a directory: {key}")
            entry_id = entry.id
            if mode is not None:
                conn.execute("UPDATE entries SET mode = ? WHERE id = ?", (mode & 0o7777, entry_id))
            conn.execute("DELETE FROM blocks WHERE entry_id = ?", (entry_id,))
        else:
            entry_id = self._insert(conn, key, False, FILE_MODE if mode is None else mode)
        size = 0
        for idx, piece in enumerate(_pieces(value)):
            size += len(piece)
            check_size(size)
            conn.execute(_SQL_UPSERT_BLOCK, (entry_id, idx, piece))
        mtime = now if mtime_ns is None else mtime_ns
        conn.execute(_SQL_SET_SIZE, (size, mtime, now, entry_id))
        if created_ns is not None:
            conn.execute("UPDATE entries SET created_ns = ? WHERE id = ?", (created_ns, entry_id))
        self._after_write(
            conn, entry_id, key, ttl_s=ttl_s, replace_ttl=True, detail=detail, size=size
        )
        return entry_id

    def _after_write(
        self,
        conn: sqlite3.Connection,
        entry_id: int,
        key: str,
        *,
        ttl_s: float | None = None,
        replace_ttl: bool = False,
        detail: str | None = None,
        size: int | None = None,
    ) -> None:
        """What every value write does in its transaction: TTL, schema check, history,
        search index. ``replace_ttl``: the TTL becomes ``ttl_s`` (kyfs set), else it
        is kept (writes through the mount); a cache workspace's TTL always applies.

        Raises:
            SchemaViolation: (EINVAL, exit 2) the value breaks a schema rule; the
                caller's transaction rolls back.
        """
        meta = self._meta(conn)
        now = time.time_ns()
        default_ttl = meta.get("ttl_s")
        if default_ttl is not None and ttl_s is None:
            ttl_s = float(default_ttl)
        if ttl_s is not None or replace_ttl:
            expires = None if ttl_s is None else now + int(ttl_s * 1e9)
            conn.execute("UPDATE entries SET expires_ns = ? WHERE id = ?", (expires, entry_id))
        rules = json.loads(meta.get("schemas", "[]"))
        if rules:
            from fnmatch import fnmatchcase

            rules = [r for r in rules if fnmatchcase(key, r["glob"])]
        if size is None:
            size = conn.execute("SELECT size FROM entries WHERE id = ?", (entry_id,)).fetchone()[0]
        value = None
        if rules or size <= HISTORY_VALUE_MAX:
            value = self._read_blocks(conn, entry_id, 0, size, size)
        for rule in rules:
            _validate(key, rule, value or b"")
        detail = detail if value is not None else "too large"
        self._record(conn, key, "set", value, detail, now, meta)
        migrations.index_entry(conn, entry_id, key, size, value)

    def _meta(self, conn: sqlite3.Connection) -> dict[str, str]:
        return dict(conn.execute("SELECT name, value FROM meta").fetchall())

    def _record(
        self,
        conn: sqlite3.Connection,
        key: str,
        action: str,
        value: bytes | None,
        detail: str | None,
        now: int,
        meta: dict[str, str] | None = None,
    ) -> None:
        """Append to the key's history, and every PRUNE_EVERY rows prune that key to the
        retention (meta history_versions, default 100, and history_days, default 30:
        whichever keeps more; the retention is a minimum, so pruning late is safe)."""
        cur = conn.execute(
            "INSERT INTO history (key, action, value, time_ns, detail) VALUES (?, ?, ?, ?, ?)",
            (key, action, value, now, detail),
        )
        if (cur.lastrowid or 0) % PRUNE_EVERY:
            return
        meta = self._meta(conn) if meta is None else meta
        versions = int(meta.get("history_versions", HISTORY_VERSIONS))
        cutoff = now - int(float(meta.get("history_days", HISTORY_DAYS)) * 86400e9)
        conn.execute(
            "DELETE FROM history WHERE key = ? AND time_ns < ? AND id NOT IN"
            " (SELECT id FROM history WHERE key = ? ORDER BY id DESC LIMIT ?)",
            (key, cutoff, key, versions),
        )

    # --- bulk import -------------------------------------------------------------------------
    def import_entries(self, items: Iterable[ImportItem], conflict: str = "error") -> int:
        """Write many keys in one transaction; return how many were written.

        ``conflict`` says what happens when a key exists: ``"error"`` raises
        AlreadyExists (nothing is written), ``"keep"`` leaves the stored value,
        ``"replace"`` archives the stored value and writes the new one.

        Raises:
            AlreadyExists: (EEXIST, exit 3) with ``conflict="error"``.
            InvalidName etc.: (exit 2) an item has an invalid key; nothing is written.
        """
        written = 0
        with self._atomic() as conn:
            for item in items:
                names.check_key(item.key)
                live = conn.execute(_SQL_STAT, (item.key,)).fetchone()
                if live is not None and not live[2]:
                    if conflict == "keep":
                        continue
                    if conflict != "replace":
                        raise AlreadyExists(f"key exists: {item.key}")
                    _archive(conn, live[0])
                self._put(
                    conn, item.key, item.value, item.mode, item.created_ns, item.mtime_ns,
                    detail="imported",
                )  # fmt: skip
                written += 1
        return written

    def import_archived(self, items: Iterable[tuple[ImportItem, int]]) -> int:
        """Put ``(item, deleted_ns)`` pairs straight into the archive, in one transaction."""
        count = 0
        with self._atomic() as conn:
            for item, deleted_ns in items:
                # A fresh id from the AUTOINCREMENT sequence, never used by a live entry.
                entry_id = self._insert(conn, "\0import", False, item.mode or FILE_MODE)
                for idx, piece in enumerate(_pieces(item.value)):
                    conn.execute(_SQL_UPSERT_BLOCK, (entry_id, idx, piece))
                created = item.created_ns or deleted_ns
                mtime = item.mtime_ns or deleted_ns
                conn.execute(
                    "UPDATE entries SET size = ?, created_ns = ?, mtime_ns = ?, ctime_ns = ?"
                    " WHERE id = ?",
                    (len(item.value), created, mtime, mtime, entry_id),
                )
                conn.execute(_SQL_ARCHIVE, (deleted_ns, entry_id))
                conn.execute(
                    "UPDATE archive SET key = ?, archived_ns = ? WHERE id = ?",
                    (item.key, time.time_ns(), entry_id),
                )
                conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
                count += 1
        return count

    def import_history(self, items: Iterable[HistoryEntry]) -> int:
        """Append imported history rows (e.g. KyCLI's audit log), in one transaction."""
        count = 0
        with self._atomic() as conn:
            for item in items:
                conn.execute(
                    "INSERT INTO history (key, action, value, time_ns) VALUES (?, ?, ?, ?)",
                    (item.key, item.action, item.value, item.time_ns),
                )
                count += 1
        return count

    def history(self, key: str) -> list[HistoryEntry]:
        """The recorded history of ``key``, oldest first."""
        try:
            rows = self._conn.execute(
                "SELECT key, action, value, time_ns, detail, id FROM history WHERE key = ?"
                " ORDER BY time_ns, id",
                (key,),
            )
            return [HistoryEntry(*row) for row in rows]
        except sqlite3.Error as exc:
            raise _convert(exc) from None

    def backup_to(self, target: Path) -> None:
        """Write a consistent snapshot of the workspace to the new file ``target`` with
        SQLite's online backup API (sqlite.org/backup.html): correct while others write.

        Raises:
            StorageError: (EIO, exit 4).
        """
        try:
            destination = sqlite3.connect(target)
            try:
                self._conn.backup(destination)
            finally:
                destination.close()
        except sqlite3.Error as exc:
            raise _convert(exc) from None

    def commit(
        self,
        entry_id: int,
        *,
        size: int,
        valid: int,
        blocks: Iterable[tuple[int, bytes]],
        mtime_ns: int | None = None,
    ) -> bool:
        """Apply an open file's buffered changes to entry ``entry_id`` in one transaction.

        Args:
            size: the value's new length in bytes.
            valid: bytes of the stored value still meaningful; stored data at or past
                it is dropped (the file was truncated to ``valid`` while open).
            blocks: ``(index, data)`` pairs; block ``index`` covers bytes
                ``[index * block_size, index * block_size + len(data))`` and replaces what
                was stored there. ``data`` may be shorter than block_size only for
                the last block of the value.
            mtime_ns: the modification time to record; now when None.

        Returns False when the entry no longer exists (unlinked while open); then
        nothing is written.

        Raises:
            ValueTooLarge: (EFBIG) ``size`` over MAX_VALUE_SIZE. NoSpace: (ENOSPC) disk full.
        """
        check_size(size)
        now = time.time_ns()
        with self._atomic() as conn:
            found = conn.execute("SELECT key FROM entries WHERE id = ?", (entry_id,)).fetchone()
            if found is None:
                return False
            keep = min(valid, size)
            cut_idx, cut_len = divmod(keep, BLOCK_SIZE)
            if cut_len:
                conn.execute(_SQL_CUT_BLOCK, (cut_len, entry_id, cut_idx))
                conn.execute(_SQL_DROP_BLOCKS_FROM, (entry_id, cut_idx + 1))
            else:
                conn.execute(_SQL_DROP_BLOCKS_FROM, (entry_id, cut_idx))
            last_idx = (size - 1) // BLOCK_SIZE
            for idx, data in blocks:
                if idx > last_idx:
                    continue
                limit = size - idx * BLOCK_SIZE
                conn.execute(_SQL_UPSERT_BLOCK, (entry_id, idx, bytes(data[:limit])))
            mtime = now if mtime_ns is None else mtime_ns
            conn.execute(_SQL_SET_SIZE, (size, mtime, now, entry_id))
            self._after_write(conn, entry_id, found[0], size=size)
        return True

    def truncate(self, key: str, size: int) -> None:
        """Set the value of ``key`` to ``size`` bytes: cut, or grown with zeros (a hole).

        Raises:
            KeyNotFound, IsADirectory, ValueTooLarge (EFBIG).
        """
        entry = self.stat(key)
        if entry.is_dir:
            raise IsADirectory(f"is a directory: {key}")
        self.commit(entry.id, size=size, valid=min(size, entry.size), blocks=())

    def delete(self, key: str) -> None:
        """Remove key ``key``; it and its value wait in the archive (see :meth:`restore`).

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR) use rmdir.
        """
        with self._atomic() as conn:
            row = _live_key(conn, key)
            _archive(conn, row[0])
            self._record(conn, key, "delete", None, None, time.time_ns())

    def mkdir(self, key: str, mode: int = DIR_MODE) -> Entry:
        """Create directory ``key`` (and any missing one above it).

        Raises:
            AlreadyExists: (EEXIST) a key or directory is there. NotADirectory: (ENOTDIR).
        """
        names.check_key(key)
        with self._atomic() as conn:
            if conn.execute(_SQL_STAT, (key,)).fetchone() is not None:
                raise AlreadyExists(f"exists: {key}")
            entry_id = self._insert(conn, key, True, mode)
            return _entry(conn.execute(_SQL_STAT_ID, (entry_id,)).fetchone())

    def rmdir(self, key: str) -> None:
        """Remove the empty directory ``key``.

        Raises:
            KeyNotFound (ENOENT), NotADirectory (ENOTDIR), NotEmpty (ENOTEMPTY).
        """
        with self._atomic() as conn:
            row = conn.execute(_SQL_STAT, (key,)).fetchone()
            if row is None:
                raise KeyNotFound(f"no such directory: {key}")
            if not row[2]:
                raise NotADirectory(f"not a directory: {key}")
            if conn.execute(_SQL_HAS_CHILD, (key,)).fetchone():
                raise NotEmpty(f"directory not empty: {key}")
            _archive(conn, row[0])

    def rename(self, old: str, new: str) -> None:
        """Move ``old`` (key or directory, with all below it) to ``new``, in one transaction.

        Follows rename(2): an existing key at ``new`` is replaced atomically, as
        is an empty directory when ``old`` is a directory.

        Raises:
            KeyNotFound: (ENOENT) ``old`` missing.
            InvalidInput: (EINVAL) ``new`` lies inside ``old``.
            IsADirectory: (EISDIR) ``old`` is a key and ``new`` a directory.
            NotADirectory: (ENOTDIR) ``old`` is a directory and ``new`` a key.
            NotEmpty: (ENOTEMPTY) ``new`` is a directory that holds entries.
        """
        names.check_key(new)
        if old == new:
            self.stat(old)
            return
        if names.is_within(new, old):
            raise InvalidInput(f"cannot move {old!r} into itself ({new!r})")
        now = time.time_ns()
        with self._atomic() as conn:
            row = conn.execute(_SQL_STAT, (old,)).fetchone()
            if row is None:
                raise KeyNotFound(f"key not found: {old}")
            source = _entry(row)
            target_row = conn.execute(_SQL_STAT, (new,)).fetchone()
            if target_row is not None:
                target = _entry(target_row)
                if target.is_dir and not source.is_dir:
                    raise IsADirectory(f"is a directory: {new}")
                if source.is_dir and not target.is_dir:
                    raise NotADirectory(f"not a directory: {new}")
                if target.is_dir and conn.execute(_SQL_HAS_CHILD, (new,)).fetchone():
                    raise NotEmpty(f"directory not empty: {new}")
                _archive(conn, target.id)  # the replaced value stays recoverable
            self._ensure_parents(conn, new, now)
            conn.execute(
                "UPDATE entries SET key = ?, parent = ?, ctime_ns = ? WHERE id = ?",
                (new, names.parent_of(new), now, source.id),
            )
            if source.is_dir:
                # Every key below: swap the prefix. substr() counts characters, as len() does.
                cut = len(old) + 1
                conn.execute(
                    "UPDATE entries SET key = ? || substr(key, ?),"
                    " parent = CASE WHEN parent = ? THEN ? ELSE ? || substr(parent, ?) END"
                    " WHERE key >= ? AND key < ?",
                    (new + "/", cut + 1, old, new, new + "/", cut + 1, old + "/", old + "0"),
                )
            for key in self._reindex_keys(conn, new):
                before = old + key[len(new) :]
                self._record(conn, before, "rename", None, f"to {key}", now)
                self._record(conn, key, "rename", None, f"from {before}", now)

    def _reindex_keys(self, conn: sqlite3.Connection, top: str) -> list[str]:
        """After a rename: the index learns the new key of ``top`` and of every key below;
        returns those keys."""
        rows = conn.execute(
            "SELECT id, key FROM entries WHERE is_dir = 0 AND (key = ? OR (key >= ? AND key < ?))",
            (top, top + "/", top + "0"),
        ).fetchall()
        for entry_id, key in rows:
            conn.execute(
                "UPDATE search_text SET key = ?, key_tokens = ? WHERE id = ?",
                (key, len(tokenize(key)), entry_id),
            )
        return [key for _, key in rows]

    def chmod(self, key: str, mode: int) -> None:
        """Store permission bits ``mode & 0o7777`` for ``key``; ctime is now.

        Raises:
            KeyNotFound: (ENOENT).
        """
        self._update_times(key, "mode = ?", (mode & 0o7777,))

    def utimens(self, key: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        """Store access and modification times (ns, UTC); None leaves one as it is
        (UTIME_OMIT). ctime becomes now.

        Raises:
            KeyNotFound: (ENOENT).
        """
        sets, args = [], []
        if atime_ns is not None:
            sets.append("atime_ns = ?")
            args.append(atime_ns)
        if mtime_ns is not None:
            sets.append("mtime_ns = ?")
            args.append(mtime_ns)
        self._update_times(key, ", ".join(sets), tuple(args))

    def _update_times(self, key: str, assignments: str, args: tuple[object, ...]) -> None:
        if key == ROOT:
            return  # the workspace's top directory keeps the file's own times
        clause = f"{assignments}, ctime_ns = ?" if assignments else "ctime_ns = ?"
        with self._atomic() as conn:
            cur = conn.execute(
                f"UPDATE entries SET {clause} WHERE key = ?", (*args, time.time_ns(), key)
            )
            if cur.rowcount == 0:
                raise KeyNotFound(f"key not found: {key}")

    def sync(self) -> None:
        """Make every committed transaction durable on disk, also against power loss.

        A PASSIVE checkpoint fsyncs the WAL, then the database (sqlite.org/wal.html).
        """
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise _convert(exc) from None

    # --- the archive ------------------------------------------------------------------------
    def archived(self, key: str | None = None) -> list[Archived]:
        """Archived entries, newest deletion first; only those of ``key`` when given."""
        sql = f"SELECT {_ARCHIVE_COLUMNS} FROM archive"
        args: tuple[object, ...] = ()
        if key is not None:
            sql += " WHERE key = ?"
            args = (key,)
        try:
            rows = self._conn.execute(sql + " ORDER BY deleted_ns DESC, id DESC", args)
            return [_archived(row) for row in rows]
        except sqlite3.Error as exc:
            raise _convert(exc) from None

    def restore(self, key: str, archive_id: int | None = None, force: bool = False) -> Entry:
        """Bring back the newest archived version of ``key`` (or archive row ``archive_id``).

        The value is not copied: the archived row becomes the live entry again.
        With ``force`` a live key of that name is archived first.

        Raises:
            KeyNotFound: (ENOENT, exit 1) nothing of that key is archived.
            AlreadyExists: (EEXIST, exit 3) the key is live and ``force`` is off.
            NotADirectory: (ENOTDIR) a key stands where a directory above it should.
        """
        now = time.time_ns()
        with self._atomic() as conn:
            sql = f"SELECT {_ARCHIVE_COLUMNS} FROM archive WHERE key = ?"
            args: tuple[object, ...] = (key,)
            if archive_id is not None:
                sql += " AND id = ?"
                args = (key, archive_id)
            row = conn.execute(sql + " ORDER BY deleted_ns DESC, id DESC LIMIT 1", args).fetchone()
            if row is None:
                raise KeyNotFound(f"nothing archived for key: {key}")
            self._restore_row(conn, _archived(row).entry, force, now)
            return _entry(conn.execute(_SQL_STAT_ID, (row[0],)).fetchone())

    def _restore_row(self, conn: sqlite3.Connection, entry: Entry, force: bool, now: int) -> None:
        live = conn.execute(_SQL_STAT, (entry.key,)).fetchone()
        if live is not None:
            if live[2] and entry.is_dir:  # a directory that exists again: nothing to do
                conn.execute("DELETE FROM archive WHERE id = ?", (entry.id,))
                return
            if not force:
                raise AlreadyExists(f"key exists: {entry.key} (use --force to replace it)")
            if live[2] and conn.execute(_SQL_HAS_CHILD, (entry.key,)).fetchone():
                raise NotEmpty(f"a directory with entries stands at {entry.key}")
            _archive(conn, live[0])
        self._ensure_parents(conn, entry.key, now)
        conn.execute(
            "INSERT INTO entries (id, key, parent, is_dir, mode, size, created_ns, mtime_ns,"
            " ctime_ns, atime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.id,
                entry.key,
                names.parent_of(entry.key),
                int(entry.is_dir),
                entry.mode,
                entry.size,
                entry.created_ns,
                entry.mtime_ns,
                now,
                entry.mtime_ns,
            ),
        )
        conn.execute("DELETE FROM archive WHERE id = ?", (entry.id,))
        if entry.is_dir:
            return
        self._after_write(conn, entry.id, entry.key, detail="restored from the archive")

    def restore_teardown(self) -> int:
        """Undo the deletions that emptied this workspace (``rm -r`` through the mount).

        Only when no key is live: every entry deleted after the workspace's last
        change that was not a deletion (the newest ctime among live and archived
        entries) is restored, parents first. Returns how many entries came back.
        """
        now = time.time_ns()
        with self._atomic() as conn:
            if conn.execute("SELECT 1 FROM entries WHERE is_dir = 0 LIMIT 1").fetchone():
                return 0
            last_change = conn.execute(
                "SELECT max(t) FROM (SELECT max(ctime_ns) AS t FROM entries"
                " UNION ALL SELECT max(ctime_ns) FROM archive)"
            ).fetchone()[0]
            rows = conn.execute(
                f"SELECT {_ARCHIVE_COLUMNS} FROM archive WHERE deleted_ns >= ?"
                " ORDER BY deleted_ns DESC, id DESC",
                (last_change or 0,),
            ).fetchall()
            restored, seen = 0, set()
            for row in sorted(rows, key=lambda r: (r[1].count("/"), r[1])):
                entry = _archived(row).entry
                if entry.key in seen:  # an older archived version of the same key
                    continue
                seen.add(entry.key)
                self._restore_row(conn, entry, force=False, now=now)
                restored += 1
            return restored

    def purge_archive(self, before_ns: int) -> int:
        """Delete for good what entered the archive before ``before_ns`` (its deletion, or
        its import for imported entries); returns how many entries."""
        old = "coalesce(archived_ns, deleted_ns) < ?"
        try:  # the usual case, nothing to purge, takes no write lock
            if not self._conn.execute(
                f"SELECT 1 FROM archive WHERE {old} LIMIT 1", (before_ns,)
            ).fetchone():
                return 0
        except sqlite3.Error as exc:
            raise _convert(exc) from None
        with self._atomic() as conn:
            old = "coalesce(archived_ns, deleted_ns) < ?"
            conn.execute(
                f"DELETE FROM blocks WHERE entry_id IN (SELECT id FROM archive WHERE {old})",
                (before_ns,),
            )
            return conn.execute(f"DELETE FROM archive WHERE {old}", (before_ns,)).rowcount

    # --- TTL -------------------------------------------------------------------------------
    def set_ttl(self, key: str, seconds: float | None) -> Entry:
        """Let ``key`` expire ``seconds`` from now (None: never).

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR).
        """
        expires = None if seconds is None else time.time_ns() + int(seconds * 1e9)
        with self._atomic() as conn:
            row = _live_key(conn, key)
            conn.execute("UPDATE entries SET expires_ns = ? WHERE id = ?", (expires, row[0]))
            return _entry(row)

    def expiry(self, key: str) -> int | None:
        """When ``key`` expires (ns since the epoch, UTC), or None.

        Raises:
            KeyNotFound: (ENOENT, exit 1).
        """
        row = self._conn.execute("SELECT expires_ns FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyNotFound(f"key not found: {key}")
        return row[0] if row[0] is None else int(row[0])

    def sweep_expired(self, now_ns: int | None = None) -> int:
        """Move every key whose TTL has passed to the archive; return how many."""
        now_ns = now_ns or time.time_ns()
        try:
            rows = self._conn.execute(
                "SELECT id, key FROM entries WHERE expires_ns <= ? AND is_dir = 0", (now_ns,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise _convert(exc) from None
        if not rows:
            return 0
        with self._atomic() as conn:
            for entry_id, key in rows:
                still = conn.execute(
                    "SELECT 1 FROM entries WHERE id = ? AND expires_ns <= ?", (entry_id, now_ns)
                ).fetchone()
                if still:
                    _archive(conn, entry_id)
                    self._record(conn, key, "delete", None, "expired", now_ns)
        return len(rows)

    # --- workspace settings --------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        """The workspace's settings (``meta``): project_path, ttl_s, schemas (JSON), ..."""
        try:
            return self._meta(self._conn)
        except sqlite3.Error as exc:
            raise _convert(exc) from None

    def set_meta(self, name: str, value: str | None) -> None:
        """Set (or with None remove) the workspace setting ``name``."""
        with self._atomic() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE name = ?", (name,))
            else:
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )

    def set_schema(self, glob: str, schema: dict[str, Any]) -> None:
        """Attach the JSON Schema ``schema`` to keys matching ``glob`` (replacing the one
        that glob had). Later writes of such keys must be JSON valid against it.

        Raises:
            InvalidInput: (exit 2) ``schema`` is not a valid JSON Schema.
        """
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise InvalidInput(f"not a valid JSON Schema: {exc.message}") from None
        rules = [r for r in self.schemas() if r["glob"] != glob]
        rules.append({"glob": glob, "schema": schema})
        self.set_meta("schemas", json.dumps(rules))

    def schemas(self) -> list[dict[str, Any]]:
        """The schema rules: ``[{"glob": ..., "schema": {...}}]``."""
        return list(json.loads(self.meta().get("schemas", "[]")))

    def clear_schema(self, glob: str | None = None) -> int:
        """Remove the rule of ``glob`` (every rule when None); return how many went."""
        rules = self.schemas()
        kept = [r for r in rules if glob is not None and r["glob"] != glob]
        self.set_meta("schemas", json.dumps(kept) if kept else None)
        return len(rules) - len(kept)

    # --- versions ----------------------------------------------------------------------------
    def restore_version(
        self, key: str, version: int | None = None, at_ns: int | None = None
    ) -> Entry:
        """Write back the value ``key`` had at history version ``version`` (its id) or at
        the time ``at_ns`` (the newest version not after it), as a new change.

        Raises:
            KeyNotFound: (ENOENT, exit 1) no such version holding a value.
        """
        sql = "SELECT id, value FROM history WHERE key = ? AND action = 'set' AND value IS NOT NULL"
        if version is not None:
            row = self._conn.execute(sql + " AND id = ?", (key, version)).fetchone()
        else:
            row = self._conn.execute(
                sql + " AND time_ns <= ? ORDER BY time_ns DESC, id DESC LIMIT 1", (key, at_ns)
            ).fetchone()
        if row is None:
            raise KeyNotFound(f"no stored version of {key} matches")
        names.check_key(key)
        with self._atomic() as conn:
            live = conn.execute(_SQL_STAT, (key,)).fetchone()
            if live is not None and live[2]:
                raise IsADirectory(f"is a directory: {key}")
            entry_id = self._put(
                conn, key, bytes(row[1]), None, detail=f"restored version {row[0]}"
            )
            return _entry(conn.execute(_SQL_STAT_ID, (entry_id,)).fetchone())

    def version(self, version: int) -> HistoryEntry | None:
        """History row ``version`` (its id), or None."""
        row = self._conn.execute(
            "SELECT key, action, value, time_ns, detail, id FROM history WHERE id = ?", (version,)
        ).fetchone()
        return HistoryEntry(*row) if row else None

    def history_keys(self, prefix: str = "") -> list[str]:
        """Every key with recorded history (live or not), starting with ``prefix``."""
        rows = self._conn.execute(
            "SELECT DISTINCT key FROM history WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\U0010ffff"),
        )
        return [row[0] for row in rows]

    # --- search ---------------------------------------------------------------------------
    def search(self, match: str, limit: int, with_text: bool = True) -> list[Match]:
        """The best ``limit`` keys for the FTS5 query ``match``, best first (by bm25).

        Raises:
            InvalidQuery: (EINVAL, exit 2) ``match`` is not valid FTS5 syntax
                (sqlite.org/fts5.html#full_text_query_syntax).
        """
        try:
            if with_text:
                rows = self._conn.execute(_SQL_SEARCH, (MARK_START, MARK_END, match, limit))
            else:
                rows = self._conn.execute(_SQL_SEARCH_KEYS, (match, limit))
            return [Match(*row) for row in rows.fetchall()]
        except sqlite3.OperationalError as exc:
            if "fts5" in str(exc) or "no such column" in str(exc) or "syntax" in str(exc):
                raise InvalidQuery(f"invalid search query {match!r}: {exc}") from None
            raise _convert(exc) from None
        except sqlite3.Error as exc:
            raise _convert(exc) from None

    def search_stats(self, terms: Iterable[str]) -> tuple[int, int, dict[str, int]]:
        """(indexed keys, their total length in tokens, {term: keys holding it}) for scoring."""
        wanted = sorted(set(terms))
        with self._snapshot() as conn:
            count, total = conn.execute(
                "SELECT count(*), total(key_tokens + value_tokens) FROM search_text"
            ).fetchone()
            docs: dict[str, int] = dict.fromkeys(wanted, 0)
            if wanted:
                marks = ",".join("?" * len(wanted))
                for term, doc in conn.execute(
                    f"SELECT term, doc FROM search_vocab WHERE term IN ({marks})", wanted
                ):
                    docs[term] = doc
        return int(count), int(total), docs

    # --- checking -------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Every problem found in the file, as sentences; ``[]`` when it is sound.

        Checks SQLite's ``PRAGMA integrity_check`` (pages, indexes, UNIQUE), the
        schema version, FTS5's 'integrity-check' of the search index, and
        kyfs's own rules: blocks that belong to no entry, blocks past a value's
        size or longer than BLOCK_SIZE, entries whose parent directory is
        missing, and keys missing from (or left over in) the search index.
        """
        try:
            problems = [
                f"integrity: {row[0]}"
                for row in self._conn.execute("PRAGMA integrity_check")
                if row[0] != "ok"
            ]
            found = migrations.version(self._conn)
            if found != migrations.SCHEMA_VERSION:
                problems.append(f"schema version is {found}, expected {migrations.SCHEMA_VERSION}")
            for label, sql in _CHECKS:
                count = self._conn.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
                if count:
                    problems.append(f"{count} {label}")
        except sqlite3.Error as exc:
            problems = [f"cannot be read: {exc}"]
        return problems

    def repair(self) -> list[str]:
        """Repair what can be repaired; return what was done, as sentences.

        Rebuilds every index (REINDEX), deletes blocks that belong to no entry or
        lie past a value's size, recreates missing parent directories, re-reads
        every key into the search index and rebuilds it (FTS5 'rebuild'), and
        migrates an old schema. Damage that ``integrity_check`` reports in the
        tables themselves cannot be repaired here: restore the workspace from the
        trash or a backup.
        """
        done: list[str] = []
        migrations.apply(self._conn)
        with self._atomic() as conn:
            conn.execute("REINDEX")
            done.append("rebuilt every index")
            for label, sql in _CHECKS[:2]:  # blocks nothing can read: safe to delete
                cur = conn.execute(f"DELETE FROM blocks WHERE id IN ({sql})")
                if cur.rowcount:
                    done.append(f"deleted {cur.rowcount} {label}")
            now = time.time_ns()
            orphans = [row[0] for row in conn.execute(_CHECKS[3][1])]
            for key in orphans:
                self._ensure_parents(conn, key, now)
            if orphans:
                done.append(f"recreated the parent directories of {len(orphans)} entries")
            conn.execute(f"DELETE FROM search_text WHERE id IN ({_CHECKS[5][1]})")
            for (entry_id,) in conn.execute("SELECT id FROM entries WHERE is_dir = 0").fetchall():
                migrations.index_entry(conn, entry_id)
            conn.execute("INSERT INTO search_index (search_index) VALUES ('rebuild')")
            done.append("rebuilt the search index")
        return done

    def checkpoint(self) -> bool:
        """Move the WAL into the database and empty it; True when it could (no reader busy)."""
        try:
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            raise _convert(exc) from None
        return not busy


def _validate(key: str, rule: dict[str, Any], value: bytes) -> None:
    """Check ``value`` against a schema rule with jsonschema (json-schema.org).

    Raises:
        SchemaViolation: (EINVAL, exit 2) naming the failing path in the document.
    """
    import jsonschema

    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaViolation(f"{key}: not JSON, but keys {rule['glob']!r} need: {exc}") from None
    validator = jsonschema.validators.validator_for(rule["schema"])(rule["schema"])
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        raise SchemaViolation(
            f"{key}: breaks the schema for {rule['glob']!r} at {where}: {error.message}"
        )


def _live_key(conn: sqlite3.Connection, key: str) -> Any:
    """The entries row of key ``key`` (not a directory), inside the caller's transaction.

    Raises:
        KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3).
    """
    row = conn.execute(_SQL_STAT, (key,)).fetchone()
    if row is None:
        raise KeyNotFound(f"key not found: {key}")
    if row[2]:
        raise IsADirectory(f"is a directory: {key}")
    return row


def _archive(conn: sqlite3.Connection, entry_id: int) -> None:
    """Move entry ``entry_id`` to the archive; its blocks stay, under the same id."""
    conn.execute(_SQL_ARCHIVE, (time.time_ns(), entry_id))
    conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))


def _pieces(value: bytes | BinaryIO) -> Iterator[bytes]:
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        check_size(len(data))
        for start in range(0, len(data), BLOCK_SIZE):
            yield data[start : start + BLOCK_SIZE]
        return
    while True:
        piece = _read_full(value, BLOCK_SIZE)
        if not piece:
            return
        yield piece


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """Read exactly ``size`` bytes unless the stream ends first (pipes return short reads)."""
    parts, left = [], size
    while left:
        piece = stream.read(left)
        if not piece:
            break
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)
