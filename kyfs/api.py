"""The Python API: one workspace as an object, for scripts and agents (docs/api.md).

    import kyfs

    with kyfs.open("project_alpha") as ws:
        ws.set("user.name", "Alice")
        value, version = ws.get_versioned("counter")
        ws.set("counter", str(int(value) + 1), if_version=version)  # VersionConflict: retry

A :class:`Workspace` is what the CLI's key commands use (kyfs.cli.keys), so both answer
alike: the same identity rules (``$KYFS_USER``, which ``kyfs --user`` sets, through
kyfs.app.engine_session), the same workspace resolution (kyfs.app.session), the same
errors (kyfs.core.errors: each with its errno and the CLI's exit code).

It keeps the storage engine open from :func:`open` to :meth:`Workspace.close` (or the
end of the ``with`` block) and takes the workspace for each call only: between calls
it holds no lock, so ``kyfs drop`` or ``kyfs rename`` of a workspace never waits for a
script that merely has it open; a call after the workspace was dropped raises
WorkspaceNotFound. Each call is one transaction (a compare-and-swap checks and writes
in the same one: kyfs.engine.sql.values.ValuesMixin.compare_and_set).

Room is left for snapshots, forks and watching (issue 29): they will be methods of
:class:`Workspace` too, over the engine it holds.

Thread-safety: a Workspace is used by one thread at a time; open one per thread or
process (each opens its own engine and connections).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from kyfs import app
from kyfs.core.errors import InvalidInput, KyfsError, StorageError, WorkspaceExists
from kyfs.core.nodes import Change, Entry, HistoryEntry

if TYPE_CHECKING:
    from kyfs.core.snapshots import Change as SnapshotChange
    from kyfs.core.snapshots import Snapshot
    from kyfs.core.vectors import CollectionItem, Space
    from kyfs.engine import base
    from kyfs.engine.scoped import ScopedEngine
    from kyfs.search import Hit

ENV_WORKSPACE = "KYFS_WORKSPACE"  # the workspace when none is named (as the CLI's -w)

Value = bytes | str | BinaryIO  # what set stores: bytes, text (as UTF-8), or a binary file


class Versioned(NamedTuple):
    """A value and its version (:meth:`Workspace.get_versioned`): ``value`` the bytes,
    ``version`` the number :meth:`Workspace.set` takes as ``if_version``."""

    value: bytes
    version: int


class Stored(NamedTuple):
    """What :meth:`Workspace.set` wrote: ``key``, ``size`` in bytes, the new ``version``,
    and when the key expires (``expires_ns``: ns since the epoch, UTC; None: never)."""

    key: str
    size: int
    version: int
    expires_ns: int | None


def open(name: str | None = None, *, create: bool = False) -> Workspace:
    """Workspace ``name`` (else ``$KYFS_WORKSPACE``, else the active one, else
    ``default``, as the CLI chooses; ``$KYFS_DB_PATH`` names a workspace file), as the
    current identity sees it. ``create``: make it when it does not exist. Close it
    (``with`` or :meth:`Workspace.close`).

    Raises:
        WorkspaceNotFound: (ENOENT, exit 1) no such workspace (without ``create``).
        InvalidName: (EINVAL, exit 2) a bad name or ``$KYFS_USER``.
        StorageError: (EIO, exit 4) the engine cannot be opened.
    """
    workspace = Workspace(name, create=create)
    try:
        with workspace._using():  # WorkspaceNotFound now, not at the first call
            pass
    except BaseException:
        workspace.close()
        raise
    return workspace


class Workspace:
    """One workspace of the data directory, open for calls (see the module docstring).

    Keys follow docs/usage.md's naming rules; values are bytes (text is stored as
    UTF-8); times are ns since the epoch (UTC), durations seconds, sizes bytes.

    Attributes:
        name: the workspace's name as the identity writes it (``W``, ``OWNER~W``, or
            the stem of a ``$KYFS_DB_PATH`` file).
    """

    name: str

    def __init__(
        self, name: str | None = None, *, create: bool = False, addressed: bool = False
    ) -> None:
        """Workspace ``name`` (:func:`open`, which also checks that it exists; here the
        first call does); ``addressed``: the name came from a ``KEY@WORKSPACE`` argument
        (said in the not-found hint)."""
        db_path = os.environ.get(app.ENV_DB_PATH)
        if name is None and not db_path:
            name = os.environ.get(ENV_WORKSPACE) or None
        self._asked = name
        self._addressed = addressed
        self.name = Path(db_path).stem if db_path and name is None else app.resolve_workspace(name)
        if not db_path:
            self._asked = self.name  # bound now: a later `kyfs use` does not move it
        self._stack = contextlib.ExitStack()
        # cache: the workspace stays open between calls (checked at each: dropped, renamed)
        engine = self._stack.enter_context(app.engine_session(cache=True))
        self._engine: ScopedEngine | None = engine
        if create and not db_path:
            try:
                if not engine.exists(self.name):
                    with contextlib.suppress(WorkspaceExists):
                        engine.create(self.name)
            except BaseException:
                self.close()
                raise

    # --- the object's life ------------------------------------------------------------
    def close(self) -> None:
        """Close the engine; the object cannot be used afterwards (a second close does
        nothing)."""
        self._engine = None
        self._stack.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._engine is None else "open"
        return f"<kyfs.Workspace {self.name!r} {state}>"

    @contextlib.contextmanager
    def _using(self, name: str | None = None) -> Iterator[base.Workspace]:
        """The engine's workspace for one call, under the workspaces lock."""
        if self._engine is None:
            raise InvalidInput(f"workspace {self.name} is closed: open it again")
        with app.session(self._asked, addressed=self._addressed, engine=self._engine) as (
            _,
            workspace,
        ):
            yield workspace

    # --- values ---------------------------------------------------------------------
    def stat(self, key: str) -> Entry:
        """The entry at ``key`` (kyfs.core.nodes.Entry: kind, mode, size in bytes, owner,
        times in ns UTC, number of names).

        Raises:
            KeyNotFound: (ENOENT, exit 1).
        """
        with self._using() as workspace:
            return workspace.stat(key)

    def get(self, key: str) -> bytes:
        """The value of ``key`` (a symbolic link's: its target, not followed).

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3).
            DamagedBlock: (EIO, exit 4) a stored block fails its checksum.
        """
        with self._using() as workspace:
            return workspace.get(key)

    def stream(self, key: str) -> Iterator[bytes]:
        """The value of ``key`` in pieces of at most 256 KiB, all of one committed
        version, in bounded memory (the workspace is held until the iteration ends).

        Raises:
            As :meth:`get`.
        """
        with self._using() as workspace:
            yield from workspace.iter_value(key)

    def get_versioned(self, key: str) -> Versioned:
        """The value of ``key`` and its version, read together: what a
        read-modify-write gives back to ``set(key, new, if_version=version)``.

        Raises:
            As :meth:`get`.
        """
        with self._using() as workspace:
            return Versioned(*workspace.get_versioned(key))

    def version(self, key: str) -> int:
        """The version of ``key``'s current value: the number ``kyfs history`` shows for
        its newest change (0: a key with no recorded change). Every write of the value
        makes a new, higher one. Read it before the value, or use :meth:`get_versioned`.

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3).
        """
        with self._using() as workspace:
            return workspace.current_version(key)

    def set(
        self,
        key: str,
        value: Value,
        *,
        if_version: int | None = None,
        if_absent: bool = False,
        ttl: float | None = None,
    ) -> Stored:
        """Store ``value`` at ``key`` (text as UTF-8; a binary file is read to its end),
        creating or replacing it in one transaction; it expires ``ttl`` seconds from now
        (None: never, or the cache workspace's TTL). With ``if_version`` only when the
        key's version is still that number; with ``if_absent`` only when the key does
        not exist (compare-and-swap: docs/usage.md).

        Raises:
            VersionConflict: (EAGAIN, exit 7) the version moved on, or the key is gone.
            KeyExists: (EEXIST, exit 7) ``if_absent`` and the key exists.
            InvalidName: (EINVAL, exit 2). ValueTooLarge: (EFBIG, exit 2).
            SchemaViolation: (EINVAL, exit 2). IsADirectory, NotADirectory: (exit 3).
            InvalidInput: (EINVAL, exit 2) both conditions, a negative version, a bad TTL.
            ReadOnly: (EROFS, exit 6) a workspace shared read-only with this identity.
        """
        data = value.encode() if isinstance(value, str) else value
        with self._using() as workspace:
            entry, version = workspace.compare_and_set(
                key, data, if_version=if_version, if_absent=if_absent, ttl_s=ttl
            )
            return Stored(key, entry.size, version, workspace.expiry(key))

    def delete(self, key: str) -> None:
        """Delete ``key``; it waits in the archive (``kyfs restore KEY``).

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3).
        """
        with self._using() as workspace:
            workspace.delete(key)

    # --- listing, search, history ----------------------------------------------------------
    def keys(self, prefix: str = "", glob: str | None = None) -> list[str]:
        """The keys starting with ``prefix`` (and matching the glob ``glob``, e.g.
        ``user.*``), sorted by code point."""
        with self._using() as workspace:
            return workspace.keys(prefix, glob=glob)

    def search(
        self,
        text: str,
        *,
        raw: bool = False,
        limit: int = 20,
        semantic: bool = False,
        fts: bool = False,
    ) -> list[Hit]:
        """The best ``limit`` matches of ``text``, best first (kyfs.search.Hit: key, score,
        snippet): by words (BM25; FTS5 syntax with ``raw``), hybrid with meaning where the
        workspace keeps embeddings (unless ``fts``), or by meaning only with ``semantic``
        (cosine similarity; the workspace keeps embeddings from then on), as ``kyfs
        search`` (docs/usage.md, "Semantic search").

        Raises:
            InvalidQuery: (EINVAL, exit 2) an empty query, or bad FTS5 syntax with ``raw``.
            InvalidInput: (exit 2) ``semantic`` with ``raw`` or ``fts``.
            EmbedderUnavailable: (EIO, exit 4) the embedder cannot be loaded.
            StorageError: (EIO, exit 4) the workspace could not be searched.
        """
        from kyfs import search

        if semantic and (raw or fts):
            raise InvalidInput("semantic search ranks by meaning: not with raw or fts")
        if semantic:
            found = search.semantic([self.name], text, limit=limit, use=lambda _: self._using())
        else:
            found = search.search(
                [self.name], text, raw=raw, limit=limit, use=lambda _: self._using(),
                parallel=False, hybrid=not fts,
            )  # fmt: skip
        if found.errors:
            raise StorageError("; ".join(found.errors.values()))
        return found.hits

    # --- collections (contextd's; kyfs.engine.sql.vectors) --------------------------------
    def create_collection(self, name: str, dim: int) -> None:
        """A new, empty collection ``name`` of ``dim``-dimensional vectors.

        Raises:
            InvalidName / InvalidInput: (exit 2). AlreadyExists: (EEXIST, exit 3).
        """
        with self._using() as workspace:
            workspace.create_collection(name, dim)

    def collections(self) -> list[Space]:
        """Every collection (kyfs.core.vectors.Space: name, dim, codec, model), by name."""
        with self._using() as workspace:
            return workspace.collections()

    def add(
        self,
        collection: str,
        items: Iterable[tuple[str, Sequence[float], dict[str, Any] | None, str | None]],
    ) -> int:
        """Insert or replace items ``(name, vector, metadata, document)`` of
        ``collection`` in one transaction; returns how many.

        Raises:
            KeyNotFound: (exit 1) no such collection. InvalidInput: (exit 2) a bad item
                (nothing is stored).
        """
        with self._using() as workspace:
            return workspace.put_items(collection, items)

    def query(
        self,
        collection: str,
        vector: Sequence[float],
        *,
        limit: int = 10,
        where: dict[str, Any] | None = None,
    ) -> list[CollectionItem]:
        """The ``limit`` items of ``collection`` nearest ``vector`` (cosine similarity,
        exact), best first, among those whose metadata holds every ``where`` field.

        Raises:
            KeyNotFound: (exit 1) no such collection. InvalidInput: (exit 2) a vector of
                other dimensions.
        """
        with self._using() as workspace:
            return workspace.query_items(collection, vector, limit, where)

    def remove(self, collection: str, names: Iterable[str]) -> int:
        """Remove items of ``collection`` by name; returns how many there were.

        Raises:
            KeyNotFound: (exit 1) no such collection.
        """
        with self._using() as workspace:
            return workspace.delete_items(collection, names)

    def drop_collection(self, name: str) -> int:
        """Remove collection ``name`` and its items; returns how many it had.

        Raises:
            KeyNotFound: (exit 1) no such collection.
        """
        with self._using() as workspace:
            return workspace.drop_collection(name)

    def history(self, key: str) -> list[HistoryEntry]:
        """Every recorded change of ``key``, oldest first (kyfs.core.nodes.HistoryEntry:
        ``id`` is the version, ``size`` None for a change that keeps no value); [] for
        a key without history, live or not."""
        with self._using() as workspace:
            return workspace.history(key)

    def restore(
        self,
        key: str,
        *,
        version: int | None = None,
        at: str | None = None,
        force: bool = False,
    ) -> Entry:
        """Bring ``key`` back, as ``kyfs restore``: without ``version`` or ``at``, the
        deleted key from the archive (``force``: over a key that is there now); with
        ``version`` (a HistoryEntry's id) or ``at`` (an ISO 8601 time, e.g.
        ``2026-11-21T10:00:00Z``: the value it had then) that older value, written as a
        new version. Returns the entry restored.

        Raises:
            KeyNotFound: (ENOENT, exit 1) nothing archived, no such version.
            AlreadyExists: (EEXIST, exit 3) the key exists (without ``force``).
            InvalidInput: (EINVAL, exit 2) an unreadable ``at``.
        """
        when = None
        if at is not None:
            from kyfs.transfer.sources import parse_time

            when = parse_time(at)
            if when is None:
                raise InvalidInput(f"unreadable time {at!r}: use e.g. 2026-11-21T10:00:00Z")
            when += 999  # times are shown to the microsecond: include that whole microsecond
        with self._using() as workspace:
            if version is not None or when is not None:
                return workspace.restore_version(key, version, when)
            return workspace.restore(key, force=force)

    def log(self, *, since_ns: int | None = None, prefix: str = "") -> list[Change]:
        """Every recorded change of the workspace, oldest first, as ``kyfs log``
        (kyfs.timeline.log): at or after ``since_ns`` (ns UTC), of keys starting with
        ``prefix``; each a kyfs.core.nodes.Change (time, action, key, size, who).

        Raises:
            StorageError: (EIO, exit 4).
        """
        from kyfs import timeline

        with self._using() as workspace:
            return [
                c
                for _, c in timeline.log([(self.name, workspace)], since_ns=since_ns, prefix=prefix)
            ]

    def version_value(self, version: int) -> bytes:
        """The value that version ``version`` (a HistoryEntry's id) kept.

        Raises:
            KeyNotFound: (ENOENT, exit 1) no such version, or it keeps no value.
            DamagedBlock: (EIO, exit 4).
        """
        with self._using() as workspace:
            return workspace.version_value(version)

    def watch(self, prefix: str = "", *, stop: threading.Event | None = None) -> Iterator[Change]:
        """The changes of the workspace committed from now on, by any writer (the mount,
        the CLI, other processes, this one), each once and in commit order, of keys
        starting with ``prefix``, as ``kyfs watch`` (kyfs.timeline.watch); runs until
        ``stop`` is set or the caller stops iterating. Each is a kyfs.core.nodes.Change.

        Raises:
            WorkspaceNotFound: (ENOENT, exit 1) the workspace was dropped meanwhile.
            StorageError: (EIO, exit 4).
        """
        from kyfs import timeline

        if self._engine is None:
            raise InvalidInput(f"workspace {self.name} is closed: open it again")
        with self._using():  # WorkspaceNotFound now
            pass
        for _, change in timeline.watch(self._engine, [self.name], prefix=prefix, stop=stop):
            yield change

    # --- snapshots, forks, diffs (kyfs.snapshots) --------------------------------------
    def snapshot(self, name: str | None = None) -> Snapshot:
        """Make a snapshot of the workspace now, named ``name`` (default: the UTC time,
        ``YYYYmmddTHHMMSSZ``); no value is copied (kyfs.engine.sql.snapshots). Returns
        it (kyfs.core.snapshots.Snapshot: name, created_ns, keys, size in bytes).

        Raises:
            InvalidName: (EINVAL, exit 2). AlreadyExists: (EEXIST, exit 3).
        """
        with self._using() as workspace:
            return workspace.create_snapshot(name)

    def snapshots(self) -> list[Snapshot]:
        """The workspace's snapshots, oldest first."""
        with self._using() as workspace:
            return workspace.snapshots()

    def restore_snapshot(self, name: str) -> int:
        """Make the workspace hold what snapshot ``name`` holds (``kyfs snapshot
        restore``); returns how many names changed.

        Raises:
            SnapshotNotFound: (ENOENT, exit 1).
        """
        with self._using() as workspace:
            return workspace.restore_snapshot(name)

    def delete_snapshot(self, name: str) -> None:
        """Delete snapshot ``name``.

        Raises:
            SnapshotNotFound: (ENOENT, exit 1).
        """
        with self._using() as workspace:
            workspace.delete_snapshot(name)

    def fork(self, new: str, *, snapshot: str | None = None) -> Workspace:
        """Make workspace ``new`` a copy of this one (or of its snapshot ``snapshot``) that
        then lives on its own (``kyfs fork``); returns it, open.

        Raises:
            InvalidName: (EINVAL, exit 2). WorkspaceExists: (EEXIST, exit 3).
            SnapshotNotFound: (ENOENT, exit 1).
        """
        from kyfs import snapshots

        if self._engine is None:
            raise InvalidInput(f"workspace {self.name} is closed: open it again")
        source = self.name if snapshot is None else f"{self.name}@{snapshot}"
        snapshots.fork(self._engine, source, new)
        return open(new)

    def diff(self, old: str | None = None, new: str | None = None) -> list[SnapshotChange]:
        """What changed from tree ``old`` to tree ``new`` (``kyfs diff``): each a snapshot
        name of this workspace, or None for the workspace as it is now. Returns
        kyfs.core.snapshots.Change items (key, status: added, deleted or changed, what).

        Raises:
            SnapshotNotFound: (ENOENT, exit 1).
        """

        if self._engine is None:
            raise InvalidInput(f"workspace {self.name} is closed: open it again")
        trees = [self.name if s is None else f"{self.name}@{s}" for s in (old, new)]
        return self.diff_trees(trees[0], trees[1])

    def diff_trees(self, old: str, new: str) -> list[SnapshotChange]:
        """What changed from tree ``old`` to tree ``new``, each ``W`` (a workspace as it
        is now) or ``W@SNAPSHOT``, of any workspace this identity reads (``kyfs diff``).

        Raises:
            WorkspaceNotFound / SnapshotNotFound: (ENOENT, exit 1). InvalidName: (exit 2).
        """
        from kyfs import snapshots

        if self._engine is None:
            raise InvalidInput(f"workspace {self.name} is closed: open it again")
        return snapshots.diff(self._engine, old, new)


__all__ = ["KyfsError", "Stored", "Versioned", "Workspace", "open"]
