"""The archive of a workspace file: nodes that lost their last name wait here, value and
all, for the retention period (``kyfs restore``, ``kyfs archive``); and the undo of an
``rm -r`` of the whole workspace (``kyfs trash restore``).

An archived row keeps the node's id, type, mode, owner, times and a symlink's target;
its value stays in the block store under that id (kyfs.engine.sql.blocks), so archiving
and restoring copy no data, and a value archived while a version or a copy shares its
blocks costs nothing more.
A node restored comes back with one name, the one it was archived under.

Thread-safety: as kyfs.engine.sql.base.
"""

from __future__ import annotations

import time
from typing import Any

from kyfs.core import names
from kyfs.core.errors import AlreadyExists, KeyNotFound, NotEmpty
from kyfs.core.nodes import DIR, REG, Archived, Entry, Owner
from kyfs.engine.base import Usage
from kyfs.engine.sql import blocks
from kyfs.engine.sql.base import Connection, drop_xattrs, frees_space
from kyfs.engine.sql.history import materialize
from kyfs.engine.sql.nodes import SQL_HAS_CHILD
from kyfs.engine.sql.values import ValuesMixin, after_write

_COLUMNS = (
    "id, key, coalesce(kind, CASE WHEN is_dir != 0 THEN 16384 ELSE 32768 END), mode, size,"
    " created_ns, mtime_ns, ctime_ns, mtime_ns, coalesce(uid, 0), coalesce(gid, 0), 1, rdev,"
    " deleted_ns, target"
)


def _archived(row: Any) -> tuple[Archived, bytes | None]:
    # Archive rows keep no atime: the modification time stands in for it.
    entry = Entry(*row[:13])
    return Archived(entry, row[13]), (None if row[14] is None else bytes(row[14]))


