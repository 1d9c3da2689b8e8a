"""The namespace of a workspace file: names (``entries``) and the nodes they point at.

``nodes`` holds one row per inode (type, mode, owner, link count, size, times, TTL, a
symlink's target); ``entries`` one row per name: its key, its parent directory's key and
its node. The workspace's top directory is a node with no name (``meta.root_node``).

The rules follow Linux's tmpfs (POSIX where it speaks):

* a new node belongs to the caller (uid, gid); in a directory with the setgid bit it
  takes the directory's group, and a new subdirectory inherits the bit (as
  inode_init_owner() in Linux's fs/inode.c);
* creating, removing or renaming a name sets its directory's mtime and ctime; chmod,
  chown, link, unlink and rename set the node's ctime;
* a directory's nlink is 2 plus its subdirectories; a file's is its number of names;
* when a node loses its last name it moves to the archive, value and all, under that
  name (``kyfs restore`` brings it back); a name removed while others remain only
  records a "delete" in that name's history;
* rename(2) of one name onto another name of the same node does nothing.

Permission checks are the kernel's (the mount uses ``default_permissions``); the CLI
acts with the rights of the workspace file's owner.

Thread-safety: as kyfs.engine.sql.base.
"""

from __future__ import annotations

import os
import stat as st
import time
import uuid
from typing import Any

from kyfs.core import inodes, names
from kyfs.core.errors import (
    AlreadyExists,
    InvalidInput,
    IsADirectory,
    KeyNotFound,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotPermitted,
    StorageError,
    TooManyLinks,
)
from kyfs.core.nodes import (
    BLK,
    CHR,
    DIR,
    DIR_MODE,
    FILE_MODE,
    KIND_NAMES,
    LINK_MODE,
    LNK,
    MAX_RDEV,
    MODE_MASK,
    REG,
    ROOT,
    SPECIAL,
    Entry,
    Owner,
)
from kyfs.engine.sql import blocks
from kyfs.engine.sql.base import Connection, drop_xattrs, frees_space, mark, names_of
from kyfs.engine.sql.history import HistoryMixin, drop_versions, keep_items, narrow, record

_NODE = (
    "n.kind, n.mode, n.size, n.created_ns, n.mtime_ns, n.ctime_ns, n.atime_ns,"
    " n.uid, n.gid, n.nlink, n.rdev, n.stored"
)
SQL_STAT = (
    f"SELECT e.node, e.key, {_NODE} FROM entries e JOIN nodes n ON n.id = e.node WHERE e.key = ?"
)
SQL_CHILDREN = (
    f"SELECT e.node, e.key, {_NODE} FROM entries e JOIN nodes n ON n.id = e.node"
    " WHERE e.parent = ? ORDER BY e.key"
)
SQL_NODE = f"SELECT n.id, '', {_NODE} FROM nodes n WHERE n.id = ?"
# The top directory (its node, ?) and the entries at the keys of a list, in one
# statement (``{keys}``: one ``?`` per key): a create's own key and every directory above it.
SQL_STAT_WITH_TOP = (
    f"{SQL_NODE} UNION ALL SELECT e.node, e.key, {_NODE} FROM entries e"
    " JOIN nodes n ON n.id = e.node WHERE e.key IN ({keys})"
)
SQL_NODE_NAMED = (  # a node under its first name ('' when it has none)
    "SELECT n.id, coalesce((SELECT min(e.key) FROM entries e WHERE e.node = n.id), ''),"
    f" {_NODE} FROM nodes n WHERE n.id = ?"
)
SQL_HAS_CHILD = "SELECT 1 FROM entries WHERE parent = ? LIMIT 1"
SQL_ARCHIVE = (
    "INSERT INTO archive (id, key, is_dir, mode, size, created_ns, mtime_ns, ctime_ns,"
    " deleted_ns, kind, uid, gid, target, rdev) SELECT id, ?,"
    " CASE WHEN kind = ? THEN 1 ELSE 0 END, mode, size, created_ns,"
    " mtime_ns, ctime_ns, ?, kind, uid, gid, target, rdev FROM nodes WHERE id = ?"
)
MAX_LINKS = 65_000  # names per node; link(2) past it is EMLINK (ext4 allows 65,000)


