"""The set of workspaces in one data directory: list, create, drop, rename, open.

A workspace is the SQLite file ``<name>.db`` in kyfs.platform.paths.workspaces_dir()
(with its ``-wal`` and ``-shm`` companions). Changes to the set (create, drop,
rename) and every use of a workspace are coordinated between processes (the
mount daemon and any number of CLI commands) by an advisory lock on the file
``.lock`` in that directory (flock(2)):

* create, drop and rename hold it exclusively while they move files, so the
  three files of a workspace are never seen half renamed;
* every use of a workspace by name (:meth:`Workspaces.shared`) holds it shared,
  so no rename or drop happens in the middle of an operation (the daemon skips
  it for operations on an already open file, whose SqliteWorkspace follows its file).

Stores can be kept open between uses (``cache=True``, the daemon): before each
use the file's identity (st_dev, st_ino) is compared with the one opened, so a
workspace renamed or dropped by another process is noticed at the next
operation and never written through a stale name.

Thread-safety: the daemon's threads share one engine. The directory lock is a
readers-writer lock between threads too; the cache of open workspaces has a mutex; each
cached SqliteWorkspace is used under its own ``lock`` (expiry sweeps here, every
operation in kyfs.fuse.adapter). The CLI uses an engine from one thread.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import functools
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kyfs.core import inodes
from kyfs.core.errors import (
    InvalidName,
    KyfsError,
    NoSpace,
    NotEmpty,
    StorageError,
    UnsoundInput,
    UntrustedFile,
    WorkspaceExists,
    WorkspaceNotFound,
)
from kyfs.core.names import check_stored_name
from kyfs.core.nodes import Owner
from kyfs.engine.base import TrashedWorkspace, WorkspaceInfo
from kyfs.engine.sql.history import cache_ttl
from kyfs.engine.sqlite import trust
from kyfs.engine.sqlite.connection import FULL_BELOW
from kyfs.engine.sqlite.salvage import salvage
from kyfs.engine.sqlite.workspace import SqliteWorkspace
from kyfs.engine.sweep import Sweeper
from kyfs.platform import journal, paths
from kyfs.platform import reserve as disk_reserve

log = logging.getLogger(__name__)

RECLAIM_FREE = 4 << 20  # bytes free inside a file at rest past which they go back (idle)
SHORT_FOR = 0.5  # seconds short() keeps its answer
INODES_LOCK = ".inodes.lock"  # in the data directory: one process at a time hands out tags
CREATING = ".creating"  # a workspace file being made (SqliteEngine.create), not yet in place


def _move_files(moves: Iterable[tuple[Path, Path]]) -> None:
    """Rename each database file and its ``-wal``/``-shm`` companions (POSIX rename, one
    disk), pair after pair, so that running it again after it was cut short finishes it:
    a pair whose file is at both ends is done and skipped whole (the source is another
    file by now); one whose file is only at the target has its companions follow it; one
    whose file is only at the source moves whole."""
    for source, target in moves:
        there = target.exists()
        if source.exists() and there:
            continue
        if not source.exists() and not there:
            continue
        for src, dst in zip(
            (source, *paths.sidecar_files(source)),
            (target, *paths.sidecar_files(target)),
            strict=True,
        ):
            if src.exists() and not dst.exists():
                os.rename(src, dst)


def _journaled_moves(data: Path, moves: list[tuple[Path, Path]]) -> None:
    """:func:`_move_files` under a ``move`` journal (kyfs.platform.journal) in the data
    directory ``data``: killed midway, the next engine opened there finishes the moves
    (:meth:`SqliteEngine.finish_moves`).

    A disk too full for the journal (a few hundred bytes) gets the moves without one.

    Raises:
        OSError: a rename failed; the journal is gone, what moved stays moved.
    """
    try:
        op = journal.begin("move", data, moves=[[str(a), str(b)] for a, b in moves])
    except OSError as exc:  # a full disk: a drop that frees space must still work
        log.warning("moving %s without a journal: %s", moves[0][0].name, exc)
        _move_files(moves)
        return
    with op:
        _move_files(moves)


def _valid(name: str) -> bool:
    try:
        check_stored_name(name)
    except InvalidName:
        return False
    return True


class _Shared:
    """The context manager of _DirLock.shared(), without contextlib's per-use generator."""

    __slots__ = ("_lock",)

    def __init__(self, lock: _DirLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._enter_shared()

    def __exit__(self, *exc: object) -> None:
        self._lock._exit_shared()


class _DirLock:
    """A re-entrant readers-writer lock over flock(2) on ``.lock``, for the processes of a
    data directory and for the threads of this one.

    Between processes it is the flock: LOCK_SH while any thread holds it shared, LOCK_EX
    while one holds it exclusively. Between threads: shared holds run together; exclusive
    waits until no other thread holds it (shared or exclusive) and keeps new shared holds
    of other threads out. Shared inside exclusive is a no-op. Exclusive inside shared
    gives up the thread's shared holds while it waits and takes them back after, as
    flock(2)'s own conversion does (not atomic), so two threads upgrading at once take
    turns instead of deadlocking. Threads never hold a workspace's lock while they wait
    here (kyfs.fuse.adapter takes the directory lock first).
    """

    def __init__(self, directory: Path) -> None:
        self._path = directory / ".lock"
        self._fd: int | None = None
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0  # shared holds of every thread
        self._owner: int | None = None  # the thread holding it exclusively
        self._exclusive = 0  # its depth
        self._mine = threading.local()  # .shared: this thread's shared holds
        self._shared_cm = _Shared(self)  # one object: no generator per use (FUSE hot path)

    def _file(self) -> int:
        """The lock file's descriptor, opened (and made) at first use. On a read-only
        file system it is opened for reading: flock(2) works on any descriptor, and
        nothing there can create, drop or rename (a missing ``.lock`` there is the
        OSError EROFS of the open)."""
        if self._fd is None:
            paths.make_private_dir(self._path.parent)
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                if exc.errno != errno.EROFS:
                    raise
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        return self._fd

    def shared(self) -> AbstractContextManager[None]:
        return self._shared_cm

    def _enter_shared(self) -> None:
        me = threading.get_ident()
        with self._cond:
            while self._owner is not None and self._owner != me:
                self._cond.wait()
            if not (self._shared or self._exclusive):
                fcntl.flock(self._file(), fcntl.LOCK_SH)
            self._shared += 1
        self._mine.shared = getattr(self._mine, "shared", 0) + 1

    def _exit_shared(self) -> None:
        self._mine.shared -= 1
        with self._cond:
            self._shared -= 1
            if not (self._shared or self._exclusive):
                fcntl.flock(self._file(), fcntl.LOCK_UN)
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._owner == me:
            self._exclusive += 1
            try:
                yield
            finally:
                self._exclusive -= 1
            return
        mine = getattr(self._mine, "shared", 0)
        with self._cond:
            self._shared -= mine  # given up while waiting (flock's conversion is not atomic)
            if mine and not self._shared:
                fcntl.flock(self._file(), fcntl.LOCK_UN)
                self._cond.notify_all()
            while self._owner is not None or self._shared:
                self._cond.wait()
            fcntl.flock(self._file(), fcntl.LOCK_EX)
            self._owner, self._exclusive = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._shared += mine
                self._owner, self._exclusive = None, 0
                fcntl.flock(self._file(), fcntl.LOCK_SH if self._shared else fcntl.LOCK_UN)
                self._cond.notify_all()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _must_be_workspace_file(path: Path) -> None:
    """Refuse what cannot be a kyfs workspace before SQLite opens it for writing (a
    0-byte file is a valid empty SQLite database, which opening would turn into a
    workspace): the SQLite header (sqlite.org/fileformat.html#the_database_header) and
    a schema version of at least 1 (``PRAGMA user_version``, read-only).

    Raises:
        UntrustedFile: (EIO, exit 4) empty, not SQLite, or no kyfs schema.
    """
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise StorageError(f"{path}: cannot be read: {exc.strerror}") from None
    if not header:
        raise UntrustedFile(f"{path}: an empty file, not a kyfs workspace")
    if not header.startswith(b"SQLite format 3\0") or len(header) < 100:
        raise UntrustedFile(f"{path}: not a SQLite file, so not a kyfs workspace")
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
    try:
        probe = sqlite3.connect(uri, uri=True)
        try:
            version = probe.execute("PRAGMA user_version").fetchone()[0]
        finally:
            probe.close()
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: not a usable workspace file: {exc}") from None
    if not version:  # (the header's copy may be older than the WAL's)
        raise UntrustedFile(f"{path}: a SQLite file that is not a kyfs workspace")


def stage_file(source: Path, directory: Path) -> Path:
    """Copy the untrusted SQLite file ``source`` into a new private file of kyfs's own in
    ``directory`` (an operation's folder, kyfs.platform.journal), check its schema,
    migrate the copy and validate every row (kyfs.engine.sqlite.trust); return the
    copy, ready for an engine's ``adopt`` (the SQLite engine moves it in, the PostgreSQL
    engine copies its rows). ``source`` is only read.

    Raises:
        UnsoundInput: (EINVAL, exit 2) the schema or the data is not kyfs's; the copy is
            removed.
    """
    import shutil
    import tempfile

    staging = paths.make_private_dir(directory)
    handle, name = tempfile.mkstemp(prefix="stage-", suffix=paths.DB_SUFFIX, dir=staging)
    os.close(handle)
    copy = Path(name)
    try:
        shutil.copyfile(source, copy)
        copy.chmod(0o600)
        try:
            workspace = SqliteWorkspace(copy, retention_s=None)
        except StorageError as exc:  # UntrustedFile, or not SQLite at all
            raise UnsoundInput(f"{source.name}: {exc}") from None
        try:
            problems = trust.validate_data(workspace._conn)
            workspace.checkpoint()
        finally:
            workspace.close()
        if problems:
            raise UnsoundInput(
                f"{source.name}: not a sound kyfs workspace: " + "; ".join(problems[:6])
            )
    except BaseException:
        for part in (copy, *paths.sidecar_files(copy)):
            part.unlink(missing_ok=True)
        raise
    return copy


Identity = tuple[int, int]  # (st_dev, st_ino) of a file


def _identity(path: Path) -> Identity | None:
    """(st_dev, st_ino) of ``path``; None when there is nothing there."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


def _identities(db_file: Path) -> tuple[Identity | None, Identity | None]:
    """The identities of the ``-wal`` and ``-shm`` files at ``db_file``'s name."""
    wal, shm = paths.sidecar_files(db_file)
    return (_identity(wal), _identity(shm))


def _stored_tag(path: Path) -> int | None:
    """The ``inode_tag`` setting of workspace file ``path``, read through a connection of
    its own (None: unreadable, or not a number). Opened for writing where it can be: the
    last connection to close removes the ``-wal`` and ``-shm`` files, which a read-only
    one leaves behind (it is read-only where the file system is)."""
    try:
        conn = sqlite3.connect(path, timeout=10)
    except sqlite3.Error:
        return None
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
        row = conn.execute("SELECT value FROM meta WHERE name = 'inode_tag'").fetchone()
        return int(row[0]) if row is not None else None
    except (sqlite3.Error, TypeError, ValueError):
        return None
    finally:
        conn.close()


@dataclass
class _Held:
    """A workspace the daemon keeps open (``cache``): its file's identity when opened,
    and its ``-wal`` and ``-shm`` files' (those its connection uses)."""

    workspace: SqliteWorkspace
    identity: Identity
    sidecars: tuple[Identity | None, Identity | None]


def _still_there(held: _Held) -> None:
    """After each commit of a workspace the daemon keeps open (Workspace.committed): the
    file at its name must still be the one committed into.

    Raises:
        StorageError: (EIO, exit 4) it was replaced or removed meanwhile: the commit went
            to the old file, so the write is answered as failed.
    """
    if _identity(held.workspace.path) != held.identity:
        name = held.workspace.path.stem
        log.warning("workspace %s: its file was replaced or removed during a write", name)
        raise StorageError(f"{name}: its file was replaced or removed during the write")


def _tag_trouble(tag: int) -> str:
    """Why tag ``tag`` was replaced, for messages."""
    return "a tag of the old 23-bit rule" if not inodes.valid_tag(tag) else "another's too"


class SqliteEngine:
    """The workspaces of one data directory.

    Args:
        directory: where the ``.db`` files live; kyfs.platform.paths.workspaces_dir() when None.
            Created with mode 0700 when missing.
        cache: keep Stores open between uses, checked against the file's identity
            before each use (for the long-running daemon).
        autocheckpoint: commits fold the WAL in, in the committing thread (SQLite's
            default); False leaves it to :meth:`checkpoint` (the daemon's thread
            kyfs.app.Checkpointer), so that no request waits for one.
        reserve: keep the disk-full reserve of the data directory (the parent of
            ``directory``; kyfs.platform.reserve): make it when there is room, give it up
            when an operation that frees space meets ENOSPC (and try it once more), and
            keep no undo data while it is missing (:meth:`short`).
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        cache: bool = False,
        retention_s: Callable[[], float | None] = lambda: None,
        autocheckpoint: bool = True,
        reserve: bool = False,
    ) -> None:
        self.directory = directory or paths.workspaces_dir()
        paths.make_private_dir(self.directory)
        self._reserve = self.directory.parent if reserve else None
        self._short, self._short_until = False, 0.0  # short(): its answer, kept until then
        if self._reserve is not None:
            disk_reserve.ensure(self._reserve)
        self._lock = _DirLock(self.directory)
        self._tag_mutex = threading.RLock()  # _tag_lock between threads, reentrant
        self._tag_depth = 0  # _tag_lock's holds by the thread that has _tag_mutex
        self.finish_moves()
        self._cache_enabled = cache
        self._retention_s = retention_s
        self._cache: dict[str, _Held] = {}
        self._mutex = threading.Lock()  # guards _cache between the daemon's threads
        self._sweeper = Sweeper(cache)
        self._paths: dict[str, Path] = {}
        self._autocheckpoint = autocheckpoint
        self._fold_limit = 0  # pages: on a tight disk, every connection folds past it (tighten)
        self._folded: dict[str, tuple[int, int]] = {}  # name -> its WAL (mtime, size) when
        # checkpoint() last folded it

    def finish_moves(self) -> int:
        """Finish the file moves (drop, rename, adopt, trash restore, salvage) of kyfs
        processes killed midway, from their journals (kyfs.platform.journal, kind
        ``move``): moves that had begun are completed, a salvage killed before its moves
        loses its half-made copy. Runs when an engine opens; returns how many journals
        were found (each gets a log line)."""
        found = 0
        for op in journal.dead(self.directory.parent, kinds=("move",)):
            with op, self._lock.exclusive():
                found += 1
                moves = [(Path(a), Path(b)) for a, b in op.data.get("moves", [])]
                if moves:
                    _move_files(moves)
                    log.warning("finished the file moves of a killed kyfs process: %s",
                                "; ".join(f"{a} -> {b}" for a, b in moves))  # fmt: skip
                elif op.data.get("discard"):
                    staged = Path(op.data["discard"])
                    for part in (staged, *paths.sidecar_files(staged)):
                        part.unlink(missing_ok=True)
                    log.warning("removed %s, left by a salvage that was killed", staged)
        return found

    # --- a full disk ---------------------------------------------------------------------
    def relieve(self) -> bool:
        """Give the data directory's reserve back to the file system; True when there was
        one, or when another process gave it up already and the disk has room again
        (FULL_BELOW bytes free: that process's room came back, or it freed some): an
        operation that met ENOSPC may then run once more (and wait for room,
        kyfs.engine.sql.base.frees_space). CI met ``kyfs delete`` exit 4 on a disk with
        15 MB free: the daemon had given the reserve up an instant before, and the
        delete, finding none to give, failed at once."""
        self._short_until = 0.0  # look again at the next short()
        if self._reserve is None:
            return False
        if disk_reserve.release(self._reserve):
            return True
        try:
            return shutil.disk_usage(self._reserve).free >= FULL_BELOW
        except OSError:
            return False

    def short(self) -> bool:
        """True while the disk is short of space (the reserve is given up and not made
        again yet): deletes then free their blocks at once and writes keep no version.
        Asked at every write: the answer is kept SHORT_FOR seconds (another process's
        release shows within that), and changes at once with this engine's own."""
        if self._reserve is None:
            return False
        now = time.monotonic()
        if now >= self._short_until:
            self._short = disk_reserve.short(self._reserve)
            self._short_until = now + SHORT_FOR
        return self._short

    def ensure_reserve(self) -> bool:
        """Make the reserve again when the disk has room for it; True when it is in place
        (always False without one)."""
        self._short_until = 0.0
        return self._reserve is not None and disk_reserve.ensure(self._reserve)

    def fold_limit(self, names: Iterable[str]) -> int:
        """How many pages a WAL may hold before its writer folds it in, for the disk as
        it is now and the WALs of workspaces ``names`` (kyfs.platform.reserve.fold_limit;
        0 while the disk is roomy)."""
        held = 0
        for name in names:
            with contextlib.suppress(OSError, KyfsError):
                held += paths.sidecar_files(self._file(name))[0].stat().st_size
        return disk_reserve.fold_limit(self.directory, held)

    def tighten(self, pages: int) -> None:
        """Have every workspace this engine holds fold its WAL in as it commits, once the
        WAL holds ``pages`` pages (kyfs.platform.reserve.fold_limit; 0: the engine's own
        setting again), even one opened without ``autocheckpoint`` (the daemon's): on a
        tight disk a WAL that holds more than the disk can take into the database cannot
        be folded in, and then nothing could ever be deleted."""
        if pages == self._fold_limit:
            return
        self._fold_limit = pages
        with self._mutex:
            held = [entry.workspace for entry in self._cache.values()]
        for workspace in held:
            with workspace.lock, contextlib.suppress(KyfsError):
                workspace.fold_after(self._fold_pages())

    def _fold_pages(self) -> int:
        """The wal_autocheckpoint of this engine's connections now (0: never)."""
        if self._fold_limit:
            return self._fold_limit if not self._autocheckpoint else min(self._fold_limit, 1000)
        return 1000 if self._autocheckpoint else 0

    def _workspace(self, path: Path, **kwargs: Any) -> SqliteWorkspace:
        """SqliteWorkspace(path, ...) told of the reserve (``relieve``, ``short``); a file
        that cannot be opened for a full disk (SQLite grows its ``-shm`` file) is tried
        once more after the reserve is given up.

        Raises:
            NoSpace: (ENOSPC, exit 4) still full. StorageError: (EIO, exit 4).
        """
        try:
            workspace = SqliteWorkspace(path, **kwargs)
        except NoSpace:
            if not self.relieve():
                raise
            workspace = SqliteWorkspace(path, **kwargs)
        if self._reserve is not None:
            workspace.relieve = self.relieve
            workspace.short = self.short
        return workspace

    def _file(self, name: str) -> Path:
        path = self._paths.get(name)
        if path is None:  # validated once per name: this runs on every FUSE operation
            path = self.directory / f"{check_stored_name(name)}{paths.DB_SUFFIX}"
            if len(self._paths) < 4096:
                self._paths[name] = path
        return path

    # --- inode tags (kyfs.core.inodes) ---------------------------------------------------
    @contextmanager
    def _tag_lock(self) -> Iterator[None]:
        """Hold ``.inodes.lock`` (beside the workspace files) exclusively: flock(2)
        between processes, a mutex between threads; reentrant (opening a workspace of
        the old rule settles its tag, also while the tags of all are being settled)."""
        with self._tag_mutex:
            fd = None
            if not self._tag_depth:
                fd = os.open(
                    self.directory / INODES_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._tag_depth += 1
            try:
                yield
            finally:
                self._tag_depth -= 1
                if fd is not None:
                    os.close(fd)  # (releases the flock)

    def _stored_tags(self, but: str | None = None) -> dict[str, int]:
        """name -> inode tag of every workspace of the data directory (``but`` left out;
        an unreadable one too: it is no workspace until fsck --repair)."""
        found = {}
        for name in self.names():
            if name != but:
                tag = _stored_tag(self._file(name))
                if tag is not None:
                    found[name] = tag
        return found

    def _settle_tag(self, name: str, workspace: SqliteWorkspace) -> list[str]:
        """Give workspace ``name`` (open as ``workspace``) a tag of the current rule that no
        other workspace of the data directory has (kyfs.core.inodes.settled_tag); returns
        what was done, as sentences.

        Raises:
            OutOfInodes: (ENOSPC, exit 4) every tag is taken.
        """
        with self._tag_lock():
            used = set(self._stored_tags(but=name).values())
            old = workspace.inode_tag
            tag = inodes.settled_tag(old, used)
            if tag == old:
                return []
            workspace.set_inode_tag(tag)
        log.info("workspace %s: inode tag %d is now %d", name, old, tag)
        return [f"gave the workspace the inode tag {tag} (it had {old}, {_tag_trouble(old)})"]

    def settle_tags(self) -> list[str]:
        """Make every workspace's inode tag valid and unique (the daemon at mount: files
        copied in with ``cp`` carry another's); returns what was changed, as sentences.

        Raises:
            OutOfInodes: (ENOSPC, exit 4) no tag is free for one that needs it.
        """
        done = []
        with self._lock.shared(), self._tag_lock():
            tags = self._stored_tags()
            for name, tag in inodes.resettled(tags).items():
                store = self._open_unlocked(name)
                try:
                    store.set_inode_tag(tag)
                finally:
                    if not self._cache_enabled:
                        store.close()
                done.append(
                    f"workspace {name}: inode tag {tags[name]} is now {tag}"
                    f" ({_tag_trouble(tags[name])})"
                )
        return done

    # --- coordination ------------------------------------------------------------------
    def shared(self) -> AbstractContextManager[None]:
        """Hold the directory lock shared: no create/drop/rename runs meanwhile."""
        return self._lock.shared()

    # --- the set -----------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every workspace name, sorted: the regular ``NAME.db`` files whose NAME keeps
        the naming rules (see :meth:`strays` for the others)."""
        found = []
        for entry in os.scandir(self.directory):
            name = paths.workspace_name(Path(entry.name))
            if name is not None and entry.is_file(follow_symlinks=False) and _valid(name):
                found.append(name)
        return sorted(found)

    def strays(self) -> list[Path]:
        """Files in the workspaces folder that look like workspaces but are not used as
        any: a name that breaks the naming rules, or a link; listing and checking
        commands report them and go on."""
        found = []
        for entry in os.scandir(self.directory):
            name = paths.workspace_name(Path(entry.name))
            if name is None:
                continue
            if not _valid(name) or not entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
        return sorted(found)

    def exists(self, name: str) -> bool:
        """True when workspace ``name`` exists. Raises InvalidName for a bad name."""
        return self._file(name).is_file()

    def create(self, name: str, owner: Owner | None = None, mode: int | None = None) -> None:
        """Create the empty workspace ``name`` (file mode 0600); its top directory belongs
        to ``owner`` (default: this process) with permission bits ``mode`` (default 0755).

        It is made under another name in the same folder and linked into place when
        whole, so a full disk or a kill midway never leaves a half-made workspace (a
        file whose schema is not all there would be refused at every command).

        Raises:
            InvalidName: (EINVAL, exit 2). WorkspaceExists: (EEXIST, exit 3).
            NoSpace / StorageError: (exit 4) nothing was made.
        """
        path = self._file(name)
        with self._lock.exclusive():
            if path.exists():
                raise WorkspaceExists(f"workspace exists: {name}")
            for left in self.directory.glob(f"*{CREATING}"):  # of a killed create
                left.unlink(missing_ok=True)
            staged = path.with_name(f".{secrets.token_hex(4)}-{path.name}{CREATING}")
            try:
                workspace = SqliteWorkspace(staged, create=True)
                try:
                    self._settle_tag(name, workspace)
                    if owner is not None:
                        workspace.chown("", owner.uid, owner.gid)
                    if mode is not None:
                        workspace.chmod("", mode)
                finally:
                    workspace.close()
                try:
                    os.link(staged, path)  # whole or not at all, never over another
                except FileExistsError:
                    raise WorkspaceExists(f"workspace exists: {name}") from None
            finally:
                for part in (staged, *paths.sidecar_files(staged)):
                    part.unlink(missing_ok=True)

    def drop(self, name: str, *, only_if_empty: bool = False) -> Path:
        """Move workspace ``name`` into the trash; return its trash file.

        Nothing is deleted: ``restore_trash`` brings it back, ``empty_trash``
        deletes for good.

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1).
            NotEmpty: (ENOTEMPTY, exit 3) ``only_if_empty`` and it holds keys or directories.
        """
        path = self._file(name)
        with self._lock.exclusive():
            if not path.is_file():
                raise WorkspaceNotFound(f"workspace not found: {name}")
            store = self._open_unlocked(name)
            try:
                with store.lock:
                    if only_if_empty and store.children(""):
                        raise NotEmpty(f"workspace not empty: {name}")
                    with contextlib.suppress(NoSpace):  # a full disk: the WAL goes along
                        store.checkpoint()  # fold the WAL in, so the trash holds one file
            finally:
                if not self._cache_enabled:
                    store.close()
            self._forget(name)
            stamp = dt.datetime.now(dt.UTC).strftime(paths.TRASH_STAMP)
            target = paths.trash_file(name, stamp)
            paths.make_private_dir(target.parent)
            _journaled_moves(self.directory.parent, [(path, target)])
            return target

    def stage(self, source: Path, directory: Path) -> Path:
        """:func:`stage_file`: ``source`` checked and copied (into ``directory``), ready
        for :meth:`adopt`."""
        return stage_file(source, directory)

    def adopt(self, name: str, staged: Path) -> None:
        """Make ``staged`` (a file :meth:`stage` returned) the workspace ``name``.

        Raises:
            WorkspaceExists: (EEXIST, exit 3).
        """
        target = self._file(name)
        with self._lock.exclusive():
            if target.exists():
                raise WorkspaceExists(f"workspace exists: {name}")
            _journaled_moves(self.directory.parent, [(staged, target)])
            store = self._open_unlocked(name)  # its tag is the backup's: another's now?
            try:
                self._settle_tag(name, store)
            finally:
                if not self._cache_enabled:
                    store.close()

    def rename(self, old: str, new: str) -> None:
        """Rename workspace ``old`` to ``new`` (its ``-wal`` and ``-shm`` files too).

        Raises:
            InvalidName: (exit 2). WorkspaceNotFound: (ENOENT, exit 1).
            WorkspaceExists: (EEXIST, exit 3) ``new`` exists.
        """
        source, target = self._file(old), self._file(new)
        with self._lock.exclusive():
            if not source.is_file():
                raise WorkspaceNotFound(f"workspace not found: {old}")
            if old == new:
                return
            if target.exists():
                raise WorkspaceExists(f"workspace exists: {new}")
            store = self._open_unlocked(old)
            with store.lock:
                store.checkpoint()  # empty the WAL first; a reader may keep it, which is fine
            with self._mutex:
                cached = self._cache.pop(old, None)
            if cached is None:
                store.close()
            _journaled_moves(self.directory.parent, [(source, target)])
            if cached is not None:  # same inode under its new name: keep it open
                cached.workspace.path = target
                cached.sidecars = _identities(target)
                with self._mutex:
                    self._cache[new] = cached

    # --- the trash -------------------------------------------------------------------------
    def trash(self) -> list[TrashedWorkspace]:
        """Every dropped workspace in the trash, newest first."""
        found = []
        directory = paths.trash_dir()
        if not directory.is_dir():
            return []
        for path in directory.iterdir():
            parsed = paths.parse_trash_file(path)
            if parsed is None:
                continue
            name, stamp = parsed
            when = dt.datetime.strptime(stamp, paths.TRASH_STAMP).replace(tzinfo=dt.UTC)
            size = sum(p.stat().st_size for p in (path, *paths.sidecar_files(path)) if p.exists())
            found.append(TrashedWorkspace(name, when, size, path))
        return sorted(found, key=lambda t: t.dropped, reverse=True)

    def restore_trash(self, name: str, new_name: str | None = None) -> tuple[str, int]:
        """Bring back the newest dropped workspace ``name`` as ``new_name`` (default ``name``).

        If it was emptied before being dropped (``rm -r`` through the mount deletes
        every key, then the directory), the keys deleted then come back from its
        archive too. Returns (the workspace's name, how many entries were restored
        from the archive).

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1) no workspace of that name in the trash.
            WorkspaceExists: (EEXIST, exit 3) the target name is taken; use ``new_name``.
        """
        check_stored_name(name)
        target_name = new_name or name
        target = self._file(target_name)
        candidates = [t for t in self.trash() if t.name == name]
        if not candidates:
            raise WorkspaceNotFound(f"no workspace named {name} in the trash")
        with self._lock.exclusive():
            if target.exists():
                raise WorkspaceExists(
                    f"workspace exists: {target_name} (restore under another name with --as)"
                )
            _journaled_moves(self.directory.parent, [(candidates[0].path, target)])
            store = self._open_unlocked(target_name)
            try:
                self._settle_tag(target_name, store)  # taken by another meanwhile?
                restored = store.restore_teardown()
            finally:
                if not self._cache_enabled:
                    store.close()
        return target_name, restored

    def empty_trash(
        self, older_than_s: float | None = None, names: Collection[str] | None = None
    ) -> list[TrashedWorkspace]:
        """Delete for good the trashed workspaces dropped more than ``older_than_s``
        seconds ago (all when None), of the names ``names`` (all when None); return
        what was deleted."""
        now = dt.datetime.now(dt.UTC)
        deleted = []
        for item in self.trash():
            if older_than_s is not None and (now - item.dropped).total_seconds() <= older_than_s:
                continue
            if names is not None and item.name not in names:
                continue
            for part in (*paths.sidecar_files(item.path), item.path):  # the file last: cut
                part.unlink(missing_ok=True)  # short, the rest still shows in the trash
            deleted.append(item)
        return deleted

    # --- using one -----------------------------------------------------------------------
    @contextmanager
    def using(self, name: str) -> Iterator[SqliteWorkspace]:
        """Workspace ``name`` for one ``with`` block, under the shared lock; closed at the
        end unless this engine caches workspaces (the daemon).

        Raises:
            InvalidName: (exit 2). WorkspaceNotFound: (ENOENT, exit 1).
            StorageError: (EIO, exit 4) the file is not a usable workspace.
        """
        with self._lock.shared():
            workspace = self._open_unlocked(name)
            try:
                yield workspace
            finally:
                if not self._cache_enabled:
                    workspace.close()

    @contextmanager
    def using_file(self, path: Path) -> Iterator[SqliteWorkspace]:
        """The workspace file ``path`` (anywhere, not only in the data directory) for one
        ``with`` block: ``kyfs --db FILE``. It must be a kyfs workspace (its schema is
        checked as for any untrusted file); an older kyfs version's file is upgraded.

        It is untrusted input (docs/design.md, "Untrusted files"): an empty file, one that
        is not SQLite or holds no kyfs schema is refused (never made a workspace), and
        its rows are checked as an import's are (names, sizes, types, references:
        kyfs.engine.sqlite.trust.validate_data without the whole-file checks).

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1) no such file.
            UntrustedFile: (EIO, exit 4) empty, not SQLite, or not a kyfs workspace.
            UnsoundInput: (EINVAL, exit 2) its rows break kyfs's rules.
            StorageError: (EIO, exit 4) unreadable.
        """
        if not path.is_file():
            raise WorkspaceNotFound(f"no workspace file: {path}")
        _must_be_workspace_file(path)
        workspace = self._workspace(path, retention_s=self._retention_s())
        if not inodes.valid_tag(workspace.inode_tag):  # the old rule's: narrowed, in memory
            workspace.inode_tag = inodes.narrowed(workspace.inode_tag)  # (a file alone)
        try:
            problems = trust.validate_data(workspace._conn, whole=False)
            if problems:
                raise UnsoundInput(
                    f"{path}: not a sound kyfs workspace: " + "; ".join(problems[:6])
                )
            workspace.sweep_expired()
            yield workspace
        finally:
            workspace.close()

    def open(self, name: str) -> SqliteWorkspace:
        """The SqliteWorkspace of workspace ``name``: cached and revalidated, or newly opened.

        Without ``cache`` the caller closes it. Call under :meth:`shared`.

        Raises:
            InvalidName: (exit 2). WorkspaceNotFound: (ENOENT, exit 1).
            StorageError: (EIO, exit 4) the file is not a usable workspace.
        """
        return self._open_unlocked(name)

    def _open_unlocked(self, name: str) -> SqliteWorkspace:
        path = self._file(name)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            stat = None
        identity = None if stat is None else (stat.st_dev, stat.st_ino)
        with self._mutex:
            cached = self._cache.get(name)
            if cached is not None and cached.identity != identity:
                del self._cache[name]  # replaced, moved or removed behind our back
        if cached is not None and cached.identity != identity:
            self._let_go(name, cached, stat is None)
            cached = None
        if stat is None:
            raise WorkspaceNotFound(f"workspace not found: {name}")
        if cached is not None:
            self._sweeper.sweep(name, cached.workspace)
            return cached.workspace
        store = self._workspace(
            path, retention_s=self._retention_s(), autocheckpoint=self._autocheckpoint
        )
        if self._fold_limit:
            store.fold_after(self._fold_pages())
        if not inodes.valid_tag(store.inode_tag):  # a tag of the 23-bit rule (st_ino > 2**53)
            try:
                self._settle_tag(name, store)
            except (StorageError, OSError) as exc:  # read-only: narrowed for this process
                log.warning("workspace %s: cannot store a new inode tag: %s", name, exc)
                store.inode_tag = inodes.narrowed(store.inode_tag)
        if self._cache_enabled:
            store.start_watching()  # the daemon: its watcher misses nothing from here on
            entry = _Held(store, (stat.st_dev, stat.st_ino), _identities(path))
            store.committed = functools.partial(_still_there, entry)
            with self._mutex:
                raced = self._cache.get(name)
                if raced is not None and raced.identity == entry.identity:  # another thread
                    store.close()
                    return raced.workspace
                self._cache[name] = entry
        self._sweeper.sweep(name, store)
        return store

    def _let_go(self, name: str, held: _Held, removed: bool) -> None:
        """The file of the open workspace ``name`` is no longer at its name (dropped or
        renamed by a CLI command, replaced with ``mv``, removed with ``rm``): fold the
        WAL in through the connection's own descriptors, so its commits land in its own
        file wherever it went (a file moved away keeps them; one removed loses nothing
        kept), close it (open files on it answer EIO from then on), and remove the
        ``-wal`` and ``-shm`` left at the name when they are still the ones it used, so
        that SQLite never pairs them with the file now there (sqlite.org/howtocorrupt.html,
        "Mispairing database files and hot journals"). A CLI command's drop or rename
        took them along: nothing is left to remove, and it is said at INFO only."""
        workspace = held.workspace
        with workspace.lock:
            with contextlib.suppress(KyfsError):
                workspace.checkpoint()
            workspace.close()
            stale = [
                part
                for part, known in zip(paths.sidecar_files(workspace.path), held.sidecars,
                                       strict=True)
                if known is not None and _identity(part) == known
            ]  # fmt: skip
            for part in stale:
                part.unlink(missing_ok=True)
        why = "removed" if removed else "replaced (another file at its name)"
        level = logging.WARNING if stale else logging.INFO
        removed_too = f" and removed its stale {', '.join(p.name for p in stale)}" if stale else ""
        log.log(level, "workspace %s: its file was %s; the daemon let go of the old one"
                "%s; open files on it fail (EIO)", name, why, removed_too)  # fmt: skip

    def checkpoint(self, names: Iterable[str], idle: bool = False) -> list[str]:
        """Fold into its database the WAL of each workspace of ``names`` whose WAL file
        changed (mtime, size) since this engine last folded it: a PASSIVE checkpoint
        (sqlite.org/pragma.html#pragma_wal_checkpoint), which waits for no reader or
        writer and copies what no reader still needs. Returns the names folded whole; one
        whose readers kept frames back, dropped or renamed meanwhile, or failing, is
        tried again at the next call (a failure is logged).

        With ``idle`` (the mount has had no request for a while) it also gives space
        back (SqliteWorkspace.rest): a workspace with more than RECLAIM_FREE free bytes
        inside its file (any, while the disk is short of space) frees them, and a WAL
        that holds anything is folded in and cut to nothing, so a workspace at rest takes
        its database file and an empty WAL."""
        folded = []
        for name in names:
            try:
                wal = paths.sidecar_files(self._file(name))[0].stat()
            except (OSError, KyfsError):
                continue  # no WAL: nothing written since the last connection closed
            seen = (wal.st_mtime_ns, wal.st_size)
            if seen == self._folded.get(name) and not (idle and wal.st_size):
                continue
            try:
                with self.using(name) as workspace:
                    whole = workspace.checkpoint(passive=True)
                    if idle:
                        workspace.rest(reclaim_above=0 if self.short() else RECLAIM_FREE)
            except KyfsError as exc:
                log.debug("checkpoint of %s: %s", name, exc)
                continue
            if whole:
                with contextlib.suppress(OSError):
                    wal = paths.sidecar_files(self._file(name))[0].stat()
                self._folded[name] = (wal.st_mtime_ns, wal.st_size)
                folded.append(name)
        return folded

    def wait_for_changes(self, timeout_s: float) -> bool:
        """SQLite cannot tell another process's commit: waits ``timeout_s`` seconds and
        says False (the daemon's watcher then polls)."""
        time.sleep(timeout_s)
        return False

    def cached(self) -> list[str]:
        """Names of the workspaces this engine keeps open (``cache=True``: the daemon),
        sorted; empty without a cache."""
        with self._mutex:
            return sorted(self._cache)

    def _forget(self, name: str) -> None:
        with self._mutex:
            cached = self._cache.pop(name, None)
        if cached is not None:
            with cached.workspace.lock:
                cached.workspace.close()

    def check(self, name: str, repair: bool = False) -> tuple[list[str], list[str]]:
        """Check workspace ``name`` (Store.check); with ``repair`` repair first.
        Returns (problems left, repairs done).

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1).
        """
        path = self._file(name)
        if not path.is_file():
            raise WorkspaceNotFound(f"workspace not found: {name}")
        return self._check_path(name, path, repair)

    def check_file(self, path: Path, repair: bool = False) -> tuple[list[str], list[str]]:
        """Check the workspace file ``path`` (``kyfs --db FILE fsck``) as :meth:`check`
        does; a file that cannot be a workspace (empty, not SQLite, no kyfs schema) is
        one problem, and is never repaired into one.

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1) no such file.
        """
        if not path.is_file():
            raise WorkspaceNotFound(f"no workspace file: {path}")
        try:
            _must_be_workspace_file(path)
        except StorageError as exc:
            return [str(exc)], []
        return self._check_path(path.stem, path, repair)

    def _check_path(self, name: str, path: Path, repair: bool) -> tuple[list[str], list[str]]:
        done: list[str] = []
        with self._lock.exclusive() if repair else self._lock.shared():
            if repair and self._damaged_pages(path):
                try:
                    done += self._salvage(name, path)
                except StorageError as exc:
                    return [str(exc)], done
            try:
                store = self._workspace(path, migrate=repair, mend_version=repair)
            except StorageError as exc:
                return [str(exc)], done
            try:
                done += store.repair() if repair else []
                if repair and path.parent == self.directory:
                    done += self._settle_tag(name, store)
                return store.check(), done
            except StorageError as exc:
                return [str(exc)], done
            finally:
                store.close()

    def _damaged_pages(self, path: Path) -> bool:
        """True when the file cannot be opened as a workspace (its schema or settings are
        damaged) or SQLite finds its pages damaged (``PRAGMA integrity_check``,
        sqlite.org/pragma.html#pragma_integrity_check); an older schema is not damage."""
        try:
            store = self._workspace(path, migrate=False, mend_version=True)
        except NoSpace:
            return False
        except StorageError:
            return True
        try:
            rows = store._rows("PRAGMA integrity_check")
            return any(row[0] != "ok" for row in rows)
        except StorageError:
            return True
        finally:
            store.close()

    def _salvage(self, name: str, path: Path) -> list[str]:
        """Rebuild workspace ``name`` from the rows of its damaged file that can be read
        (kyfs.engine.sqlite.salvage), in a new file that takes its place (empty when
        nothing could be read); the damaged file is kept under ``<data dir>/damaged/``
        (a ``--db`` file beside it). Call with the directory's lock held exclusively.
        Returns what was done, as sentences.

        Raises:
            StorageError: (EIO, exit 4) the copy could not be made (the disk refused);
                the file is left as it was.
        """
        self._forget(name)
        staged = path.parent / f".{path.name}.salvage.{os.getpid()}"  # (one file system)
        stamp = dt.datetime.now(dt.UTC).strftime(paths.TRASH_STAMP)
        if path.parent == self.directory:
            kept = self.directory.parent / "damaged" / f"{name}.{stamp}.db"
        else:  # a --db file: kept beside it, on its own file system
            kept = path.with_name(f"{path.name}.damaged-{stamp}")
        # Killed while it salvages, the next engine deletes the half-made copy; killed
        # while the files move, it finishes the moves (finish_moves).
        with journal.begin("move", self.directory.parent, discard=str(staged), moves=[]) as op:
            for part in (staged, *paths.sidecar_files(staged)):
                part.unlink(missing_ok=True)
            try:
                found = salvage(path, staged)
            except BaseException:
                for part in (staged, *paths.sidecar_files(staged)):
                    part.unlink(missing_ok=True)
                raise
            paths.make_private_dir(kept.parent)
            moves = [(path, kept), (staged, path)]
            op.save(moves=[[str(a), str(b)] for a, b in moves])
            _move_files(moves)
        if found.rows:
            done = [f"rebuilt the file from the {found.rows} rows that could be read"]
        else:
            done = ["nothing in the file could be read: the workspace is empty now (restore"
                    " it from a backup: kyfs backup restore)"]  # fmt: skip
        if found.damaged_ranges:
            done.append(f"stepped over {found.damaged_ranges} damaged places (their rows are lost)")
        if found.tables:
            done.append(f"could not read the tables {', '.join(found.tables)}")
        done.append(f"kept the damaged file as {kept} (delete it once the workspace is right)")
        return done

    def info(self, name: str) -> WorkspaceInfo:
        """Key count and bytes on disk of ``name``.

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1).
        """
        with self._lock.shared():
            store = self._open_unlocked(name)
            try:
                meta = store.meta()
                return WorkspaceInfo(
                    name, store.count_keys(), store.file_size(), store.path,
                    meta.get("project_path"), cache_ttl(meta),
                )  # fmt: skip
            finally:
                if not self._cache_enabled:
                    store.close()

    def close(self) -> None:
        """Close every cached SqliteWorkspace and the lock file (each close waits for a
        thread that holds that workspace's lock; the list is taken under the mutex, so a
        background thread opening one meanwhile does not break the loop)."""
        with self._mutex:
            held = list(self._cache.values())
            self._cache.clear()
        for entry in held:
            entry.workspace.close()
        self._lock.close()