class ArchiveMixin(ValuesMixin):
    """Listing, restoring and purging the archive."""

    def archived(self, key: str | None = None) -> list[Archived]:
        """Archived entries, newest deletion first; only those of ``key`` when given."""
        sql = f"SELECT {_COLUMNS} FROM archive"
        args: tuple[object, ...] = ()
        if key is not None:
            sql += " WHERE key = ?"
            args = (key,)
        rows = self._rows(sql + " ORDER BY deleted_ns DESC, id DESC", args)
        return [_archived(row)[0] for row in rows]

    def restore(self, key: str, archive_id: int | None = None, force: bool = False) -> Entry:
        """Bring back the newest archived version of ``key`` (or archive row ``archive_id``).

        The value is not copied: the archived node becomes live again under ``key``.
        With ``force`` a live key of that name is archived first.

        Raises:
            KeyNotFound: (ENOENT, exit 1) nothing of that key is archived.
            AlreadyExists: (EEXIST, exit 3) the key is live and ``force`` is off.
            NotADirectory: (ENOTDIR) a key stands where a directory above it should.
        """
        now = time.time_ns()
        with self._atomic() as conn:
            sql = f"SELECT {_COLUMNS} FROM archive WHERE key = ?"
            args: tuple[object, ...] = (key,)
            if archive_id is not None:
                sql += " AND id = ?"
                args = (key, archive_id)
            row = conn.execute(sql + " ORDER BY deleted_ns DESC, id DESC LIMIT 1", args).fetchone()
            if row is None:
                raise KeyNotFound(f"nothing archived for key: {key}")
            archived, target = _archived(row)
            self._restore_row(conn, archived.entry, target, force, now)
            return self._must(conn, key)

    def _restore_row(
        self,
        conn: Connection,
        entry: Entry,
        target: bytes | None,
        force: bool,
        now: int,
    ) -> None:
        live = self._lookup(conn, entry.key)
        if live is not None:
            if live.is_dir and entry.is_dir:  # a directory that exists again: nothing to do
                conn.execute("DELETE FROM archive WHERE id = ?", (entry.id,))
                drop_xattrs(conn, "?", (entry.id,))
                return
            if not force:
                raise AlreadyExists(f"key exists: {entry.key} (use --force to replace it)")
            if live.is_dir and conn.execute(SQL_HAS_CHILD, (entry.key,)).fetchone():
                raise NotEmpty(f"a directory with entries stands at {entry.key}")
            self._drop_name(conn, live, now)
        parent = self._ensure_parents(conn, entry.key, now, Owner(entry.uid, entry.gid))
        conn.execute(
            "INSERT INTO nodes (id, kind, mode, uid, gid, nlink, size, created_ns, mtime_ns,"
            " ctime_ns, atime_ns, target, rdev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.id, entry.kind, entry.mode, entry.uid, entry.gid,
                2 if entry.is_dir else 1, entry.size, entry.created_ns, entry.mtime_ns,
                now, entry.mtime_ns, target, entry.rdev,
            ),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO entries (key, parent, node) VALUES (?, ?, ?)",
            (entry.key, names.parent_of(entry.key), entry.id),
        )
        blocks.recount(conn, entry.id)  # the archive keeps no count of its bytes
        if entry.is_dir:
            self._nlink(conn, parent.id, 1)
        self._touch(conn, parent.id, now)
        conn.execute("DELETE FROM archive WHERE id = ?", (entry.id,))
        if entry.kind == REG:
            after_write(
                conn, entry.id, detail="restored from the archive", keep_version=not self.short()
            )

    def restore_teardown(self) -> int:
        """Undo the deletions that emptied this workspace (``rm -r`` through the mount).

        Only when no key is live: every entry deleted after the workspace's last
        change that was not a deletion (the newest ctime among live and archived
        keys; directories' times move with every deletion inside them, so they do not
        count) is restored, parents first. Returns how many entries came back.
        """
        now = time.time_ns()
        with self._atomic() as conn:
            if conn.execute("SELECT 1 FROM nodes WHERE kind != ? LIMIT 1", (DIR,)).fetchone():
                return 0
            last_change = conn.execute(
                "SELECT max(t) FROM (SELECT max(ctime_ns) AS t FROM nodes WHERE kind != ?"
                " UNION ALL SELECT max(ctime_ns) FROM archive WHERE is_dir = 0) AS changed",
                (DIR,),
            ).fetchone()[0]
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM archive WHERE deleted_ns >= ?"
                " ORDER BY deleted_ns DESC, id DESC",
                (last_change or 0,),
            ).fetchall()
            restored, seen = 0, set()
            for row in sorted(rows, key=lambda r: (r[1].count("/"), r[1])):
                archived, target = _archived(row)
                if archived.entry.key in seen:  # an older archived version of the same key
                    continue
                seen.add(archived.entry.key)
                self._restore_row(conn, archived.entry, target, force=False, now=now)
                restored += 1
            return restored

    @frees_space
    def purge_archive(self, before_ns: int) -> int:
        """Delete for good what entered the archive before ``before_ns`` (its deletion, or
        its import for imported entries); returns how many entries."""
        old = "coalesce(archived_ns, deleted_ns) < ?"
        # the usual case, nothing to purge, takes no write lock
        if not self._row(f"SELECT 1 FROM archive WHERE {old} LIMIT 1", (before_ns,)):
            return 0
        with self._atomic() as conn:
            for (node_id,) in conn.execute(f"SELECT id FROM archive WHERE {old}", (before_ns,)):
                materialize(conn, int(node_id))  # versions of it keep their value
            blocks.drop_selected(conn, f"SELECT id FROM archive WHERE {old}", (before_ns,))
            drop_xattrs(conn, f"SELECT id FROM archive WHERE {old}", (before_ns,))
            return int(conn.execute(f"DELETE FROM archive WHERE {old}", (before_ns,)).rowcount)

    # --- space ----------------------------------------------------------------------------
    def usage(self) -> Usage:
        """Where the workspace's bytes go (kyfs.engine.base.Usage), from one snapshot.

        Raises:
            StorageError: (EIO, exit 4).
        """
        with self._snapshot() as conn:
            live, archive, history, _ = blocks.usage(conn)
            values = conn.execute(
                "SELECT coalesce(sum(size), 0) FROM nodes WHERE kind = ?", (REG,)
            ).fetchone()[0]
            free = self._free_bytes(conn)
            index = self._index_bytes(conn)
        return Usage(live, history, archive, index, int(values), self.file_size(), free)

    def _index_bytes(self, conn: Connection) -> int:
        """Bytes the search index takes in storage (the engine's)."""
        raise NotImplementedError

    def _free_bytes(self, conn: Connection) -> int | None:
        """Bytes inside the storage not in use, or None when the engine cannot tell."""
        return None

    def file_size(self) -> int:
        """Bytes the workspace takes in storage (the engine's)."""
        raise NotImplementedError
