"""Snapshots of a workspace, in SQL both engines speak (kyfs.core.snapshots says what
one is).

    snapshots      (id, name UNIQUE, created_ns, history_id, keys, size)
    snapshot_items (id, snapshot, key, parent, node, kind, mode, uid, gid, size,
                    created_ns, mtime_ns, ctime_ns, target, rdev, shared, expires_ns)
    snapshot_xattrs (item, name, value)   the extended attributes (ACLs) items had

A snapshot is one ``snapshots`` row and one ``snapshot_items`` row per name the
workspace had: the node's type, bits, owner, times, symlink target and device number
as they were. A regular file's item *shares* its node's value (``shared``: the node's
id) the way a history version does (kyfs.engine.sql.history): making a snapshot copies
rows of names, never a value or an extent. Before that node's value changes or goes,
:func:`kyfs.engine.sql.history.keep_items` gives each item that still shares it
extents of its own, under the
block store owner :func:`item_owner` (a copy of the node's extents, each block one more
reference: rows, not bytes), so a snapshot then costs only the blocks that differ. The
hook is kyfs.engine.sql.history.materialize, which every change of a value already
calls for the versions; a node that goes for good while the disk is short hands its
extents over instead (``keep_items`` with ``gone``), which needs no new rows.

Item owners lie past every node id (node ids stop below 2^36, kyfs.core.inodes) and
versions' owners are negative, so the three never meet.

Thread-safety: as kyfs.engine.sql.base.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from kyfs.core import names
from kyfs.core.errors import AlreadyExists, KeyNotFound, SnapshotNotFound
from kyfs.core.nodes import DIR, LNK, REG, SPECIAL, Entry, Owner
from kyfs.core.snapshots import Fingerprint, Snapshot, check_snapshot_name, default_name
from kyfs.engine.sql import blocks
from kyfs.engine.sql.base import Base, Connection, frees_space
from kyfs.engine.sql.blocks import ITEM_OWNER, item_owner
from kyfs.engine.sql.history import narrow, record

_ITEM_COLUMNS = (
    "id, key, kind, mode, size, created_ns, mtime_ns, ctime_ns, uid, gid, rdev, node, target,"
    " shared, expires_ns"
)
# What the views show of an item (the Entry of :func:`_entry_of`): the names of one node
# (hard links) share the id of its first item, and count its names as their links.
_SHOWN_COLUMNS = (
    "(SELECT min(j.id) FROM snapshot_items j WHERE j.snapshot = i.snapshot"
    " AND j.node = i.node), i.key, i.kind, i.mode, i.size, i.created_ns, i.mtime_ns,"
    " i.ctime_ns, i.uid, i.gid, i.rdev, (SELECT count(*) FROM snapshot_items j"
    " WHERE j.snapshot = i.snapshot AND j.node = i.node)"
)
SQL_SNAPSHOTS = "SELECT name, created_ns, keys, size, history_id FROM snapshots"
# A regular file's content, for a diff: its extents' places, sizes and block hashes.
SQL_CONTENT = (
    "SELECT e.pos, b.size, b.hash FROM extents e LEFT JOIN blocks b ON b.id = e.block"
    " WHERE e.owner = ? ORDER BY e.pos"
)
SQL_TAKE = (
    "INSERT INTO snapshot_items (snapshot, key, parent, node, kind, mode, uid, gid, size,"
    " created_ns, mtime_ns, ctime_ns, target, rdev, shared, expires_ns)"
    " SELECT ?, e.key, e.parent, n.id, n.kind, n.mode, n.uid, n.gid, n.size, n.created_ns,"
    f" n.mtime_ns, n.ctime_ns, n.target, n.rdev, CASE WHEN n.kind = {REG} THEN n.id END,"
    " n.expires_ns"
    " FROM entries e JOIN nodes n ON n.id = e.node"
)


SQL_TAKE_XATTRS = (
    "INSERT INTO snapshot_xattrs (item, name, value) SELECT i.id, x.name, x.value"
    " FROM snapshot_items i JOIN xattrs x ON x.node = i.node WHERE i.snapshot = ?"
)
SQL_ITEM_XATTRS = "SELECT name, value FROM snapshot_xattrs WHERE item = ? ORDER BY name"


def value_owner(item_id: int, shared: int | None) -> int:
    """Where item ``item_id``'s value is: the node it still shares, or its own extents."""
    return int(shared) if shared is not None else item_owner(item_id)


