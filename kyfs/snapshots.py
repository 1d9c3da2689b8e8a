"""Forks and diffs of workspaces (issue 29 item 2), kept apart from the CLI so that the
Python API and the MCP server use them as they are. Snapshots themselves are the
engine's (kyfs.engine.sql.snapshots).

A *fork* is a new workspace that starts as a copy of another (or of one of its
snapshots) and then lives on its own: the source, its snapshots and the fork never see
each other's later changes. It is made from one consistent image of the source (a
reflink of its file where the file system has them, Workspace.clone_to; else SQLite's
online backup, PostgreSQL's REPEATABLE READ copy: Workspace.backup_to), installed under
a journal (kyfs.platform.journal, kind ``fork``) so that a fork killed midway is
finished or undone by the next kyfs command, never left half made. On PostgreSQL the
copy is made inside the server in one transaction (PgEngine.fork), so no row passes
through the client and a killed fork leaves nothing. The fork carries the
source's history, archive and snapshots (a branch keeps its past, as ``git branch``
does) and gets its own inode tag. Its cost is a copy of the workspace's storage: a
workspace is one SQLite file (one schema on PostgreSQL) and blocks are not shared
between files, so a fork is O(data), not O(metadata) (see docs/design.md, "Snapshots
and forks").

A *diff* compares two trees (kyfs.core.snapshots.parse_tree: ``W`` or ``W@SNAPSHOT``)
key by key (kyfs.core.snapshots.compare): files, links and special nodes, not
directories (they come and go with their keys, as in ``git diff``); values are compared
by their blocks' hashes, and by their bytes where the hashes differ at equal sizes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kyfs.core.errors import InvalidInput, WorkspaceExists
from kyfs.core.names import check_workspace_name
from kyfs.core.nodes import DIR, REG
from kyfs.core.snapshots import Change, Fingerprint, compare, parse_tree
from kyfs.engine.base import Workspace
from kyfs.platform import config, journal, paths

PATCH_LIMIT = 1024 * 1024  # bytes of a value a --patch shows as text at most
CONTEXT_LINES = 3  # unified diff context, as diff -u and git diff


def fork(engine: Any, source: str, new: str) -> int:
    """Make workspace ``new`` a copy of ``source`` (``W`` or ``W@SNAPSHOT``: then the new
    workspace holds what that snapshot holds) in ``engine`` (a ScopedEngine, as the CLI
    has); returns how many names it holds.

    Raises:
        InvalidName: (EINVAL, exit 2) a bad name. WorkspaceExists: (EEXIST, exit 3)
        ``new`` exists. WorkspaceNotFound / SnapshotNotFound: (ENOENT, exit 1).
        StorageError / NoSpace: (exit 4) nothing was made.
    """
    from kyfs.core.identity import MANAGE, READ

    name, snapshot = parse_tree(source)
    check_workspace_name(new)
    if engine.exists(new):
        raise WorkspaceExists(f"workspace exists: {new}")
    stored = engine.scope.stored(new, MANAGE)
    raw = engine.engine
    inside = getattr(raw, "fork", None)  # PostgreSQL copies inside the server
    if inside is not None:
        with engine.using(name) as store:  # WorkspaceNotFound, SnapshotNotFound first
            if snapshot is not None:
                store.snapshot_stat(snapshot, "")
        inside(engine.scope.stored(name, READ), stored)
    else:
        _fork_file(engine, raw, name, snapshot, stored, new, source)
    with engine.using(new) as made:
        if snapshot is not None:
            made.restore_snapshot(snapshot)
        return int(made.count_keys())


def _fork_file(
    engine: Any, raw: Any, name: str, snapshot: str | None, stored: str, new: str, source: str
) -> None:
    """The SQLite engine's fork: a consistent image of workspace ``name`` staged in a
    journaled operation, then installed as ``stored`` (see the module)."""
    from kyfs.transfer import recovery

    with journal.begin("fork", engine=config.engine_url(), source=source) as op:
        image = op.file(f"{new}{paths.DB_SUFFIX}")  # in the operation's own folder (0700)
        with engine.using(name) as store:
            if snapshot is not None:
                store.snapshot_stat(snapshot, "")  # SnapshotNotFound before any copy
            if not store.clone_to(image):  # a reflink on XFS or btrfs: O(metadata)
                store.backup_to(image)  # a copy elsewhere (ext4, tmpfs)
        image.chmod(0o600)
        op.save(installs=[{"workspace": stored, "staged": str(image), "replace": False}])
        if not recovery.install(op, raw):
            raise WorkspaceExists(f"workspace exists: {new}")


@contextmanager
def _tree(engine: Any, text: str) -> Iterator[tuple[Workspace, str | None]]:
    """The workspace and snapshot (or None: as it is now) that ``text`` names."""
    name, snapshot = parse_tree(text)
    with engine.using(name) as store:
        if snapshot is not None:
            store.snapshot_stat(snapshot, "")  # SnapshotNotFound (ENOENT, exit 1)
        yield store, snapshot


def _value(store: Workspace, snapshot: str | None, key: str) -> bytes:
    return store.get(key) if snapshot is None else store.snapshot_value(snapshot, key)


def diff(engine: Any, old: str, new: str) -> list[Change]:
    """What differs from tree ``old`` to tree ``new`` (``W`` or ``W@SNAPSHOT`` each, in
    ``engine``), sorted by key: kyfs.core.snapshots.Change items.

    Raises:
        WorkspaceNotFound / SnapshotNotFound: (ENOENT, exit 1). InvalidName: (exit 2).
    """
    with _tree(engine, old) as (a, snap_a), _tree(engine, new) as (b, snap_b):
        before, after = _keys_only(a.fingerprints(snap_a)), _keys_only(b.fingerprints(snap_b))
        same_bytes = {
            key: _value(a, snap_a, key) == _value(b, snap_b, key)
            for key in _maybe_same(before, after)
        }
    return compare(before, after, same_bytes)


def _keys_only(prints: dict[str, Fingerprint]) -> dict[str, Fingerprint]:
    """``prints`` without directories: a diff lists keys (files, links, special nodes), as
    ``kyfs keys`` and ``git diff`` do; a directory comes and goes with its keys."""
    return {key: found for key, found in prints.items() if found.kind != DIR}


def _maybe_same(before: dict[str, Fingerprint], after: dict[str, Fingerprint]) -> list[str]:
    """Keys whose values' blocks differ at equal sizes: cut otherwise, maybe equal."""
    return [
        key
        for key, one in before.items()
        if (other := after.get(key)) is not None
        and one.kind == other.kind == REG
        and one.size == other.size
        and one.digest != other.digest
    ]


