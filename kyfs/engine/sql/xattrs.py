"""Extended attributes of a workspace's nodes, in the table ``xattrs`` (node, name, value).

One row per attribute of a node: hard links share them (a row names the node, not a
name). Names are stored as the bytes the kernel sent (kyfs.core.xattrs.encode), values
as given. Limits and namespaces are kyfs.core.xattrs's; who may read or change which
namespace is decided above the engine (the mount), as the CLI acts as the file's owner.

A node's attributes live as long as its id: they stay while it waits in the archive (a
restore brings them back) and go when the node goes for good
(kyfs.engine.sql.base.drop_xattrs: the archive purged, undo released, a delete on a full
disk, an archived directory whose key is a directory again).

Thread-safety: as kyfs.engine.sql.base.
"""

from __future__ import annotations

import time
from typing import Any

from kyfs.core import xattrs
from kyfs.core.errors import AlreadyExists, AttributesFull, KeyNotFound, NoAttribute
from kyfs.core.nodes import MODE_MASK, ROOT
from kyfs.engine.sql.base import names_of
from kyfs.engine.sql.history import narrow
from kyfs.engine.sql.nodes import NamespaceMixin

SQL_NAMES = "SELECT name FROM xattrs WHERE node = ? ORDER BY name"
SQL_GET = "SELECT value FROM xattrs WHERE node = ? AND name = ?"
# By key, in one statement: a row (node, NULL) when the key has no attribute (of that
# name), none when there is no such key.
SQL_NAMES_BY_KEY = (
    "SELECT e.node, x.name FROM entries e LEFT JOIN xattrs x ON x.node = e.node"
    " WHERE e.key = ? ORDER BY x.name"
)
SQL_GET_BY_KEY = (
    "SELECT e.node, x.value FROM entries e LEFT JOIN xattrs x ON x.node = e.node"
    " AND x.name = ? WHERE e.key = ?"
)
SQL_LIST_BYTES = "SELECT coalesce(sum(length(name) + 1), 0) FROM xattrs WHERE node = ?"
SQL_PUT = (
    "INSERT INTO xattrs (node, name, value) VALUES (?, ?, ?)"
    " ON CONFLICT (node, name) DO UPDATE SET value = excluded.value"
)
SQL_REMOVE = "DELETE FROM xattrs WHERE node = ? AND name = ?"
SQL_TOUCH = "UPDATE nodes SET ctime_ns = ? WHERE id = ?"
SQL_NAMES_IN_USE = "SELECT DISTINCT name FROM xattrs"  # archived nodes' rows included