def content_digest(conn: Connection, owner: int) -> bytes:
    """SHA-256 over ``owner``'s extents (place, size, block hash each): equal for values
    stored in the same blocks at the same places, whichever workspace holds them."""
    digest = hashlib.sha256()
    for pos, size, address in conn.execute(SQL_CONTENT, (owner,)):
        digest.update(f"{pos}:{size}:".encode())
        digest.update(bytes(address or b""))
    return digest.digest()


def _snapshot_of(row: Any) -> Snapshot:
    return Snapshot(str(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


def _entry_of(row: Any) -> Entry:
    """An item row (``_SHOWN_COLUMNS``) as an Entry whose ``id`` is the id of its node's
    first item in the snapshot (equal for hard links: they read alike) and whose
    ``nlink`` is its node's names there (2 for a directory)."""
    return Entry(
        int(row[0]), str(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]),
        int(row[6]), int(row[7]), int(row[6]), int(row[8]), int(row[9]),
        2 if int(row[2]) == DIR else int(row[11]), int(row[10] or 0), int(row[4]),
    )  # fmt: skip


class SnapshotsMixin(Base):
    """The snapshots of one workspace (see the module)."""

    _lookup: Any
    _make: Any
    _drop_name: Any
    _put: Any
    _must: Any
    _nlink: Any

    # --- listing ------------------------------------------------------------------------
    def snapshots(self) -> list[Snapshot]:
        """Every snapshot of the workspace, oldest first."""
        return [_snapshot_of(r) for r in self._rows(SQL_SNAPSHOTS + " ORDER BY created_ns, id")]

    def _snapshot_id(self, conn: Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM snapshots WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise SnapshotNotFound(f"no snapshot named {name}")
        return int(row[0])

    # --- making and dropping ---------------------------------------------------------
    def create_snapshot(self, name: str | None = None) -> Snapshot:
        """Make snapshot ``name`` (default: the UTC time, kyfs.core.snapshots.default_name)
        of what the workspace holds now, in one transaction: a row per name, no value
        copied (see the module). Writes still in open files of a mount are not in it
        until they are committed (at close or fsync), as with any reader.

        Raises:
            InvalidName: (EINVAL, exit 2) a bad name. AlreadyExists: (EEXIST, exit 3)
            a snapshot of that name exists.
        """
        now = time.time_ns()
        name = check_snapshot_name(default_name(now) if name is None else name)
        with self._atomic() as conn:
            if conn.execute("SELECT 1 FROM snapshots WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"a snapshot named {name} exists")
            history_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()[0])
            snapshot_id = int(
                conn.execute(
                    "INSERT INTO snapshots (name, created_ns, history_id, keys, size)"
                    " VALUES (?, ?, ?, 0, 0) RETURNING id",
                    (name, now, history_id),
                ).fetchone()[0]
            )
            conn.execute(SQL_TAKE, (snapshot_id,))
            conn.execute(SQL_TAKE_XATTRS, (snapshot_id,))
            keys, size = conn.execute(
                f"SELECT count(*), coalesce(sum(CASE WHEN kind = {REG} THEN size ELSE 0 END), 0)"
                " FROM snapshot_items WHERE snapshot = ?",
                (snapshot_id,),
            ).fetchone()
            conn.execute(
                "UPDATE snapshots SET keys = ?, size = ? WHERE id = ?",
                (int(keys), int(size), snapshot_id),
            )
            return Snapshot(name, now, int(keys), int(size), history_id)

    @frees_space
    def delete_snapshot(self, name: str) -> Snapshot:
        """Remove snapshot ``name``; the blocks only it used are freed in the same
        transaction. Returns what it was.

        Raises:
            SnapshotNotFound: (ENOENT, exit 1).
        """
        with self._atomic() as conn:
            snapshot_id = self._snapshot_id(conn, name)
            found = conn.execute(SQL_SNAPSHOTS + " WHERE id = ?", (snapshot_id,)).fetchone()
            blocks.drop_selected(
                conn,
                "SELECT ? + id FROM snapshot_items WHERE snapshot = ? AND shared IS NULL"
                f" AND kind = {REG}",
                (ITEM_OWNER, snapshot_id),
            )
            conn.execute(
                "DELETE FROM snapshot_xattrs WHERE item IN"
                " (SELECT id FROM snapshot_items WHERE snapshot = ?)",
                (snapshot_id,),
            )
            conn.execute("DELETE FROM snapshot_items WHERE snapshot = ?", (snapshot_id,))
            conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))
            return _snapshot_of(found)

    # --- reading --------------------------------------------------------------------------
    def snapshot_stat(self, name: str, key: str) -> Entry:
        """The name ``key`` in snapshot ``name`` as an Entry whose ``id`` is an item's (what
        :meth:`read_snapshot` takes; the same for the names of one node, whose ``nlink``
        counts them); ``key`` ``""`` is its top directory (id 0).

        Raises:
            SnapshotNotFound / KeyNotFound: (ENOENT, exit 1).
        """
        with self._snapshot() as conn:
            snapshot_id = self._snapshot_id(conn, name)
            if key == "":
                created = int(
                    conn.execute(
                        "SELECT created_ns FROM snapshots WHERE id = ?", (snapshot_id,)
                    ).fetchone()[0]
                )
                return Entry(0, "", DIR, 0o555, 0, created, created, created, created, nlink=2)
            row = conn.execute(
                f"SELECT {_SHOWN_COLUMNS} FROM snapshot_items i WHERE i.snapshot = ? AND i.key = ?",
                (snapshot_id, key),
            ).fetchone()
            if row is None:
                raise KeyNotFound(f"{key} is not in snapshot {name}")
            return _entry_of(row)

    def snapshot_children(self, name: str, directory: str = "") -> list[Entry]:
        """The names directly inside ``directory`` of snapshot ``name``, by key (Entries
        whose ``id`` is the item's).

        Raises:
            SnapshotNotFound: (ENOENT, exit 1).
        """
        with self._snapshot() as conn:
            snapshot_id = self._snapshot_id(conn, name)
            rows = conn.execute(
                f"SELECT {_SHOWN_COLUMNS} FROM snapshot_items i WHERE i.snapshot = ?"
                " AND i.parent = ? ORDER BY i.key",
                (snapshot_id, directory),
            ).fetchall()
            return [_entry_of(row) for row in rows]

    def snapshot_readlink(self, name: str, key: str) -> bytes:
        """The target of the symbolic link ``key`` in snapshot ``name``.

        Raises:
            SnapshotNotFound / KeyNotFound: (ENOENT, exit 1) also when ``key`` is no link.
        """
        with self._snapshot() as conn:
            row = conn.execute(
                "SELECT target FROM snapshot_items WHERE snapshot = ? AND key = ?"
                f" AND kind = {LNK}",
                (self._snapshot_id(conn, name), key),
            ).fetchone()
            if row is None or row[0] is None:
                raise KeyNotFound(f"{key} is no symbolic link in snapshot {name}")
            return bytes(row[0])

    def snapshot_xattrs(self, item_id: int) -> dict[bytes, bytes]:
        """The extended attributes snapshot item ``item_id`` had (name bytes -> value
        bytes; POSIX ACLs among them: kyfs.core.acl); {} for none or no such item."""
        rows = self._rows(SQL_ITEM_XATTRS, (item_id,))
        return {bytes(name): bytes(value) for name, value in rows}

    def read_snapshot(self, item_id: int, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset + size)`` of snapshot item ``item_id``'s value (fewer at
        its end; a hole reads as zeros).

        Raises:
            KeyNotFound: (ENOENT) no such item (its snapshot was deleted).
            DamagedBlock: (EIO, exit 4) a block fails its checksum.
        """
        with self._snapshot() as conn:
            row = conn.execute(
                f"SELECT size, shared FROM snapshot_items WHERE id = ? AND kind = {REG}",
                (item_id,),
            ).fetchone()
            if row is None:
                raise KeyNotFound(f"no snapshot item {item_id}")
            total = int(row[0])
            end = min(total, offset + size)
            if offset >= end:
                return b""
            return blocks.read(conn, value_owner(item_id, row[1]), offset, end, total)

    def snapshot_value(self, name: str, key: str) -> bytes:
        """The whole value of ``key`` in snapshot ``name``.

        Raises:
            SnapshotNotFound / KeyNotFound: (ENOENT, exit 1). DamagedBlock: (EIO, exit 4).
        """
        entry = self.snapshot_stat(name, key)
        if entry.kind != REG:
            raise KeyNotFound(f"{key} holds no value in snapshot {name}")
        return self.read_snapshot(entry.id, 0, entry.size)

    def fingerprints(self, snapshot: str | None = None) -> dict[str, Fingerprint]:
        """Every name of the workspace now (``snapshot`` None) or of ``snapshot``, with what
        kyfs.core.snapshots.compare compares, from one read transaction.

        Raises:
            SnapshotNotFound: (ENOENT, exit 1).
        """
        found: dict[str, Fingerprint] = {}
        with self._snapshot() as conn:
            if snapshot is None:
                rows = conn.execute(
                    "SELECT e.key, n.kind, n.mode, n.size, n.target, n.id FROM entries e"
                    " JOIN nodes n ON n.id = e.node"
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT key, kind, mode, size, target, CASE WHEN shared IS NULL"
                    " THEN ? + id ELSE shared END FROM snapshot_items WHERE snapshot = ?",
                    (ITEM_OWNER, self._snapshot_id(conn, snapshot)),
                ).fetchall()
            digests: dict[int, bytes] = {}
            for key, kind, mode, size, target, owner in rows:
                kind = int(kind)
                if kind == REG:
                    owner = int(owner)
                    if owner not in digests:
                        digests[owner] = content_digest(conn, owner)
                    digest = digests[owner]
                elif kind == LNK:
                    digest = bytes(target or b"")
                else:
                    digest = b""
                found[str(key)] = Fingerprint(kind, int(mode) & 0o7777, int(size), digest)
        return found

    # --- restoring ------------------------------------------------------------------------
    def restore_snapshot(self, name: str) -> int:
        """Make the workspace hold what snapshot ``name`` holds, in one transaction: names
        that it lacks go (to the archive, as ``rm`` does: ``kyfs restore`` brings them
        back), names it has come back with their type, value (shared blocks, no byte
        copied), target, bits, owner and mtime. Each change is recorded in history like
        any other, so a restore can be undone (by a snapshot made before it, or key by
        key). Returns how many names changed. The snapshot stays.

        Raises:
            SnapshotNotFound: (ENOENT, exit 1).
        """
        detail = f"restored snapshot {name}"
        now = time.time_ns()
        changed = 0
        with self._atomic() as conn:
            snapshot_id = self._snapshot_id(conn, name)
            items = {
                str(row[1]): row
                for row in conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM snapshot_items WHERE snapshot = ?",
                    (snapshot_id,),
                ).fetchall()
            }
            live = [str(row[0]) for row in conn.execute("SELECT key FROM entries")]
            # names the snapshot lacks, or holds as another type: deepest first
            for key in sorted(live, key=lambda k: (-k.count("/"), k)):
                item = items.get(key)
                entry = self._lookup(conn, key)
                if entry is None or (item is not None and int(item[2]) == entry.kind):
                    continue
                if (
                    entry.is_dir
                    and conn.execute(
                        "SELECT 1 FROM entries WHERE parent = ? LIMIT 1", (key,)
                    ).fetchone()
                ):
                    continue  # still holds names the snapshot has: gone below first
                self._drop_name(conn, entry, now)
                record(conn, key, "delete", detail, now)
                changed += 1
            made: dict[int, int] = {}  # the snapshot's node id -> the live node now
            claimed: dict[int, int] = {}  # and back
            for key in sorted(items, key=lambda k: (k.count("/"), k)):
                changed += self._restore_item(conn, items[key], made, claimed, detail, now)
        return changed

    def _restore_item(
        self,
        conn: Connection,
        item: Any,
        made: dict[int, int],
        claimed: dict[int, int],
        detail: str,
        now: int,
    ) -> int:
        """One name of a snapshot restored (see :meth:`restore_snapshot`); 1 when it
        changed, else 0. ``made`` maps the snapshot's node ids to the live nodes that
        now hold them, ``claimed`` the other way: a live node linked under a name that
        the snapshot holds as another node is unlinked there first, so that writing one
        name's value never changes another's."""
        item_id, key, kind, mode = int(item[0]), str(item[1]), int(item[2]), int(item[3])
        size, mtime, uid, gid = int(item[4]), int(item[6]), int(item[8]), int(item[9])
        rdev, node, target, shared = int(item[10] or 0), int(item[11]), item[12], item[13]
        owner = Owner(uid, gid)
        entry = self._lookup(conn, key)
        changed = False
        if entry is not None and not entry.is_dir and claimed.get(entry.id, node) != node:
            self._drop_name(conn, entry, now)  # a hard link the snapshot did not have
            record(conn, key, "delete", detail, now)
            entry, changed = None, True
        if node in made and (entry is None or entry.id != made[node]):  # a hard link again
            if entry is not None:
                self._drop_name(conn, entry, now)
            conn.execute(
                "INSERT INTO entries (key, parent, node) VALUES (?, ?, ?)",
                (key, names.parent_of(key), made[node]),
            )
            self._nlink(conn, made[node], 1)
            record(conn, key, "link", detail, now)
            return 1
        if kind == DIR:
            if entry is None:
                node_id = self._make(conn, key, DIR, mode, owner, now=now).id
                changed = True
            else:
                node_id = entry.id
        elif kind == LNK or kind in SPECIAL:
            same = entry is not None and entry.kind == kind
            if same and kind == LNK:
                same = self._target(conn, entry.id) == bytes(target or b"")
            if same and kind in SPECIAL:
                same = entry is not None and entry.rdev == rdev
            if not same:
                if entry is not None:
                    self._drop_name(conn, entry, now)
                node_id = self._make(
                    conn, key, kind, mode, owner,
                    target=None if target is None else bytes(target), rdev=rdev, now=now,
                ).id  # fmt: skip
                record(conn, key, "symlink" if kind == LNK else "set", detail, now)
                changed = True
            else:
                assert entry is not None
                node_id = entry.id
        else:
            owner_of_value = value_owner(item_id, shared)
            if entry is not None and entry.kind == REG and owner_of_value == entry.id:
                node_id = entry.id  # the live value is still the snapshot's
            elif (
                entry is not None
                and entry.kind == REG
                and entry.size == size
                and content_digest(conn, entry.id) == content_digest(conn, owner_of_value)
            ):
                node_id = entry.id
            else:
                node_id = self._put(
                    conn, key, b"", mode, mtime_ns=mtime, detail=detail, owner=owner,
                    source=(owner_of_value, size),
                )  # fmt: skip
                changed = True
        made[node] = node_id
        claimed[node_id] = node
        wanted = [(bytes(n), bytes(v)) for n, v in conn.execute(SQL_ITEM_XATTRS, (item_id,))]
        found = conn.execute(
            "SELECT name, value FROM xattrs WHERE node = ? ORDER BY name", (node_id,)
        ).fetchall()
        if [(bytes(n), bytes(v)) for n, v in found] != wanted:
            conn.execute("DELETE FROM xattrs WHERE node = ?", (node_id,))
            conn.executemany(
                "INSERT INTO xattrs (node, name, value) VALUES (?, ?, ?)",
                [(node_id, name, value) for name, value in wanted],
            )
            changed = True
        expires = None if item[14] is None else int(item[14])
        current = conn.execute(
            "SELECT mode, uid, gid, mtime_ns, expires_ns FROM nodes WHERE id = ?", (node_id,)
        ).fetchone()
        if (*(int(v) for v in current[:4]), current[4]) != (mode, uid, gid, mtime, expires):
            conn.execute(
                "UPDATE nodes SET mode = ?, uid = ?, gid = ?, mtime_ns = ?, ctime_ns = ?,"
                " expires_ns = ? WHERE id = ?",
                (mode, uid, gid, mtime, now, expires, node_id),
            )
            if kind == REG:
                narrow(conn, [key], mode)
            changed = True
        return int(changed)

    def _target(self, conn: Connection, node_id: int) -> bytes:
        row = conn.execute("SELECT target FROM nodes WHERE id = ?", (node_id,)).fetchone()
        return b"" if row is None or row[0] is None else bytes(row[0])
