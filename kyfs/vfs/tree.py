"""What a read-only virtual tree of the mount offers (``/.search``, ``/.kyfs``,
``<workspace>/.versions``, ``<workspace>/.snapshots``), and the stat dicts they share. No
FUSE here: stat dicts use os.stat_result's field names (st_mode, st_ino, ...), times in ns
since the epoch, UTC.

A virtual tree answers paths relative to its own top (``""`` is the top) and raises
kyfs.core.errors.KyfsError (KeyNotFound for ENOENT, InvalidInput for EINVAL) like the
engine does; the adapter turns them into errnos.

Thread-safety: see each tree; the adapter serves requests on several threads.
"""

from __future__ import annotations

import os
import stat as st
import time
import zlib
from typing import Any, Protocol

from kyfs.core.access import Caller

ROOT_INO = 1  # the mount's root
UNKNOWN_INO = 0xFFFFFFFF  # libfuse's FUSE_UNKNOWN_INO: "ask me", never 0 (glibc skips 0)
Listing = list[tuple[str, dict[str, Any], int]]


def virtual_ino(path: str) -> int:
    """A stable st_ino for a virtual path: 2 + its CRC-32, below every workspace's range
    (kyfs.core.inodes.NODE_BITS); collisions between two virtual paths
    are harmless (they are read-only and never hard links)."""
    return 2 + zlib.crc32(path.encode("utf-8", "surrogateescape"))


def read_only_dir(
    path: str, mtime_ns: int | None = None, owner: tuple[int, int] | None = None, mode: int = 0o555
) -> dict[str, Any]:
    """The stat dict of a read-only virtual directory at ``path`` with permission bits
    ``mode``, owned by ``owner`` (uid, gid; default: the daemon's user)."""
    when = time.time_ns() if mtime_ns is None else mtime_ns
    uid, gid = owner if owner is not None else (os.getuid(), os.getgid())
    return {
        "st_ino": virtual_ino(path),
        "st_mode": st.S_IFDIR | mode,
        "st_nlink": 2,
        "st_uid": uid,
        "st_gid": gid,
        "st_size": 0,
        "st_blocks": 0,
        "st_atime": when,
        "st_mtime": when,
        "st_ctime": when,
    }


def read_only_file(
    path: str,
    size: int,
    mtime_ns: int | None = None,
    owner: tuple[int, int] | None = None,
    mode: int = 0o444,
) -> dict[str, Any]:
    """The stat dict of a read-only virtual file of ``size`` bytes with permission bits
    ``mode``, owned by ``owner`` (uid, gid; default: the daemon's user)."""
    attrs = read_only_dir(path, mtime_ns, owner)
    attrs.update(st_mode=st.S_IFREG | mode, st_nlink=1, st_size=size)
    attrs["st_blocks"] = (size + 511) // 512
    return attrs


def dots(ino: int, parent_ino: int = UNKNOWN_INO) -> Listing:
    """``.`` and ``..`` with their inode numbers, for the top of a readdir listing."""
    return [
        (".", {"st_mode": st.S_IFDIR, "st_ino": ino}, 0),
        ("..", {"st_mode": st.S_IFDIR, "st_ino": parent_ino}, 0),
    ]


class Contents(Protocol):
    """An open virtual file read piece by piece (a snapshot's file: kyfs.vfs.snapshots_tree)
    instead of loaded whole at open. Its content never changes while it is open."""

    def __len__(self) -> int:
        """Its size in bytes."""
        ...

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end). StaleName (ESTALE) when
        what it shows is gone."""
        ...


class VirtualTree(Protocol):
    """A read-only tree mounted at a hidden name; ``rest`` is the path below its top and
    ``caller`` the process that asks (a tree that gathers nodes from many places shows it
    only those it could read; kyfs.core.access)."""

    def getattr(self, rest: str, caller: Caller) -> dict[str, Any]:
        """The stat dict of ``rest``. KeyNotFound (ENOENT)."""
        ...

    def readdir(self, rest: str, caller: Caller) -> Listing:
        """The entries of directory ``rest`` (without ``.`` and ``..``). KeyNotFound."""
        ...

    def readlink(self, rest: str, caller: Caller) -> str:
        """A symlink's target. InvalidInput (EINVAL) for anything else; KeyNotFound."""
        ...

    def content(self, rest: str, caller: Caller) -> bytes | Contents:
        """The whole content of file ``rest`` (read at open), or a :class:`Contents` to read
        it from piece by piece. KeyNotFound."""
        ...
