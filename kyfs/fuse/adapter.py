"""The FUSE adapter: translation only. mfusepy's calls (paths, stat dicts, handles) go to
kyfs.vfs.mount.Mount, which decides everything; kyfs.core.errors.KyfsError comes back
as ``FuseOSError(errno)`` at this one boundary (:func:`_boundary`), which also times each
operation for the metrics and logs what is answered with EIO (kyfs.fuse.errorlog).

What is libfuse's stays here: the capabilities asked for at init (1 MiB writes, POSIX
ACLs enforced by the kernel), the calling process's context (uid, gid, pid, umask,
groups), the cache invalidator and the watcher of changes made behind the mount
(kyfs.fuse.invalidate), and the order of shutdown.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from kyfs.core.errors import KyfsError, StorageError
from kyfs.engine import AnyEngine
from kyfs.fuse.binding import (
    FuseOSError,
    Operations,
    fuse_get_context,
    fuse_get_umask,
    fuse_getgroups,
)
from kyfs.fuse.errorlog import EioLog
from kyfs.fuse.invalidate import ChangeWatcher, Invalidator
from kyfs.platform.metrics import Metrics
from kyfs.vfs.mount import (  # re-exported: the names of the system calls' flags
    HANDLE,
    PATH,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT,
    UTIME_NOW,
    UTIME_OMIT,
    Mount,
)
from kyfs.vfs.tree import Listing

__all__ = ["RENAME_EXCHANGE", "RENAME_NOREPLACE", "UTIME_NOW", "UTIME_OMIT", "KyfsOperations"]

log = logging.getLogger(__name__)

MAX_WRITE = 1024 * 1024  # bytes per FUSE write request (fuse_conn_info.max_write)
# fuse_conn_info.want bits (libfuse 3's fuse_common.h): the kernel enforces POSIX ACLs
# from system.posix_acl_* (the daemon keeps them: kyfs.vfs.acls), and leaves the umask to
# the daemon (not applied where a default ACL is).
FUSE_CAP_DONT_MASK = 1 << 6
FUSE_CAP_POSIX_ACL = 1 << 19

P = ParamSpec("P")
R = TypeVar("R")


def _boundary(
    kind: str, name: str | None = None
) -> Callable[
    [Callable[Concatenate[KyfsOperations, P], R]], Callable[Concatenate[KyfsOperations, P], R]
]:
    """The one error boundary, for an operation locked as ``kind`` (kyfs.vfs.mount: PATH,
    ROOT, HANDLE) and counted as ``name`` (default: the method's): runs the method through
    Mount.call, times it for the metrics, and turns KyfsError into FuseOSError(errno), any
    other exception but an OSError into FuseOSError(EIO). A StorageError, and anything
    answered with EIO, gets a log line naming the workspace, key and cause
    (kyfs.fuse.errorlog: at most one per WINDOW_S seconds for one cause, the repeats
    counted)."""

    def decorate(
        method: Callable[Concatenate[KyfsOperations, P], R],
    ) -> Callable[Concatenate[KyfsOperations, P], R]:
        counted = name or method.__name__

        def wrapper(self: KyfsOperations, /, *args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            failed: int | None = None
            try:
                bound = method.__get__(self)
                return self.mount.call(kind, counted, bound, args, kwargs)  # type: ignore[no-any-return]
            except KyfsError as exc:
                failed = exc.errno
                if isinstance(exc, StorageError) or exc.errno == errno.EIO:
                    self.errors.report(counted, *self.mount.where(args), exc.errno, exc)
                else:
                    log.debug("%s%r: %s (errno %d)", counted, args, exc, exc.errno)
                raise FuseOSError(exc.errno) from None
            except OSError as exc:  # FuseOSError included
                failed = exc.errno
                raise
            except Exception as exc:  # a sqlite3 error that escaped the engine, or a bug
                failed = errno.EIO  # (mfusepy would answer EINVAL, and log no path)
                self.errors.report(counted, *self.mount.where(args), errno.EIO, exc)
                raise FuseOSError(errno.EIO) from None
            finally:
                self.metrics.record(counted, time.perf_counter() - started, failed)

        functools.update_wrapper(wrapper, method)
        return wrapper

    return decorate


_op = _boundary(PATH)  # names a path: the workspaces lock shared, then its workspace's
_root_op = _boundary(ROOT)  # may create, drop or rename workspaces: the shared lock only
_fh_op = _boundary(HANDLE)  # on an open file handle (the last argument): its workspace's


class KyfsOperations(Operations):  # type: ignore[misc]
    """mfusepy operations over an engine (kyfs.engine.base.Engine): each one is
    kyfs.vfs.mount.Mount's operation of the same name, through :func:`_boundary`.

    Args:
        workspaces: the data directory's engine; a caching instance for the daemon.
        spill_dir: where open files spill large writes; kyfs.platform.paths.spill_dir()
            when None.
        metrics: where operations are counted.
    """

    use_ns = True  # times are integer nanoseconds (mfusepy)

    def __init__(
        self,
        workspaces: AnyEngine,
        spill_dir: Path | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.workspaces = workspaces
        self.metrics = metrics or Metrics()
        self.invalidator = Invalidator()
        self.errors = EioLog()
        self.mount = Mount(
            workspaces, self.invalidator, fuse_get_context, fuse_get_umask, fuse_getgroups,
            spill_dir, self.metrics,
        )  # fmt: skip
        self.watcher = ChangeWatcher(workspaces, self.invalidator, also=self.mount.shown.gone)

    @property
    def acls(self) -> bool:
        """True when the kernel enforces POSIX ACLs (asked for at init)."""
        return self.mount.acls

    @acls.setter
    def acls(self, value: bool) -> None:
        self.mount.acls = value

    def init_with_config(self, conn: Any, config: Any) -> None:
        """libfuse's init: ask for 1 MiB writes (libfuse then negotiates FUSE_MAX_PAGES
        with the kernel), so a large file takes 8 times fewer write calls than at 128 KiB;
        ask the kernel to enforce POSIX ACLs (FUSE_CAP_POSIX_ACL, with FUSE_CAP_DONT_MASK:
        kyfs.vfs.acls) when attributes are served; start the cache invalidator and the
        watcher of changes behind the mount."""
        if conn is not None:
            conn.max_write = MAX_WRITE
            wanted = FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK
            if self.getxattr is not None and conn.capable & wanted == wanted:  # not --no-xattr
                conn.want |= wanted
                self.mount.acls = True
        self.invalidator.start()
        if self.invalidator.running:
            self.watcher.start()

    def destroy(self, path: str) -> None:
        """At unmount: stop watching, commit what open files still buffer and close every
        workspace (Mount.close), then stop the invalidator."""
        self.watcher.stop()
        self.mount.close()
        self.invalidator.stop()

    # --- attributes and extended attributes: Mount's, by the same names -----------------
    @_op
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        """stat(2) and fstat(2)."""
        return self.mount.getattr(path, fh)

    @_op
    def listxattr(self, path: str) -> list[str]:
        """listxattr(2)."""
        return self.mount.listxattr(path)

    @_op
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        """getxattr(2) (mfusepy answers a size probe and ERANGE itself)."""
        return self.mount.getxattr(path, name)

    @_op
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        """setxattr(2)."""
        return self.mount.setxattr(path, name, value, options)

    @_op
    def removexattr(self, path: str, name: str) -> int:
        """removexattr(2)."""
        return self.mount.removexattr(path, name)

    @_op
    def chmod(self, path: str, mode: int) -> int:
        """chmod(2)."""
        return self.mount.chmod(path, mode)

    @_op
    def chown(self, path: str, uid: int, gid: int) -> int:
        """chown(2)."""
        return self.mount.chown(path, uid, gid)

    @_op
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """utimensat(2)."""
        return self.mount.utimens(path, times)

    @_root_op  # takes every workspace's lock in turn: never while holding one
    def statfs(self, path: str) -> dict[str, int]:
        """statvfs(3)."""
        return self.mount.statfs(path)

    # --- directories and names ----------------------------------------------------------
    @_op
    def readdir(self, path: str, fh: int, plus: bool = False) -> Listing:
        """readdir(3); ``plus``: the kernel's READDIRPLUS."""
        return self.mount.readdir(path, fh, plus)

    def opendir(self, path: str) -> int:
        """opendir(3): a handle for one reading of the directory."""
        return self.mount.opendir(path)

    @_boundary(PATH, "readdir")
    def listing_from(self, path: str, fh: int, offset: int) -> Listing:
        """READDIRPLUS from ``offset`` (kyfs.fuse.daemon): one listing per handle."""
        return self.mount.listing_from(path, fh, offset)

    def releasedir(self, path: str | None, fh: int) -> int:
        """closedir(3)."""
        return self.mount.releasedir(path, fh)

    @_op
    def readlink(self, path: str) -> str:
        """readlink(2)."""
        return self.mount.readlink(path)

    @_root_op
    def mkdir(self, path: str, mode: int) -> int:
        """mkdir(2): a workspace at the root, a directory below."""
        return self.mount.mkdir(path, mode)

    @_root_op
    def rmdir(self, path: str) -> int:
        """rmdir(2): a workspace to the trash at the root, a directory below."""
        return self.mount.rmdir(path)

    @_op
    def unlink(self, path: str) -> int:
        """unlink(2)."""
        return self.mount.unlink(path)

    @_root_op
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        """rename(2) and renameat2(2)."""
        return self.mount.rename(old, new, flags)

    @_op
    def link(self, target: str, source: str) -> int:
        """link(2): ``target`` is the new name."""
        return self.mount.link(target, source)

    @_op
    def symlink(self, target: str, source: str) -> int:
        """symlink(2): ``target`` is the link, ``source`` what it points at."""
        return self.mount.symlink(target, source)

    @_op
    def mknod(self, path: str, mode: int, dev: int) -> int:
        """mknod(2)."""
        return self.mount.mknod(path, mode, dev)

    # --- files --------------------------------------------------------------------------
    @_op
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        """open(2) with O_CREAT: a handle."""
        return self.mount.create(path, mode, flags)

    @_op
    def open(self, path: str, flags: int) -> int:
        """open(2): a handle."""
        return self.mount.open(path, flags)

    def flushes(self, fh: int, flags: int) -> bool:
        """Whether close(2) of ``fh`` needs a FLUSH (False: FOPEN_NOFLUSH)."""
        return self.mount.flushes(fh, flags)

    def is_virtual(self, fh: int) -> bool:
        """Whether ``fh`` is open on a virtual file whose content may change (direct_io)."""
        return self.mount.is_virtual(fh)

    @_fh_op
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        """pread(2)."""
        return self.mount.read(path, size, offset, fh)

    @_fh_op
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        """pwrite(2): buffered until flush, fsync or release."""
        return self.mount.write(path, data, offset, fh)

    @_op
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        """truncate(2) and ftruncate(2)."""
        return self.mount.truncate(path, length, fh)

    @_fh_op
    def fallocate(self, path: str | None, mode: int, offset: int, length: int, fh: int) -> int:
        """fallocate(2)."""
        return self.mount.fallocate(path, mode, offset, length, fh)

    @_fh_op
    def lseek(self, path: str | None, offset: int, whence: int, fh: int) -> int:
        """lseek(2)'s SEEK_DATA and SEEK_HOLE."""
        return self.mount.lseek(path, offset, whence, fh)

    @_fh_op
    def flush(self, path: str, fh: int) -> int:
        """close(2) of one descriptor: commits."""
        return self.mount.flush(path, fh)

    @_fh_op
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        """fsync(2) and fdatasync(2)."""
        return self.mount.fsync(path, datasync, fh)

    @_fh_op
    def release(self, path: str, fh: int) -> int:
        """The last close of a handle."""
        return self.mount.release(path, fh)
