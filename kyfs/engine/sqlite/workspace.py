"""One workspace = one SQLite file: the SQLite implementation of
kyfs.engine.base.Workspace, composed of one mixin per concern:

    connection.py  opening the file, transactions (Base)
    history.py     history rows and settings (HistoryMixin)
    nodes.py       names and nodes: lookups, create, link, symlink, unlink, rename, attrs
    blocks.py      the block store: values as content-addressed blocks
    values.py      reads, writes, commits, TTL, imports
    archive.py     the archive and the undo of an emptied workspace
    snapshots.py   snapshots: read-only images sharing the live values' blocks
    check.py       search and fsck
    rules.py       schema rules
    schema.py      the schema and its migrations (PRAGMA user_version)
    index.py       the full-text index (FTS5)

Thread-safety: a workspace is used by one thread at a time (see connection.py); the
daemon's threads take turns through its ``lock`` (an RLock).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from kyfs.core.errors import (
    NoSpace,
    ReadOnlyStorage,
    StorageError,
    UntrustedFile,
    storage_error,
)
from kyfs.engine.sql.rules import RulesMixin
from kyfs.engine.sql.snapshots import SnapshotsMixin
from kyfs.engine.sql.vectors import VectorsMixin
from kyfs.engine.sql.xattrs import XattrsMixin
from kyfs.engine.sqlite import schema, trust
from kyfs.engine.sqlite.check import SearchCheckMixin
from kyfs.engine.sqlite.connection import BUSY_TIMEOUT_MS, connect, convert

log = logging.getLogger(__name__)

# Changes: the ids of the history rows this connection wrote (kept until read by
# changes()); TEMP objects live in this connection only, never in the file.
_SQL_WATCH = (
    "CREATE TEMP TABLE IF NOT EXISTS own_history (id INTEGER PRIMARY KEY)",
    "CREATE TEMP TRIGGER IF NOT EXISTS own_history_ai AFTER INSERT ON main.history"
    " BEGIN INSERT OR IGNORE INTO own_history (id) VALUES (new.id); END",
)
_SQL_CHANGES = (
    "SELECT h.id, h.key, h.detail, o.id IS NOT NULL FROM history h"
    " LEFT JOIN temp.own_history o ON o.id = h.id WHERE h.id > ? ORDER BY h.id"
)
INCREMENTAL = 2  # PRAGMA auto_vacuum = INCREMENTAL (sqlite.org/pragma.html#pragma_auto_vacuum)
IDLE_WAIT_MS = 200  # how long a WAL truncation at rest waits for a reader, milliseconds
RECLAIM_STEP = 4 << 20  # bytes of free pages given back per transaction
RECLAIM_LEAST = 16  # the smallest step, on a disk with no room for a larger one
BULK_MAP = 1 << 30  # bytes of a workspace file a scan maps at most (SqliteWorkspace._bulk_read)
MERGE_PAGES = 1000  # pages of FTS5 segment merging a workspace at rest does at most


class SqliteWorkspace(SnapshotsMixin, SearchCheckMixin, RulesMixin, XattrsMixin, VectorsMixin):
    """One workspace's SQLite file.

    Args:
        path: the ``.db`` file.
        create: create the file (mode 0600); it must not exist yet.
        retention_s: archived entries older than this many seconds are deleted for
            good when the workspace opens; None keeps them all.
        migrate: bring the schema up to date on open (off for fsck, which only looks).
        mend_version: ``fsck --repair`` only: a file whose schema is exactly kyfs's own
            for another version than its ``user_version`` says gets that version number
            back (every other open refuses such a file).
        autocheckpoint: commits fold the WAL in (SQLite's default); False leaves it to
            whoever opened it (the daemon: kyfs.engine.sqlite.connection).

    Raises:
        StorageError: (EIO, exit 4) the file cannot be opened, is not a SQLite
            database, or WAL mode could not be switched on.
        AlreadyExists: (EEXIST) ``create`` and the file exists.
    """

    _errors = (sqlite3.Error, UnicodeDecodeError)  # (SQLite quoting a damaged file's text)
    _SQL_PENDING_TEXT = (
        "SELECT p.node_id, p.gen, t.key, kyfs_text(t.packed) FROM embed_pending p"
        " LEFT JOIN search_text t ON t.id = p.node_id ORDER BY p.node_id LIMIT ?"
    )
    _BEGIN_WRITE = "BEGIN IMMEDIATE"  # a writer waits for another (busy_timeout)
    _BEGIN_READ = "BEGIN"

    def _others_version(self) -> int:
        """``PRAGMA data_version``: changes when another connection (another process, a
        CLI command, another daemon) committed to the file; not for this connection's own
        commits (kyfs.engine.sql.xattrs.XattrsMixin.xattr_in_use)."""
        return int(self._row("PRAGMA data_version")[0])

    def _convert(self, exc: sqlite3.Error) -> StorageError:
        """kyfs.engine.sqlite.connection.convert, told which disk holds the file (an I/O
        error on a full one is ENOSPC)."""
        return convert(exc, self.path.parent)

    def __init__(
        self,
        path: Path,
        create: bool = False,
        retention_s: float | None = None,
        migrate: bool = True,
        mend_version: bool = False,
        autocheckpoint: bool = True,
    ) -> None:
        self.path = path
        self.lock = threading.RLock()  # held by the daemon's threads around each use
        self._root_id = 0
        self.inode_tag = 0
        self._conn = connect(path, create, autocheckpoint)
        try:
            problems = trust.check_schema(self._conn)
            actual = trust.structure_version(self._conn) if problems and mend_version else None
            if actual is not None:  # fsck --repair: kyfs's own schema, wrong version number
                self._conn.execute(f"PRAGMA user_version = {actual}")
                problems = []
            if problems:
                raise UntrustedFile(
                    f"{path}: not a kyfs workspace as kyfs writes it: " + "; ".join(problems[:4])
                )
            # Proven kyfs's own, object by object: its triggers may now feed FTS5.
            self._conn.execute("PRAGMA trusted_schema = ON")
            if migrate:
                schema.apply(self._conn)
            self._load_identity()
            if migrate and retention_s is not None:
                # a full disk or a read-only one: purged at a later open
                with contextlib.suppress(NoSpace, ReadOnlyStorage):
                    self.purge_archive(time.time_ns() - int(retention_s * 1e9))
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # (a damaged schema's text)
            self._conn.close()
            if isinstance(exc, sqlite3.Error):
                special = convert(exc, path.parent)
                if isinstance(special, (NoSpace, ReadOnlyStorage)):
                    raise type(special)(f"{path}: {special}") from None
            raise StorageError(f"{path}: not a usable workspace file: {exc}") from None
        except BaseException:
            self._conn.close()
            raise

    def _load_identity(self) -> None:
        """The top directory's node id and the inode tag (meta, from m006 on)."""
        if schema.version(self._conn) < 6:
            return  # an old file opened without migrating (fsck): only check() works
        super()._load_identity()

    @contextlib.contextmanager
    def _bulk_read(self) -> Iterator[None]:
        """Map the file into memory for one scan (``PRAGMA mmap_size``, BULK_MAP bytes):
        a vector search over 100,000 keys read its chunks' overflow pages in 37 ms with
        read(2) and 20 ms mapped. Only for the scan: a file truncated behind a mapping
        raises SIGBUS (sqlite.org/mmap.html), so a daemon keeps none the rest of the time.
        """
        try:
            self._conn.execute(f"PRAGMA mmap_size = {BULK_MAP}")
        except sqlite3.Error as exc:
            raise self._convert(exc) from None
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA mmap_size = 0")

    def _watch(self) -> None:
        """A TEMP trigger notes the ids of the history rows this connection writes (a TEMP
        trigger fires for its own connection's statements only:
        sqlite.org/lang_createtrigger.html#temptriggers)."""
        for statement in _SQL_WATCH:
            self._rows(statement)

    def _change_rows(self, cursor: int) -> list[tuple[int, str, str | None, bool]]:
        """History rows after ``cursor`` with whether this connection wrote them; the own
        ids read are forgotten."""
        rows = self._rows(_SQL_CHANGES, (cursor,))
        if rows:
            self._rows("DELETE FROM temp.own_history WHERE id <= ?", (rows[-1][0],))
        return [(int(r[0]), r[1], r[2], bool(r[3])) for r in rows]

    def _node_ids_used(self, conn: Any) -> int:
        """AUTOINCREMENT's own record (sqlite_sequence) of the highest node id given out,
        purged ones included."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'nodes'").fetchone()
        return max(int(row[0]) if row else 0, super()._node_ids_used(conn))

    def _after_copy(self, conn: Any, node_ids_used: int) -> None:
        """Raise AUTOINCREMENT's record to ``node_ids_used`` (explicit ids already raised
        it to the highest copied)."""
        conn.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'nodes'", (node_ids_used,)
        )

    def sync(self) -> None:
        """Make every committed transaction durable on disk, also against power loss.

        A PASSIVE checkpoint fsyncs the WAL, then the database (sqlite.org/wal.html).
        """
        self.checkpoint(passive=True)

    def close(self) -> None:
        """Close the connection; the workspace cannot be used afterwards. Waits for a
        thread that holds :attr:`lock` (the daemon's checkpointer tightening the WAL at
        unmount): a connection closed under a running statement crashed the daemon
        (SIGSEGV in CPython's sqlite3 module)."""
        with self.lock:
            self._conn.close()

    def file_size(self) -> int:
        """Bytes on disk: the database file plus its WAL."""
        from kyfs.platform.paths import sidecar_files

        total = 0
        for part in (self.path, *sidecar_files(self.path)[:1]):
            with suppress(FileNotFoundError):
                total += part.stat().st_size
        return total

    def _free_bytes(self, conn: Any) -> int | None:
        """Bytes of the database's free pages (``PRAGMA freelist_count`` x page_size)."""
        pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])

    def _index_bytes(self, conn: Any) -> int:
        """Pages of the search tables (search_text and FTS5's shadow tables: the dbstat
        virtual table, sqlite.org/dbstat.html), in bytes."""
        row = conn.execute(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'search%'"
        ).fetchone()
        return int(row[0])

    def reclaim(self) -> int:
        """Give every free page back to the file system, with SQLite's incremental vacuum
        (sqlite.org/pragma.html#pragma_incremental_vacuum), RECLAIM_STEP bytes at a time
        with a PASSIVE checkpoint after each, so the WAL never holds more than a step
        (the file shrinks as it goes). On a disk with no room for a step's WAL the step
        shrinks, down to RECLAIM_LEAST pages. Each step starts with that checkpoint, and
        when it cannot fold the whole WAL in (another connection, such as the daemon's
        checkpointer or a reader in another process, holds it back) the reclaim ends:
        a step would only grow the WAL, on a full disk into the very room the reserve
        gave back; the rest waits for the next rest. A file made before auto-vacuum was on
        (``PRAGMA auto_vacuum`` NONE) keeps them until :meth:`compact`. Returns how many
        pages were freed.

        Raises:
            StorageError / NoSpace: (EIO / ENOSPC, exit 4) NoSpace when not even
            RECLAIM_LEAST pages of WAL fit.
        """
        try:
            page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
            step = max(RECLAIM_LEAST, RECLAIM_STEP // page)
            if int(self._conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != INCREMENTAL:
                return 0
            before = left = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
            while left:
                busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if busy or done < frames:
                    break  # the WAL is held back: a step would only make it grow
                try:
                    # executescript runs the statement to its end: execute() stops after
                    # its first step (it has no result columns), freeing a single page
                    self._conn.executescript(f"PRAGMA incremental_vacuum({step})")
                except sqlite3.Error as exc:
                    if step <= RECLAIM_LEAST or not isinstance(self._convert(exc), NoSpace):
                        raise
                    step //= 8  # rolled back whole; the WAL's frames are reused
                    continue
                now = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
                if now >= left:
                    break  # nothing moved (another connection holds the pages)
                left = now
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # the last step
            return before - left
        except sqlite3.Error as exc:
            raise self._convert(exc) from None

    def rest(self, reclaim_above: int) -> None:
        """What a workspace at rest gives back: what deleted keys left in the search
        index (FTS5's incremental 'merge' of its segments, at most MERGE_PAGES pages of
        work; skipped on a disk with no room for it, :meth:`_merge_index`), its free
        pages when they pass ``reclaim_above`` bytes (:meth:`reclaim`), and its WAL,
        folded in and cut to nothing (a TRUNCATE checkpoint that waits at most
        IDLE_WAIT_MS for a reader; a busy one is left for the next rest).

        Raises:
            StorageError / NoSpace: (EIO / ENOSPC, exit 4).
        """
        self._merge_index("merge", MERGE_PAGES)
        if (self._free_bytes(self._conn) or 0) > reclaim_above:
            self.reclaim()
        self._rows(f"PRAGMA busy_timeout = {IDLE_WAIT_MS}")
        try:
            self.checkpoint()
        finally:
            self._rows(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def _merge_index(self, command: str, pages: int | None = None) -> bool:
        """Run FTS5's ``command`` ('merge' of at most ``pages`` pages of work, or
        'optimize': the whole index) on the search index
        (sqlite.org/fts5.html#the_merge_command). It writes the merged segments before
        it frees the old ones, to the WAL and then to the database's end, so it needs
        room on the disk for about twice what it writes, and more for a reclaim step
        after it: a merge the WAL could hold but the database could not take in would
        leave a WAL that no checkpoint can fold in. Without that room (or on NoSpace, the
        transaction rolled back whole) it is skipped with a log line and False is
        returned: what it would free is not needed to free the rest.

        Raises:
            StorageError: (EIO, exit 4) a failure other than a full disk.
        """
        page = int(self._row("PRAGMA page_size")[0])
        if pages is None:
            row = self._row(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'search_index%'"
            )
            writes = int(row[0])
        else:
            writes = pages * page
        needed = 2 * writes + RECLAIM_STEP
        try:
            if shutil.disk_usage(self.path.parent).free < needed:
                raise NoSpace("no room for the merge")
            with self._atomic() as conn:
                conn.execute(
                    "INSERT INTO search_index (search_index, rank) VALUES (?, ?)",
                    (command, pages),
                )
        except NoSpace:
            log.warning("workspace %s: no room on the disk to merge the search index"
                        " (%d bytes wanted); skipped", self.path.stem, needed)  # fmt: skip
            return False
        return True

    def fold_after(self, pages: int) -> None:
        """Let this connection's commits fold the WAL in once it holds ``pages`` pages
        (0: never, a checkpointer does; SQLite's default is 1,000: ``PRAGMA
        wal_autocheckpoint``, sqlite.org/pragma.html#pragma_wal_autocheckpoint). Call
        under :attr:`lock`."""
        self._rows(f"PRAGMA wal_autocheckpoint = {int(pages)}")

    def _give_back(self) -> None:
        """A disk short of space: every free page and the WAL go back now (:meth:`rest`);
        a failure leaves them for the daemon's next rest."""
        with contextlib.suppress(StorageError):
            self.rest(reclaim_above=0)

    def compact(self) -> int:
        """Give the free space inside the file back to the file system now: fold the WAL
        in and free every free page (room first, for a full disk), merge the search
        index's segments (FTS5 'optimize': what deleted keys left in it goes; skipped
        when the disk has no room for it), fold the WAL in again, free every free page
        (incremental vacuum; a file made before auto-vacuum was on is rewritten once
        with VACUUM, which turns it on, and needs room for a copy meanwhile), and empty
        the WAL again. Returns how many bytes the
        database and WAL files shrank by.

        Raises:
            StorageError / NoSpace: (EIO / ENOSPC, exit 4); the file is left as it was.
        """
        before = self.file_size()
        self.checkpoint()
        self.reclaim()  # room first: on a full disk what follows needs some
        self.checkpoint()
        with suppress(NoSpace):  # the index catches up at the next write or rest
            self.flush_index()
        self._merge_index("optimize")  # dropping what deleted keys left in it
        self.checkpoint()
        try:
            if int(self._conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != INCREMENTAL:
                self._conn.execute(f"PRAGMA auto_vacuum = {INCREMENTAL}")
                self._conn.execute("VACUUM")
        except sqlite3.Error as exc:
            raise self._convert(exc) from None
        self.reclaim()
        self.checkpoint()
        return max(0, before - self.file_size())

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
            raise self._convert(exc) from None

    def clone_to(self, target: Path) -> bool:
        """Write a consistent image of the workspace to the new file ``target`` as a
        reflink (kyfs.platform.reflink: XFS, btrfs): it shares this file's blocks until
        either is written, so a workspace of any size takes milliseconds and no space.
        The database and its WAL are cloned inside one write transaction (BEGIN
        IMMEDIATE: no commit, WAL restart or truncation can come between the two; a
        concurrent checkpoint only copies into the database pages the cloned WAL also
        holds, sqlite.org/wal.html), then the clone's WAL is folded into it, so that
        ``target`` is one file. Returns False, leaving nothing at ``target``, where the
        file system cannot clone (ext4, tmpfs): :meth:`backup_to` copies then.

        Raises:
            StorageError / NoSpace: (exit 4) the image could not be made; nothing is left.
        """
        from kyfs.platform import reflink
        from kyfs.platform.paths import sidecar_files

        wal, target_wal = Path(f"{self.path}-wal"), Path(f"{target}-wal")
        try:
            with self.lock, self._atomic():  # nothing is written: the lock is the point
                if not reflink.clone(self.path, target):
                    return False
                if wal.is_file() and wal.stat().st_size and not reflink.clone(wal, target_wal):
                    target.unlink()
                    return False
            image = sqlite3.connect(target)
            try:
                image.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the clone's own WAL, in
            finally:
                image.close()  # the last connection: its -wal and -shm go
        except (OSError, sqlite3.Error) as exc:
            for part in (target, *sidecar_files(target)):
                part.unlink(missing_ok=True)
            if isinstance(exc, sqlite3.Error):
                raise self._convert(exc) from None
            raise storage_error(exc, f"clone of {self.path.stem}") from None
        return True

    def checkpoint(self, passive: bool = False) -> bool:
        """Move the WAL into the database and empty it (TRUNCATE); with ``passive`` copy
        what no reader still needs and wait for nobody (PASSIVE,
        sqlite.org/pragma.html#pragma_wal_checkpoint). True when every frame of the WAL
        is in the database (no reader kept one back).

        Raises:
            StorageError: (EIO, exit 4).
        """
        mode = "PASSIVE" if passive else "TRUNCATE"
        try:
            busy, frames, done = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:
            raise self._convert(exc) from None
        return not busy and done >= frames
