"""``<workspace>/.snapshots/<name>/...``: each snapshot of a workspace (kyfs.core.snapshots)
as a read-only tree, as ZFS shows ``.zfs/snapshot/<name>`` and btrfs a read-only
subvolume. Hidden from readdir of the workspace, as ``.versions`` is (so ``cp -r``,
``rsync``, ``git status``, ``grep -r`` and ``diff -r`` of the workspace never walk it),
and reachable by name.

``.snapshots`` lists the snapshots as directories; ``.snapshots/NAME`` is the workspace's
top directory as the snapshot holds it: its directories, regular files, symbolic links and
special nodes, each with the type, permission bits, owner, size and times it had when the
snapshot was made. Every change there fails EROFS (kyfs.fuse.adapter). A file is read
piece by piece from the engine (:class:`SnapshotFile`), never loaded whole, and the
kernel may keep its pages: a snapshot never changes.

Permissions: the kernel judges (``default_permissions``) by the owner and bits each name
had when the snapshot was made, so what a user could not read on the real path then they
cannot read through the snapshot either. The views judge by owner and bits alone, so a
name that had an access ACL when the snapshot was made (the snapshot keeps its extended
attributes), or whose key has one now, shows without its group and other bits
(kyfs.vfs.acls.stat_for_views narrows ``.versions`` alike). ``.snapshots`` shows the
owner and the read and search bits of the workspace's top directory now, each
``.snapshots/NAME`` that owner and all of its bits (a snapshot does not record the top's
own).

Inode numbers: a name's is kyfs.core.inodes.snapshot_inode of its snapshot item (stable,
never a live node's); ``.snapshots`` and ``.snapshots/NAME`` have
kyfs.vfs.tree.virtual_ino's.

The kernel keeps names and attributes for up to the mount's attr_timeout: :class:`Shown`
remembers what of each snapshot the mount has answered for, so that the change watcher
(kyfs.fuse.invalidate.ChangeWatcher) can drop it when the snapshot is deleted behind the
mount.

Thread-safety: a tree is made per request under its workspace's lock (kyfs.fuse.adapter);
a SnapshotFile takes that lock for each read; a Shown has a lock of its own and may be
used from any thread.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from kyfs.core import access, acl, inodes, names
from kyfs.core.access import Caller
from kyfs.core.errors import (
    InvalidInput,
    IsADirectory,
    KeyNotFound,
    NotADirectory,
    NotFound,
    StaleName,
)
from kyfs.core.nodes import DIR, LNK, REG, Entry
from kyfs.core.snapshots import SNAPSHOT_NAME_RE, VIEW
from kyfs.engine.base import Workspace
from kyfs.vfs import acls
from kyfs.vfs.tree import Listing, read_only_dir

SNAPSHOTS_DIR = VIEW  # ".snapshots"
PATHS_KEPT = 10_000  # paths :class:`Shown` remembers per snapshot


class Shown:
    """The mount paths of each snapshot that the mount has answered for (a lookup, a
    getattr, a listing entry), which the kernel may hold for up to attr_timeout: when the
    snapshot goes, :meth:`gone` gives them to invalidate. At most ``limit`` per snapshot;
    past that, the kernel forgets the others when its timeouts run out."""

    def __init__(self, limit: int = PATHS_KEPT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._paths: dict[str, dict[str, set[str]]] = {}  # workspace -> snapshot -> paths

    def add(self, workspace: str, snapshot: str, path: str) -> None:
        """Remember that ``path`` of snapshot ``snapshot`` of ``workspace`` was shown."""
        with self._lock:
            paths = self._paths.setdefault(workspace, {}).setdefault(snapshot, set())
            if len(paths) < self._limit:
                paths.add(path)

    def gone(self, name: str, workspace: Workspace) -> list[str]:
        """The mount paths whose kernel caches must go because workspace ``name``
        (``workspace``, whose lock the caller holds) no longer has a snapshot that the
        mount showed: that snapshot's shown paths and ``.snapshots``; they are forgotten
        here. No query when no snapshot of the workspace was shown.

        Raises:
            StorageError: (EIO) the snapshots cannot be listed.
        """
        with self._lock:
            if not self._paths.get(name):
                return []
        present = {snapshot.name for snapshot in workspace.snapshots()}
        paths: list[str] = []
        with self._lock:
            shown = self._paths.get(name, {})
            for snapshot in [s for s in shown if s not in present]:
                paths += sorted(shown.pop(snapshot), key=len)  # the snapshot's top first
            if not shown:
                self._paths.pop(name, None)
        if paths:
            paths.append(f"/{name}/{SNAPSHOTS_DIR}")
        return paths


class SnapshotFile:
    """A regular file of a snapshot, open: reads its value from the engine at each read
    (kyfs.vfs.tree.Contents), under its workspace's lock."""

    def __init__(self, workspace: Workspace, item_id: int, size: int) -> None:
        self.workspace = workspace
        self.item_id = item_id
        self.size = size

    def __len__(self) -> int:
        """The file's size in bytes."""
        return self.size

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``.

        Raises:
            StaleName: (ESTALE) the snapshot was deleted since the open.
            DamagedBlock: (EIO) a block fails its checksum.
        """
        with self.workspace.lock:
            try:
                return self.workspace.read_snapshot(self.item_id, offset, size)
            except KeyNotFound:
                raise StaleName("the snapshot was deleted while the file was open") from None


class SnapshotsTree:
    """The ``.snapshots`` tree of one workspace (``name``: the workspace's name in the
    mount); ``shown``: where the paths it answers for are remembered (see the module)."""

    def __init__(self, name: str, workspace: Workspace, shown: Shown | None = None) -> None:
        self.name = name
        self.workspace = workspace
        self.shown = shown if shown is not None else Shown()
        self._tag = workspace.inode(0) >> inodes.NODE_BITS  # the workspace's inode tag

    def path(self, snapshot: str | None = None, key: str = "") -> str:
        """The mount path of ``.snapshots``, of snapshot ``snapshot``'s top, or of ``key``
        in it."""
        path = f"/{self.name}/{SNAPSHOTS_DIR}"
        if snapshot is not None:
            path += f"/{snapshot}"
        return f"{path}/{names.to_os(key)}" if key else path

    @staticmethod
    def _split(rest: str) -> tuple[str | None, str]:
        """``""`` -> (None, ""); ``NAME`` -> (NAME, ""); ``NAME/a/b`` -> (NAME, "a/b").
        KeyNotFound for a name no snapshot can have."""
        snapshot, _, key = rest.partition("/")
        if not snapshot:
            return None, ""
        if not SNAPSHOT_NAME_RE.fullmatch(snapshot):
            raise KeyNotFound(f"no snapshot named {snapshot!r}")
        return snapshot, key

    def _stat(self, snapshot: str, key: str) -> Entry:
        """The name ``key`` of ``snapshot`` (the top for ``""``), remembered as shown."""
        entry = self.workspace.snapshot_stat(snapshot, key)
        self.shown.add(self.name, snapshot, self.path(snapshot, key))
        return entry

    def _mode(self, entry: Entry) -> int:
        """The bits ``entry`` shows: its own, less the group and other bits when it had
        an access ACL when the snapshot was made, or its key has one now (see the
        module)."""
        if entry.kind == LNK:
            return entry.mode
        if acl.ACCESS.encode() in self.workspace.snapshot_xattrs(entry.id):
            return entry.mode & ~0o077
        try:
            self.workspace.get_xattr(entry.key, acl.ACCESS)
        except NotFound:
            return entry.mode
        return entry.mode & ~0o077

    def _attrs(self, entry: Entry) -> dict[str, Any]:
        """The stat dict of a name in a snapshot."""
        return {
            "st_ino": inodes.snapshot_inode(self._tag, entry.id),
            "st_mode": entry.kind | self._mode(entry),
            "st_nlink": entry.nlink,
            "st_rdev": entry.rdev,
            "st_uid": entry.uid,
            "st_gid": entry.gid,
            "st_size": entry.size,
            "st_blocks": (entry.size + 511) // 512 if entry.kind == REG else 0,
            "st_atime": entry.atime_ns,
            "st_mtime": entry.mtime_ns,
            "st_ctime": entry.ctime_ns,
        }

    def _top_attrs(self, snapshot: str, created_ns: int, top: Entry) -> dict[str, Any]:
        """The stat dict of ``.snapshots/NAME``: the owner and bits of the workspace's top
        directory (``top``), the snapshot's time."""
        return read_only_dir(self.path(snapshot), created_ns, (top.uid, top.gid), top.mode)

    def getattr(self, rest: str, caller: Caller | None = None) -> dict[str, Any]:
        """``.snapshots``, a snapshot's top, or a name in a snapshot.

        Raises:
            KeyNotFound / SnapshotNotFound: (ENOENT).
        """
        snapshot, key = self._split(rest)
        if snapshot is None:
            top = acls.stat_for_views(self.workspace, "")
            newest = max((s.created_ns for s in self.workspace.snapshots()), default=None)
            mode = access.view_of_directory(top.mode)
            return read_only_dir(self.path(), newest or top.mtime_ns, (top.uid, top.gid), mode)
        entry = self._stat(snapshot, key)
        if not key:
            top = acls.stat_for_views(self.workspace, "")
            return self._top_attrs(snapshot, entry.mtime_ns, top)
        return self._attrs(entry)

    def readdir(self, rest: str, caller: Caller | None = None) -> Listing:
        """The snapshots (in ``.snapshots``), or the names in a directory of one, with
        every attribute (the kernel caches them as from a lookup).

        Raises:
            KeyNotFound / SnapshotNotFound: (ENOENT). NotADirectory: (ENOTDIR).
        """
        snapshot, key = self._split(rest)
        if snapshot is None:
            top = acls.stat_for_views(self.workspace, "")
            listing: Listing = []
            for made in self.workspace.snapshots():
                self.shown.add(self.name, made.name, self.path(made.name))
                listing.append((made.name, self._top_attrs(made.name, made.created_ns, top), 0))
            return listing
        if self._stat(snapshot, key).kind != DIR:
            raise NotADirectory(f"not a directory in snapshot {snapshot}: {key}")
        listing = []
        for entry in self.workspace.snapshot_children(snapshot, key):
            self.shown.add(self.name, snapshot, self.path(snapshot, entry.key))
            listing.append((names.to_os(entry.name), self._attrs(entry), 0))
        return listing

    def readlink(self, rest: str, caller: Caller | None = None) -> str:
        """A symbolic link's target, as stored.

        Raises:
            InvalidInput: (EINVAL) not a symbolic link. KeyNotFound: (ENOENT).
        """
        snapshot, key = self._split(rest)
        if snapshot is None or not key or self._stat(snapshot, key).kind != LNK:
            raise InvalidInput("not a symbolic link")
        return os.fsdecode(self.workspace.snapshot_readlink(snapshot, key))

    def content(self, rest: str, caller: Caller | None = None) -> SnapshotFile:
        """A regular file of a snapshot, to read piece by piece.

        Raises:
            KeyNotFound: (ENOENT). IsADirectory: (EISDIR). InvalidInput: (EINVAL) a
            symbolic link or special node (the kernel opens those itself).
        """
        snapshot, key = self._split(rest)
        entry = self._stat(snapshot, key) if snapshot is not None else None
        if entry is None or entry.kind == DIR:
            raise IsADirectory(f"is a directory: {rest}")
        if entry.kind != REG:
            raise InvalidInput(f"not a regular file: {rest}")
        return SnapshotFile(self.workspace, entry.id, entry.size)
