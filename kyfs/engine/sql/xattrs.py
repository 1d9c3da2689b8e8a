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

from kyfs.core import xattrs
from kyfs.core.errors import AlreadyExists, AttributeTooLarge, NoAttribute
from kyfs.engine.sql.nodes import NamespaceMixin

SQL_NAMES = "SELECT name FROM xattrs WHERE node = ? ORDER BY name"
SQL_GET = "SELECT value FROM xattrs WHERE node = ? AND name = ?"
SQL_LIST_BYTES = "SELECT coalesce(sum(length(name) + 1), 0) FROM xattrs WHERE node = ?"
SQL_PUT = (
    "INSERT INTO xattrs (node, name, value) VALUES (?, ?, ?)"
    " ON CONFLICT (node, name) DO UPDATE SET value = excluded.value"
)
SQL_REMOVE = "DELETE FROM xattrs WHERE node = ? AND name = ?"
SQL_TOUCH = "UPDATE nodes SET ctime_ns = ? WHERE id = ?"


class XattrsMixin(NamespaceMixin):
    """List, read, set and remove a node's extended attributes, by one of its keys."""

    def xattr_names(self, key: str) -> list[str]:
        """The names of the attributes of the node at ``key`` (``""``: the top
        directory), sorted by their bytes.

        Raises:
            KeyNotFound: (ENOENT).
        """
        with self._snapshot() as conn:
            node = self._must(conn, key).id
            rows = conn.execute(SQL_NAMES, (node,)).fetchall()
        return [xattrs.decode(bytes(row[0])) for row in rows]

    def get_xattr(self, key: str, name: str) -> bytes:
        """The value of attribute ``name`` of the node at ``key``.

        Raises:
            KeyNotFound: (ENOENT). NoAttribute: (ENODATA) the node has no such attribute.
        """
        with self._snapshot() as conn:
            node = self._must(conn, key).id
            row = conn.execute(SQL_GET, (node, xattrs.encode(name))).fetchone()
        if row is None:
            raise NoAttribute(f"no such attribute: {name}")
        return bytes(row[0])

    def set_xattr(self, key: str, name: str, value: bytes, flags: int = 0) -> None:
        """Give the node at ``key`` attribute ``name`` = ``value`` (setxattr(2)); ``flags``
        XATTR_CREATE fails when it exists, XATTR_REPLACE when it does not. The node's ctime
        becomes now.

        Raises:
            KeyNotFound: (ENOENT). AlreadyExists: (EEXIST) XATTR_CREATE and it exists.
            NoAttribute: (ENODATA) XATTR_REPLACE and it does not.
            AttributeNotSupported: (ENOTSUP), AttributeNameTooLong: (ERANGE),
            AttributeTooLarge: (E2BIG) as kyfs.core.xattrs.check; E2BIG too when the
            node's names would pass XATTR_LIST_MAX.
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
                    raise AttributeTooLarge(
                        f"the node's attribute names would pass {xattrs.LIST_MAX} bytes"
                    )
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