def patch(engine: Any, old: str, new: str, changes: list[Change]) -> Iterator[str]:
    """Unified diff lines (as ``diff -u``/``git diff``, with ``a/KEY`` and ``b/KEY``) of
    each added, deleted or changed value in ``changes``; a value that is not UTF-8 text
    or is over PATCH_LIMIT bytes gets one line ``Binary values a/KEY and b/KEY differ``.
    Lines end without a newline.

    Raises:
        InvalidInput: (exit 2) never for values; WorkspaceNotFound / SnapshotNotFound
        as :func:`diff`.
    """
    with _tree(engine, old) as (a, snap_a), _tree(engine, new) as (b, snap_b):
        prints_a, prints_b = a.fingerprints(snap_a), b.fingerprints(snap_b)
        for change in changes:
            one, other = prints_a.get(change.key), prints_b.get(change.key)
            if (one is None or one.kind != REG) and (other is None or other.kind != REG):
                continue  # directories, links: the name-status line says it
            left = _value(a, snap_a, change.key) if one is not None and one.kind == REG else b""
            right = (
                _value(b, snap_b, change.key) if other is not None and other.kind == REG else b""
            )
            yield from _unified(change.key, left, right, one is None, other is None)


def _unified(key: str, left: bytes, right: bytes, added: bool, deleted: bool) -> Iterator[str]:
    """The unified diff of one value (see :func:`patch`)."""
    if left == right:
        return
    old_name = "/dev/null" if added else f"a/{key}"
    new_name = "/dev/null" if deleted else f"b/{key}"
    text_a, text_b = _text(left), _text(right)
    if text_a is None or text_b is None:
        yield f"Binary values {old_name} and {new_name} differ"
        return
    yield f"diff --kyfs a/{key} b/{key}"
    for line in difflib.unified_diff(
        text_a.splitlines(keepends=True),
        text_b.splitlines(keepends=True),
        old_name,
        new_name,
        n=CONTEXT_LINES,
    ):
        if line.endswith("\n"):
            yield line[:-1]
        else:  # the last line without a newline, as diff -u marks it
            yield line
            yield "\\ No newline at end of file"


def _text(value: bytes) -> str | None:
    """``value`` as text for a patch: UTF-8 without NUL, at most PATCH_LIMIT bytes; else
    None (shown as binary, as git does)."""
    if len(value) > PATCH_LIMIT or b"\0" in value:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def status_letter(change: Change) -> str:
    """``A``, ``D`` or ``M``: a change as ``git diff --name-status`` shows it."""
    return {"added": "A", "deleted": "D"}.get(change.status, "M")


def check_pair(old: str, new: str | None) -> tuple[str, str]:
    """The two trees ``kyfs diff`` compares: ``new`` defaults to the workspace of ``old``
    as it is now when ``old`` names a snapshot (``kyfs diff W@S``: what changed since).

    Raises:
        InvalidInput: (exit 2) one tree given that is not a snapshot.
    """
    if new is not None:
        return old, new
    name, snapshot = parse_tree(old)
    if snapshot is None:
        raise InvalidInput("kyfs diff needs two trees, or one WORKSPACE@SNAPSHOT")
    return old, name
