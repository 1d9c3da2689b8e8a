"""History of a workspace: one ``history`` row per change of a key, and settings.

A row records ``(key, action, time_ns, detail)``: "set" (a new value), "delete", "rename"
(detail: the other name), "link" (detail: the other name) or "symlink" (detail: the
target). A row that keeps a value (``size`` not NULL) is a *version*. While its node's
value stays what it was, a version shares it (``shared``: the node's id; a file written
once costs its version a row and nothing more); before that value changes or goes, the
version gets extents of its own under the owner ``-id`` (:func:`materialize`: a copy of
the extents, not of the bytes, in the block store, kyfs.engine.sql.blocks), so a
version costs only the blocks that differ. Version
numbers are the rows' ids; they stay stable when old versions are thinned. History is
kept by name: a write to a node with several names (hard links) is recorded under each;
a rename of a key records a version of the new name (an editor's, ``sed -i``'s or git's
write-then-rename keeps the history of the file it replaces).

Closes of one key in quick succession by one process coalesce into one version
(COALESCE_S between two, for at most BURST_S: :func:`bursts`): the burst's row is
replaced by a new row (a new id, so every daemon watching ``history`` sees the change)
that keeps when the burst began (``since_ns``); the replaced version is never copied, so
a database's thousands of fsyncs in a burst cost no extents at all. Older versions thin
out by the workspace's retention (kyfs.core.retention), checked for a key as it is
written (every PRUNE_EVERY rows) and for the whole workspace by
:meth:`HistoryMixin.thin_history`.

Settings live in ``meta`` (name -> text): retention, cache TTL, schema rules, project.

Thread-safety: as kyfs.engine.sql.base.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from kyfs.core import actor
from kyfs.core.errors import DamagedBlock, KeyNotFound, NoSpace
from kyfs.core.nodes import Change, HistoryEntry, ImportVersion
from kyfs.core.retention import Retention
from kyfs.engine.sql import blocks
from kyfs.engine.sql.base import Base, Connection, drop_xattrs, frees_space
from kyfs.platform import processes

COALESCE_S = 2.0  # seconds: a close this soon after the last one by the same process coalesces
BURST_S = 300.0  # seconds: a burst of coalesced closes makes a new version after this long
PRUNE_EVERY = 16  # history rows between two thinnings of the key just written
_COLUMNS = "key, action, size, time_ns, detail, id, mode"
_SQL_INSERT = (  # a version's mode: its node's now (narrow() lowers it later)
    "INSERT INTO history (key, action, size, time_ns, detail, pid, since_ns, shared, mode,"
    " source, user_name, comm)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, (SELECT mode FROM nodes WHERE id = ?), ?, ?, ?)"
    " RETURNING id"
)
# The same with the row's id given (one the engine reserved: Base._history_ids), so that
# nothing is read back.
_SQL_INSERT_WITH_ID = (
    "INSERT INTO history (id, key, action, size, time_ns, detail, pid, since_ns, shared, mode,"
    " source, user_name, comm)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT mode FROM nodes WHERE id = ?), ?, ?, ?)"
)
_CHANGE_COLUMNS = "id, time_ns, action, key, size, detail, source, user_name, pid, comm"
_SQL_CHANGES_AFTER = f"SELECT {_CHANGE_COLUMNS} FROM history WHERE id > ?"
_SQL_NARROW = (
    "UPDATE history SET mode = coalesce(mode, ?) & ?"
    " WHERE key = ? AND size IS NOT NULL AND (mode IS NULL OR mode & ? != mode)"
)
_SQL_HAS = "SELECT 1 FROM history WHERE key = ? AND time_ns = ? AND action = ? LIMIT 1"
# The newest history row of every name of a node (the key first), in one statement.
SQL_LAST_OF_NODE = (
    "SELECT e.key, h.id, h.action, h.pid, h.time_ns, coalesce(h.since_ns, h.time_ns)"
    " FROM entries e JOIN history h ON h.id = (SELECT l.id FROM history l WHERE l.key = e.key"
    " ORDER BY l.time_ns DESC, l.id DESC LIMIT 1) WHERE e.node = ?"
)
SQL_META = "SELECT name, value FROM meta"
_SQL_KEY_ROWS = "SELECT id, time_ns, size IS NOT NULL FROM history WHERE key = ?"
# A row that is not the newest of a live key: only those may go, so that a key's current
# version (its newest row's id: ValuesMixin.current_version) never falls back to an older
# number, which a compare-and-swap that read it would then wrongly pass. That row shares
# the live value's blocks (it was recorded with it), so keeping it costs a row.
_NOT_CURRENT = (
    "NOT (id = (SELECT max(h.id) FROM history h WHERE h.key = history.key)"
    " AND EXISTS (SELECT 1 FROM entries e WHERE e.key = history.key))"
)
_SQL_OLDEST_VERSIONS = (
    "SELECT id FROM history WHERE size IS NOT NULL AND time_ns < ?"
    f" AND {_NOT_CURRENT} ORDER BY time_ns LIMIT ?"
)
_SQL_CURRENT_VERSION = "SELECT coalesce(max(id), 0) FROM history WHERE key = ?"
_SQL_SHARING_ITEMS = "SELECT id FROM snapshot_items WHERE shared = ?"  # sql.snapshots
SQL_SHARERS = (  # the versions (0) and snapshot items (1) that share a node's value
    "SELECT id, 0 FROM history WHERE shared = ?"
    " UNION ALL SELECT id, 1 FROM snapshot_items WHERE shared = ?"
)
_SQL_VALUE = "SELECT size, shared FROM history WHERE id = ? AND size IS NOT NULL"
RELEASE_BATCH = 64  # versions or archived entries released per transaction

Burst = tuple[int, int]  # (the version a write replaces, when its burst began ns)


def read_meta(conn: Connection) -> dict[str, str]:
    """The workspace's settings (``meta``), inside the caller's transaction."""
    return dict(conn.execute(SQL_META).fetchall())


def bursts(lasts: Iterable[Sequence[Any]], pid: int | None, now: int) -> dict[str, Burst]:
    """For a write by process ``pid`` at ``now`` (ns) to a node whose names' newest
    history rows are ``lasts`` (rows of SQL_LAST_OF_NODE: key, id, action, pid, time_ns,
    burst start ns), the version of each name it coalesces with: that process's last
    version of the name, within COALESCE_S of now and BURST_S of its burst's start; the
    new version replaces it (``record``'s ``replaces``). None of them without a ``pid``."""
    found: dict[str, Burst] = {}
    if pid is None:
        return found
    for key, *last in lasts:
        if (
            last[1] == "set"
            and last[2] == pid
            and now - last[3] < COALESCE_S * 1e9
            and now - last[4] < BURST_S * 1e9
        ):
            found[key] = (int(last[0]), int(last[4]))
    return found


def record(
    conn: Connection,
    key: str,
    action: str,
    detail: str | None,
    now: int,
    meta: dict[str, str] | None = None,
    *,
    owner: int | None = None,
    size: int | None = None,
    pid: int | None = None,
    replaces: Burst | None = None,
    version_id: int | None = None,
) -> None:
    """Append to the history of ``key`` inside the caller's transaction (as row
    ``version_id`` when the engine reserved one, else the next id). With ``owner``
    (a node) the row is a version of that node's value (``size`` bytes): it shares the
    node's value until that value changes (:func:`materialize`), so a version of a
    value written once costs a row and nothing more. ``replaces`` (from :func:`bursts`)
    is the version this one coalesces with: it goes, after the new row went in (whose
    id is then past every watcher's cursor). Every PRUNE_EVERY rows the key is thinned
    to the retention (kyfs.core.retention)."""
    since = replaces[1] if replaces is not None else None
    who = actor.current()
    comm = who.comm
    if pid is None:
        pid = who.pid
    elif pid != who.pid:  # a commit at the last close (pid 0): the opener's name
        comm = processes.command_name(pid)
    values = (key, action, None if owner is None else size, now, detail, pid, since, owner,
              owner, who.source, who.user, comm)  # fmt: skip
    if version_id is None:
        version_id = int(conn.execute(_SQL_INSERT, values).fetchone()[0])
    else:
        conn.execute(_SQL_INSERT_WITH_ID, (version_id, *values))
    if replaces is not None:
        drop_versions(conn, [replaces[0]])
    if version_id % PRUNE_EVERY == 0:
        thin_key(conn, key, now, Retention.from_meta(read_meta(conn) if meta is None else meta))


def narrow(conn: Connection, keys: Iterable[str], mode: int) -> None:
    """The names ``keys`` now have permission bits ``mode``: every version of each keeps
    only the bits it has and ``mode`` has (bitwise AND), so a version shows the most
    restrictive mode its name has had since it was recorded (``echo secret > f; chmod
    600 f``: the secret's version becomes 0600 too). Called inside the caller's
    transaction by every change of a name's mode: chmod, a write that sets the mode, a
    rename or link onto the name (kyfs.vfs.versions_tree shows versions with it)."""
    bits = mode & 0o7777
    for key in keys:
        conn.execute(_SQL_NARROW, (bits, bits, key, bits))


def materialize(
    conn: Connection,
    node_id: int,
    spare: Iterable[int] = (),
    sharers: Iterable[Sequence[Any]] | None = None,
) -> None:
    """Before node ``node_id``'s value changes or goes: every version that still shares
    it gets extents of its own (a copy of the node's rows, not of its bytes), but the
    versions ``spare`` (about to be replaced by a write that coalesces with them); so
    does every snapshot item that shares it (kyfs.engine.sql.snapshots). One statement
    finds both (SQL_SHARERS): every commit runs it; ``sharers``: its rows, read by the
    caller in this transaction."""
    spared = set(spare)
    items = []
    if sharers is None:
        sharers = conn.execute(SQL_SHARERS, (node_id, node_id)).fetchall()
    for sharer, is_item in sharers:
        if is_item:
            items.append(int(sharer))
        elif sharer not in spared:
            blocks.copy(conn, node_id, blocks.version_owner(int(sharer)))
            conn.execute("UPDATE history SET shared = NULL WHERE id = ?", (sharer,))
    _keep(conn, node_id, items, gone=False)


def keep_items(conn: Connection, node_id: int, gone: bool = False) -> None:
    """Before node ``node_id``'s value changes or goes, inside the caller's transaction:
    every snapshot item that still shares it gets extents of its own. With ``gone`` (the
    node and its extents are about to be deleted) the first item takes the node's
    extents over (no new row: a full disk can still delete) and the others copy them."""
    items = [int(row[0]) for row in conn.execute(_SQL_SHARING_ITEMS, (node_id,)).fetchall()]
    _keep(conn, node_id, items, gone)


def _keep(conn: Connection, node_id: int, items: list[int], gone: bool) -> None:
    """:func:`keep_items` for the snapshot items ``items`` (ids) that share ``node_id``."""
    if not items:
        return
    source = node_id
    if gone:
        first = blocks.item_owner(items.pop(0))
        conn.execute("UPDATE extents SET owner = ? WHERE owner = ?", (first, node_id))
        conn.execute("UPDATE nodes SET stored = 0 WHERE id = ?", (node_id,))
        source = first
    for item in items:
        blocks.copy(conn, source, blocks.item_owner(item))
    conn.execute("UPDATE snapshot_items SET shared = NULL WHERE shared = ?", (node_id,))


def value_of(conn: Connection, version_id: int) -> tuple[int, int] | None:
    """(block store owner, size) of version ``version_id``'s value, or None when it keeps
    none: its own extents, or the node whose value it still is."""
    row = conn.execute(_SQL_VALUE, (version_id,)).fetchone()
    if row is None:
        return None
    owner = int(row[1]) if row[1] is not None else blocks.version_owner(version_id)
    return owner, int(row[0])


def current_version(conn: Connection, key: str) -> int:
    """The id of the newest history row of ``key`` (0: none), inside the caller's
    transaction: the version of its current value (ValuesMixin.current_version)."""
    return int(conn.execute(_SQL_CURRENT_VERSION, (key,)).fetchone()[0])


def drop_versions(conn: Connection, ids: list[int]) -> int:
    """Delete history rows ``ids`` and release the blocks of those with values of their
    own; but the newest row of a key that exists stays (its current version). Returns
    how many rows went."""
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    kept = conn.execute(
        f"SELECT id FROM history WHERE id IN ({marks}) AND NOT {_NOT_CURRENT}", ids
    ).fetchall()
    if kept:
        ids = sorted(set(ids) - {int(row[0]) for row in kept})
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
    owned = conn.execute(
        f"SELECT id FROM history WHERE id IN ({marks}) AND size IS NOT NULL AND shared IS NULL",
        ids,
    ).fetchall()
    for (version_id,) in owned:
        blocks.drop(conn, blocks.version_owner(int(version_id)))
    conn.executemany("DELETE FROM history WHERE id = ?", [(i,) for i in ids])
    return len(ids)


def thin_key(conn: Connection, key: str, now: int, retention: Retention) -> int:
    """Thin the history of ``key`` to ``retention``; returns how many rows went. A key
    that no longer exists keeps no newest versions whatever their age: its history
    thins out by time alone (its last value waits in the archive meanwhile)."""
    versions = conn.execute(_SQL_KEY_ROWS, (key,))  # both sent before either is read
    live = conn.execute("SELECT 1 FROM entries WHERE key = ?", (key,))
    rows = [(int(r[0]), int(r[1]), bool(r[2])) for r in versions.fetchall()]
    if live.fetchone() is None:
        retention = dataclasses.replace(retention, versions=0)
    return drop_versions(conn, retention.to_drop(rows, now))


def cache_ttl(meta: dict[str, str]) -> float | None:
    """A cache workspace's TTL in seconds from the settings, or None (also for a value out
    of range or unreadable)."""
    from kyfs.core.names import MAX_DURATION_S

    try:
        seconds = float(meta["ttl_s"])
    except (KeyError, ValueError):
        return None
    return seconds if 0 < seconds <= MAX_DURATION_S else None


class HistoryMixin(Base):
    """Reading history, importing it, and the workspace's settings."""

    def history(self, key: str) -> list[HistoryEntry]:
        """The recorded history of ``key``, oldest first.

        Raises:
            StorageError: (EIO, exit 4).
        """
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM history WHERE key = ? ORDER BY time_ns, id", (key,)
        )
        return [HistoryEntry(*row) for row in rows]

    def version(self, version: int) -> HistoryEntry | None:
        """History row ``version`` (its id), or None."""
        row = self._row(f"SELECT {_COLUMNS} FROM history WHERE id = ?", (version,))
        return HistoryEntry(*row) if row else None

    def version_value(self, version: int, limit: int | None = None) -> bytes:
        """The value history version ``version`` kept: whole, or its first ``limit`` bytes.

        Raises:
            KeyNotFound: (ENOENT, exit 1) no such version, or it keeps no value.
            DamagedBlock: (EIO, exit 4) a block of it fails its checksum.
        """
        with self._snapshot() as conn:
            found = value_of(conn, version)
            if found is None:
                raise KeyNotFound(f"no stored version {version}")
            owner, size = found
            end = size if limit is None else min(size, limit)
            try:
                return blocks.read(conn, owner, 0, end, size)
            except DamagedBlock as exc:
                raise DamagedBlock(f"version {version}: {exc}") from None

    def history_keys(self, prefix: str = "") -> list[str]:
        """Every key with recorded history (live or not), starting with ``prefix``."""
        rows = self._rows(
            "SELECT DISTINCT key FROM history WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\U0010ffff"),
        )
        return [row[0] for row in rows]

    def changes(self, cursor: int | None) -> tuple[int, list[str]]:
        """Names changed since ``cursor`` by any other connection to this workspace
        (another process, a CLI command, another daemon) or by TTL expiry on this one, and
        the new cursor; ``cursor`` None starts watching: the cursor of when
        :meth:`start_watching` was called (the daemon's engine calls it as it opens the
        workspace, so nothing another process changes between that open and a watcher's
        first look is missed), else the current one; and no names.

        A change is what history records (set, delete, rename, link, symlink, expiry);
        for a rename or link both names. The engine tells this connection's own rows apart
        (:meth:`_change_rows`), so the daemon, whose own changes the kernel already knows,
        is told only of the others. Cost: one range scan of the rows added since
        ``cursor``.

        Raises:
            StorageError: (EIO, exit 4).
        """
        if cursor is None:
            if self._watch_from is not None:
                return self._watch_from, []
            self._watch()
            row = self._row("SELECT coalesce(max(id), 0) FROM history")
            return int(row[0]), []
        rows = self._change_rows(cursor)
        if not rows:
            return cursor, []
        names: list[str] = []
        for _, key, detail, own in rows:
            if own and detail != "expired":
                continue
            names.append(key)
            other = (detail or "").partition(" ")
            if other[0] in ("to", "from") and other[2]:
                names.append(other[2])  # rename's and link's other name
        return int(rows[-1][0]), names

    def timeline(
        self,
        after: int = 0,
        *,
        since_ns: int | None = None,
        prefix: str = "",
        limit: int | None = None,
    ) -> list[Change]:
        """The changes (history rows) after history id ``after``, oldest first (by id):
        those at or after ``since_ns`` (ns UTC) when given, of keys starting with
        ``prefix`` (a rename or link also when its other name does), at most ``limit``
        of them (the oldest). Cost: a range scan of the history's ids after ``after``;
        nothing found costs one index probe (``kyfs watch`` polls with it).

        Raises:
            StorageError: (EIO, exit 4).
        """
        sql = _SQL_CHANGES_AFTER
        args: list[int | str] = [after]
        if since_ns is not None:
            sql += " AND time_ns >= ?"
            args.append(since_ns)
        if prefix:
            sql += (
                " AND (substr(key, 1, ?) = ? OR (detail IS NOT NULL"
                " AND (substr(detail, 1, ?) = ? OR substr(detail, 1, ?) = ?)))"
            )
            args += [len(prefix), prefix]
            args += [len(prefix) + 3, "to " + prefix, len(prefix) + 5, "from " + prefix]
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [Change(*row) for row in self._rows(sql, tuple(args))]

    _watch_from: int | None = None

    def start_watching(self) -> None:
        """From now on, tell this connection's history rows apart, and remember the cursor
        where the first ``changes(None)`` will start (see :meth:`changes`)."""
        self._watch()
        self._watch_from = int(self._row("SELECT coalesce(max(id), 0) FROM history")[0])

    def _watch(self) -> None:
        """Start telling this connection's own history rows apart (see
        :meth:`_change_rows`)."""
        raise NotImplementedError

    def _change_rows(self, cursor: int) -> list[tuple[int, str, str | None, bool]]:
        """History rows after id ``cursor``, oldest first: (id, key, detail, written by
        this connection)."""
        raise NotImplementedError

    def retention(self) -> Retention:
        """How much history this workspace keeps per key (its settings, or the defaults:
        every version of the last hour, hourly for a day, daily for 30 days, and the
        newest 10 whatever their age)."""
        return Retention.from_meta(self.meta())

    @frees_space
    def thin_history(self, now_ns: int) -> int:
        """Thin every key's history to the retention at time ``now_ns`` (ns, UTC), one
        transaction; returns how many rows went (their blocks are released)."""
        retention = self.retention()
        with self._atomic() as conn:
            keys = [row[0] for row in conn.execute("SELECT DISTINCT key FROM history")]
            return sum(thin_key(conn, key, now_ns, retention) for key in keys)

    @frees_space
    def release_undo(self, before_ns: int | None = None) -> int:
        """:meth:`_release_undo`; on a full disk the engine's reserve is given up for it
        (releasing undo data frees space)."""
        return self._release_undo(before_ns)

    def _release_undo(self, before_ns: int | None = None) -> int:
        """Release undo data for good, oldest first: the values of history versions
        recorded before ``before_ns`` (ns, UTC; all when None; their rows go) and the
        archived entries archived before it. Their blocks are freed unless something else
        holds them. It goes RELEASE_BATCH at a time, one transaction each, so that a full
        disk (where each transaction's WAL needs room) still lets it go bit by bit: on
        ENOSPC after some went, it stops there. Returns how many versions and entries
        went (what the undo cap and a full disk call: kyfs.app.keep_undo_under,
        ValuesMixin.commit).

        Raises:
            NoSpace: (ENOSPC) no room even for the first batch.
        """
        cutoff = 2**63 - 1 if before_ns is None else before_ns
        old = "coalesce(archived_ns, deleted_ns) < ?"
        released = 0
        while True:
            try:
                with self._atomic() as conn:
                    versions = [
                        int(row[0])
                        for row in conn.execute(_SQL_OLDEST_VERSIONS, (cutoff, RELEASE_BATCH))
                    ]
                    drop_versions(conn, versions)
                    archived = conn.execute(
                        f"SELECT id FROM archive WHERE {old} ORDER BY"
                        f" coalesce(archived_ns, deleted_ns) LIMIT ?",
                        (cutoff, RELEASE_BATCH),
                    ).fetchall()
                    for (node_id,) in archived:
                        materialize(conn, int(node_id))  # its versions are undo data apart
                        blocks.drop(conn, int(node_id))
                        drop_xattrs(conn, "?", (int(node_id),))
                    conn.executemany("DELETE FROM archive WHERE id = ?", archived)
            except NoSpace:
                if released:
                    return released
                raise
            if not versions and not archived:
                return released
            released += len(versions) + len(archived)

    def oldest_undo_ns(self) -> int | None:
        """When the oldest undo data was made (a version recorded, an entry archived),
        ns UTC; None when there is none."""
        row = self._row(
            "SELECT min(t) FROM (SELECT min(time_ns) AS t FROM history WHERE size IS NOT NULL"
            " UNION ALL SELECT min(coalesce(archived_ns, deleted_ns)) FROM archive) AS undo"
        )
        return None if row[0] is None else int(row[0])

    def import_history(self, items: Iterable[ImportVersion]) -> int:
        """Append imported history rows (e.g. KyCLI's audit log), their values stored as
        versions, in one transaction; returns how many. A row the history holds already
        (same key, action and time) is skipped, so an import run twice adds it once."""
        count = 0
        with self._atomic() as conn:
            for item in items:
                if conn.execute(_SQL_HAS, (item.key, item.time_ns, item.action)).fetchone():
                    continue
                size = None if item.value is None else len(item.value)
                row = conn.execute(
                    _SQL_INSERT,
                    (item.key, item.action, size, item.time_ns, None, None, None, None, None,
                     item.source, None, None),
                ).fetchone()  # fmt: skip
                if item.value is not None:
                    blocks.write(conn, blocks.version_owner(int(row[0])), [item.value])
                count += 1
        return count

    # --- settings --------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        """The workspace's settings (``meta``): project_path, ttl_s, schemas (JSON), ..."""
        try:
            return read_meta(self._conn)
        except self._errors as exc:
            raise self._convert(exc) from None

    def set_meta(self, name: str, value: str | None) -> None:
        """Set (or with None remove) the workspace setting ``name``."""
        with self._atomic() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE name = ?", (name,))
            else:
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )
