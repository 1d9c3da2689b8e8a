"""One identity's view of an engine (kyfs.core.identity): the engine every CLI command
and the mount use, so the rules of identities and grants are applied in this one place.

:class:`ScopedEngine` takes and gives the names the identity writes (``W`` for its own,
``OWNER~W`` for a grant, ``shared``) and turns them into the stored names of the engine
below; other identities' workspaces are not there (WorkspaceNotFound, ENOENT), a write
through a read-only grant is refused (ReadOnly, EROFS, exit 6) by :class:`ReadOnlyWorkspace`,
managing what is not one's own is refused (NotPermitted, EPERM, exit 6).

Background upkeep (checkpoints, TTL sweeps, the undo cap, the search indexer) runs on
the engine below: it keeps every identity's data alike.

Thread-safety: as the engine below; the read-only wrappers are made once per
workspace object, under a lock, so the daemon's watcher sees one object per workspace.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kyfs.core.errors import NotPermitted, ReadOnly, WorkspaceNotFound
from kyfs.core.identity import MANAGE, READ, WRITE, Grant, Scope
from kyfs.core.names import IDENTITY_SEP, check_workspace_name
from kyfs.engine.base import TrashedWorkspace, Workspace, WorkspaceInfo
from kyfs.platform import config, paths

if TYPE_CHECKING:
    from kyfs.core.nodes import Owner

# The Workspace protocol's methods that change what it holds: refused through a
# read-only grant. Every other member reads (tests/test_identity.py checks that each
# member of kyfs.engine.base.Workspace is in READS or WRITES).
WRITES = frozenset(
    [
        "create",
        "mkdir",
        "symlink",
        "mknod",
        "link",
        "delete",
        "rmdir",
        "rename",
        "exchange",
        "chmod",
        "chown",
        "utimens",
        "set",
        "compare_and_set",
        "commit",
        "truncate",
        "set_ttl",
        "set_xattr",
        "set_xattr_and_mode",
        "remove_xattr",
        "thin_history",
        "restore_version",
        "restore",
        "restore_teardown",
        "purge_archive",
        "import_entries",
        "import_archived",
        "import_history",
        "set_meta",
        "set_schema",
        "clear_schema",
        "repair",
        "compact",
        "release_undo",
        "keep_embeddings",
        "drop_embeddings",
        "create_collection",
        "drop_collection",
        "put_items",
        "delete_items",
        "create_snapshot",
        "delete_snapshot",
        "restore_snapshot",
    ]
)
READS = frozenset(
    [
        "block_size",
        "lock",
        "stat",
        "xattr_names",
        "get_xattr",
        "xattr_in_use",
        "stat_id",
        "inode",
        "children",
        "keys",
        "keys_of",
        "count_keys",
        "count_nodes",
        "readlink",
        "read",
        "next_data",
        "next_hole",
        "iter_value",
        "get",
        "get_versioned",
        "current_version",
        "expiry",
        "sweep_expired",
        "history",
        "version",
        "version_value",
        "history_keys",
        "timeline",
        "start_watching",
        "changes",
        "archived",
        "retention",
        "meta",
        "schemas",
        "empty_refused",
        "violations",
        "flush_index",
        "search",
        "search_stats",
        "check",
        "backup_to",
        "clone_to",
        "file_size",
        "usage",
        "checkpoint",
        "sync",
        "close",
        "oldest_undo_ns",
        # the keys' embeddings are derived, as the full-text index: any reader catches up
        "vector_space",
        "pending_embeddings",
        "store_embeddings",
        "count_pending_embeddings",
        "nearest",
        "collections",
        "count_items",
        "query_items",
        "snapshots",
        "snapshot_stat",
        "snapshot_children",
        "snapshot_readlink",
        "snapshot_xattrs",
        "read_snapshot",
        "snapshot_value",
        "fingerprints",
    ]
)


class ReadOnlyWorkspace:
    """A workspace seen through a read-only grant: reads go to ``inner``, every member
    of WRITES raises ReadOnly (EROFS, exit 6). ``read_only`` is True (the mount refuses
    an open for writing with it)."""

    read_only = True

    def __init__(self, inner: Workspace, name: str) -> None:
        self._inner = inner
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr in WRITES:

            def refuse(*args: object, **kwargs: object) -> Any:
                raise ReadOnly(f"{self._name} is shared read-only")

            return refuse
        return getattr(self._inner, attr)


class ScopedEngine:
    """``engine`` as identity ``scope.identity`` sees it (kyfs.core.identity.Scope).

    Names in and out are the identity's; the engine below keeps stored names. With
    ``only`` (``kyfs -w NAME mount``) just that workspace is seen: any other name is not
    found (ENOENT, exit 1), and creating, renaming or dropping one is EPERM. Members
    not listed here pass to the engine below when they take no workspace name
    (ensure_reserve, short, wait_for_changes, ...); a name-taking member the wrapper
    does not know raises AttributeError rather than reach another identity's data.
    """

    _PASS = frozenset(
        [
            "short",
            "ensure_reserve",
            "wait_for_changes",
            "close",
            "strays",
            "tighten",
            "finish_moves",
            "relieve",
            "directory",
            "stage",
            "check_file",  # kyfs --db FILE fsck: a file named outright
        ]
    )

    def __init__(self, engine: Any, scope: Scope, only: str | None = None) -> None:
        self.engine = engine  # the engine below (stored names)
        self.scope = scope
        self.only = only  # the one workspace shown (kyfs -w NAME mount), or None: all
        self._wrapped: dict[str, tuple[object, ReadOnlyWorkspace]] = {}
        self._lock = threading.Lock()
        self._grants_seen = self._grants_state()

    @staticmethod
    def _grants_state() -> tuple[int, int, int] | None:
        try:
            found = os.stat(paths.grants_file())
        except OSError:
            return None
        return found.st_ino, found.st_mtime_ns, found.st_size

    def has_grants_file(self) -> bool:
        """True when the data directory has a grants.toml (what it was when opened)."""
        return self._grants_seen is not None

    def refresh(self) -> None:
        """Read grants.toml again when it changed (a daemon lives longer than a grant):
        called as the set is listed (the mount's watcher does every 0.25 s) and before
        a name of another identity's is resolved, so a grant or its end shows at once."""
        state = self._grants_state()
        if state != self._grants_seen:
            self._grants_seen = state
            self.scope = replace(self.scope, grants=config.load_grants())

    def _stored(self, name: str, op: str = READ) -> str:
        if self.only is not None:
            if name != self.only:
                raise WorkspaceNotFound(
                    f"workspace not found: {name} (this mount shows {self.only})"
                )
            if op == MANAGE:
                raise NotPermitted(f"this mount shows only {self.only}: manage it with kyfs")
        if IDENTITY_SEP in name:
            self.refresh()
        return self.scope.stored(name, op)

    def __getattr__(self, attr: str) -> Any:
        if attr in self._PASS:
            return getattr(self.engine, attr)
        raise AttributeError(f"ScopedEngine has no {attr!r}")

    # --- names -------------------------------------------------------------------------
    def _visible(self, stored: Iterable[str]) -> list[str]:
        seen = (self.scope.visible(name) for name in stored)
        return sorted(n for n in seen if n is not None and self.only in (None, n))

    def _view(self, stored: str, workspace: Workspace) -> Workspace:
        """``workspace`` itself, or its read-only wrapper (one per workspace object)."""
        if not self.scope.read_only(stored):
            return workspace
        with self._lock:
            found = self._wrapped.get(stored)
            if found is None or found[0] is not workspace:
                shown = self.scope.visible(stored) or stored
                found = (workspace, ReadOnlyWorkspace(workspace, shown))
                self._wrapped[stored] = found
            return found[1]

    def shared(self) -> AbstractContextManager[None]:
        """The engine below's lock on the set of workspaces."""
        return self.engine.shared()  # type: ignore[no-any-return]

    def names(self) -> list[str]:
        """The workspaces this identity sees: its own, ``shared``, the granted, sorted."""
        self.refresh()
        return self._visible(self.engine.names())

    def cached(self) -> list[str]:
        """The workspaces this identity sees that the engine below keeps open."""
        return self._visible(self.engine.cached())

    def exists(self, name: str) -> bool:
        """True when this identity sees a workspace ``name``. InvalidName."""
        try:
            stored = self._stored(name, READ)
        except WorkspaceNotFound:
            return False
        return bool(self.engine.exists(stored))

    def create(self, name: str, owner: Owner | None = None, mode: int | None = None) -> None:
        """Create this identity's workspace ``name`` (or ``shared``). As Engine.create;
        NotPermitted (EPERM, exit 6) for a name of another identity's (``OWNER~W``)."""
        if self.only is not None:
            raise NotPermitted(f"this mount shows only {self.only}: create workspaces with kyfs")
        if self.scope.split(name)[0] != self.scope.identity:
            raise NotPermitted(f"{name} would be another identity's: name your own")
        self.engine.create(self._stored(name, WRITE), owner, mode)

    def drop(self, name: str, *, only_if_empty: bool = False) -> Path | str:
        """Move this identity's workspace ``name`` to the trash (Engine.drop); its grants
        end (a new workspace of that name is not shared)."""
        where = self.engine.drop(self._stored(name, MANAGE), only_if_empty=only_if_empty)
        self._regrant(lambda g: None if self._mine(g, name) else g)
        return where  # type: ignore[no-any-return]

    def rename(self, old: str, new: str) -> None:
        """Rename this identity's workspace ``old`` to ``new`` (both its own); its grants
        follow it."""
        self.engine.rename(self._stored(old, MANAGE), self._stored(new, MANAGE))
        if old != new:
            self._regrant(lambda g: g.renamed(new) if self._mine(g, old) else g)

    # --- grants (kyfs share) ---------------------------------------------------------------
    def _mine(self, grant: Grant, name: str) -> bool:
        return (grant.owner, grant.workspace) == (self.scope.identity, name)

    def _regrant(self, change: Callable[[Grant], Grant | None]) -> None:
        """Apply ``change`` to every grant of the data directory (None: drop it) and save."""
        before = config.load_grants()
        after = [g for g in (change(g) for g in before) if g is not None]
        if after != list(before):
            config.save_grants(after)
        self.scope = replace(self.scope, grants=tuple(after))

    def share(self, name: str, grantee: str, read_only: bool = False) -> Grant:
        """Let identity ``grantee`` use this identity's workspace ``name`` (read-only when
        ``read_only``; a grant given before is replaced). Returns the grant.

        Raises:
            InvalidName: (exit 2). WorkspaceNotFound: (exit 1). NotPermitted: (EPERM,
            exit 6) ``shared``, another's workspace, or oneself as ``grantee``.
        """
        self._stored(name, MANAGE)
        if not self.exists(name):
            raise WorkspaceNotFound(f"workspace not found: {name}")
        if check_workspace_name(grantee) == self.scope.identity:
            raise NotPermitted(f"{name} is yours already")
        grant = Grant(self.scope.identity, name, grantee, read_only)
        kept = [
            g for g in config.load_grants() if not (self._mine(g, name) and g.grantee == grantee)
        ]
        config.save_grants([*kept, grant])
        self.scope = replace(self.scope, grants=(*kept, grant))
        return grant

    def unshare(self, name: str, grantee: str | None = None) -> list[Grant]:
        """End the grants of this identity's workspace ``name`` (to ``grantee``, or to
        everyone); returns those ended. NotPermitted (EPERM, exit 6) another's."""
        self._stored(name, MANAGE)
        ended = [
            g for g in config.load_grants() if self._mine(g, name) and grantee in (None, g.grantee)
        ]
        self._regrant(lambda g: None if g in ended else g)
        return ended

    @contextmanager
    def using(self, name: str) -> Iterator[Any]:
        """Workspace ``name`` for one ``with`` block (Engine.using); read-only through a
        read-only grant."""
        stored = self._stored(name, READ)
        with self.engine.using(stored) as workspace:
            yield self._view(stored, workspace)

    def open(self, name: str) -> Any:
        """Workspace ``name`` (Engine.open); read-only through a read-only grant."""
        stored = self._stored(name, READ)
        return self._view(stored, self.engine.open(stored))

    def using_file(self, path: Path) -> AbstractContextManager[Workspace]:
        """``kyfs --db FILE``: a file named outright is no identity's (Engine.using_file)."""
        return self.engine.using_file(path)  # type: ignore[no-any-return]

    def info(self, name: str) -> WorkspaceInfo:
        """Engine.info of ``name``, named as this identity writes it."""
        found: WorkspaceInfo = self.engine.info(self._stored(name, READ))
        return found._replace(name=name)

    def check(self, name: str, repair: bool = False) -> tuple[list[str], list[str]]:
        """Engine.check of ``name``; repairing it needs WRITE (no read-only grant)."""
        stored = self._stored(name, WRITE if repair else READ)
        return self.engine.check(stored, repair)  # type: ignore[no-any-return]

    def writable_names(self) -> list[str]:
        """The workspaces this identity may write: :meth:`names` less read-only grants
        (what ``fsck --repair`` and ``compact --all`` go through)."""
        return [n for n in self.names() if not self.scope.read_only(self.scope.stored(n))]

    def fold_limit(self, names: Iterable[str]) -> int:
        """Engine.fold_limit of the named workspaces."""
        return self.engine.fold_limit([self._stored(n) for n in names])  # type: ignore[no-any-return]

    def checkpoint(self, names: Iterable[str], idle: bool = False) -> list[str]:
        """Engine.checkpoint of the named workspaces; returns the names folded."""
        stored = {self._stored(n): n for n in names}
        return [stored[s] for s in self.engine.checkpoint(list(stored), idle)]

    # --- the trash: one's own only ---------------------------------------------------------
    def _own_trash(self) -> list[tuple[TrashedWorkspace, str]]:
        mine = []
        for item in self.engine.trash():
            owner, name = self.scope.owner_of(item.name)
            if owner == self.scope.identity and item.name != "shared":
                mine.append((item, name))
        return mine

    def trash(self) -> list[TrashedWorkspace]:
        """This identity's dropped workspaces, newest first (Engine.trash)."""
        return [item._replace(name=name) for item, name in self._own_trash()]

    def restore_trash(self, name: str, new_name: str | None = None) -> tuple[str, int]:
        """Bring back this identity's dropped workspace ``name`` (Engine.restore_trash)."""
        stored = self._stored(name, MANAGE)
        target = None if new_name is None else self._stored(new_name, MANAGE)
        restored, count = self.engine.restore_trash(stored, target)
        return self.scope.visible(restored) or restored, count

    def empty_trash(
        self, older_than_s: float | None = None, names: Collection[str] | None = None
    ) -> list[TrashedWorkspace]:
        """Delete for good this identity's dropped workspaces (Engine.empty_trash)."""
        mine = {item.name: name for item, name in self._own_trash()}
        if names is not None:
            mine = {s: n for s, n in mine.items() if n in names}
        deleted = self.engine.empty_trash(older_than_s, names=set(mine))
        return [item._replace(name=mine[item.name]) for item in deleted]

    def adopt(self, name: str, staged: Path) -> None:
        """Engine.adopt under this identity's own name ``name``."""
        self.engine.adopt(self._stored(name, MANAGE), staged)