class XattrsMixin(NamespaceMixin):
    """List, read, set and remove a node's extended attributes, by one of its keys.

    The names some node of the workspace has are kept in memory (:meth:`xattr_in_use`),
    so that a name no node has is answered without a query: the kernel asks for
    ``security.capability`` at every write(2). The set is loaded with one query, grows
    with this connection's own sets (it never shrinks: a name kept that no node has any
    more only costs a query), and is loaded again when another connection committed
    since (:meth:`_others_version`: SQLite's ``PRAGMA data_version``, PostgreSQL's
    notifications of other sessions' commits, kyfs.engine.postgres.connection). An engine
    that cannot tell that cheaply keeps nothing and always asks.
    """

    _xattr_names_in_use: set[bytes] | None = None  # see xattr_in_use
    _xattr_names_version: int | None = None  # _others_version() when it was loaded

    def _others_version(self) -> int | None:
        """A number that changes when another connection commits to this workspace, read
        without touching a table; None when the engine has none (then nothing about the
        attributes is kept in memory)."""
        return None

    def xattr_in_use(self, name: str) -> bool:
        """False when no node of the workspace (archived ones included) has an attribute
        ``name``, known from memory while no other connection committed since it was
        loaded; True when some node may have it (then ask :meth:`get_xattr`). Costs no
        query but the engine's version check (SQLite: ``PRAGMA data_version``;
        PostgreSQL: notifications already received, no round trip), one
        ``SELECT DISTINCT`` over the attributes after another connection's commit.

        Raises:
            StorageError: (EIO).
        """
        version = self._others_version()
        if version is None:
            return True
        in_use = self._xattr_names_in_use
        if in_use is None or version != self._xattr_names_version:
            in_use = {bytes(row[0]) for row in self._rows(SQL_NAMES_IN_USE)}
            self._xattr_names_in_use, self._xattr_names_version = in_use, version
        return xattrs.encode(name) in in_use

    def forget_xattr_names(self) -> None:
        """Drop the names kept in memory (:meth:`xattr_in_use`), after rows were written
        to ``xattrs`` by another path than this class's (a copy into this workspace)."""
        self._xattr_names_in_use = None

    def _in_use(self, raw: bytes) -> None:
        """This connection gave some node attribute ``raw`` (before its commit: a
        rollback leaves a name no node has, which only costs a query)."""
        if self._xattr_names_in_use is not None:
            self._xattr_names_in_use.add(raw)

    def _by_key(
        self, key: str, sql_by_key: str, sql_by_node: str, args: tuple[Any, ...]
    ) -> list[Any]:
        """Rows of one statement (no transaction: a read is one statement, as ``ls -l``
        asks for attributes of every file): ``sql_by_key`` (its first column the node,
        NULL in the others when the node has none) with ``(*args, key)``; at the top
        directory, which has no name, ``sql_by_node`` with ``(node, *args)``.

        Raises:
            KeyNotFound: (ENOENT) nothing is stored at ``key``.
        """
        if key == ROOT:
            return [
                (self._root_id, *row) for row in self._rows(sql_by_node, (self._root_id, *args))
            ]
        rows = self._rows(sql_by_key, (*args, key))
        if not rows:
            raise KeyNotFound(f"key not found: {key}")
        return [row for row in rows if row[1] is not None]

    def xattr_names(self, key: str) -> list[str]:
        """The names of the attributes of the node at ``key`` (``""``: the top
        directory), sorted by their bytes.

        Raises:
            KeyNotFound: (ENOENT).
        """
        rows = self._by_key(key, SQL_NAMES_BY_KEY, SQL_NAMES, ())
        return [xattrs.decode(bytes(row[1])) for row in rows]

    def get_xattr(self, key: str, name: str) -> bytes:
        """The value of attribute ``name`` of the node at ``key``.

        Raises:
            KeyNotFound: (ENOENT). NoAttribute: (ENODATA) the node has no such attribute.
        """
        rows = self._by_key(key, SQL_GET_BY_KEY, SQL_GET, (xattrs.encode(name),))
        if not rows:
            raise NoAttribute(f"no such attribute: {name}")
        return bytes(rows[0][1])

    def set_xattr(self, key: str, name: str, value: bytes, flags: int = 0) -> None:
        """Give the node at ``key`` attribute ``name`` = ``value`` (setxattr(2)); ``flags``
        XATTR_CREATE fails when it exists, XATTR_REPLACE when it does not. The node's ctime
        becomes now.

        Raises:
            KeyNotFound: (ENOENT). AlreadyExists: (EEXIST) XATTR_CREATE and it exists.
            NoAttribute: (ENODATA) XATTR_REPLACE and it does not.
            AttributeNotSupported: (ENOTSUP), AttributeNameTooLong: (ERANGE),
            AttributeTooLarge: (E2BIG) as kyfs.core.xattrs.check.
            AttributesFull: (ENOSPC) the node's names would pass XATTR_LIST_MAX.
        """
        xattrs.check(name, value)
        raw = xattrs.encode(name)
        with self._atomic() as conn:
            node = self._must(conn, key).id
            exists = conn.execute(SQL_GET, (node, raw)).fetchone() is not None
            if exists and flags & xattrs.XATTR_CREATE:
                raise AlreadyExists(f"attribute exists: {name}")
            if not exists and flags & xattrs.XATTR_REPLACE:
                raise NoAttribute(f"no such attribute: {name}")
            if not exists:
                listed = int(conn.execute(SQL_LIST_BYTES, (node,)).fetchone()[0])
                if listed + len(raw) + 1 > xattrs.LIST_MAX:
                    raise AttributesFull(
                        f"the node's attribute names would pass {xattrs.LIST_MAX} bytes"
                    )
            self._in_use(raw)
            conn.execute(SQL_PUT, (node, raw, bytes(value)))
            conn.execute(SQL_TOUCH, (time.time_ns(), node))

    def remove_xattr(self, key: str, name: str) -> None:
        """Remove attribute ``name`` of the node at ``key``; its ctime becomes now.

        Raises:
            KeyNotFound: (ENOENT). NoAttribute: (ENODATA) it has no such attribute.
        """
        with self._atomic() as conn:
            node = self._must(conn, key).id
            if not conn.execute(SQL_REMOVE, (node, xattrs.encode(name))).rowcount:
                raise NoAttribute(f"no such attribute: {name}")
            conn.execute(SQL_TOUCH, (time.time_ns(), node))

    def set_xattr_and_mode(self, key: str, name: str, value: bytes | None, mode: int) -> None:
        """Store ``value`` as attribute ``name`` of the node at ``key`` (None: remove it,
        if there) and make its permission bits ``mode & 0o7777``, in one transaction; its
        ctime becomes now. What a POSIX ACL set through the mount does (kyfs.core.acl: the
        mode follows the ACL, and an ACL that says no more than the mode is not kept).

        Raises:
            KeyNotFound: (ENOENT); as :meth:`set_xattr` for the name and value.
        """
        xattrs.check(name, value)
        raw = xattrs.encode(name)
        with self._atomic() as conn:
            node = self._must(conn, key).id
            if value is None:
                conn.execute(SQL_REMOVE, (node, raw))
            else:
                self._in_use(raw)
                conn.execute(SQL_PUT, (node, raw, bytes(value)))
            conn.execute(
                "UPDATE nodes SET mode = ?, ctime_ns = ? WHERE id = ?",
                (mode & MODE_MASK, time.time_ns(), node),
            )
            narrow(conn, names_of(conn, node), mode & MODE_MASK)  # as chmod does