def to_entry(row: Any) -> Entry:
    """An Entry from a row of SQL_STAT, SQL_CHILDREN or SQL_NODE."""
    return Entry(*row)


def process_owner() -> Owner:
    """The calling process's uid and gid: the owner of what the CLI creates."""
    return Owner(os.getuid(), os.getgid())


def archive_node(conn: Connection, node_id: int, key: str, now: int) -> None:
    """Move node ``node_id`` to the archive under ``key``; its blocks stay, under its id,
    and it leaves the search index (at the next flush; a search never lists a node
    without a name, so it is never found meanwhile)."""
    conn.execute(SQL_ARCHIVE, (key, DIR, now, node_id))
    conn.execute("DELETE FROM nodes WHERE id = ?", (node_id,))
    mark(conn, node_id)  # its index row goes at the next flush


def _move_below(conn: Connection, old: str, new: str) -> None:
    """Every name below directory ``old`` moves below ``new`` (the prefix swapped; keys
    and parents), inside the caller's transaction. substr() counts characters, as len()
    does."""
    cut = len(old) + 1
    conn.execute(
        "UPDATE entries SET key = ? || substr(key, ?),"
        " parent = CASE WHEN parent = ? THEN ? ELSE ? || substr(parent, ?) END"
        " WHERE key >= ? AND key < ?",
        (new + "/", cut + 1, old, new, new + "/", cut + 1, old + "/", old + "0"),
    )


