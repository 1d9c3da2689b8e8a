"""Reflinks: a file made to share its blocks with another until either is written
(ioctl_ficlone(2), FICLONE; ``cp --reflink``). Where the file system has them (XFS,
btrfs, bcachefs, OCFS2; not ext4 or tmpfs) a copy of any size costs milliseconds and no
space. Python has no call for it; FICLONE is one ioctl on two descriptors, so no library
is worth its weight here.

Thread-safety: stateless.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
# What ioctl_ficlone(2) answers where the file system (or the pair of files) cannot share
# blocks: no reflink support, two file systems, a kernel or ioctl it does not know.
CANNOT = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL,
                    errno.ENOTTY, errno.ENOSYS, errno.EBADF})  # fmt: skip


def clone(source: Path, target: Path) -> bool:
    """Make the new file ``target`` (mode 0600) a reflink of ``source``, flushed to disk
    (fsync). Returns False, leaving no ``target``, where the file system cannot
    (:data:`CANNOT`).

    Raises:
        FileExistsError: ``target`` exists. OSError: anything else (ENOSPC, EIO), with
            ``target`` removed.
    """
    src = os.open(source, os.O_RDONLY)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.ioctl(dst, FICLONE, src)
            os.fsync(dst)
        except OSError as exc:
            os.close(dst)
            target.unlink(missing_ok=True)
            if exc.errno in CANNOT:
                return False
            raise
        os.close(dst)
        return True
    finally:
        os.close(src)
