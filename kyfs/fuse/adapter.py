"""The FUSE adapter: paths and stat dicts in, errnos out. No SQL here.

Layout of the mount::

    /                     one directory per workspace (mkdir creates, rmdir drops, mv renames)
    /<workspace>/         the workspace's top directory
    /<workspace>/a/b/c    key "a/b/c"
    /.search/<query>/     read-only: matches across workspaces, best first, as symlinks
                          NN-<workspace>-<key with / as _> -> ../../<workspace>/<key>;
                          /.search is not listed by readdir of /, so grep -r and find
                          never walk it
    /.kyfs/metrics        read-only: the daemon's metrics (Prometheus text); hidden too
    /<ws>/.versions/<key>/<id>-<UTC time>   read-only: the versions of <key>; hidden
                          from readdir of the workspace, so cp -r, grep -r, diff -r never see it

Every operation resolves the path to (workspace, key), calls the engine, and turns a
kyfs.core.errors.KyfsError into ``FuseOSError(errno)`` at this one boundary (:func:`_op`).
Writes go to a shared
kyfs.vfs.openfile.OpenFile per
open entry and are committed at flush, fsync and release (close-to-open
consistency).

Threading model: single-threaded (the mount passes ``nothreads``). One thread
serves every request; nothing here is locked. Measured on this machine kind, a
multi-threaded Python loopback was ~3.6x slower than a single-threaded one for
four parallel readers (the GIL; figure from the bench issue), and kyfs's
single-threaded daemon serves four parallel cold cats at 0.94x the
single-threaded loopback (make bench, workload 5). Threads would also need a
pool of SQLite connections and locks around open files; see docs/design.md.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat as st
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from kyfs import search
from kyfs.core import names
from kyfs.core.errors import (
    CrossWorkspace,
    InvalidInput,
    InvalidName,
    IsADirectory,
    KyfsError,
    NameTooLong,
    NotPermitted,
    ReadOnly,
)
from kyfs.engine.sqlite.engine import Workspaces
from kyfs.engine.sqlite.workspace import ROOT, Entry, HistoryEntry, Store
from kyfs.fuse.binding import FuseOSError, Operations
from kyfs.platform import paths
from kyfs.platform.metrics import Metrics
from kyfs.vfs.openfile import OpenFile

log = logging.getLogger(__name__)
ENODATA = getattr(errno, "ENOATTR", errno.ENODATA)  # "no such attribute" (getxattr(2))

UTIME_NOW = (1 << 30) - 1  # tv_nsec values of utimensat(2), passed through by libfuse3
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1  # renameat2(2) flags
RENAME_EXCHANGE = 2
MAX_WRITE = 1024 * 1024  # bytes per FUSE write request (fuse_conn_info.max_write)
SEARCH_DIR = ".search"  # /.search/<query>/ lists matches as symlinks; hidden from readdir of /
SEARCH_LIMIT = 100  # matches listed per query directory
SEARCH_TTL = 2.0  # seconds a query's listing is kept, so readdir, lookups and readlink agree
CONTROL_DIR = ".kyfs"  # /.kyfs/metrics: the daemon's metrics; hidden from readdir of /
METRICS_FILE = "metrics"
METRICS_TTL = 1.0  # seconds one rendering is served, so stat and read agree on its size
HIDDEN = (SEARCH_DIR, CONTROL_DIR)
VERSIONS_DIR = ".versions"  # /<workspace>/.versions/<key>/<id>-<UTC time>: read-only history
XATTR_TTL = "user.kyfs.ttl"  # seconds to live; settable ("10m", "600", "" clears)
XATTR_TIMES = ("user.kyfs.expires_at", "user.kyfs.created_at", "user.kyfs.updated_at")

P = ParamSpec("P")
R = TypeVar("R")


def _boundary(
    method: Callable[Concatenate[KyfsOperations, P], R], locked: bool
) -> Callable[Concatenate[KyfsOperations, P], R]:
    """The one error boundary: times the operation for the metrics, holds the workspaces
    lock when ``locked``, and turns KyfsError into FuseOSError(errno)."""
    name = method.__name__

    def wrapper(self: KyfsOperations, /, *args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        failed: int | None = None
        try:
            if not locked:
                return method(self, *args, **kwargs)
            with self.workspaces.shared():
                return method(self, *args, **kwargs)
        except KyfsError as exc:
            failed = exc.errno
            log.debug("%s%r: %s (errno %d)", name, args, exc, exc.errno)
            raise FuseOSError(exc.errno) from None
        except OSError as exc:  # FuseOSError included
            failed = exc.errno
            raise
        finally:
            self.metrics.record(name, time.perf_counter() - started, failed)

    functools.update_wrapper(wrapper, method)
    return wrapper


def _op(
    method: Callable[Concatenate[KyfsOperations, P], R],
) -> Callable[Concatenate[KyfsOperations, P], R]:
    """An operation that names a path: run under the shared workspaces lock, so that no
    workspace is created, dropped or renamed meanwhile."""
    return _boundary(method, locked=True)


def _fh_op(
    method: Callable[Concatenate[KyfsOperations, P], R],
) -> Callable[Concatenate[KyfsOperations, P], R]:
    """An operation on an open file handle: its Store is already held (and stays valid
    across a rename of its workspace), so it needs no lock."""
    return _boundary(method, locked=False)


class KyfsOperations(Operations):  # type: ignore[misc]
    """mfusepy operations over a kyfs.engine.sqlite.engine.Workspaces.

    Args:
        workspaces: the data directory's workspaces; a caching instance for the daemon.
        spill_dir: where open files spill large writes; kyfs.platform.paths.spill_dir() when None.
    """

    use_ns = True  # times are integer nanoseconds (mfusepy)

    def __init__(
        self, workspaces: Workspaces, spill_dir: Path | None = None, metrics: Metrics | None = None
    ) -> None:
        self.workspaces = workspaces
        self.metrics = metrics or Metrics()
        self._metrics_text: tuple[float, bytes] = (0.0, b"")
        self._control: dict[int, bytes] = {}  # open handles of /.kyfs/metrics
        self.spill_dir = spill_dir or paths.spill_dir()
        self._handles: dict[int, OpenFile] = {}
        self._open: dict[tuple[Store, int], OpenFile] = {}
        self._next_fh = 1
        self._uid, self._gid = os.getuid(), os.getgid()
        self._searches: dict[str, tuple[float, dict[str, str]]] = {}

    def init_with_config(self, conn: Any, config: Any) -> None:
        """libfuse's init: ask for 1 MiB writes (libfuse then negotiates FUSE_MAX_PAGES
        with the kernel), so a large file takes 8 times fewer write calls than at 128 KiB."""
        if conn is not None:
            conn.max_write = MAX_WRITE

    # --- helpers -----------------------------------------------------------------------
    @staticmethod
    def _split(path: str) -> tuple[str | None, str]:
        """``/`` -> (None, ""); ``/ws`` -> ("ws", ""); ``/ws/a/b`` -> ("ws", "a/b")."""
        workspace, _, key = path.lstrip("/").partition("/")
        return (workspace or None), key

    def _resolve(self, path: str, lookup: bool = True) -> tuple[Store, str]:
        """The store and key of a path inside a workspace.

        For lookups (``lookup``) an invalid name is simply not there (ENOENT),
        except one that is too long (ENAMETOOLONG), as on ext4.
        """
        workspace, key = self._split(path)
        if workspace is None:
            raise NotPermitted("the root holds only workspaces")
        if workspace in HIDDEN:
            raise ReadOnly(f"{workspace} is read-only")
        if key == VERSIONS_DIR or key.startswith(VERSIONS_DIR + "/"):
            raise ReadOnly("the .versions directory is read-only")
        try:
            if key:
                names.check_key(key)
            return self.workspaces.open(workspace), key
        except NameTooLong:
            raise
        except InvalidName as exc:
            if lookup:
                raise FuseOSError(errno.ENOENT) from exc
            raise

    def _attrs(self, entry: Entry, store: Store | None) -> dict[str, Any]:
        size = entry.size
        opened = self._open.get((store, entry.id)) if store is not None else None
        if opened is not None and opened.dirty:
            size = opened.size
        kind = st.S_IFDIR if entry.is_dir else st.S_IFREG
        return {
            "st_mode": kind | entry.mode,
            "st_nlink": 2 if entry.is_dir else 1,
            "st_uid": self._uid,
            "st_gid": self._gid,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_atime": entry.atime_ns,
            "st_mtime": entry.mtime_ns,
            "st_ctime": entry.ctime_ns,
        }

    def _root_attrs(self) -> dict[str, Any]:
        mtime = self.workspaces.directory.stat().st_mtime_ns
        root = Entry(0, ROOT, True, 0o755, 0, mtime, mtime, mtime, mtime)
        return self._attrs(root, None)

    # --- the .search directory ----------------------------------------------------------
    @contextmanager
    def _use_cached(self, name: str) -> Iterator[Store]:
        yield self.workspaces.open(name)

    def _search(self, query: str) -> dict[str, str]:
        """Link name -> target for the matches of ``query`` across every workspace."""
        now = time.monotonic()
        cached = self._searches.get(query)
        if cached is not None and now - cached[0] < SEARCH_TTL:
            return cached[1]
        results = search.search(
            self.workspaces.names(), query, limit=SEARCH_LIMIT, use=self._use_cached, parallel=False
        )
        width = max(2, len(str(len(results.hits))))
        listing = {}
        for rank, hit in enumerate(results.hits, 1):
            name = f"{rank:0{width}d}-{hit.workspace}-{hit.key.replace('/', '_')}"
            name = name.encode()[: names.NAME_MAX].decode(errors="ignore")
            listing[name] = f"../../{hit.workspace}/{hit.key}"
        self._searches = {q: v for q, v in self._searches.items() if now - v[0] < SEARCH_TTL}
        self._searches[query] = (now, listing)
        return listing

    def _search_attrs(self, key: str) -> dict[str, Any]:
        attrs = self._root_attrs()
        attrs["st_mode"] = st.S_IFDIR | 0o555
        query, _, name = key.partition("/")
        if not name:
            return attrs  # /.search or /.search/<any query>: a directory
        target = self._search(query).get(name)
        if target is None or "/" in name:
            raise FuseOSError(errno.ENOENT)
        attrs.update(st_mode=st.S_IFLNK | 0o777, st_nlink=1, st_size=len(target), st_blocks=0)
        return attrs

    # --- the .kyfs directory ------------------------------------------------------------
    def _metrics_bytes(self) -> bytes:
        now = time.monotonic()
        if now - self._metrics_text[0] > METRICS_TTL:
            self._metrics_text = (now, self.metrics.render().encode())
        return self._metrics_text[1]

    def _control_attrs(self, key: str) -> dict[str, Any]:
        attrs = self._root_attrs()
        attrs["st_mode"] = st.S_IFDIR | 0o555
        if not key:
            return attrs
        if key != METRICS_FILE:
            raise FuseOSError(errno.ENOENT)
        size = len(self._metrics_bytes())
        attrs.update(st_mode=st.S_IFREG | 0o444, st_nlink=1, st_size=size)
        attrs.update(st_blocks=(size + 511) // 512, st_mtime=time.time_ns())
        return attrs

    # --- the .versions directory of a workspace --------------------------------------
    @staticmethod
    def _version_name(version: HistoryEntry) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(version.time_ns / 1e9))
        return f"{version.id}-{stamp}"

    def _versions_of(self, store: Store, key: str) -> list[HistoryEntry]:
        return [v for v in store.history(key) if v.action == "set" and v.value is not None]

    def _versions_attrs(self, workspace: str, rest: str) -> dict[str, Any]:
        store = self.workspaces.open(workspace)
        attrs = self._root_attrs()
        attrs["st_mode"] = st.S_IFDIR | 0o555
        if not rest:
            return attrs
        head, _, last = rest.rpartition("/")
        if head and self._versions_of(store, head):  # a version file of key ``head``
            for version in self._versions_of(store, head):
                if self._version_name(version) == last:
                    size = len(version.value or b"")
                    attrs.update(st_mode=st.S_IFREG | 0o444, st_nlink=1, st_size=size)
                    attrs.update(st_blocks=(size + 511) // 512, st_mtime=version.time_ns)
                    return attrs
            raise FuseOSError(errno.ENOENT)
        if self._versions_of(store, rest) or store.history_keys(rest + "/"):
            return attrs  # a key with versions, or a directory above some
        raise FuseOSError(errno.ENOENT)

    def _versions_listing(self, workspace: str, rest: str) -> list[Any]:
        store = self.workspaces.open(workspace)
        versions = self._versions_of(store, rest) if rest else []
        if versions:
            file = {"st_mode": st.S_IFREG | 0o444}
            return [(self._version_name(v), file, 0) for v in versions]
        prefix = rest + "/" if rest else ""
        below = {k[len(prefix) :].split("/", 1)[0] for k in store.history_keys(prefix)}
        return [(name, {"st_mode": st.S_IFDIR | 0o555}, 0) for name in sorted(below) if name]

    def _version_value(self, workspace: str, rest: str) -> bytes:
        head, _, last = rest.rpartition("/")
        store = self.workspaces.open(workspace)
        for version in self._versions_of(store, head):
            if self._version_name(version) == last:
                return version.value or b""
        raise FuseOSError(errno.ENOENT)

    # --- extended attributes ----------------------------------------------------------
    @_op
    def listxattr(self, path: str) -> list[str]:
        """The key's ``user.kyfs.*`` attribute names (none for a directory). ENOENT."""
        store, key = self._resolve(path)
        if store.stat(key).is_dir:
            return []
        names_ = list(XATTR_TIMES[1:])
        if store.expiry(key) is not None:
            names_ = [XATTR_TTL, XATTR_TIMES[0], *names_]
        return names_

    @_op
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        """A ``user.kyfs.*`` attribute as bytes: seconds to live, or a UTC time in ISO 8601.

        ENODATA for any other name or an unset TTL; ENOENT."""
        if not name.startswith("user.kyfs."):
            raise FuseOSError(ENODATA)
        store, key = self._resolve(path)
        entry = store.stat(key)
        expires = None if entry.is_dir else store.expiry(key)
        if name == XATTR_TTL and expires is not None:
            return str(max(0, round((expires - time.time_ns()) / 1e9))).encode()
        stamps = {
            XATTR_TIMES[0]: expires,
            XATTR_TIMES[1]: entry.created_ns,
            XATTR_TIMES[2]: entry.mtime_ns,
        }
        if stamps.get(name) is None:
            raise FuseOSError(ENODATA)
        seconds = stamps[name] / 1e9  # type: ignore[operator]
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)).encode()

    @_op
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        """Set ``user.kyfs.ttl`` ("10m", "600"; empty clears). ENOTSUP for other names;
        EINVAL for a bad duration; ENOENT."""
        if name != XATTR_TTL:
            raise FuseOSError(errno.ENOTSUP)
        store, key = self._resolve(path)
        text = value.decode("utf-8", "replace").strip()
        store.set_ttl(key, names.parse_duration(text) if text else None)
        return 0

    @_op
    def removexattr(self, path: str, name: str) -> int:
        """Clear ``user.kyfs.ttl``. ENODATA for other names; ENOENT."""
        if name != XATTR_TTL:
            raise FuseOSError(ENODATA)
        store, key = self._resolve(path)
        store.set_ttl(key, None)
        return 0

    @_op
    def readlink(self, path: str) -> str:
        """The target of a ``/.search/<query>/<link>`` symlink. EINVAL elsewhere; ENOENT."""
        workspace, key = self._split(path)
        query, _, name = key.partition("/")
        if workspace != SEARCH_DIR or not name:
            raise InvalidInput("not a symbolic link")
        target = self._search(query).get(name)
        if target is None:
            raise FuseOSError(errno.ENOENT)
        return target

    def _handle(self, fh: int) -> OpenFile:
        try:
            return self._handles[fh]
        except KeyError:
            raise FuseOSError(errno.EBADF) from None

    def _attach(self, store: Store, entry: Entry, truncate: bool) -> int:
        opened = self._open.get((store, entry.id))
        if opened is None:
            opened = OpenFile(store, entry.id, entry.size, self.spill_dir)
            self._open[(store, entry.id)] = opened
        opened.entry = entry
        opened.refs += 1
        if truncate:
            opened.truncate(0)
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        self._handles[fh] = opened
        return fh

    # --- metadata ------------------------------------------------------------------------
    @_op
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        """The stat dict of ``path`` (st_size includes buffered writes; times in ns, UTC);
        with ``path`` None, of open file ``fh`` (unlinked while open). ENOENT,
        ENAMETOOLONG."""
        if path is None:  # fstat of a file unlinked while open (hard_remove)
            opened = self._handle(fh if fh is not None else -1)
            assert opened.entry is not None
            attrs = self._attrs(opened.entry, None)
            attrs["st_size"] = opened.current_size()
            attrs["st_blocks"] = (attrs["st_size"] + 511) // 512
            return attrs
        workspace, key = self._split(path)
        if workspace is None:
            return self._root_attrs()
        if workspace == SEARCH_DIR:
            return self._search_attrs(key)
        if workspace == CONTROL_DIR:
            return self._control_attrs(key)
        if key == VERSIONS_DIR or key.startswith(VERSIONS_DIR + "/"):
            return self._versions_attrs(workspace, key[len(VERSIONS_DIR) + 1 :])
        store, key = self._resolve(path)
        return self._attrs(store.stat(key), store)

    @_op
    def readdir(self, path: str, fh: int) -> list[Any]:
        """``.``, ``..`` and a directory's entries, each with its st_mode. ENOENT, ENOTDIR."""
        workspace, key = self._split(path)
        listing: list[Any] = [".", ".."]
        if workspace is None:
            dir_mode = {"st_mode": st.S_IFDIR | 0o755}
            listing += [(name, dir_mode, 0) for name in self.workspaces.names()]
            return listing  # SEARCH_DIR is left out, as ZFS leaves out .zfs
        if workspace == SEARCH_DIR:
            if key and "/" not in key:
                link = {"st_mode": st.S_IFLNK | 0o777}
                listing += [(name, link, 0) for name in self._search(key)]
            return listing
        if workspace == CONTROL_DIR:
            return [*listing, (METRICS_FILE, {"st_mode": st.S_IFREG | 0o444}, 0)]
        if key == VERSIONS_DIR or key.startswith(VERSIONS_DIR + "/"):
            return listing + self._versions_listing(workspace, key[len(VERSIONS_DIR) + 1 :])
        store, key = self._resolve(path)
        for entry in store.children(key):
            kind = st.S_IFDIR if entry.is_dir else st.S_IFREG
            listing.append((entry.name, {"st_mode": kind | entry.mode}, 0))
        return listing

    @_op
    def statfs(self, path: str) -> dict[str, int]:
        """The data directory's disk (statvfs(3)); f_files is the number of keys."""
        disk = os.statvfs(self.workspaces.directory)
        keys = sum(self.workspaces.open(name).count_keys() for name in self.workspaces.names())
        return {
            "f_bsize": disk.f_bsize,
            "f_frsize": disk.f_frsize,
            "f_blocks": disk.f_blocks,
            "f_bfree": disk.f_bfree,
            "f_bavail": disk.f_bavail,
            "f_files": keys,
            "f_ffree": disk.f_ffree,
            "f_favail": disk.f_favail,
            "f_namemax": names.NAME_MAX,
        }

    @_op
    def chmod(self, path: str, mode: int) -> int:
        """Store permission bits ``mode & 0o7777``; ctime is now. ENOENT."""
        store, key = self._resolve(path)
        store.chmod(key, mode)
        return 0

    @_op
    def chown(self, path: str, uid: int, gid: int) -> int:
        # Every entry belongs to the daemon's user; only a no-op chown is allowed.
        """Entries belong to the mounting user: a no-op chown, else EPERM. ENOENT."""
        if uid not in (-1, 0xFFFFFFFF, self._uid) or gid not in (-1, 0xFFFFFFFF, self._gid):
            raise NotPermitted("kyfs entries belong to the mounting user")
        store, key = self._resolve(path)
        store.stat(key)
        return 0

    @_op
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """Store (atime, mtime) in ns; UTIME_NOW and UTIME_OMIT as utimensat(2). ENOENT."""
        store, key = self._resolve(path)
        now = time.time_ns()
        if times is None:
            store.utimens(key, now, now)
            return 0
        atime, mtime = (None if t == UTIME_OMIT else now if t == UTIME_NOW else t for t in times)
        store.utimens(key, atime, mtime)
        return 0

    # --- directories and names -----------------------------------------------------------
    @_op
    def mkdir(self, path: str, mode: int) -> int:
        """At the root: create a workspace (EINVAL bad name, EEXIST); below: a directory
        (EEXIST, ENOTDIR). EROFS in the hidden trees."""
        workspace, key = self._split(path)
        if workspace in HIDDEN:
            raise ReadOnly(f"{workspace} is read-only")
        if workspace is not None and not key:
            self.workspaces.create(workspace)
            return 0
        store, key = self._resolve(path, lookup=False)
        store.mkdir(key, mode)
        return 0

    @_op
    def rmdir(self, path: str) -> int:
        """At the root: drop an empty workspace to the trash; below: remove an empty
        directory. ENOTEMPTY, ENOENT, ENOTDIR, EPERM for ``shared``."""
        workspace, key = self._split(path)
        if workspace in HIDDEN:
            raise ReadOnly(f"{workspace} is read-only")
        if workspace is not None and not key:
            self.workspaces.drop(workspace, only_if_empty=True)
            return 0
        store, key = self._resolve(path)
        store.rmdir(key)
        return 0

    @_op
    def unlink(self, path: str) -> int:
        """Delete a key (it waits in the archive). ENOENT, EISDIR."""
        store, key = self._resolve(path)
        store.delete(key)
        return 0

    @_op
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        """rename(2): workspaces at the root, keys and directories within one workspace
        (one transaction). EXDEV across workspaces, EEXIST with RENAME_NOREPLACE,
        EINVAL for RENAME_EXCHANGE or a move into itself, EISDIR, ENOTDIR, ENOTEMPTY."""
        if flags & RENAME_EXCHANGE:
            raise InvalidInput("RENAME_EXCHANGE is not supported")
        old_ws, old_key = self._split(old)
        new_ws, new_key = self._split(new)
        if old_ws is None or new_ws is None:
            raise NotPermitted("cannot rename the root")
        if old_ws in HIDDEN or new_ws in HIDDEN:
            raise ReadOnly("the hidden directories are read-only")
        if not old_key and not new_key:
            if flags & RENAME_NOREPLACE and self.workspaces.exists(new_ws):
                raise FuseOSError(errno.EEXIST)
            self.workspaces.rename(old_ws, new_ws)
            return 0
        if old_ws != new_ws or not old_key or not new_key:
            raise CrossWorkspace("rename across workspaces: copy instead")
        store, old_key = self._resolve(old)
        new_key = names.check_key(new_key)
        if flags & RENAME_NOREPLACE:
            try:
                store.stat(new_key)
            except KyfsError:
                pass
            else:
                raise FuseOSError(errno.EEXIST)
        store.rename(old_key, new_key)
        return 0

    @_op
    def link(self, target: str, source: str) -> int:
        """No hard links: EPERM."""
        raise NotPermitted("kyfs has no hard links")

    @_op
    def symlink(self, target: str, source: str) -> int:
        """No symbolic links: EPERM."""
        raise NotPermitted("kyfs has no symbolic links")

    @_op
    def mknod(self, path: str, mode: int, dev: int) -> int:
        """Only regular files and directories: EPERM."""
        raise NotPermitted("kyfs stores regular files and directories only")

    # --- files ---------------------------------------------------------------------------
    @_op
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        """Create key ``path`` (visible at once, empty) and open it; returns a handle.
        EPERM at the root, EEXIST with O_EXCL, ENAMETOOLONG, EILSEQ, ENOTDIR."""
        if not self._split(path)[1]:
            raise NotPermitted("the root holds only workspaces (directories), not files")
        store, key = self._resolve(path, lookup=False)
        entry = store.create(key, mode, exclusive=bool(flags & os.O_EXCL))
        return self._attach(store, entry, truncate=bool(flags & os.O_TRUNC))

    @_op
    def open(self, path: str, flags: int) -> int:
        """Open a key (O_TRUNC empties its buffer) or the metrics or a version file
        (read-only: EROFS for writing); returns a handle. ENOENT, EISDIR."""
        workspace, key = self._split(path)
        virtual = None
        if (workspace, key) == (CONTROL_DIR, METRICS_FILE):
            virtual = self._metrics_bytes()
        elif workspace is not None and key.startswith(VERSIONS_DIR + "/"):
            virtual = self._version_value(workspace, key[len(VERSIONS_DIR) + 1 :])
        if virtual is not None:
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
                raise ReadOnly("read-only")
            fh, self._next_fh = self._next_fh, self._next_fh + 1
            self._control[fh] = virtual
            return fh
        store, key = self._resolve(path)
        entry = store.stat(key)
        if entry.is_dir:
            raise IsADirectory(f"is a directory: {key}")
        return self._attach(store, entry, truncate=bool(flags & os.O_TRUNC))

    @_fh_op
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` through handle ``fh``, buffered writes
        included. EBADF."""
        control = self._control.get(fh)
        data = (
            control[offset : offset + size]
            if control is not None
            else self._handle(fh).read(offset, size)
        )
        self.metrics.add_bytes(read=len(data))
        return data

    @_fh_op
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        """Buffer ``data`` at ``offset`` (committed at flush, fsync, release); returns its
        length. EFBIG past the size limit, ENOSPC when the spill file cannot grow, EBADF."""
        written = self._handle(fh).write(offset, data)
        self.metrics.add_bytes(written=written)
        return written

    @_op
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        """Cut or grow (with zeros) a key, through handle ``fh`` when given (ftruncate).
        ENOENT, EISDIR, EFBIG."""
        opened: OpenFile | None
        if fh is not None:  # ftruncate(2); the path is None once the file is unlinked
            opened = self._handle(fh)
        else:
            assert path is not None
            store, key = self._resolve(path)
            entry = store.stat(key)
            if entry.is_dir:
                raise IsADirectory(f"is a directory: {key}")
            opened = self._open.get((store, entry.id))
            if opened is None:
                store.truncate(key, length)
                return 0
        opened.truncate(length)  # an open file sees it at once; the store at commit
        opened.commit()
        return 0

    @_fh_op
    def flush(self, path: str, fh: int) -> int:
        """Commit handle ``fh``'s buffered writes (what close(2) returns). ENOSPC, EIO,
        EINVAL (a schema rule refused the value)."""
        if fh not in self._control:
            self._handle(fh).commit()
        return 0

    @_fh_op
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        """Commit, then make every committed transaction durable (a checkpoint). As flush."""
        self._handle(fh).commit(sync=True)
        return 0

    @_fh_op
    def release(self, path: str, fh: int) -> int:
        """The last close of a handle: commit what is left; free the buffer when it was
        the entry's last handle."""
        if self._control.pop(fh, None) is not None:
            return 0
        opened = self._handles.pop(fh, None)
        if opened is None:
            return 0
        opened.refs -= 1
        try:
            opened.commit()
        finally:
            if opened.refs == 0:
                opened.close()
                self._open.pop((opened.store, opened.entry_id), None)  # type: ignore[arg-type]
        return 0

    def destroy(self, path: str) -> None:
        """At unmount: commit what open files still buffer, then close every store."""
        for opened in list(self._open.values()):
            try:
                opened.commit()
            except KyfsError:
                log.exception("could not commit an open file at unmount")
            opened.close()
        self._open.clear()
        self._handles.clear()
        self.workspaces.close()