class NamespaceMixin(HistoryMixin):
    """Names and nodes: lookups, create, mkdir, symlink, link, unlink, rmdir, rename,
    chmod, chown, utimens."""

    _root_id: int
    inode_tag: int

    def _load_identity(self) -> None:
        """Read the top directory's node id and the inode tag (settings in meta).

        Raises:
            StorageError: (EIO, exit 4) they are missing or not numbers (a damaged file).
        """
        meta = dict(
            self._conn.execute(
                "SELECT name, value FROM meta WHERE name IN ('root_node', 'inode_tag')"
            ).fetchall()
        )
        try:
            self._root_id = int(meta["root_node"])
            self.inode_tag = int(meta["inode_tag"])
        except (KeyError, TypeError, ValueError):
            raise StorageError(
                f"{self.path}: damaged: its settings lack the top directory or the inode tag"
                " (kyfs fsck --repair)"
            ) from None

    def inode(self, node_id: int) -> int:
        """The st_ino the mount shows for node ``node_id``: ``inode_tag << 36 | node_id``
        (kyfs.core.inodes), below 2**53."""
        return inodes.inode(self.inode_tag, node_id)

    def set_inode_tag(self, tag: int) -> None:
        """Give the workspace the inode tag ``tag`` (the engine keeps tags unique among
        its workspaces: kyfs.core.inodes.settled_tag); st_ino of every node changes."""
        with self._atomic() as conn:
            conn.execute("UPDATE meta SET value = ? WHERE name = 'inode_tag'", (str(tag),))
        self.inode_tag = tag

    # --- lookups ----------------------------------------------------------------------
    def _lookup(self, conn: Connection, key: str) -> Entry | None:
        if key == ROOT:
            row = conn.execute(SQL_NODE, (self._root_id,)).fetchone()
        else:
            row = conn.execute(SQL_STAT, (key,)).fetchone()
        return to_entry(row) if row else None

    def stat(self, key: str) -> Entry:
        """The entry stored at ``key`` (``""`` is the workspace's top directory).

        Raises:
            KeyNotFound: (ENOENT, exit 1) nothing is stored there.
        """
        try:
            entry = self._lookup(self._conn, key)
        except self._errors as exc:
            raise self._convert(exc) from None
        if entry is None:
            raise KeyNotFound(f"key not found: {key}")
        return entry

    def stat_id(self, node_id: int) -> Entry | None:
        """Node ``node_id`` under one of its names (``""`` when it has none, as the top
        directory), or None when it no longer exists (or only in the archive)."""
        row = self._row(SQL_NODE_NAMED, (node_id,))
        return None if row is None else to_entry(row)

    def children(self, directory: str) -> list[Entry]:
        """The entries directly inside ``directory``, sorted by key.

        Raises:
            KeyNotFound: (ENOENT) no such directory. NotADirectory: (ENOTDIR) it is not one.
        """
        if not self.stat(directory).is_dir:
            raise NotADirectory(f"not a directory: {directory}")
        return [to_entry(row) for row in self._rows(SQL_CHILDREN, (directory,))]

    def keys(self, prefix: str = "", glob: str | None = None) -> list[str]:
        """Every key that is not a directory (values and symlinks) that starts with
        ``prefix`` and, when given, matches the glob ``glob`` (SQLite's GLOB: ``*`` ``?``
        ``[...]`` ``[^...]``, case-sensitive, ``*`` crosses ``/``), sorted by code point."""
        sql = "SELECT e.key FROM entries e JOIN nodes n ON n.id = e.node WHERE n.kind != ?"
        args: list[Any] = [DIR]
        if prefix:
            sql += " AND e.key >= ? AND e.key < ?"
            args += [prefix, prefix + "\U0010ffff"]
        if glob is not None:
            clause, arg = self._glob_clause(glob)
            sql += f" AND {clause}"
            args.append(arg)
        return [row[0] for row in self._rows(sql + " ORDER BY e.key", args)]

    def _glob_clause(self, glob: str) -> tuple[str, Any]:
        """The condition on ``e.key`` that matches ``glob`` and its argument: SQLite's own
        GLOB operator (sqlite.org/lang_expr.html#glob); an engine without it overrides."""
        return "e.key GLOB ?", glob

    def keys_of(self, node_id: int) -> list[str]:
        """Every name of node ``node_id`` (several for a hard-linked file), by code point.

        Raises:
            StorageError: (EIO, exit 4).
        """
        try:
            return names_of(self._conn, node_id)
        except self._errors as exc:
            raise self._convert(exc) from None

    def count_keys(self) -> int:
        """How many keys (names that are not directories) the workspace holds."""
        row = self._row(
            "SELECT count(*) FROM entries e JOIN nodes n ON n.id = e.node WHERE n.kind != ?",
            (DIR,),
        )
        return int(row[0])

    def count_nodes(self) -> int:
        """How many nodes (inodes: files, directories, symlinks, the top directory)."""
        return int(self._row("SELECT count(*) FROM nodes")[0])

    def readlink(self, key: str) -> bytes:
        """The target of symbolic link ``key``, as stored (bytes, not resolved).

        Raises:
            KeyNotFound: (ENOENT). InvalidInput: (EINVAL) not a symbolic link (readlink(2)).
        """
        row = self._row(
            "SELECT n.kind, n.target FROM entries e JOIN nodes n ON n.id = e.node WHERE e.key = ?",
            (key,),
        )
        if row is None:
            raise KeyNotFound(f"key not found: {key}")
        if row[0] != LNK:
            raise InvalidInput(f"not a symbolic link: {key}")
        return bytes(row[1])

    # --- helpers inside a transaction ----------------------------------------------------
    def _touch(self, conn: Connection, node_id: int, now: int) -> None:
        """A directory's content changed: mtime and ctime become ``now``."""
        conn.execute(
            "UPDATE nodes SET mtime_ns = ?, ctime_ns = ? WHERE id = ?", (now, now, node_id)
        )

    def _nlink(self, conn: Connection, node_id: int, delta: int) -> None:
        conn.execute("UPDATE nodes SET nlink = nlink + ? WHERE id = ?", (delta, node_id))

    def _lookup_path(self, conn: Connection, key: str) -> dict[str, Entry]:
        """The entries at ``key``, at every directory above it and at the top directory
        (``""``), by key, from one statement; a key where nothing is stored is missing."""
        keys = [*names.ancestors(key), key] if key != ROOT else []
        sql = SQL_STAT_WITH_TOP.format(keys=", ".join("?" * len(keys)) or "NULL")
        rows = conn.execute(sql, (self._root_id, *keys)).fetchall()
        return {row[1]: to_entry(row) for row in rows}

    def _ensure_parents(
        self,
        conn: Connection,
        key: str,
        now: int,
        owner: Owner,
        path: dict[str, Entry] | None = None,
    ) -> Entry:
        """Record every missing directory above ``key`` (owned by ``owner``); return the
        directory that holds ``key``. ``path``: what :meth:`_lookup_path` found for
        ``key`` in this transaction (else it is looked up here).

        Raises:
            NotADirectory: (ENOTDIR) a key stands where a directory above it should.
        """
        if path is None:
            path = self._lookup_path(conn, key)
        parent = path[ROOT]
        for directory in names.ancestors(key):
            found = path.get(directory)
            if found is None:
                found = self._new_node(conn, directory, DIR, DIR_MODE, owner, now, parent)
            elif not found.is_dir:
                raise NotADirectory(f"not a directory: {directory}")
            parent = found
        return parent

    def _new_node(
        self,
        conn: Connection,
        key: str,
        kind: int,
        mode: int,
        owner: Owner,
        now: int,
        parent: Entry,
        target: bytes | None = None,
        rdev: int = 0,
    ) -> Entry:
        """Create a node of type ``kind`` named ``key`` in directory ``parent``; returns
        its entry, as stored (``rdev``: a device node's number). The setgid bit of
        ``parent`` gives the node its group (and a new directory the bit), as on Linux."""
        mode &= MODE_MASK
        gid = owner.gid
        if parent.mode & st.S_ISGID:
            gid = parent.gid
            if kind == DIR:
                mode |= st.S_ISGID
        size = len(target) if target is not None else 0
        nlink = 2 if kind == DIR else 1
        cur = conn.execute(
            "INSERT INTO nodes (kind, mode, uid, gid, nlink, size, created_ns, mtime_ns,"
            " ctime_ns, atime_ns, target, rdev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING id",
            (kind, mode, owner.uid, gid, nlink, size, now, now, now, now, target, rdev),
        )
        node_id = inodes.check_node_id(int(cur.fetchall()[0][0]))
        conn.execute(
            "INSERT INTO entries (key, parent, node) VALUES (?, ?, ?)",
            (key, names.parent_of(key), node_id),
        )
        if kind == DIR:
            self._nlink(conn, parent.id, 1)
        self._touch(conn, parent.id, now)
        return Entry(node_id, key, kind, mode, size, now, now, now, now, owner.uid, gid,
                     nlink, rdev, 0)  # fmt: skip

    def _make(
        self,
        conn: Connection,
        key: str,
        kind: int,
        mode: int,
        owner: Owner | None,
        target: bytes | None = None,
        rdev: int = 0,
        now: int | None = None,
        path: dict[str, Entry] | None = None,
    ) -> Entry:
        """Create ``key`` (missing directories above it too) at time ``now`` (ns, UTC;
        default: the clock's now); returns its entry, as stored. ``path``: as
        :meth:`_ensure_parents`."""
        now = time.time_ns() if now is None else now
        owner = owner or process_owner()
        parent = self._ensure_parents(conn, key, now, owner, path)
        return self._new_node(conn, key, kind, mode, owner, now, parent, target, rdev)

    def _drop_name(
        self, conn: Connection, entry: Entry, now: int, path: dict[str, Entry] | None = None
    ) -> bool:
        """Remove the name ``entry.key``; its node goes to the archive when that was its
        last name (while the disk is short of space it goes for good, with the versions
        of that name, and their blocks are freed). Returns True when the node went.
        ``path``: what :meth:`_lookup_path` found for ``entry.key`` in this transaction
        (else its directory is looked up here)."""
        above = names.parent_of(entry.key)
        parent = self._lookup(conn, above) if path is None else path.get(above)
        conn.execute("DELETE FROM entries WHERE key = ?", (entry.key,))
        if parent is not None:
            if entry.is_dir:
                self._nlink(conn, parent.id, -1)
            self._touch(conn, parent.id, now)
        if not entry.is_dir and entry.nlink > 1:
            conn.execute(
                "UPDATE nodes SET nlink = nlink - 1, ctime_ns = ? WHERE id = ?", (now, entry.id)
            )
            mark(conn, entry.id)
            return False
        if self.short():  # a full disk: nothing is kept, the blocks are free at once,
            keep_items(conn, entry.id, gone=True)  # (but a snapshot's, handed over)
            blocks.drop(conn, entry.id)  # and so are those of the name's versions
            conn.execute("DELETE FROM nodes WHERE id = ?", (entry.id,))
            drop_xattrs(conn, "?", (entry.id,))
            versions = conn.execute(
                "SELECT id FROM history WHERE (key = ? AND size IS NOT NULL) OR shared = ?",
                (entry.key, entry.id),
            ).fetchall()
            drop_versions(conn, [int(row[0]) for row in versions])
            mark(conn, entry.id)
        else:
            archive_node(conn, entry.id, entry.key, now)
        return True

    def _must(self, conn: Connection, key: str) -> Entry:
        entry = self._lookup(conn, key)
        if entry is None:
            raise KeyNotFound(f"key not found: {key}")
        return entry

    # --- creating -------------------------------------------------------------------------
    def create(
        self, key: str, mode: int = FILE_MODE, exclusive: bool = False, owner: Owner | None = None
    ) -> Entry:
        """Make ``key`` exist as a key; an empty value owned by ``owner`` (default: this
        process) when it is new. When it exists it is returned unchanged, unless
        ``exclusive`` (O_EXCL). Missing directories above it are created.

        Raises:
            AlreadyExists: (EEXIST) ``exclusive`` and the key exists.
            IsADirectory: (EISDIR) a directory has that key.
            NotADirectory: (ENOTDIR) a key stands where a directory above it should.
        """
        names.check_key(key)
        with self._atomic() as conn:
            path = self._lookup_path(conn, key)  # the key and its directories: one read
            entry = path.get(key)
            if entry is not None:
                if entry.is_dir:
                    raise IsADirectory(f"is a directory: {key}")
                if exclusive:
                    raise AlreadyExists(f"key exists: {key}")
                return entry
            made = self._make(conn, key, REG, mode, owner, path=path)
            mark(conn, made.id)
            return made

    def mkdir(self, key: str, mode: int = DIR_MODE, owner: Owner | None = None) -> Entry:
        """Create directory ``key`` (and any missing one above it), owned by ``owner``.

        Raises:
            AlreadyExists: (EEXIST) a key or directory is there. NotADirectory: (ENOTDIR).
        """
        names.check_key(key)
        with self._atomic() as conn:
            if self._lookup(conn, key) is not None:
                raise AlreadyExists(f"exists: {key}")
            self._make(conn, key, DIR, mode, owner)
            return self._must(conn, key)

    def symlink(self, key: str, target: bytes, owner: Owner | None = None) -> Entry:
        """Create symbolic link ``key`` pointing at ``target`` (any bytes but NUL, at most
        4095: Linux's PATH_MAX less the NUL; never resolved by kyfs), mode 0777.

        Raises:
            AlreadyExists: (EEXIST). NotADirectory: (ENOTDIR). NameTooLong: (ENAMETOOLONG)
            a target over 4095 bytes. InvalidInput: (EINVAL) an empty target or one with NUL.
        """
        names.check_key(key)
        if not target or b"\0" in target:
            raise InvalidInput("a symbolic link's target is 1 to 4095 bytes without NUL")
        if len(target) > 4095:
            raise NameTooLong("a symbolic link's target is at most 4095 bytes")
        now = time.time_ns()
        with self._atomic() as conn:
            if self._lookup(conn, key) is not None:
                raise AlreadyExists(f"exists: {key}")
            self._make(conn, key, LNK, LINK_MODE, owner, target)
            record(conn, key, "symlink", os.fsdecode(target), now)
            return self._must(conn, key)

    def mknod(
        self, key: str, kind: int, mode: int, rdev: int = 0, owner: Owner | None = None
    ) -> Entry:
        """Create special node ``key`` (mknod(2)): ``kind`` FIFO, SOCK, CHR or BLK
        (kyfs.core.nodes.SPECIAL), permission bits ``mode``, device number ``rdev`` (kept
        for CHR and BLK only, 0 for the others), owned by ``owner``. It holds no value:
        the kernel does a FIFO's and a socket's I/O, and a device node never opens on the
        mount (nodev). Who may make a device node is the kernel's check (CAP_MKNOD).

        Raises:
            AlreadyExists: (EEXIST). NotADirectory: (ENOTDIR). InvalidInput: (EINVAL) a
            ``kind`` that is not special, or an ``rdev`` out of 0..MAX_RDEV.
        """
        names.check_key(key)
        if kind not in SPECIAL:
            raise InvalidInput(f"mknod makes FIFOs, sockets and device nodes, not {kind:o}")
        if not 0 <= rdev <= MAX_RDEV:
            raise InvalidInput(f"a device number is 0 to {MAX_RDEV}")
        if kind not in (CHR, BLK):
            rdev = 0
        now = time.time_ns()
        with self._atomic() as conn:
            if self._lookup(conn, key) is not None:
                raise AlreadyExists(f"exists: {key}")
            self._make(conn, key, kind, mode, owner, rdev=rdev)
            record(conn, key, "mknod", KIND_NAMES[kind], now)
            return self._must(conn, key)

    def link(self, existing: str, new: str) -> Entry:
        """Give the node named ``existing`` a second name ``new`` (link(2)): its nlink and
        ctime change, and ``new``'s directory's mtime and ctime.

        Raises:
            KeyNotFound: (ENOENT) ``existing`` missing. AlreadyExists: (EEXIST) ``new``
            exists. NotPermitted: (EPERM) ``existing`` is a directory (link(2) on Linux).
            NotADirectory: (ENOTDIR). TooManyLinks: (EMLINK) past MAX_LINKS names.
        """
        names.check_key(new)
        now = time.time_ns()
        with self._atomic() as conn:
            entry = self._must(conn, existing)
            if entry.is_dir:
                raise NotPermitted(f"cannot link a directory: {existing}")
            if self._lookup(conn, new) is not None:
                raise AlreadyExists(f"exists: {new}")
            if entry.nlink >= MAX_LINKS:
                raise TooManyLinks(f"{existing} has {entry.nlink} names already")
            parent = self._ensure_parents(conn, new, now, Owner(entry.uid, entry.gid))
            conn.execute(
                "INSERT INTO entries (key, parent, node) VALUES (?, ?, ?)",
                (new, names.parent_of(new), entry.id),
            )
            conn.execute(
                "UPDATE nodes SET nlink = nlink + 1, ctime_ns = ? WHERE id = ?", (now, entry.id)
            )
            self._touch(conn, parent.id, now)
            mark(conn, entry.id)
            narrow(conn, [new], entry.mode)  # older versions of the name: no more than now
            record(conn, new, "link", f"from {existing}", now)
            return self._must(conn, new)

    # --- removing ---------------------------------------------------------------------------
    @frees_space
    def delete(self, key: str) -> Entry:
        """Remove the name ``key`` (unlink(2)); returns the entry as it was (its ``nlink``
        counts the name just removed). When it was the node's last name the node and its
        value wait in the archive (see ``restore``).

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3) use rmdir.
        """
        now = time.time_ns()
        with self._atomic() as conn:
            # Sent before either is read: on PostgreSQL one round trip with the BEGIN,
            # then the writes go with the COMMIT (kyfs.engine.postgres.connection).
            reserved = self._history_id(conn)
            path = self._lookup_path(conn, key)
            version_id = None if reserved is None else int(reserved.fetchone()[0])
            entry = path.get(key)
            if entry is None:
                raise KeyNotFound(f"key not found: {key}")
            if entry.is_dir:
                raise IsADirectory(f"is a directory: {key}")
            self._drop_name(conn, entry, now, path)
            record(conn, key, "delete", None, now, version_id=version_id)
            return entry

    @frees_space
    def rmdir(self, key: str) -> None:
        """Remove the empty directory ``key``.

        Raises:
            KeyNotFound (ENOENT), NotADirectory (ENOTDIR), NotEmpty (ENOTEMPTY).
        """
        with self._atomic() as conn:
            children = conn.execute(SQL_HAS_CHILD, (key,))  # sent with the lookup
            path = self._lookup_path(conn, key)
            entry = path.get(key)
            if entry is None:
                raise KeyNotFound(f"no such directory: {key}")
            if not entry.is_dir:
                raise NotADirectory(f"not a directory: {key}")
            if children.fetchone():
                raise NotEmpty(f"directory not empty: {key}")
            self._drop_name(conn, entry, time.time_ns(), path)

    @frees_space
    def rename(self, old: str, new: str) -> None:
        """Move ``old`` (a key, or a directory with all below it) to ``new``, in one
        transaction, as rename(2): an existing key at ``new`` is replaced atomically (its
        node goes to the archive when that was its last name), as is an empty directory
        when ``old`` is a directory; two names of one node stay as they are.

        Raises:
            KeyNotFound: (ENOENT) ``old`` missing.
            InvalidInput: (EINVAL) ``new`` lies inside ``old``.
            IsADirectory: (EISDIR) ``old`` is a key and ``new`` a directory.
            NotADirectory: (ENOTDIR) ``old`` is a directory and ``new`` a key.
            NotEmpty: (ENOTEMPTY) ``new`` is a directory that holds entries.
        """
        names.check_key(new)
        if old == new:
            self.stat(old)
            return
        if names.is_within(new, old):
            raise InvalidInput(f"cannot move {old!r} into itself ({new!r})")
        now = time.time_ns()
        with self._atomic() as conn:
            source = self._must(conn, old)
            target = self._lookup(conn, new)
            if target is not None:
                if target.id == source.id:
                    return  # two names of one node: rename(2) does nothing
                if target.is_dir and not source.is_dir:
                    raise IsADirectory(f"is a directory: {new}")
                if source.is_dir and not target.is_dir:
                    raise NotADirectory(f"not a directory: {new}")
                if target.is_dir and conn.execute(SQL_HAS_CHILD, (new,)).fetchone():
                    raise NotEmpty(f"directory not empty: {new}")
                self._drop_name(conn, target, now)  # the replaced value stays recoverable
            old_parent = self._must(conn, names.parent_of(old))
            new_parent = self._ensure_parents(conn, new, now, Owner(source.uid, source.gid))
            conn.execute(
                "UPDATE entries SET key = ?, parent = ? WHERE key = ?",
                (new, names.parent_of(new), old),
            )
            if source.is_dir:
                _move_below(conn, old, new)
                if old_parent.id != new_parent.id:
                    self._nlink(conn, old_parent.id, -1)
                    self._nlink(conn, new_parent.id, 1)
            self._touch(conn, old_parent.id, now)
            self._touch(conn, new_parent.id, now)
            conn.execute("UPDATE nodes SET ctime_ns = ? WHERE id = ?", (now, source.id))
            moved = conn.execute(
                "SELECT e.node, e.key, n.kind, n.size, n.mode FROM entries e JOIN nodes n"
                " ON n.id = e.node WHERE n.kind != ? AND (e.key = ? OR (e.key >= ? AND e.key < ?))",
                (DIR, new, new + "/", new + "0"),
            ).fetchall()
            for node_id, key, kind, size, mode in moved:
                mark(conn, node_id)
                before = old + key[len(new) :]
                narrow(conn, [key], mode)  # the name's versions: no more than it shows now
                record(conn, before, "rename", f"to {key}", now)
                if source.is_dir or kind != REG:
                    record(conn, key, "rename", f"from {before}", now)
                else:  # a version of the new name: write-then-rename keeps its history
                    record(conn, key, "rename", f"from {before}", now, owner=node_id, size=size)

    def exchange(self, one: str, other: str) -> None:
        """Swap the nodes named ``one`` and ``other`` (renameat2(2) with RENAME_EXCHANGE)
        atomically, in one transaction: each name then names what the other did, with
        everything below it when it is a directory. Both must exist; they may be of any
        types. Their nodes' ctime and both directories' mtime and ctime are now.

        Raises:
            KeyNotFound: (ENOENT) either is missing.
            InvalidInput: (EINVAL) one lies inside the other (Linux: EINVAL).
        """
        names.check_key(one)
        names.check_key(other)
        if one == other:
            self.stat(one)
            return
        if names.is_within(one, other) or names.is_within(other, one):
            raise InvalidInput(f"cannot exchange {one!r} with a name inside it ({other!r})")
        now = time.time_ns()
        with self._atomic() as conn:
            first, second = self._must(conn, one), self._must(conn, other)
            if first.id == second.id:
                return  # two names of one node: nothing changes
            one_parent = self._must(conn, names.parent_of(one))
            other_parent = self._must(conn, names.parent_of(other))
            conn.execute("UPDATE entries SET node = ? WHERE key = ?", (second.id, one))
            conn.execute("UPDATE entries SET node = ? WHERE key = ?", (first.id, other))
            aside = f"{one}/.kyfs-exchange-{uuid.uuid4().hex}"  # never seen: one transaction
            if first.is_dir:
                _move_below(conn, one, aside)
            if second.is_dir:
                _move_below(conn, other, one)
            if first.is_dir:
                _move_below(conn, aside, other)
            if one_parent.id != other_parent.id and first.is_dir != second.is_dir:
                moved = 1 if first.is_dir else -1  # a subdirectory moves between the two
                self._nlink(conn, one_parent.id, -moved)
                self._nlink(conn, other_parent.id, moved)
            for parent in {one_parent.id, other_parent.id}:
                self._touch(conn, parent, now)
            for node_id in (first.id, second.id):
                conn.execute("UPDATE nodes SET ctime_ns = ? WHERE id = ?", (now, node_id))
            for key, before in ((one, other), (other, one)):
                moved_names = conn.execute(
                    "SELECT e.node, e.key, n.mode FROM entries e JOIN nodes n ON n.id = e.node"
                    " WHERE n.kind != ? AND (e.key = ? OR (e.key >= ? AND e.key < ?))",
                    (DIR, key, key + "/", key + "0"),
                ).fetchall()
                for node_id, name, mode in moved_names:
                    mark(conn, node_id)
                    narrow(conn, [name], mode)  # the name's versions: no more than it shows
                record(conn, key, "rename", f"exchanged with {before}", now)

    # --- attributes -------------------------------------------------------------------------
    def _set_attrs(self, key: str, **columns: int | None) -> Entry:
        """Set the node columns given (a None value is left as it is) and ctime to now, in
        one transaction; returns the entry as it was before. KeyNotFound (ENOENT)."""
        given = {name: value for name, value in columns.items() if value is not None}
        clause = "".join(f"{name} = ?, " for name in given) + "ctime_ns = ?"
        with self._atomic() as conn:
            entry = self._must(conn, key)
            conn.execute(
                f"UPDATE nodes SET {clause} WHERE id = ?",
                (*given.values(), time.time_ns(), entry.id),
            )
            if "mode" in given:  # its versions show the most restrictive mode since
                narrow(conn, names_of(conn, entry.id), int(given["mode"]))
        return entry

    def chmod(self, key: str, mode: int) -> Entry:
        """Store permission bits ``mode & 0o7777`` for ``key``; ctime is now. The kernel
        checks who may (default_permissions), and clears setgid where POSIX says.
        Returns the entry as it was before (its id and link count still hold).

        Raises:
            KeyNotFound: (ENOENT).
        """
        return self._set_attrs(key, mode=mode & MODE_MASK)

    def chown(self, key: str, uid: int | None, gid: int | None) -> Entry:
        """Give ``key`` owner ``uid`` and group ``gid`` (None keeps one, as -1 in
        chown(2)); ctime is now. Who may is checked by the kernel (default_permissions);
        the setuid and setgid bits are cleared by the kernel's own chmod that precedes.
        Returns the entry as it was before (its id and link count still hold).

        Raises:
            KeyNotFound: (ENOENT).
        """
        return self._set_attrs(key, uid=uid, gid=gid)

    def utimens(self, key: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        """Store access and modification times (ns, UTC); None leaves one as it is
        (UTIME_OMIT). ctime becomes now.

        Raises:
            KeyNotFound: (ENOENT).
        """
        self._set_attrs(key, atime_ns=atime_ns, mtime_ns=mtime_ns)
