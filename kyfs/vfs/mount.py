"""The mount without FUSE: every decision about paths, nodes and open files that the
FUSE adapter (kyfs.fuse.adapter) used to make, in kyfs's own terms: POSIX paths and
stat dicts in, results out, kyfs.core.errors.KyfsError (with its errno) for failures.
No libfuse here: the adapter translates, this module decides.

Layout of the mount::

    /                     one directory per workspace (mkdir creates, rmdir drops, mv renames)
    /<workspace>/         the workspace's top directory (a node: owner, mode, times)
    /<workspace>/a/b/c    key "a/b/c": a file, directory or symbolic link
    /.search/<query>/     read-only matches across workspaces (kyfs.vfs.search_tree)
    /.kyfs/metrics        read-only daemon metrics (kyfs.vfs.control_tree)
    /<ws>/.versions/...   read-only history of each key (kyfs.vfs.versions_tree)
    /<ws>/.snapshots/...  read-only snapshots of each workspace (kyfs.vfs.snapshots_tree)

The hidden trees are not listed by readdir, so ``cp -r``, ``grep -r`` and ``find``
never walk them. Every operation resolves the path to (workspace, key) or to a virtual
tree and calls the engine (kyfs.engine.base.Workspace) or the tree. Writes go to a
kyfs.vfs.openfile.OpenFile shared by every handle on a node, committed at flush, fsync
and release (close-to-open consistency).

Owners and permissions: a new node belongs to the process that asked (the ``context``
the adapter gives: libfuse's fuse_get_context); permission checks, the sticky bit and
clearing setuid/setgid are the kernel's (the mount uses ``default_permissions``). st_ino
is the node's own number (``use_ino``), so hard links share it and it survives renames
and remounts.

Threading model: libfuse's multi-threaded loop serves requests on several threads at
once. Each workspace is used by one thread at a time (its ``lock``, taken by
:meth:`Mount.call` around each operation), so a workspace that waits on another
process's lock holds up only requests to itself. Lock order: the workspaces lock
(shared), then one workspace's lock. The tables of open files are dicts whose single
operations are atomic in CPython; an entry keyed by a workspace changes only under that
workspace's lock. See docs/design.md.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from kyfs.app import drop_workspace, rename_workspace
from kyfs.core import acl, names, xattrs
from kyfs.core.access import Caller
from kyfs.core.errors import (
    AlreadyExists,
    AttributeNotSupported,
    BadHandle,
    CrossWorkspace,
    InvalidInput,
    InvalidName,
    IsADirectory,
    KeyNotFound,
    KyfsError,
    NameTooLong,
    NoAttribute,
    NoMoreData,
    NotPermitted,
    ReadOnly,
    SchemaViolation,
    SnapshotNotFound,
    StaleName,
)
from kyfs.core.nodes import DIR, MODE_MASK, REG, Entry, Owner
from kyfs.engine import AnyEngine
from kyfs.engine.base import Workspace
from kyfs.platform import paths
from kyfs.platform.metrics import Metrics
from kyfs.vfs import acls
from kyfs.vfs.control_tree import CONTROL_DIR, ControlTree
from kyfs.vfs.openfile import OpenFile
from kyfs.vfs.search_tree import SEARCH_DIR, SearchTree
from kyfs.vfs.snapshots_tree import SNAPSHOTS_DIR, Shown, SnapshotsTree
from kyfs.vfs.tree import (
    ROOT_INO,
    UNKNOWN_INO,
    Contents,
    Listing,
    VirtualTree,
    dots,
    virtual_ino,
)
from kyfs.vfs.versions_tree import VERSIONS_DIR, VersionsTree

log = logging.getLogger(__name__)

UTIME_NOW = (1 << 30) - 1  # tv_nsec values of utimensat(2), passed through by libfuse3
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1  # renameat2(2) flags
RENAME_EXCHANGE = 2
NO_ID = 0xFFFFFFFF  # a uid or gid of -1 in chown(2): leave it as it is
HIDDEN = (SEARCH_DIR, CONTROL_DIR)
VIEWS = (VERSIONS_DIR, SNAPSHOTS_DIR)  # read-only trees at the top of every workspace
# libfuse's high-level API (without hard_remove) renames a file unlinked while open to
# this name and unlinks that name at the last close (fuse.c: hidden_name, hide_node).
FUSE_HIDDEN = re.compile(r"\.fuse_hidden[0-9a-f]{16}")
KEYS_CHECKED = 4096  # paths whose key check is kept (_checked_key): a few hundred KiB
XATTR_TTL = "user.kyfs.ttl"  # seconds to live; settable ("10m", "600", "" clears)
XATTR_TIMES = ("user.kyfs.expires_at", "user.kyfs.created_at", "user.kyfs.updated_at")
# How an operation is locked (Mount.call): ``path`` (the workspaces lock shared, then the
# lock of the path's workspace), ``root`` (the workspaces lock shared only: the operation
# may change the set of workspaces, and takes a workspace's lock itself) and ``handle``
# (the lock of the open file's workspace; no workspaces lock: that workspace is already
# held and stays valid across a rename).
PATH, ROOT, HANDLE = "path", "root", "handle"


class Invalidations(Protocol):
    """What the mount asks of the kernel's caches (kyfs.fuse.invalidate.Invalidator)."""

    def invalidate(self, paths: Iterable[str], wait: float = ..., hold: bool = ...) -> None:
        """Make the kernel forget ``paths`` (``hold``: answer ESTALE once after)."""

    def invalidate_soon(self, path: str, delay: float = ..., entry: bool = ...) -> None:
        """Make the kernel forget ``path`` shortly after this request's reply."""

    def held(self, path: str) -> bool:
        """True (once) when ``path`` was removed behind the kernel's back."""

    def released(self, path: str) -> None:
        """``path`` is being removed through the mount: no ESTALE for it."""


@functools.lru_cache(maxsize=KEYS_CHECKED)
def _checked_key(os_key: str) -> str:
    """The key of the path ``os_key`` inside a workspace (names.from_os), checked
    (names.check_key; its errors: InvalidName, NameTooLong, IllegalByteSequence, never
    kept). Kept for the KEYS_CHECKED paths used last: a file's dozen requests of a
    ``tar x`` check its name once."""
    return names.check_key(names.from_os(os_key))


