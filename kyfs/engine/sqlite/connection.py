"""Opening one workspace file and running transactions on it.

Every change runs in one ``BEGIN IMMEDIATE`` transaction, so a second writer waits for
the busy timeout instead of failing (a plain BEGIN that reads and then writes fails at
once with "database is locked": ../shared/STYLE.md). Reads that touch several rows run
in one read transaction (:meth:`Base._snapshot`), so they see one committed state.

Durability: WAL (checked: ``PRAGMA journal_mode=WAL`` must answer ``wal``) with
``synchronous=NORMAL``: a committed transaction survives the process being killed;
``PRAGMA wal_checkpoint`` (called on fsync) also makes it survive power loss
(sqlite.org/pragma.html#pragma_synchronous, sqlite.org/wal.html).

Checkpoints: a connection made with ``autocheckpoint`` (the default, as SQLite's own)
folds the WAL into the database after a commit that leaves it over 1,000 pages, in the
committing thread. The daemon's connections are made without: its requests never wait
for a checkpoint (copying the WAL and fsyncing the database: a close(2) after a 512 MiB
write went from 8.5 s to 2.3 s), and a thread of its own folds the WAL in
(kyfs.app.Checkpointer, SqliteEngine.checkpoint). After a checkpoint empties it, the WAL
file is cut back to JOURNAL_SIZE_LIMIT bytes (``PRAGMA journal_size_limit``).

Thread-safety: a connection is used by one thread at a time. It is opened with
``check_same_thread=False`` so that the FUSE loop may use one made on another thread,
but callers must not share it concurrently.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path

from kyfs.core import blocks, tokens
from kyfs.core.errors import (
    AlreadyExists,
    DamagedBlock,
    NoSpace,
    ReadOnlyStorage,
    StorageError,
    storage_error,
)

BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another one, milliseconds
JOURNAL_SIZE_LIMIT = 4 << 20  # bytes a WAL file keeps once emptied (more is given back)
# Bytes per page of a new workspace file (PRAGMA page_size, sqlite.org/pragma.html#pragma_page_size;
# SQLite's default is 4096). Blocks are rows of up to 32 KiB: what a leaf page cannot
# hold of the last one is slack, 14% of the blocks table with 4 KiB pages, 6% with 1 KiB,
# at the same speed (docs/design.md, "Page size"). Files made before keep their size.
PAGE_SIZE = 1024


def unpack_text(packed: bytes | None) -> str | None:
    """SQL function ``kyfs_text(packed)``: the text the search index keeps packed
    (kyfs.core.blocks.pack of UTF-8; kyfs.engine.sqlite.schema.m009), for the view FTS5
    reads as its content. NULL for NULL, and for bytes that are not such a frame (a
    damaged or foreign file: the key is then found by its name only)."""
    if packed is None:
        return None
    try:
        return blocks.unpack(packed, tokens.INDEX_VALUE_MAX).decode("utf-8")
    except (DamagedBlock, UnicodeDecodeError, TypeError):
        return None


FULL_BELOW = 1 << 20  # bytes: an I/O error on a disk with less free than this is ENOSPC


def read_only_fs(directory: Path) -> bool:
    """True when ``directory`` lies on a file system mounted read-only (statvfs(3)'s
    ST_RDONLY); False when it cannot be asked."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def convert(exc: sqlite3.Error, directory: Path | None = None) -> StorageError:
    """The kyfs error for a SQLite error: NoSpace (ENOSPC) for SQLITE_FULL, and for an
    I/O error (SQLITE_IOERR: growing the ``-shm`` file, writing the WAL) when the disk
    that holds ``directory`` has less than FULL_BELOW bytes free; ReadOnlyStorage
    (EROFS) for SQLITE_READONLY ("attempt to write a readonly database"), and for an
    I/O error or a file SQLite cannot open (SQLITE_CANTOPEN: a ``-wal`` or ``-shm`` it
    cannot make) when ``directory`` is on a read-only file system; else StorageError
    (EIO, exit 4)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    if code == sqlite3.SQLITE_FULL:
        return NoSpace(f"disk full: {exc}")
    where = f" {directory}" if directory is not None else ""
    if primary == sqlite3.SQLITE_READONLY:
        return ReadOnlyStorage(f"read-only data directory{where}: {exc}")
    cannot = primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN)
    if cannot and directory is not None and read_only_fs(directory):
        return ReadOnlyStorage(f"read-only file system at{where}: {exc}")
    if primary == sqlite3.SQLITE_IOERR and directory is not None:
        try:
            disk = os.statvfs(directory)
        except OSError:
            pass
        else:
            if disk.f_bavail * disk.f_frsize < FULL_BELOW:
                return NoSpace(f"disk full: {exc}")
    return StorageError(f"storage error: {exc}")


def open_uri(path: Path) -> str:
    """The URI SQLite opens workspace file ``path`` with: ``mode=rw`` (a name that went
    stale never creates an empty file behind a rename); on a read-only file system
    ``immutable=1`` when the file has no WAL left to fold in (the CLI and the daemon
    fold it in and remove it as they close), since SQLite cannot read a WAL database
    there otherwise (it needs a ``-shm`` file, sqlite.org/wal.html#readonly) and nothing
    can change a file there; with a WAL left, ``mode=ro``, which reads it when its
    ``-shm`` file is there too."""
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}"
    if not read_only_fs(path.parent):
        return uri + "?mode=rw"
    wal = path.with_name(path.name + "-wal")
    try:
        has_wal = wal.stat().st_size > 0
    except OSError:
        has_wal = False
    return uri + ("?mode=ro" if has_wal else "?immutable=1")


def _special(exc: sqlite3.Error | OSError, path: Path, what: str) -> StorageError | None:
    """NoSpace or ReadOnlyStorage for ``exc`` met on ``path`` (a SQLite error's message
    after ``what``); None for any other error."""
    if isinstance(exc, OSError):
        error = storage_error(exc, str(path))
        return error if isinstance(error, (NoSpace, ReadOnlyStorage)) else None
    error = convert(exc, path.parent)
    if isinstance(error, (NoSpace, ReadOnlyStorage)):
        return type(error)(f"{what}: {error}")
    return None


def connect(path: Path, create: bool = False, autocheckpoint: bool = True) -> sqlite3.Connection:
    """Open workspace file ``path`` in WAL mode; with ``create`` make it first (mode 0600);
    without ``autocheckpoint`` its commits never checkpoint (``PRAGMA wal_autocheckpoint
    = 0``: whoever opened it folds the WAL in).

    The URI is :func:`open_uri`'s: ``mode=rw``, or on a read-only file system a
    read-only connection whose writes fail with ReadOnlyStorage.

    Raises:
        AlreadyExists: (EEXIST) ``create`` and the file exists.
        ReadOnlyStorage: (EROFS, exit 4) ``create`` where nothing can be written, or a
            file SQLite cannot open there (a WAL without its ``-shm``).
        NoSpace: (ENOSPC, exit 4) the disk is full.
        StorageError: (EIO, exit 4) it cannot be opened or WAL mode was refused.
    """
    try:
        if create:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        uri = open_uri(path)
        conn = sqlite3.connect(
            uri,
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
    except FileExistsError:
        raise AlreadyExists(f"file exists: {path}") from None
    except (OSError, sqlite3.Error) as exc:
        special = _special(exc, path, f"cannot open workspace file {path}")
        if special is not None:
            raise special from None
        raise StorageError(f"cannot open workspace file {path}: {exc}") from None
    try:
        conn.create_function("kyfs_text", 1, unpack_text, deterministic=True)
        if create:  # before the first table: free pages can then go back (compact, reclaim)
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Nothing in a file's schema is trusted until kyfs.engine.sqlite.trust.check_schema
        # has proven it kyfs's own (SqliteWorkspace switches it on then).
        conn.execute("PRAGMA trusted_schema = OFF")
        if "immutable=1" not in uri:  # (immutable: no WAL, no locks; it says "delete")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{path}: WAL mode refused (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        if not autocheckpoint:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
    except (sqlite3.Error, UnicodeDecodeError) as exc:  # (a damaged schema's text)
        conn.close()
        special = _special(exc, path, str(path)) if isinstance(exc, sqlite3.Error) else None
        if special is not None:
            raise special from None
        raise StorageError(f"{path}: not a usable workspace file: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn
