"""The disk-full reserve: a preallocated file in the data directory that kyfs gives up
when its disk fills, so that deleting, ``kyfs trash empty`` and ``kyfs compact`` still
have room to commit, as ext4's reserved blocks and btrfs's global reserve keep room for
the operations that free space.

The reserve is ``<data dir>/reserve``, :func:`size_for` bytes allocated with
``posix_fallocate(3)`` (real blocks, not a hole). A write that meets ENOSPC calls
:func:`release` and is tried once more: a deletion then commits, and writes fail with
ENOSPC only once the reserve is gone. :func:`ensure` puts it back when the file system
has room for it and a margin again (the daemon's maintenance does, and so does every
command that opens the data directory). While it is missing kyfs is *short of space*
(:func:`short`): deletes free their blocks at once instead of keeping them as undo data.

Thread-safety: every function may run from any thread or process at once: the file is
made under a temporary name and renamed into place, and a release is one unlink.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

from kyfs.platform import paths

log = logging.getLogger(__name__)

NAME = "reserve"
SMALLEST = 8 * 1024 * 1024  # bytes: the reserve on a small file system
LARGEST = 64 * 1024 * 1024  # bytes: the reserve on a large one
SHARE = 0.01  # of the file system's size, between the two
MARGIN = 3  # the reserve comes back once the disk has this many reserves' worth free
# (two stay free for writes once it is made: with two, what the WAL and a checkpoint
# took back right after left too little for a 1 MiB write, 1 run in 5 of the test)
TIGHT_BYTES = 1 << 30  # bytes: a disk with less free is tight (fold_limit)
PAGE = 4096  # bytes per SQLite page at most (new files have 1024: a WAL then holds less)


def path(directory: Path | None = None) -> Path:
    """The reserve file of a data directory (default: kyfs.platform.paths.data_dir())."""
    return (directory or paths.data_dir()) / NAME


def size_for(directory: Path, disk: os.statvfs_result | None = None) -> int:
    """Bytes the reserve takes on the file system of ``directory`` (whose statvfs(2) is
    ``disk`` when the caller has it): 1% of its size, at least SMALLEST and at most
    LARGEST."""
    disk = disk or os.statvfs(directory)
    total = disk.f_blocks * disk.f_frsize
    return max(SMALLEST, min(LARGEST, int(total * SHARE)))


def short(directory: Path | None = None) -> bool:
    """True while the disk is short of space: the reserve is missing (the disk was found
    full and has not had room for it since), or less than one reserve's worth is free
    (writes are about to meet ENOSPC: a delete then frees its blocks rather than
    keeping them as undo data, which would free nothing)."""
    directory = directory or paths.data_dir()
    if not os.path.exists(path(directory)):
        return True
    try:
        disk = os.statvfs(directory)
    except OSError:
        return False
    return disk.f_bavail * disk.f_frsize < size_for(directory, disk)


def fold_limit(directory: Path, wal_bytes: int) -> int:
    """How many pages a WAL may hold before its writer folds it in (SQLite's
    ``wal_autocheckpoint``), given the free space of the file system of ``directory``
    and the ``wal_bytes`` the WALs there hold now: 0 (no limit: a checkpointer folds it in
    its own time) while the disk is roomy, else an eighth of the free space (at least
    256 pages). A WAL holding more than the disk can take into the databases cannot be
    folded in, and on a full disk nothing could ever be deleted: the disk counts as
    tight from TIGHT_BYTES free, or from four times what the WALs hold."""
    try:
        disk = os.statvfs(directory)
    except OSError:
        return 0
    free = disk.f_bavail * disk.f_frsize
    if free >= TIGHT_BYTES and free >= 4 * wal_bytes:
        return 0
    return max(256, free // 8 // PAGE)


def release(directory: Path | None = None) -> bool:
    """Give the reserve's bytes back to the file system; True when there was one to give
    (the caller may try its write again)."""
    try:
        path(directory).unlink()
    except FileNotFoundError:
        return False
    log.warning("the disk of %s is full: released the space kept in reserve", directory)
    return True


def ensure(directory: Path | None = None) -> bool:
    """Make the reserve when it is missing and the file system has room for it and a
    margin (MARGIN reserves' worth free); True when it is in place afterwards. Never
    raises: a disk too full, or a read-only one, leaves it missing."""
    directory = directory or paths.data_dir()
    target = path(directory)
    if target.exists():
        return True
    try:
        paths.make_private_dir(directory)
        size = size_for(directory)
        disk = os.statvfs(directory)
        if disk.f_bavail * disk.f_frsize < MARGIN * size:
            return False
        temporary = directory / f".{NAME}.{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        os.replace(temporary, target)
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            log.debug("could not make the reserve in %s: %s", directory, exc)
        with contextlib.suppress(OSError, UnboundLocalError):
            temporary.unlink()
        return False