class Mount:
    """The mount's operations over an engine (kyfs.engine.base.Engine), without FUSE.

    Each operation takes POSIX paths (``/WORKSPACE/KEY``, names as the kernel gives
    them), returns what the system call returns (a stat dict with times in ns UTC, a
    handle, bytes, 0) and raises kyfs.core.errors.KyfsError (its ``errno`` is the
    answer) or OSError. Run each one through :meth:`call`, which takes its locks.

    Args:
        workspaces: the data directory's engine; a caching instance for the daemon.
        invalidator: the kernel's caches (:class:`Invalidations`).
        context: () -> (uid, gid, pid) of the process making the current request.
        umask: () -> that process's umask.
        groups: pid -> that process's supplementary group ids.
        spill_dir: where open files spill large writes; kyfs.platform.paths.spill_dir()
            when None.
        metrics: where bytes read and written are counted.
    """

    def __init__(
        self,
        workspaces: AnyEngine,
        invalidator: Invalidations,
        context: Callable[[], tuple[int, int, int]],
        umask: Callable[[], int],
        groups: Callable[[int], frozenset[int]],
        spill_dir: Path | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.workspaces = workspaces
        self.invalidator = invalidator
        self.context, self.umask, self.groups = context, umask, groups
        self.metrics = metrics or Metrics()
        self.spill_dir = spill_dir or paths.spill_dir()
        self._handles: dict[int, OpenFile] = {}
        self._open: dict[tuple[Workspace, int], OpenFile] = {}
        # The files a create here made, by (workspace, key), while they are ``fresh``
        # (nothing committed since: OpenFile.fresh): tar x and cp -a set their times,
        # owner and mode by path before the close, and those find the open file here
        # without looking the key up (_made_entry). Emptied by every change of names.
        self._made: dict[tuple[Workspace, str], OpenFile] = {}
        self._virtual: dict[int, bytes] = {}  # open handles of virtual files
        self._readers: dict[int, Contents] = {}  # ... of those read piece by piece
        self._hidden: dict[str, OpenFile] = {}  # .fuse_hidden path -> the unlinked open file
        self._listings: dict[int, Listing] = {}  # directory handle -> its READDIRPLUS listing
        self._next_fh = itertools.count(1)  # next() is atomic in CPython: no lock
        # .store: (name, workspace) of this request's lock; .reply: see _reply_with
        self._current = threading.local()
        self._uid, self._gid = os.getuid(), os.getgid()
        self.search_tree = SearchTree(workspaces.names, workspaces.open)
        self.control_tree = ControlTree(self.metrics)
        self.shown = Shown()  # what the kernel may hold of each snapshot (snapshots_tree)
        self.acls = False  # the kernel enforces POSIX ACLs (set by the adapter at init)

    def call(
        self,
        kind: str,
        name: str,
        operation: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """``operation(*args, **kwargs)`` (the system call ``name``) under the locks its
        ``kind`` needs (PATH, ROOT, HANDLE: see there): the path is ``args[0]``, a handle
        ``args[-1]``. The getattr that libfuse makes right after a create or setattr of
        the same path on the same thread is answered with what that operation kept
        (:meth:`_reply_with`), before any lock, open or lookup; any other call forgets
        it first."""
        reply = getattr(self._current, "reply", None)
        if reply is not None:
            self._current.reply = None
            if name == "getattr" and args and reply[0] == args[0]:
                return reply[1]
        if kind == HANDLE:
            with self._handle_lock(args[-1]):
                return operation(*args, **kwargs)
        with self.workspaces.shared():
            if kind == ROOT:
                return operation(*args, **kwargs)
            with self._path_lock(args):
                try:
                    return operation(*args, **kwargs)
                finally:
                    self._current.store = None

    def _handle_lock(self, fh: int) -> contextlib.AbstractContextManager[Any]:
        """The lock of open file ``fh``'s workspace; none for a virtual file or a handle
        that is not open (the operation then answers EBADF)."""
        opened = self._handles.get(fh)
        return opened.store.lock if opened is not None else contextlib.nullcontext()

    def _path_lock(self, args: tuple[Any, ...]) -> contextlib.AbstractContextManager[Any]:
        """The lock of the workspace the operation's path (its first argument) names; of
        the handle's workspace when the path is None (fstat, ftruncate of an unlinked
        file); none at the root, in the hidden trees, or for a workspace that does not
        open (the operation itself then raises)."""
        path = args[0] if args else None
        if path is None:
            return self._handle_lock(args[-1]) if len(args) > 1 else contextlib.nullcontext()
        workspace = self._split(path)[0]
        if workspace is None or workspace in HIDDEN:
            return contextlib.nullcontext()
        try:
            store = self.workspaces.open(workspace)
        except KyfsError:
            return contextlib.nullcontext()
        self._current.store = (workspace, store)  # _workspace reuses it (no second open)
        return store.lock

    def where(self, args: tuple[Any, ...]) -> tuple[str, str]:
        """(workspace, key) that an operation called with ``args`` works on, for its log
        line: from the path (the first argument), else from the open file handle (the
        last); empty strings where there is none."""
        path = args[0] if args and isinstance(args[0], str) else None
        if path is not None:
            workspace, key = self._split(path)
        else:
            opened = self._handles.get(args[-1]) if args and isinstance(args[-1], int) else None
            workspace = opened.workspace if opened is not None else None
            key = f"(node {opened.entry_id})" if opened is not None else ""
        return workspace or "", key

    def _workspace(self, name: str) -> Workspace:
        """Workspace ``name``: the one whose lock this request holds (:meth:`_path_lock`),
        else opened (engine.open: a stat of its file).

        Raises:
            WorkspaceNotFound: (ENOENT). InvalidName: (EINVAL). StorageError: (EIO).
        """
        held = getattr(self._current, "store", None)
        if held is not None and held[0] == name:
            return held[1]  # type: ignore[no-any-return]
        return self.workspaces.open(name)

    def _forget(self, workspace: str, keys: list[str]) -> None:
        """Make the kernel forget what it caches of ``keys`` (other names of a changed
        node: each name is a kernel inode of its own under libfuse's high-level API)."""
        if keys:
            self.invalidator.invalidate(f"/{workspace}/{names.to_os(key)}" for key in keys)

    @staticmethod
    def _linked_names(store: Workspace, key: str, entry: Entry | None = None) -> list[str]:
        """The other names of the file at ``key`` (hard links), whose cached attributes a
        change through ``key`` makes stale; none when it has one name, is a directory or
        does not exist. ``entry``: the file's entry when the caller has it (no stat)."""
        if entry is None:
            try:
                entry = store.stat(key)
            except KeyNotFound:
                return []
        if entry.nlink < 2 or entry.is_dir:
            return []
        return [k for k in store.keys_of(entry.id) if k != key]

    def _commit(self, opened: OpenFile, sync: bool = False) -> bool:
        """Commit an open file (its buffered data and the attributes deferred with it);
        when its node has several names, the kernel forgets the cached size and pages of
        each. Returns True when it wrote changes."""
        was_dirty = opened.dirty
        wrote = opened.commit(sync=sync)
        if was_dirty:
            opened.created_empty = False  # the value written was judged by the commit
        entry = opened.entry
        if was_dirty and entry is not None and entry.nlink > 1 and opened.workspace:
            self._forget(opened.workspace, opened.store.keys_of(opened.entry_id))
        return wrote

    # --- routing ---------------------------------------------------------------------
    @staticmethod
    def _split(path: str) -> tuple[str | None, str]:
        """``/`` -> (None, ""); ``/ws`` -> ("ws", ""); ``/ws/a/b`` -> ("ws", "a/b")."""
        workspace, _, key = path.lstrip("/").partition("/")
        return (workspace or None), key

    @staticmethod
    def _view(key: str) -> str | None:
        """The workspace's read-only view (VIEWS) that ``key`` lies in, or None."""
        top = key.partition("/")[0]
        return top if top in VIEWS else None

    def _tree(self, path: str) -> tuple[VirtualTree, str] | None:
        """The virtual tree that serves ``path`` and the path inside it, or None."""
        workspace, key = self._split(path)
        if workspace == SEARCH_DIR:
            return self.search_tree, key
        if workspace == CONTROL_DIR:
            return self.control_tree, key
        view = self._view(key) if workspace is not None else None
        if workspace is None or view is None:
            return None
        rest = names.from_os(key[len(view) + 1 :])
        if view == SNAPSHOTS_DIR:
            return SnapshotsTree(workspace, self._workspace(workspace), self.shown), rest
        return VersionsTree(workspace, self._workspace(workspace)), rest

    def _judge_empty(self, opened: OpenFile, last: bool) -> None:
        """At close: a key created here and never written holds the empty value; when a
        schema rule refuses it, each close(2) fails EINVAL, as the close after a refused
        write does, and at the last close (``last``: release) the key goes. It stays
        until then, because a shell's ``echo VALUE > KEY`` creates the key, closes one
        descriptor of it (after dup2) and only then writes. The kernel may still hold the
        name after that: the next getattr of it answers ESTALE (Invalidator.held), so
        the kernel looks it up again and a create of it works."""
        if not opened.created_empty or opened.dirty or opened.current_size() != 0:
            return  # the usual case costs one attribute test: no SQL on close
        keys = opened.store.keys_of(opened.entry_id)
        refusal = next(filter(None, map(opened.store.empty_refused, keys)), None)
        if refusal is None:
            opened.created_empty = False  # no rule refuses it: not asked again
            return
        if not last:
            raise SchemaViolation(refusal)
        opened.created_empty = False
        for key in keys:
            with contextlib.suppress(KyfsError):
                opened.store.delete(key)
        if opened.workspace:
            paths = [f"/{opened.workspace}/{names.to_os(key)}" for key in keys]
            self.invalidator.invalidate(paths, hold=True)  # gone behind the kernel's back

    def _resolve(self, path: str, lookup: bool = True) -> tuple[Workspace, str]:
        """The workspace and key of a path inside a workspace.

        For lookups (``lookup``) an invalid name is simply not there (ENOENT), except one
        that is too long (ENAMETOOLONG), as on ext4. EROFS in the hidden trees, EPERM at
        the mount's root.
        """
        workspace, key = self._split(path)
        if workspace is None:
            raise NotPermitted("the root holds only workspaces")
        if workspace in HIDDEN or self._view(key) is not None:
            raise ReadOnly(f"{path} is read-only")
        try:
            if key:
                key = _checked_key(key)  # the name's bytes, kept exact
            return self._workspace(workspace), key
        except NameTooLong:
            raise
        except InvalidName as exc:
            if lookup:
                raise KeyNotFound(f"no such key: {key}") from exc
            raise

    def _caller(self) -> Owner:
        """The uid and gid of the process that made the current request: the owner of
        what it creates, as on tmpfs."""
        uid, gid, _ = self.context()
        return Owner(uid, gid)

    def _asker(self, tree: VirtualTree) -> Caller:
        """The process that made the current request: whom the virtual trees show what
        (kyfs.core.access). Its supplementary groups (read from /proc) only for the tree
        that filters by them (/.search), and never for root."""
        uid, gid, pid = self.context()
        wanted = uid != 0 and tree is self.search_tree
        return Caller(uid, gid, self.groups(pid) if wanted else frozenset())

    def _attrs(self, entry: Entry, store: Workspace) -> dict[str, Any]:
        """The stat dict of ``entry``; for a file open here with buffered writes, its
        buffered size and the attributes deferred until their commit (OpenFile.defer).
        st_blocks counts 512-byte units of what the block store holds of the value
        (Entry.stored: a hole costs none, so ``du`` of a sparse file is honest), plus
        the buffered blocks of an open file, never more than its size rounded up."""
        size = entry.size
        stored = entry.stored
        opened = self._open.get((store, entry.id)) if self._open else None
        pending: dict[str, int] = {}
        if opened is not None and opened.dirty:
            size = opened.size
            pending = opened.attrs
            stored += opened.buffered_bytes()
        return {
            "st_ino": store.inode(entry.id),
            "st_mode": entry.kind | pending.get("mode", entry.mode),
            "st_nlink": entry.nlink,
            "st_rdev": entry.rdev,
            "st_uid": pending.get("uid", entry.uid),
            "st_gid": pending.get("gid", entry.gid),
            "st_size": size,
            "st_blocks": (max(0, min(stored, size)) + 511) // 512,
            "st_atime": pending.get("atime_ns", entry.atime_ns),
            "st_mtime": pending.get("mtime_ns", entry.mtime_ns),
            "st_ctime": pending.get("ctime_ns", entry.ctime_ns),
        }

    def _reply_with(self, path: str, entry: Entry, store: Workspace) -> None:
        """Answer the getattr that libfuse's high-level API makes right after this create
        or setattr, on this thread and for this same request, with ``entry`` as this
        operation left it, instead of asking the engine again (``tar x`` makes four per
        file). Any other operation on the thread forgets it first (:meth:`call`)."""
        self._current.reply = (path, self._attrs(entry, store))

    def _defer(self, store: Workspace, entry: Entry, **attrs: int | None) -> bool:
        """Keep attribute changes of a file open here with buffered writes for the
        commit of its data (one transaction at close instead of one per call: tar x,
        cp -a); False when it has none (the caller stores them now)."""
        opened = self._open.get((store, entry.id)) if self._open else None
        if opened is None or not opened.defer(**attrs):
            return False
        opened.attrs["ctime_ns"] = time.time_ns()  # shown until the commit sets its own
        return True

    def _made_entry(self, store: Workspace, key: str) -> Entry | None:
        """The entry of the file at ``key`` when a create here made it and it is still
        ``fresh``, open and written to (its node is then the one at ``key``: names
        changed through the mount empty ``_made``; what its stat shows is mostly the
        buffer's: size, and times, owner and mode set while open); else None (the caller
        looks the key up)."""
        opened = self._made.get((store, key))
        if opened is None:
            return None
        if not opened.fresh or opened.orphaned or opened.refs == 0:
            del self._made[(store, key)]
            return None
        return opened.entry if opened.dirty else None

    def _root_attrs(self) -> dict[str, Any]:
        """The mount's root: the set of workspaces, owned by the daemon's user."""
        mtime = self.workspaces.directory.stat().st_mtime_ns
        return {
            "st_ino": ROOT_INO,
            "st_mode": DIR | 0o755,
            "st_nlink": 2 + len(self.workspaces.names()),
            "st_uid": self._uid,
            "st_gid": self._gid,
            "st_size": 0,
            "st_blocks": 0,
            "st_atime": mtime,
            "st_mtime": mtime,
            "st_ctime": mtime,
        }

    # --- extended attributes ----------------------------------------------------------
    # Stored attributes (user.*, trusted.*, security.*) per node; who may do what is
    # kyfs.core.xattrs's. kyfs's own user.kyfs.* (a key's TTL and times) answer by name
    # only: never listed, so cp -a and rsync -X do not carry them.
    def listxattr(self, path: str) -> list[str]:
        """The node's stored attribute names the caller may see (trusted.* only root);
        none at the mount's root, in the virtual trees and for a file unlinked while open
        (its node waits in the archive, nameless). ENOENT."""
        if path == "/" or path in self._hidden or self._tree(path) is not None:
            return []
        store, key = self._resolve(path)
        uid = self.context()[0]
        return [
            name
            for name in store.xattr_names(key)
            if xattrs.visible(name, uid) and (self.acls or name not in acl.NAMES)
        ]

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        """Attribute ``name`` as bytes (mfusepy answers a size probe and ERANGE itself);
        ``user.kyfs.*``: :meth:`_own_xattr`. ENODATA, ENOTSUP (a namespace kyfs does not
        store), ENOENT."""
        if path == "/" or path in self._hidden or self._tree(path) is not None:
            raise NoAttribute(f"no such attribute: {name}")  # (the kernel asks for the ACL of any)
        store, key = self._resolve(path)
        if name.startswith(xattrs.OWN):
            return self._own_xattr(store, key, name)
        if name in acl.NAMES and self.acls:
            return self._stored_xattr(store, key, name)  # anyone reads an ACL (getfacl)
        # judged before any SQL: ls -l asks for system.posix_acl_access of every file
        xattrs.may_read(name, self.context()[0])
        return self._stored_xattr(store, key, name)

    @staticmethod
    def _stored_xattr(store: Workspace, key: str, name: str) -> bytes:
        """Stored attribute ``name`` of ``key``; ENODATA from memory, with no lookup of
        the key, when no node of the workspace has that name (Workspace.xattr_in_use):
        the kernel asks for ``security.capability`` at every write(2). A key removed
        behind the mount then answers ENODATA, not ENOENT (the kernel asks only about
        names it holds)."""
        if not store.xattr_in_use(name):
            raise NoAttribute(f"no such attribute: {name}")
        return store.get_xattr(key, name)

    @staticmethod
    def _own_xattr(store: Workspace, key: str, name: str) -> bytes:
        """``user.kyfs.ttl`` (seconds to live) or a ``user.kyfs.*_at`` time (UTC, ISO 8601).
        ENODATA for another name or an unset TTL."""
        entry = store.stat(key)
        expires = None if entry.is_dir else store.expiry(key)
        if name == XATTR_TTL and expires is not None:
            return str(max(0, round((expires - time.time_ns()) / 1e9))).encode()
        stamps = {
            XATTR_TIMES[0]: expires,
            XATTR_TIMES[1]: entry.created_ns,
            XATTR_TIMES[2]: entry.mtime_ns,
        }
        stamp = stamps.get(name)
        if stamp is None:
            raise NoAttribute(f"no such attribute: {name}")
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp / 1e9)).encode()

    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        """Store attribute ``name`` (``options``: XATTR_CREATE, EEXIST; XATTR_REPLACE,
        ENODATA). ``user.kyfs.ttl`` sets the TTL ("10m", "600"; empty clears; ENOTSUP but
        on a file); another ``user.kyfs.*`` ENOTSUP. EPERM, ENOTSUP, ERANGE, E2BIG as
        kyfs.core.xattrs, ENOSPC (the node's names past 64 KiB); EROFS in the virtual trees;
        ENOENT."""
        store, key = self._resolve(path)
        self._made.pop((store, key), None)  # its ctime (an ACL: its mode) changes
        entry = store.stat(key)
        if name.startswith(xattrs.OWN):
            if name != XATTR_TTL or entry.kind != REG:
                raise AttributeNotSupported(f"{name} is not settable")
            text = value.decode("utf-8", "replace").strip()
            store.set_ttl(key, names.parse_duration(text) if text else None)
            return 0
        if name in acl.NAMES and self.acls:
            uid, _, pid = self.context()
            gids = self.groups(pid) if uid else frozenset()
            acls.set_acl(store, key, entry, name, value, (uid, gids))
            self._forget(self._split(path)[0] or "", self._linked_names(store, key, entry))
            return 0
        xattrs.may_change(name, self.context()[0], entry.kind)
        store.set_xattr(key, name, value, options & (xattrs.XATTR_CREATE | xattrs.XATTR_REPLACE))
        return 0

    def removexattr(self, path: str, name: str) -> int:
        """Remove attribute ``name``; ``user.kyfs.ttl`` clears the TTL (another
        ``user.kyfs.*``, or a directory's TTL: ENODATA). ENODATA, EPERM, ENOTSUP; EROFS
        in the virtual trees; ENOENT."""
        store, key = self._resolve(path)
        self._made.pop((store, key), None)
        entry = store.stat(key)
        if name.startswith(xattrs.OWN):
            if name != XATTR_TTL or entry.kind != REG:
                raise NoAttribute(f"no such attribute: {name}")
            store.set_ttl(key, None)
            return 0
        if name in acl.NAMES and self.acls:
            acls.remove_acl(store, key, entry, name, self.context()[0])
            self._forget(self._split(path)[0] or "", self._linked_names(store, key, entry))
            return 0
        xattrs.may_change(name, self.context()[0], entry.kind)
        store.remove_xattr(key, name)
        return 0

    # --- metadata ------------------------------------------------------------------------
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        """The stat dict of ``path`` (st_size includes buffered writes; times in ns, UTC);
        with ``path`` None, of open file ``fh`` (unlinked while open). ENOENT,
        ENAMETOOLONG."""
        if path is None:  # an unlinked open file, asked by handle
            return self._unlinked_attrs(self._handle(fh if fh is not None else -1))
        if path == "/":
            return self._root_attrs()
        hidden = self._hidden.get(path)
        if hidden is not None:
            return self._unlinked_attrs(hidden)
        routed = self._tree(path)
        if routed is not None:
            try:
                attrs = routed[0].getattr(routed[1], self._asker(routed[0]))
            except (KeyNotFound, SnapshotNotFound):  # deleted behind the mount: see .held
                if self.invalidator.held(path):
                    raise StaleName(f"gone behind the mount: {path}") from None
                raise
            if routed[0] is self.search_tree and "/" in routed[1]:  # a link: who asks matters
                self.invalidator.invalidate_soon(SEARCH_DIR, entry=True)
            return attrs
        store, key = self._resolve(path)
        try:
            return self._attrs(self._made_entry(store, key) or store.stat(key), store)
        except KeyNotFound:
            if self.invalidator.held(path):  # see Invalidator.held: ESTALE, once
                raise StaleName(f"gone behind the mount: {key}") from None
            raise

    def _unlinked_attrs(self, opened: OpenFile) -> dict[str, Any]:
        """fstat(2) of a file unlinked while open: its node as it is now (other names may
        remain) or, when it has none left, as it was at open with nlink 0."""
        store: Workspace = opened.store  # type: ignore[assignment]
        entry = store.stat_id(opened.entry_id)
        if entry is None:
            assert opened.entry is not None
            entry = opened.entry._replace(nlink=0)
        attrs = self._attrs(entry, store)
        attrs["st_size"] = size = opened.current_size()
        if opened.orphaned:  # its value is only the buffer now
            attrs["st_blocks"] = (min(opened.buffered_bytes(), size) + 511) // 512
        return attrs

    def readdir(self, path: str, fh: int, plus: bool = False) -> Listing:
        """``.``, ``..`` and a directory's entries, each with its st_mode and st_ino (never
        0: glibc skips such entries); with ``plus`` (the kernel's READDIRPLUS) a key's
        entries carry every attribute, as getattr gives them, so that ``ls -l``, ``find``
        and ``grep -r`` need no lookup and no getattr per name. ENOENT, ENOTDIR."""
        workspace, key = self._split(path)
        if workspace is None:
            listing = dots(ROOT_INO, ROOT_INO)
            for name in self.workspaces.names():  # SEARCH_DIR and CONTROL_DIR left out
                listing.append((name, {"st_mode": DIR | 0o755, "st_ino": UNKNOWN_INO}, 0))
            return listing
        routed = self._tree(path)
        if routed is not None:
            tree, rest = routed
            listing = tree.readdir(rest, self._asker(tree))
            if isinstance(tree, SnapshotsTree):  # its directories' own numbers for "."
                return dots(tree.getattr(rest)["st_ino"]) + listing
            return dots(virtual_ino(path)) + listing
        store, key = self._resolve(path)
        listing = dots(store.inode(store.stat(key).id))
        for entry in store.children(key):
            if plus:
                attrs = self._attrs(entry, store)
            else:
                attrs = {"st_mode": entry.kind | entry.mode, "st_ino": store.inode(entry.id)}
            listing.append((names.to_os(entry.name), attrs, 0))
        return listing

    def opendir(self, path: str) -> int:
        """A handle for one reading of directory ``path`` (its READDIRPLUS listing is
        kept under it until releasedir); no lookup: the kernel looked the path up."""
        return next(self._next_fh)

    def listing_from(self, path: str, fh: int, offset: int) -> Listing:
        """The entries of ``path`` from position ``offset`` on, with every attribute (the
        kernel's READDIRPLUS, which libfuse asks for in pieces). The listing is made at
        offset 0 and kept under handle ``fh`` until releasedir, so one reading of a
        directory sees one listing, however the kernel splits it and whatever changes
        meanwhile (what readdir(3) promises). ENOENT, ENOTDIR."""
        listing = self._listings.get(fh) if offset else None
        if listing is None:
            listing = self._listings[fh] = self.readdir(path, fh, plus=True)
        return listing[offset:]

    def releasedir(self, path: str | None, fh: int) -> int:
        """Forget what handle ``fh`` kept (listing_from)."""
        self._listings.pop(fh, None)
        return 0

    def readlink(self, path: str) -> str:
        """The target of a symbolic link: a key's (as stored, any bytes), or a match's in
        ``/.search``. EINVAL for anything else; ENOENT."""
        routed = self._tree(path)
        if routed is not None:
            return routed[0].readlink(routed[1], self._asker(routed[0]))
        store, key = self._resolve(path)
        return os.fsdecode(store.readlink(key))

    def statfs(self, path: str) -> dict[str, int]:
        """The data directory's disk (statvfs(3)). Inodes: f_files is the nodes in use
        (every workspace's, the root included) plus the disk's free inodes, f_ffree those
        free inodes, so ``df -i`` shows IUsed = the nodes, never negative."""
        disk = os.statvfs(self.workspaces.directory)
        used = 1
        for name in self.workspaces.names():
            store = self.workspaces.open(name)
            with store.lock:  # one at a time: never two workspace locks at once
                used += store.count_nodes()
        return {
            "f_bsize": disk.f_bsize,
            "f_frsize": disk.f_frsize,
            "f_blocks": disk.f_blocks,
            "f_bfree": disk.f_bfree,
            "f_bavail": disk.f_bavail,
            "f_files": used + disk.f_ffree,
            "f_ffree": disk.f_ffree,
            "f_favail": disk.f_favail,
            "f_namemax": names.NAME_MAX,
        }

    def chmod(self, path: str, mode: int) -> int:
        """Store permission bits ``mode & 0o7777``; ctime is now. Who may is the kernel's
        check (default_permissions). EPERM at the mount's root; ENOENT."""
        store, key = self._resolve(path)
        entry = (self._made_entry(store, key) or store.stat(key)) if self._open else None
        if entry is not None and self._defer(store, entry, mode=mode & MODE_MASK):
            self._reply_with(path, entry, store)
        else:
            self._made.pop((store, key), None)  # its entry changes: looked up again
            entry = store.chmod(key, mode)
        if self.acls:
            acls.after_chmod(store, key, mode)
        self._forget(self._split(path)[0] or "", self._linked_names(store, key, entry))
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        """Store owner and group; -1 keeps one (chown(2)); ctime is now. Who may is the
        kernel's check (default_permissions: root any, the owner only to a group it is
        in), and the kernel clears setuid/setgid first. EPERM at the root; ENOENT."""
        store, key = self._resolve(path)
        owner = None if uid in (-1, NO_ID) else uid
        group = None if gid in (-1, NO_ID) else gid
        entry = (self._made_entry(store, key) or store.stat(key)) if self._open else None
        if entry is not None and self._defer(store, entry, uid=owner, gid=group):
            self._reply_with(path, entry, store)
        else:
            self._made.pop((store, key), None)
            entry = store.chown(key, owner, group)
        self._forget(self._split(path)[0] or "", self._linked_names(store, key, entry))
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """Store (atime, mtime) in ns; UTIME_NOW and UTIME_OMIT as utimensat(2). On a
        file with buffered writes they are committed with the data (OpenFile.defer), so
        the times set here win unless a later write comes (``cp -a``, ``tar x``). ENOENT."""
        store, key = self._resolve(path)
        now = time.time_ns()
        atime: int | None = now
        mtime: int | None = now
        if times is not None:
            atime, mtime = (
                None if t == UTIME_OMIT else now if t == UTIME_NOW else t for t in times
            )
        entry = self._made_entry(store, key) or store.stat(key)
        if self._defer(store, entry, atime_ns=atime, mtime_ns=mtime):
            self._reply_with(path, entry, store)
        else:
            self._made.pop((store, key), None)
            store.utimens(key, atime, mtime)
        self._forget(self._split(path)[0] or "", self._linked_names(store, key, entry))
        return 0

    # --- directories and names -----------------------------------------------------------
    def mkdir(self, path: str, mode: int) -> int:
        """At the root: create a workspace owned by the caller (EINVAL bad name, EEXIST);
        below: a directory (EEXIST, ENOTDIR). EROFS in the hidden trees."""
        workspace, key = self._split(path)
        if workspace in HIDDEN:
            raise ReadOnly(f"{workspace} is read-only")
        if workspace is not None and not key:
            if self.acls:  # the kernel left the umask to the daemon (FUSE_CAP_DONT_MASK)
                mode &= ~self.umask()
            self.workspaces.create(workspace, owner=self._caller(), mode=mode)
            return 0
        store, key = self._resolve(path, lookup=False)
        with store.lock:
            made = self._new_node(store, key, mode, is_dir=True)
            store.mkdir(key, made.create_mode, owner=self._caller())
            acls.give(store, key, made)
        return 0

    def _new_node(self, store: Workspace, key: str, mode: int, is_dir: bool) -> acls.NewNode:
        """The mode to create ``key`` with, and the ACLs to give it after: its directory's
        default ACL, else the caller's umask, when the kernel enforces ACLs
        (kyfs.vfs.acls.new_node); the mode as asked otherwise."""
        if not self.acls:
            return acls.NewNode(mode, [])
        return acls.new_node(store, key, mode, self.umask(), is_dir)

    def rmdir(self, path: str) -> int:
        """At the root: drop an empty workspace to the trash; below: remove an empty
        directory. ENOTEMPTY, ENOENT, ENOTDIR, EPERM for ``shared``."""
        self.invalidator.released(path)
        workspace, key = self._split(path)
        if workspace in HIDDEN:
            raise ReadOnly(f"{workspace} is read-only")
        if workspace is not None and not key:
            drop_workspace(self.workspaces, workspace, only_if_empty=True)
            return 0
        store, key = self._resolve(path)
        with store.lock:
            store.rmdir(key)
        return 0

    def unlink(self, path: str) -> int:
        """Remove a name; a node that lost its last name waits in the archive. ENOENT,
        EISDIR."""
        if self._hidden.pop(path, None) is not None:
            return 0  # libfuse's last close of a file unlinked while open: already gone
        self.invalidator.released(path)
        self._made.clear()
        store, key = self._resolve(path)
        entry = store.delete(key)
        if entry.nlink > 1:
            self._forget(self._split(path)[0] or "", store.keys_of(entry.id))
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        """rename(2) and renameat2(2): workspaces at the root, keys and directories
        within one workspace (one transaction). EXDEV across workspaces, EEXIST with
        RENAME_NOREPLACE; RENAME_EXCHANGE swaps two names (ENOENT unless both exist;
        EINVAL for two workspaces, which live in separate files and cannot swap in one
        transaction, or with RENAME_NOREPLACE too); EINVAL for a move into itself,
        EISDIR, ENOTDIR, ENOTEMPTY."""
        self.invalidator.released(old)
        self._made.clear()
        old_ws, old_key = self._split(old)
        new_ws, new_key = self._split(new)
        if old_ws is None or new_ws is None:
            raise NotPermitted("cannot rename the root")
        if old_ws in HIDDEN or new_ws in HIDDEN:
            raise ReadOnly("the hidden directories are read-only")
        if flags & RENAME_EXCHANGE:
            return self._exchange(old, new, flags)
        if not old_key and not new_key:
            if flags & RENAME_NOREPLACE and self.workspaces.exists(new_ws):
                raise AlreadyExists(f"workspace exists: {new_ws}")
            rename_workspace(self.workspaces, old_ws, new_ws)
            return 0
        if old_ws != new_ws or not old_key or not new_key:
            raise CrossWorkspace("rename across workspaces: copy instead")
        store, old_key = self._resolve(old)
        with store.lock:
            if FUSE_HIDDEN.fullmatch(new_key.rpartition("/")[2]):
                return self._hide(store, old_key, new)
            _, new_key = self._resolve(new, lookup=False)
            if flags & RENAME_NOREPLACE:
                try:
                    store.stat(new_key)
                except KeyNotFound:
                    pass
                else:
                    raise AlreadyExists(f"exists: {new_key}")
            replaced = self._linked_names(store, new_key)  # lose a link, their ctime moves
            store.rename(old_key, new_key)
            self._forget(new_ws, replaced + self._linked_names(store, new_key))
        return 0

    def _exchange(self, one: str, other: str, flags: int) -> int:
        """RENAME_EXCHANGE of ``one`` and ``other`` (kyfs.engine.base.Workspace.exchange)."""
        if flags & RENAME_NOREPLACE:
            raise InvalidInput("RENAME_EXCHANGE and RENAME_NOREPLACE exclude each other")
        one_ws, one_key = self._split(one)
        other_ws, other_key = self._split(other)
        if not one_key and not other_key:
            raise InvalidInput("workspaces cannot be exchanged: rename them one by one")
        if one_ws != other_ws or not one_key or not other_key:
            raise CrossWorkspace("exchange across workspaces")
        store, one_key = self._resolve(one)
        _, other_key = self._resolve(other)
        with store.lock:
            touched = self._linked_names(store, one_key) + self._linked_names(store, other_key)
            store.exchange(one_key, other_key)
            self._forget(one_ws or "", touched)
        return 0

    def _hide(self, store: Workspace, key: str, hidden: str) -> int:
        """libfuse unlinks an open file by renaming it to a ``.fuse_hidden`` name: the key
        is deleted now (as unlink) and the open file stays reachable by that path for
        fstat until libfuse unlinks it at the last close. Such names are never stored."""
        entry = store.stat(key)
        opened = self._open.get((store, entry.id))
        if opened is None or entry.is_dir:
            raise InvalidInput(f"{hidden}: names like this are reserved for libfuse")
        store.delete(key)
        self._hidden[hidden] = opened
        return 0

    def link(self, target: str, source: str) -> int:
        """link(2): a second name ``target`` for the node at ``source``, in one workspace.
        EXDEV across workspaces, EPERM for a directory or at the root, EEXIST, EMLINK."""
        new_ws, new_key = self._split(target)
        old_ws, old_key = self._split(source)
        if not new_key or not old_key:
            raise NotPermitted("the root holds only workspaces")
        if new_ws != old_ws:
            raise CrossWorkspace("hard link across workspaces")
        self._made.clear()  # (nlink changes)
        store, old_key = self._resolve(source)
        _, new_key = self._resolve(target, lookup=False)
        entry = store.link(old_key, new_key)
        self._forget(new_ws or "", [k for k in store.keys_of(entry.id) if k != new_key])
        return 0

    def symlink(self, target: str, source: str) -> int:
        """symlink(2): the link ``target`` pointing at ``source`` (stored as given, never
        resolved by kyfs), owned by the caller. EPERM at the root, EEXIST, ENAMETOOLONG."""
        if not self._split(target)[1]:
            raise NotPermitted("the root holds only workspaces")
        store, key = self._resolve(target, lookup=False)
        store.symlink(key, os.fsencode(source), owner=self._caller())
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        """mknod(2): a FIFO, UNIX socket or device node (kyfs.core.nodes.SPECIAL), or an
        empty regular file, owned by the caller. The kernel does a FIFO's and a socket's
        I/O and checks who may make a device node (CAP_MKNOD: EPERM); a device node never
        opens here (the mount is nodev, as libfuse mounts by default: EACCES). EPERM at
        the root, EEXIST, ENOTDIR, EINVAL for any other type."""
        if not self._split(path)[1]:
            raise NotPermitted("the root holds only workspaces (directories)")
        store, key = self._resolve(path, lookup=False)
        kind = stat.S_IFMT(mode)
        made = self._new_node(store, key, mode & MODE_MASK, is_dir=False)  # umask, ACL
        if kind == REG:
            entry = store.create(key, made.create_mode, exclusive=True, owner=self._caller())
        else:
            entry = store.mknod(key, kind, made.create_mode, dev, owner=self._caller())
        if made.attributes:
            acls.give(store, key, made)
            entry = store.stat(key)  # with the mode the ACL gave it
        self._reply_with(path, entry, store)
        return 0

    # --- files ---------------------------------------------------------------------------
    def _handle(self, fh: int) -> OpenFile:
        try:
            return self._handles[fh]
        except KeyError:
            raise BadHandle(f"no open file with handle {fh}") from None

    def _attach(
        self, path: str, store: Workspace, entry: Entry, truncate: bool, made: bool = False
    ) -> int:
        """A new handle on ``entry`` at ``path`` (its node's one OpenFile, shared by every
        handle); ``made``: this create made the node (OpenFile.fresh, created_empty)."""
        opened = self._open.get((store, entry.id))
        if opened is None:
            opened = OpenFile(store, entry.id, entry.size, self.spill_dir)
            self._open[(store, entry.id)] = opened
            # A new key holds an empty value until a write: schema rules judge it at
            # close if nothing was written (touch), as they judge any value
            # (_judge_empty); its first write needs no read of what is stored.
            opened.created_empty = opened.fresh = made
            if made:
                self._made[(store, entry.key)] = opened
        opened.workspace = self._split(path)[0] or ""
        opened.entry = entry
        opened.pid = self.context()[2] or opened.pid  # its closes make one version
        opened.refs += 1
        if truncate:
            opened.truncate(0)
        fh = next(self._next_fh)
        self._handles[fh] = opened
        return fh

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        """Create key ``path`` (visible at once, empty, owned by the caller) and open it;
        returns a handle. EPERM at the root, EEXIST with O_EXCL, ENAMETOOLONG, EILSEQ,
        ENOTDIR."""
        if not self._split(path)[1]:
            raise NotPermitted("the root holds only workspaces (directories), not files")
        store, key = self._resolve(path, lookup=False)
        made = self._new_node(store, key, mode, is_dir=False)
        try:
            entry = store.create(key, made.create_mode, exclusive=True, owner=self._caller())
            if made.attributes:
                acls.give(store, key, made)
                entry = store.stat(key)  # with the mode the ACL gave it
        except AlreadyExists:
            if flags & os.O_EXCL:
                raise
            entry = store.create(key, mode, owner=self._caller())
            return self._attach(path, store, entry, truncate=bool(flags & os.O_TRUNC))
        fh = self._attach(path, store, entry, truncate=bool(flags & os.O_TRUNC), made=True)
        self._reply_with(path, entry, store)
        return fh

    def open(self, path: str, flags: int) -> int:
        """Open a key (O_TRUNC empties its buffer) or a virtual file (read-only: EROFS for
        writing); returns a handle. ENOENT, EISDIR."""
        routed = self._tree(path)
        if routed is not None:
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
                raise ReadOnly("read-only")
            content = routed[0].content(routed[1], self._asker(routed[0]))
            fh = next(self._next_fh)
            if isinstance(content, bytes):
                self._virtual[fh] = content
            else:
                self._readers[fh] = content  # (a snapshot's file: the page cache may keep it)
            return fh
        store, key = self._resolve(path)
        try:
            entry = store.stat(key)
        except KeyNotFound:  # the kernel sends OPEN only for a name it holds: a stale one
            raise StaleName(f"gone behind the mount: {key}") from None
        if entry.is_dir:
            raise IsADirectory(f"is a directory: {key}")
        writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC)
        if writes and getattr(store, "read_only", False):  # a read-only grant
            raise ReadOnly(f"{path.split('/')[1]} is shared read-only")
        return self._attach(path, store, entry, truncate=bool(flags & os.O_TRUNC))

    def flushes(self, fh: int, flags: int) -> bool:
        """Whether close(2) of handle ``fh`` (opened with ``flags``) has anything for
        :meth:`flush` to do. False for a virtual file and for a key opened read-only
        without O_TRUNC: such a handle wrote nothing (what other handles of the node
        buffer is theirs to commit, at their own close), so the kernel is told not to
        send FLUSH at its close (FOPEN_NOFLUSH: kyfs.fuse.daemon); the release that
        follows still commits and judges an empty new key at the node's last close."""
        if fh in self._virtual or fh in self._readers:
            return False
        return flags & os.O_ACCMODE != os.O_RDONLY or bool(flags & os.O_TRUNC)

    def is_virtual(self, fh: int) -> bool:
        """True when handle ``fh`` is open on a virtual file whose content may change
        while open (.kyfs, .search, .versions; not a snapshot's: kyfs.fuse.daemon opens
        those with direct_io)."""
        return fh in self._virtual

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` through handle ``fh``, buffered writes
        included. EBADF."""
        virtual = self._virtual.get(fh)
        reader = self._readers.get(fh) if virtual is None else None
        if virtual is not None:
            data = virtual[offset : offset + size]
        elif reader is not None:
            data = reader.read(offset, size)
        else:
            data = self._handle(fh).read(offset, size)
        self.metrics.add_bytes(read=len(data))
        return data

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        """Buffer ``data`` at ``offset`` (committed at flush, fsync, release); returns its
        length. EFBIG past the size limit, ENOSPC when the spill file cannot grow, EBADF."""
        written = self._handle(fh).write(offset, data)
        self.metrics.add_bytes(written=written)
        return written

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
        self._commit(opened)
        return 0

    def fallocate(self, path: str | None, mode: int, offset: int, length: int, fh: int) -> int:
        """fallocate(2) through handle ``fh`` (kyfs.vfs.openfile.OpenFile.allocate: mode 0
        grows the size, KEEP_SIZE reserves nothing, PUNCH_HOLE and ZERO_RANGE free the
        range); the handle's buffered writes are committed with it. EINVAL, EFBIG,
        EOPNOTSUPP (other modes), ENOSPC, EBADF."""
        opened = self._handle(fh)
        if opened.allocate(mode, offset, length) and opened.workspace:
            opened.created_empty = False
            entry = opened.entry
            if entry is not None and entry.nlink > 1:
                self._forget(opened.workspace, opened.store.keys_of(opened.entry_id))
        return 0

    def lseek(self, path: str | None, offset: int, whence: int, fh: int) -> int:
        """lseek(2)'s SEEK_DATA and SEEK_HOLE through handle ``fh``, from the value's
        stored blocks (kyfs.vfs.openfile.OpenFile.seek); a virtual file is all data.
        ENXIO at or past the end, EINVAL, EBADF."""
        content: bytes | Contents | None = self._virtual.get(fh) or self._readers.get(fh)
        if content is None:
            return self._handle(fh).seek(offset, whence)
        if offset >= len(content):
            raise NoMoreData(f"no data or hole at or past {offset}")
        return offset if whence == os.SEEK_DATA else len(content)

    def flush(self, path: str, fh: int) -> int:
        """Commit handle ``fh``'s buffered writes (what close(2) returns). ENOSPC, EIO,
        EINVAL (a schema rule refused the value); after an error the changes are gone."""
        if fh not in self._virtual and fh not in self._readers:
            opened = self._handle(fh)
            self._commit(opened)
            self._judge_empty(opened, last=False)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        """Commit, then make every committed transaction durable (a checkpoint). As flush."""
        if fh not in self._virtual and fh not in self._readers:
            self._commit(self._handle(fh), sync=True)
        return 0

    def release(self, path: str, fh: int) -> int:
        """The last close of a handle: commit what is left; free the buffer when it was
        the node's last handle."""
        if self._virtual.pop(fh, None) is not None or self._readers.pop(fh, None) is not None:
            return 0
        opened = self._handles.pop(fh, None)
        if opened is None:
            return 0
        opened.refs -= 1
        try:
            self._commit(opened)
            if opened.refs == 0:
                self._judge_empty(opened, last=True)
        finally:
            if opened.refs == 0:
                opened.close()
                self._open.pop((opened.store, opened.entry_id), None)  # type: ignore[arg-type]
                made = (opened.store, opened.entry.key if opened.entry else None)
                if self._made.get(made) is opened:  # type: ignore[arg-type]
                    del self._made[made]  # type: ignore[arg-type]
        return 0

    def close(self) -> None:
        """At unmount: commit what open files still buffer (a failure is logged), then
        close every workspace."""
        for opened in list(self._open.values()):
            try:
                opened.commit()
            except KyfsError:
                log.exception("could not commit an open file at unmount")
            opened.close()
        self._open.clear()
        self._made.clear()
        self._handles.clear()
        self.workspaces.close()
