"""The storage engine interface: what the application, the CLI and the mount may ask of
any engine. kyfs.engine.sqlite implements it with one SQLite file per workspace; a
PostgreSQL engine (one schema per workspace) implements the same, and the contract
tests (tests/contract/) run against every engine.

Units everywhere: sizes and offsets in bytes, times in integer nanoseconds since the
Unix epoch (UTC), durations in seconds (float). Keys follow kyfs.core.names. Every
error is a kyfs.core.errors.KyfsError carrying its errno and exit code; an engine
never lets its driver's own exceptions out.

Nothing here may mention files, flock, SQL or pragmas: those stay in the engine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NamedTuple, Protocol

from kyfs.core.blocks import Changes
from kyfs.core.nodes import (
    Archived,
    Change,
    Entry,
    HistoryEntry,
    ImportItem,
    ImportVersion,
    Match,
    Owner,
)
from kyfs.core.retention import Retention
from kyfs.core.snapshots import Fingerprint, Snapshot
from kyfs.core.vectors import CollectionItem, Space


class Lock(Protocol):
    """A re-entrant lock (threading.RLock's interface)."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; False when ``blocking`` is False and another thread holds it."""
        ...

    def release(self) -> None:
        """Give the lock back."""
        ...

    def __enter__(self) -> bool: ...

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Workspace(Protocol):
    """One workspace: a tree of nodes (files, directories, symlinks) under names (keys),
    their values, history, archive, TTL, schema rules and search index.

    A workspace is used by one thread at a time: callers that share one between threads
    (the daemon) hold its ``lock`` around each use. Errors common to every method:
    StorageError (EIO, exit 4) when the engine fails, NoSpace (ENOSPC, exit 4) when the
    storage is full; a failed change leaves nothing half done.
    """

    block_size: int  # bytes per block an open file buffers its changes in

    @property
    def lock(self) -> Lock:
        """A re-entrant lock, held by whoever shares the workspace between threads."""
        ...

    # --- nodes and names ---------------------------------------------------------------
    def stat(self, key: str) -> Entry:
        """The entry at ``key`` (``""``: the top directory). KeyNotFound (ENOENT)."""
        ...

    def stat_id(self, node_id: int) -> Entry | None:
        """Node ``node_id`` under one of its names, or None when it is gone."""
        ...

    def inode(self, node_id: int) -> int:
        """The st_ino of node ``node_id``: stable across remounts and renames, unique
        across the workspaces of one mount."""
        ...

    def children(self, directory: str) -> list[Entry]:
        """Entries directly in ``directory``, by key. KeyNotFound, NotADirectory."""
        ...

    def keys(self, prefix: str = "", glob: str | None = None) -> list[str]:
        """Every name that is not a directory, by code point, filtered by prefix and glob."""
        ...

    def keys_of(self, node_id: int) -> list[str]:
        """Every name of node ``node_id``, by code point."""
        ...

    def count_keys(self) -> int:
        """How many names that are not directories."""
        ...

    def count_nodes(self) -> int:
        """How many nodes (the inodes statfs counts)."""
        ...

    def create(
        self, key: str, mode: int = ..., exclusive: bool = False, owner: Owner | None = None
    ) -> Entry:
        """An empty key (or the existing one). AlreadyExists with ``exclusive``,
        IsADirectory, NotADirectory."""
        ...

    def mkdir(self, key: str, mode: int = ..., owner: Owner | None = None) -> Entry:
        """A directory (and missing ones above). AlreadyExists, NotADirectory."""
        ...

    def symlink(self, key: str, target: bytes, owner: Owner | None = None) -> Entry:
        """A symbolic link to ``target``. AlreadyExists, NameTooLong, InvalidInput."""
        ...

    def mknod(
        self, key: str, kind: int, mode: int, rdev: int = 0, owner: Owner | None = None
    ) -> Entry:
        """A FIFO, socket or device node (mknod(2)); no value. AlreadyExists,
        NotADirectory, InvalidInput (a kind that is not special, a bad ``rdev``)."""
        ...

    def readlink(self, key: str) -> bytes:
        """A symlink's target. KeyNotFound, InvalidInput (EINVAL: not a symlink)."""
        ...

    def link(self, existing: str, new: str) -> Entry:
        """A second name for a node. AlreadyExists, NotPermitted (a directory),
        TooManyLinks (EMLINK)."""
        ...

    def delete(self, key: str) -> Entry:
        """Remove a name (unlink) and return the entry as it was; a node that lost its last
        name goes to the archive. KeyNotFound, IsADirectory."""
        ...

    def rmdir(self, key: str) -> None:
        """Remove an empty directory. KeyNotFound, NotADirectory, NotEmpty."""
        ...

    def rename(self, old: str, new: str) -> None:
        """rename(2) in one transaction. KeyNotFound, InvalidInput, IsADirectory,
        NotADirectory, NotEmpty."""
        ...

    def exchange(self, one: str, other: str) -> None:
        """Swap two names' nodes atomically (RENAME_EXCHANGE). KeyNotFound,
        InvalidInput (one inside the other)."""
        ...

    def chmod(self, key: str, mode: int) -> Entry:
        """Permission bits (0o7777); ctime now; the entry as it was before. KeyNotFound."""
        ...

    def chown(self, key: str, uid: int | None, gid: int | None) -> Entry:
        """Owner and group (None keeps); ctime now; the entry as it was before.
        KeyNotFound."""
        ...

    def utimens(self, key: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        """Access and modification times (None keeps); ctime now. KeyNotFound."""
        ...

    # --- values ---------------------------------------------------------------------
    def read(self, node_id: int, offset: int, size: int, valid: int | None = None) -> bytes:
        """Bytes of a value at an offset, from one committed version."""
        ...

    def iter_value(self, key: str) -> Iterator[bytes]:
        """A whole value in pieces, of one committed version. KeyNotFound, IsADirectory."""
        ...

    def get(self, key: str) -> bytes:
        """A whole value, of one committed version. KeyNotFound, IsADirectory."""
        ...

    def set(
        self,
        key: str,
        value: bytes | BinaryIO,
        mode: int | None = None,
        ttl_s: float | None = None,
        owner: Owner | None = None,
    ) -> Entry:
        """Create or replace a value in one transaction. ValueTooLarge (EFBIG),
        SchemaViolation (EINVAL), IsADirectory, NotADirectory, InvalidName."""
        ...

    def compare_and_set(
        self,
        key: str,
        value: bytes | BinaryIO,
        *,
        if_version: int | None = None,
        if_absent: bool = False,
        mode: int | None = None,
        ttl_s: float | None = None,
        owner: Owner | None = None,
    ) -> tuple[Entry, int]:
        """:meth:`set`, checked in the same transaction: with ``if_version`` only when the
        key's current version (:meth:`current_version`) is that number, with
        ``if_absent`` only when no key of that name exists. Returns the entry and the
        new version. VersionConflict (EAGAIN, exit 7), KeyExists (EEXIST, exit 7),
        InvalidInput (both conditions, a negative version), and what :meth:`set` raises."""
        ...

    def current_version(self, key: str) -> int:
        """The version of ``key``'s current value: the id of the newest history row of
        the key (``kyfs history``), 0 for a key with no recorded change. KeyNotFound,
        IsADirectory."""
        ...

    def get_versioned(self, key: str) -> tuple[bytes, int]:
        """The whole value of ``key`` and its version (:meth:`current_version`), read
        in one transaction. KeyNotFound, IsADirectory, DamagedBlock."""
        ...

    def commit(
        self,
        node_id: int,
        *,
        size: int,
        valid: int,
        changes: Changes | Iterable[tuple[int, bytes]],
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        pid: int | None = None,
        holes: Sequence[tuple[int, int]] = (),
    ) -> bool:
        """Apply an open file's buffered blocks (``block_size`` each) in one transaction
        (times in ns, UTC: mtime now when None, atime kept when None; mode, uid and gid
        kept when None; ctime now; ``pid`` the writing process, whose closes in quick
        succession make one version), then make the byte ranges ``holes`` (``[start,
        end)``) holes that read as zeros and cost no storage; False when the node is
        gone. ValueTooLarge, SchemaViolation, NoSpace, DamagedBlock."""
        ...

    def next_data(self, node_id: int, offset: int) -> int | None:
        """The first position at or after ``offset`` holding stored bytes of the node's
        value, or None when only a hole follows (lseek(2)'s SEEK_DATA)."""
        ...

    def next_hole(self, node_id: int, offset: int) -> int:
        """The first position at or after ``offset`` that no stored block covers; may be
        at or past the size (lseek(2)'s SEEK_HOLE, before the caller's clamp)."""
        ...

    def truncate(self, key: str, size: int) -> None:
        """Cut or grow a value. KeyNotFound, IsADirectory, ValueTooLarge."""
        ...

    def sync(self) -> None:
        """Make every committed change durable against power loss."""
        ...

    # --- extended attributes (kyfs.core.xattrs: limits and namespaces) ---------------------
    def xattr_names(self, key: str) -> list[str]:
        """The extended attribute names of the node at ``key``, by their bytes. ENOENT."""
        ...

    def get_xattr(self, key: str, name: str) -> bytes:
        """Attribute ``name`` of the node at ``key``. KeyNotFound, NoAttribute (ENODATA)."""
        ...

    def xattr_in_use(self, name: str) -> bool:
        """False when no node of the workspace has attribute ``name`` (from memory while
        no other connection committed since; kyfs.engine.sql.xattrs); True when some may."""
        ...

    def set_xattr(self, key: str, name: str, value: bytes, flags: int = 0) -> None:
        """Set attribute ``name`` of the node at ``key`` (hard links share it); ``flags``:
        XATTR_CREATE (AlreadyExists, EEXIST) or XATTR_REPLACE (NoAttribute, ENODATA).
        AttributeNotSupported (ENOTSUP), AttributeNameTooLong (ERANGE, over 255 bytes),
        AttributeTooLarge (E2BIG, a value over 64 KiB), AttributesFull (ENOSPC, the node's
        names past 64 KiB), KeyNotFound."""
        ...

    def remove_xattr(self, key: str, name: str) -> None:
        """Remove attribute ``name`` of the node at ``key``. KeyNotFound, NoAttribute."""
        ...

    def set_xattr_and_mode(self, key: str, name: str, value: bytes | None, mode: int) -> None:
        """Store (None: remove) attribute ``name`` and set the permission bits ``mode`` of
        the node at ``key`` in one transaction (a POSIX ACL and the mode it implies)."""
        ...

    # --- TTL, history, archive ------------------------------------------------------------
    def set_ttl(self, key: str, seconds: float | None) -> Entry:
        """Expire ``key`` in ``seconds`` (None: never). KeyNotFound, IsADirectory."""
        ...

    def expiry(self, key: str) -> int | None:
        """When ``key`` expires (ns, UTC), or None. KeyNotFound."""
        ...

    def sweep_expired(self, now_ns: int | None = None) -> int:
        """Move every expired node to the archive; returns how many."""
        ...

    def history(self, key: str) -> list[HistoryEntry]:
        """Every recorded change of ``key``, oldest first."""
        ...

    def version(self, version: int) -> HistoryEntry | None:
        """One history row by its id."""
        ...

    def version_value(self, version: int, limit: int | None = None) -> bytes:
        """The value a version kept (its first ``limit`` bytes). KeyNotFound, DamagedBlock."""
        ...

    def thin_history(self, now_ns: int) -> int:
        """Thin every key's history to the retention; returns how many rows went."""
        ...

    def history_keys(self, prefix: str = "") -> list[str]:
        """Keys with recorded history (live or not)."""
        ...

    def timeline(
        self,
        after: int = 0,
        *,
        since_ns: int | None = None,
        prefix: str = "",
        limit: int | None = None,
    ) -> list[Change]:
        """Changes (history rows) after history id ``after``, oldest first, with who made
        them; ``since_ns`` (ns UTC), ``prefix`` and ``limit`` narrow them. For ``kyfs
        log`` and ``kyfs watch`` (kyfs.timeline)."""
        ...

    def start_watching(self) -> None:
        """Mark where ``changes(None)`` starts: the daemon's engine calls it as it opens
        the workspace, so its watcher misses nothing that happens before its first look."""
        ...

    def changes(self, cursor: int | None) -> tuple[int, list[str]]:
        """(new cursor, names changed since ``cursor`` by other connections or by
        expiry); ``cursor`` None starts watching. For the mount's cache invalidation."""
        ...

    def restore_version(
        self, key: str, version: int | None = None, at_ns: int | None = None
    ) -> Entry:
        """Write back an old version as a new change. KeyNotFound."""
        ...

    def archived(self, key: str | None = None) -> list[Archived]:
        """Archived entries, newest deletion first."""
        ...

    def restore(self, key: str, archive_id: int | None = None, force: bool = False) -> Entry:
        """Bring an archived node back. KeyNotFound, AlreadyExists."""
        ...

    def restore_teardown(self) -> int:
        """Undo the deletions that emptied the workspace; returns how many came back."""
        ...

    def purge_archive(self, before_ns: int) -> int:
        """Delete for good what was archived before ``before_ns``; returns how many."""
        ...

    # --- imports, settings, rules -----------------------------------------------------------
    def import_entries(self, items: Iterable[ImportItem], conflict: str = "error") -> int:
        """Many keys in one transaction. AlreadyExists with ``conflict="error"``."""
        ...

    def import_archived(self, items: Iterable[tuple[ImportItem, int]]) -> int:
        """(item, deleted_ns) pairs straight into the archive."""
        ...

    def import_history(self, items: Iterable[ImportVersion]) -> int:
        """Imported history rows."""
        ...

    def retention(self) -> Retention:
        """How much history is kept per key (kyfs.core.retention)."""
        ...

    def meta(self) -> dict[str, str]:
        """The workspace's settings."""
        ...

    def set_meta(self, name: str, value: str | None) -> None:
        """Set (None: remove) one setting."""
        ...

    def set_schema(self, glob: str, schema: dict[str, Any]) -> None:
        """Attach a JSON Schema to a key glob. InvalidInput."""
        ...

    def schemas(self) -> list[dict[str, Any]]:
        """The schema rules."""
        ...

    def empty_refused(self, key: str) -> str | None:
        """Why a rule refuses an empty value at ``key``, or None."""
        ...

    def violations(self, glob: str, schema: dict[str, Any]) -> list[str]:
        """Stored keys matching ``glob`` that break ``schema``, as sentences."""
        ...

    def clear_schema(self, glob: str | None = None) -> int:
        """Remove rules; returns how many."""
        ...

    # --- search, checking, snapshots ------------------------------------------------------
    def flush_index(self, limit: int | None = None) -> int:
        """Catch the search index up with up to ``limit`` pending writes (all when None);
        returns how many nodes. Searches do it first themselves."""
        ...

    def search(self, match: str, limit: int, with_text: bool = True) -> list[Match]:
        """The best matches of an FTS5-syntax query. InvalidQuery (EINVAL, exit 2)."""
        ...

    def search_stats(self, terms: Iterable[str]) -> tuple[int, int, dict[str, int]]:
        """(documents, total tokens, {term: documents}) for cross-workspace scoring."""
        ...

    # --- vectors (kyfs.engine.sql.vectors) ----------------------------------------------
    def vector_space(self, name: str = ...) -> Space | None:
        """The vector space ``name`` (default: the keys' embeddings), or None."""
        ...

    def keep_embeddings(self, model: str, dim: int) -> bool:
        """Keep an embedding of every key made by ``model``; True when all became pending."""
        ...

    def drop_embeddings(self) -> bool:
        """Keep no embeddings of the keys; True when it kept some."""
        ...

    def pending_embeddings(self, limit: int) -> list[tuple[int, int, str | None]]:
        """Up to ``limit`` stale embeddings: (node id, mark, text to embed or None)."""
        ...

    def store_embeddings(self, model: str, done: Iterable[tuple[int, int, Any]]) -> int:
        """Store (node id, mark, vector or None) made by ``model``; returns how many."""
        ...

    def count_pending_embeddings(self) -> int:
        """How many nodes wait for their embedding."""
        ...

    def nearest(
        self, space: str, query: Any, limit: int, allowed: Collection[int] | None = None
    ) -> list[tuple[int, float]]:
        """The ``limit`` items of ``space`` nearest ``query``: (item, cosine), best first."""
        ...

    def collections(self) -> list[Space]:
        """Every collection, by name."""
        ...

    def create_collection(self, name: str, dim: int) -> None:
        """A new collection of ``dim``-dimensional vectors. AlreadyExists (EEXIST)."""
        ...

    def drop_collection(self, name: str) -> int:
        """Remove a collection; returns how many items it had. KeyNotFound (ENOENT)."""
        ...

    def put_items(
        self,
        collection: str,
        items: Iterable[tuple[str, Any, dict[str, Any] | None, str | None]],
    ) -> int:
        """Insert or replace (name, vector, metadata, document) items; returns how many."""
        ...

    def delete_items(self, collection: str, names: Iterable[str]) -> int:
        """Remove items by name; returns how many there were."""
        ...

    def count_items(self, collection: str) -> int:
        """How many items a collection holds."""
        ...

    def query_items(
        self, collection: str, query: Any, limit: int, where: dict[str, Any] | None = None
    ) -> list[CollectionItem]:
        """The items nearest ``query`` whose metadata matches ``where``, best first."""
        ...

    # --- snapshots (kyfs.engine.sql.snapshots) ------------------------------------------
    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, oldest first."""
        ...

    def create_snapshot(self, name: str | None = None) -> Snapshot:
        """A snapshot of the workspace now. InvalidName (EINVAL), AlreadyExists (EEXIST)."""
        ...

    def delete_snapshot(self, name: str) -> Snapshot:
        """Remove a snapshot; returns what it was. SnapshotNotFound (ENOENT)."""
        ...

    def restore_snapshot(self, name: str) -> int:
        """Make the workspace what the snapshot holds; returns how many names changed."""
        ...

    def snapshot_stat(self, name: str, key: str) -> Entry:
        """A name of a snapshot (``id``: the item's). SnapshotNotFound, KeyNotFound."""
        ...

    def snapshot_children(self, name: str, directory: str = "") -> list[Entry]:
        """The names directly inside ``directory`` of a snapshot."""
        ...

    def snapshot_readlink(self, name: str, key: str) -> bytes:
        """A symbolic link's target in a snapshot."""
        ...

    def snapshot_xattrs(self, item_id: int) -> dict[bytes, bytes]:
        """The extended attributes a snapshot item had (name -> value)."""
        ...

    def read_snapshot(self, item_id: int, offset: int, size: int) -> bytes:
        """Bytes of a snapshot item's value (:meth:`snapshot_stat` gives the id)."""
        ...

    def snapshot_value(self, name: str, key: str) -> bytes:
        """The whole value of a key in a snapshot."""
        ...

    def fingerprints(self, snapshot: str | None = None) -> dict[str, Fingerprint]:
        """What ``kyfs diff`` compares of every name, now or in a snapshot."""
        ...

    def check(self) -> list[str]:
        """Every problem found, as sentences ([] when sound)."""
        ...

    def repair(self) -> list[str]:
        """Repair what can be; returns what was done."""
        ...

    def backup_to(self, target: Path) -> None:
        """A consistent snapshot into a new file ``target``."""
        ...

    def clone_to(self, target: Path) -> bool:
        """A consistent snapshot into a new file ``target`` that shares its storage with
        the workspace (a reflink); False, leaving nothing, where that cannot be."""
        ...

    def file_size(self) -> int:
        """Bytes the workspace takes in storage."""
        ...

    def usage(self) -> Usage:
        """Where the workspace's bytes go (live, history, archive, free)."""
        ...

    def compact(self) -> int:
        """Give the free space inside the workspace's storage back to the operating
        system now; returns how many bytes it shrank by."""
        ...

    def checkpoint(self) -> bool:
        """Fold pending changes into the main storage; True when it could."""
        ...

    def close(self) -> None:
        """Release the workspace; it cannot be used afterwards."""
        ...


class Usage(NamedTuple):
    """Where a workspace's bytes go (``kyfs du``), in bytes.

    Attributes:
        live: stored (compressed) bytes of the blocks live values use.
        history: stored bytes of the blocks only history versions and snapshots use.
        archive: stored bytes of the blocks only archived values use (and versions).
        search: bytes of the search index (the text it keeps, packed, and the index).
        values: the live values' own length (what ``du`` of a copy would count).
        file: what the workspace takes in storage (SQLite: the database and its WAL;
            PostgreSQL: its tables, indexes and TOAST).
        free: bytes inside the file not in use, which ``kyfs compact`` gives back
            (SQLite's free pages); None where the engine cannot tell (PostgreSQL).
    """

    live: int
    history: int
    archive: int
    search: int
    values: int
    file: int
    free: int | None


class WorkspaceInfo(NamedTuple):
    """A summary of one workspace: ``keys`` (count), ``size`` (bytes in storage), where it
    lives (``path``), the ``project`` directory of a project workspace, and a cache
    workspace's ``ttl_s`` (seconds)."""

    name: str
    keys: int
    size: int
    path: Path
    project: str | None = None
    ttl_s: float | None = None


class TrashedWorkspace(NamedTuple):
    """A dropped workspace: its ``name``, when it was ``dropped`` (UTC), ``size`` in bytes,
    and where it waits (``path``: a SQLite file in the trash, or a PostgreSQL schema)."""

    name: str
    dropped: dt.datetime
    size: int
    path: Path


class Engine(Protocol):
    """The set of workspaces: list, create, drop, rename, open; the trash; checks.

    Coordination between processes (a daemon and any number of CLI commands) is the
    engine's: a workspace is never seen half created, half renamed or half dropped.
    """

    def shared(self) -> AbstractContextManager[None]:
        """Hold off create/drop/rename while the caller uses workspaces by name."""
        ...

    def names(self) -> list[str]:
        """Every workspace name, sorted."""
        ...

    def settle_tags(self) -> list[str]:
        """Make every workspace's inode tag valid and unique (kyfs.core.inodes; the daemon
        calls it at mount); returns what was changed, as sentences.

        Raises:
            OutOfInodes: (ENOSPC, exit 4) no tag is free for one that needs it.
        """
        ...

    def exists(self, name: str) -> bool:
        """True when workspace ``name`` exists. InvalidName."""
        ...

    def create(self, name: str, owner: Owner | None = None, mode: int | None = None) -> None:
        """An empty workspace whose top directory belongs to ``owner``. InvalidName,
        WorkspaceExists (EEXIST, exit 3)."""
        ...

    def drop(self, name: str, *, only_if_empty: bool = False) -> Path | str:
        """Move a workspace to the trash; returns where it waits. WorkspaceNotFound,
        NotEmpty, NotPermitted."""
        ...

    def rename(self, old: str, new: str) -> None:
        """Rename a workspace. WorkspaceNotFound, WorkspaceExists, NotPermitted."""
        ...

    def using(self, name: str) -> AbstractContextManager[Workspace]:
        """Workspace ``name`` for a ``with`` block, held against create/drop/rename and
        released at its end. WorkspaceNotFound, StorageError."""
        ...

    def open(self, name: str) -> Workspace:
        """Workspace ``name`` (call under :meth:`shared`). WorkspaceNotFound, StorageError."""
        ...

    def using_file(self, path: Path) -> AbstractContextManager[Workspace]:
        """The workspace file ``path`` outside the data directory (``kyfs --db``) for a
        ``with`` block. WorkspaceNotFound (no file), UntrustedFile, StorageError."""
        ...

    def info(self, name: str) -> WorkspaceInfo:
        """Key count and size. WorkspaceNotFound."""
        ...

    def check(self, name: str, repair: bool = False) -> tuple[list[str], list[str]]:
        """(problems left, repairs done). WorkspaceNotFound."""
        ...

    def cached(self) -> list[str]:
        """Names of the workspaces this engine keeps open (the daemon's cache), sorted."""
        ...

    def short(self) -> bool:
        """True while the disk is short of space (the disk-full reserve given up): undo
        data is then not kept. Always False where the engine keeps no reserve."""
        ...

    def ensure_reserve(self) -> bool:
        """Make the disk-full reserve again when there is room; True when it is there."""
        ...

    def fold_limit(self, names: Iterable[str]) -> int:
        """Pages a workspace's write-ahead log may hold before its writer folds it in,
        for the disk as it is now (0: no limit, a checkpointer folds it)."""
        ...

    def checkpoint(self, names: Iterable[str], idle: bool = False) -> list[str]:
        """Fold the write-ahead log of each workspace of ``names`` that changed since the
        last call into its database (SQLite: a PASSIVE checkpoint; PostgreSQL: nothing,
        its server's checkpointer does it); returns the names folded. With ``idle`` (the
        mount is at rest) also give free space back (SQLite: free pages, the WAL). Never
        raises for one workspace: it is tried again at the next call."""
        ...

    def wait_for_changes(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for word that another connection changed
        something; True when told (PostgreSQL's NOTIFY), False when the time ran out or
        the engine cannot tell (SQLite: the caller polls)."""
        ...

    def close(self) -> None:
        """Release every open workspace."""
        ...
