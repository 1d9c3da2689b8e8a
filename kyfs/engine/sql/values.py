"""Values of a workspace: reads at offsets, writes, commits, TTL, imports, versions.

A value lives in the workspace's block store (kyfs.engine.sql.blocks): a list of
content-addressed blocks, owned by its node, each checked against its SHA-256 when read,
so a damaged block answers EIO (DamagedBlock) and a log line names the workspace and
the key, never wrong bytes. A read at an offset fetches only the blocks it covers. A
hole (a part of the value no block covers) reads as zeros.

Every read of a value sees one committed version: a read at an offset runs in one
statement or one read transaction, and :meth:`ValuesMixin.iter_value` (``kyfs get``,
export) holds one read transaction from the size to the last block.

Every value write runs :func:`after_write` in its transaction: TTL, schema rules (a
value that fails rolls the write back), history (under each name of the node: a version
shares the value's blocks) and the search index.

Thread-safety: as kyfs.engine.sql.base.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO, cast

from kyfs.core import names
from kyfs.core.blocks import MAX_BLOCK, BlockList, Changes, unseal
from kyfs.core.errors import (
    AlreadyExists,
    DamagedBlock,
    InvalidInput,
    IsADirectory,
    KeyExists,
    KeyNotFound,
    NoSpace,
    SchemaViolation,
    VersionConflict,
)
from kyfs.core.nodes import (
    FILE_MODE,
    KIND_NAMES,
    LNK,
    MODE_MASK,
    REG,
    Entry,
    ImportItem,
    Owner,
    check_size,
)
from kyfs.engine.sql import blocks
from kyfs.engine.sql.base import Connection, frees_space, mark, names_of
from kyfs.engine.sql.history import (
    SQL_LAST_OF_NODE,
    SQL_META,
    SQL_SHARERS,
    Burst,
    bursts,
    cache_ttl,
    current_version,
    materialize,
    narrow,
    read_meta,
    record,
    value_of,
)
from kyfs.engine.sql.nodes import SQL_ARCHIVE, NamespaceMixin, process_owner
from kyfs.engine.sql.rules import as_json_schema, validate

log = logging.getLogger(__name__)

BUFFER_BLOCK = 64 * 1024  # bytes: open files buffer their changes in blocks of this size
READ_PIECE = 256 * 1024  # bytes: iter_value yields pieces of at most this size

_SQL_SIZE = "SELECT size FROM nodes WHERE id = ?"
# A regular file's size with each of its names (in code point order), in one statement.
_SQL_SIZE_AND_NAMES = (
    "SELECT n.size, e.key FROM nodes n LEFT JOIN entries e ON e.node = n.id"
    " WHERE n.id = ? AND n.kind = ? ORDER BY e.key"
)
# An open file keeps reading a node unlinked under it: its value waits in the archive.
_SQL_SIZE_ANY = (
    "SELECT size FROM nodes WHERE id = ? UNION ALL SELECT size FROM archive WHERE id = ? LIMIT 1"
)
# A small value in one statement: the node's size and the block at position 0.
_SQL_FIRST_BLOCK = (
    "SELECT n.size, b.id, b.size, b.codec, b.hash, b.data FROM nodes n"
    " LEFT JOIN extents e ON e.owner = n.id AND e.pos = 0"
    " LEFT JOIN blocks b ON b.id = e.block WHERE n.id = ?"
)
_SQL_SET_SIZE = (  # a NULL atime, mode, uid or gid keeps the stored one
    "UPDATE nodes SET size = ?, mtime_ns = ?, ctime_ns = ?, atime_ns = coalesce(?, atime_ns),"
    " mode = coalesce(?, mode), uid = coalesce(?, uid), gid = coalesce(?, gid) WHERE id = ?"
)


def expiry_ns(now_ns: int, seconds: float) -> int:
    """When a TTL of ``seconds`` from ``now_ns`` ends (ns, UTC).

    Raises:
        InvalidInput: (EINVAL, exit 2) not a number of seconds above 0 and at most 100
            years (kyfs.core.names.MAX_DURATION_S).
    """
    from kyfs.core.names import MAX_DURATION_S

    if not 0 < seconds <= MAX_DURATION_S:  # also NaN
        raise InvalidInput(f"a TTL is 0 to 100 years, not {seconds!r} seconds")
    return now_ns + int(seconds * 1e9)


def after_write(
    conn: Connection,
    node_id: int,
    *,
    ttl_s: float | None = None,
    replace_ttl: bool = False,
    detail: str | None = None,
    size: int | None = None,
    pid: int | None = None,
    keep_version: bool = True,
    replaces: dict[str, Burst] | None = None,
    meta: dict[str, str] | None = None,
    keys: list[str] | None = None,
    version_ids: list[int] | None = None,
) -> None:
    """What every value write does in its transaction: TTL, schema check, history (a
    version per name, sharing the value's blocks, unless not ``keep_version``: a row
    without a value; ``replaces``: the versions, by name, of the burst of closes by one
    process this write continues: kyfs.engine.sql.history.bursts), and a mark for the
    search index (written at the next flush). ``meta`` (the workspace's settings) and
    ``keys`` (the node's names) when the caller read them in this transaction;
    ``version_ids``: history ids reserved for the versions, one per name, ascending.
    ``replace_ttl``: the TTL becomes ``ttl_s`` (kyfs set), else it is kept (writes
    through the mount); a cache workspace's TTL always applies.

    Raises:
        SchemaViolation: (EINVAL, exit 2) the value breaks a schema rule; the caller's
            transaction rolls back.
    """
    if meta is None:
        meta = read_meta(conn)
    now = time.time_ns()
    default_ttl = cache_ttl(meta)
    if default_ttl is not None and ttl_s is None:
        ttl_s = default_ttl
    if ttl_s is not None or replace_ttl:
        expires = None if ttl_s is None else expiry_ns(now, ttl_s)
        conn.execute("UPDATE nodes SET expires_ns = ? WHERE id = ?", (expires, node_id))
    if keys is None:
        keys = names_of(conn, node_id)
    rules = json.loads(meta.get("schemas", "[]"))
    if size is None:
        size = int(conn.execute(_SQL_SIZE, (node_id,)).fetchone()[0])
    if rules:
        from fnmatch import fnmatchcase

        checks = [(k, r) for r in rules for k in keys if fnmatchcase(k, r["glob"])]
        if checks:
            value = blocks.read(conn, node_id, 0, size, size)
            for key, rule in checks:
                validate(key, rule, value)
    owner = node_id if keep_version else None
    if version_ids is None or len(version_ids) != len(keys):
        version_ids = None
    for at, key in enumerate(keys):
        record(conn, key, "set", detail, now, meta, owner=owner, size=size, pid=pid,
               replaces=(replaces or {}).get(key),
               version_id=None if version_ids is None else version_ids[at])  # fmt: skip
    mark(conn, node_id)


_SQL_ARCHIVED = "SELECT 1 FROM archive WHERE key = ? AND deleted_ns = ? AND size = ? LIMIT 1"


class ValuesMixin(NamespaceMixin):
    """Reading and writing values; TTL; imports; restoring a version."""

    block_size = BUFFER_BLOCK

    # --- reading ----------------------------------------------------------------------
    def read(self, node_id: int, offset: int, size: int, valid: int | None = None) -> bytes:
        """Up to ``size`` bytes of the value of node ``node_id`` from byte ``offset``, all
        from one committed version.

        Only the blocks that hold the range are read. Without ``valid`` the result stops
        at the stored size. With ``valid`` (bytes) the result is exactly ``size`` bytes
        and every byte at or past ``min(valid, stored size)`` is zero (an open file
        truncated below the stored size, or grown past it). Holes read as zeros. An
        unknown ``node_id`` reads as empty (or zeros with ``valid``).

        Raises:
            DamagedBlock: (EIO, exit 4) a block of the range fails its checksum (logged
                with the workspace and the key).
        """
        try:
            if valid is None and size > 0 and offset + size <= MAX_BLOCK:
                fast = self._read_first_block(node_id, offset, size)
                if fast is not None:
                    return fast
            with self._snapshot() as conn:
                row = conn.execute(_SQL_SIZE_ANY, (node_id, node_id)).fetchone()
                stored = row[0] if row else 0
                if not isinstance(stored, int) or stored < 0:
                    raise DamagedBlock(f"the size of the value is damaged ({stored!r})")
                if valid is None:
                    end, stored_end = min(offset + size, stored), stored
                else:
                    end, stored_end = offset + size, min(stored, valid)
                if end <= offset:
                    return b""
                return blocks.read(conn, node_id, offset, end, stored_end, stored)
        except DamagedBlock as exc:
            raise self._damaged(exc, node_id) from None

    def next_data(self, node_id: int, offset: int) -> int | None:
        """The first byte position at or after ``offset`` that the block store holds of
        node ``node_id``'s value (a hole does not count), or None: only a hole follows
        (lseek(2)'s SEEK_DATA; the caller compares with the size)."""
        with self._snapshot() as conn:
            return blocks.next_data(conn, node_id, offset)

    def next_hole(self, node_id: int, offset: int) -> int:
        """The first byte position at or after ``offset`` that no stored block of node
        ``node_id``'s value covers (lseek(2)'s SEEK_HOLE): past its last block, a
        position that may lie at or past the size (the caller takes the smaller)."""
        with self._snapshot() as conn:
            return blocks.next_hole(conn, node_id, offset)

    def _read_first_block(self, node_id: int, offset: int, size: int) -> bytes | None:
        """A read inside a value's first block in a single statement (no explicit
        transaction): the common cat of a small key. None when the general path is
        needed (the range goes past the first block, or the node is only in the
        archive)."""
        row = self._row(_SQL_FIRST_BLOCK, (node_id,))
        if row is None:
            return None
        stored, block_id, length, codec, address, data = row
        if block_id is None or not (isinstance(stored, int) and isinstance(length, int)):
            return None  # a hole at the start, or a damaged row: the general path
        end = min(offset + size, stored)
        if end <= offset:
            return b""
        if end > length or length > stored:  # past the first block, or a block past the
            return None  # size (the general path says it is damaged)
        raw = unseal(block_id, codec, data, length, address)
        return raw[offset:end]

    def _damaged(self, exc: DamagedBlock, owner: int) -> DamagedBlock:
        """Log a damaged block with the workspace and the keys it belongs to; the error
        to raise."""
        keys = self.keys_of(owner) if owner > 0 else []
        where = ", ".join(keys) or (f"version {-owner}" if owner < 0 else f"node {owner}")
        log.error("workspace %s: key %s: %s", self.path, where, exc)
        return DamagedBlock(f"{where}: {exc}")

    def iter_value(self, key: str) -> Iterator[bytes]:
        """The value of ``key`` as consecutive pieces of at most READ_PIECE bytes, all of
        one committed version (one read transaction from first to last piece; do not
        use this workspace for anything else until the iteration ends). A symbolic
        link's value is its target.

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3).
            InvalidInput: (EINVAL, exit 2) a special node (FIFO, socket, device): no value.
            DamagedBlock: (EIO, exit 4) a block fails its checksum.
        """
        with self._snapshot() as conn:
            yield from self._pieces(conn, self._value_entry(conn, key))

    def _value_entry(self, conn: Connection, key: str) -> Entry:
        """The entry at ``key``, which must hold a value (iter_value's errors)."""
        entry = self._lookup(conn, key)
        if entry is None:
            raise KeyNotFound(f"key not found: {key}")
        if entry.is_dir:
            raise IsADirectory(f"is a directory: {key}")
        if entry.is_special:
            raise InvalidInput(f"a {KIND_NAMES[entry.kind]} holds no value: {key}")
        return entry

    def _pieces(self, conn: Connection, entry: Entry) -> Iterator[bytes]:
        """The value of ``entry`` in pieces, inside the caller's transaction."""
        if entry.kind == LNK:
            row = conn.execute("SELECT target FROM nodes WHERE id = ?", (entry.id,))
            yield bytes(row.fetchone()[0])
            return
        try:
            yield from blocks.iter_value(conn, entry.id, entry.size, READ_PIECE)
        except DamagedBlock as exc:
            raise self._damaged(exc, entry.id) from None

    def get(self, key: str) -> bytes:
        """The whole value of ``key``, one committed version (iter_value for large ones).

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3).
            DamagedBlock: (EIO, exit 4).
        """
        return b"".join(self.iter_value(key))

    def get_versioned(self, key: str) -> tuple[bytes, int]:
        """The whole value of ``key`` and its version (:meth:`current_version`), both of
        one committed state: what a read-modify-write with ``compare_and_set`` reads.

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3).
            InvalidInput: (EINVAL, exit 2) a special node. DamagedBlock: (EIO, exit 4).
        """
        with self._snapshot() as conn:
            entry = self._value_entry(conn, key)
            version = current_version(conn, key)
            return b"".join(self._pieces(conn, entry)), version

    def current_version(self, key: str) -> int:
        """The version of the value at ``key``: the id of its newest history row, the
        number ``kyfs history`` shows (0 for a key with no recorded change: one made
        before history was kept, or by touch). Every write of the value, through the
        CLI, the mount or a restore, gives it a new, higher version; changing its mode
        or TTL does not. The newest row of a live key is never thinned or released
        (kyfs.engine.sql.history.drop_versions), so a version is never seen again once
        the key has moved on.

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR, exit 3).
        """
        with self._snapshot() as conn:
            entry = self._lookup(conn, key)
            if entry is None:
                raise KeyNotFound(f"key not found: {key}")
            if entry.is_dir:
                raise IsADirectory(f"is a directory: {key}")
            return current_version(conn, key)

    # --- writing ----------------------------------------------------------------------
    def set(
        self,
        key: str,
        value: bytes | BinaryIO,
        mode: int | None = None,
        ttl_s: float | None = None,
        owner: Owner | None = None,
    ) -> Entry:
        """Store ``value`` at ``key``, creating or replacing it in one transaction.

        ``value`` is bytes or a binary file object read to its end in BLOCK_SIZE pieces
        (so stdin of any size streams in bounded memory). ``mode`` (permission bits)
        defaults to 0644 for a new key and is kept for an existing one; a new key
        belongs to ``owner`` (default: this process). The key expires ``ttl_s`` seconds
        from now (None: a cache workspace's TTL, else never: a set without a TTL clears
        the old one). A symbolic link at ``key`` is replaced by a regular key (the link
        goes to the archive); every name of a hard-linked key sees the new value.

        Raises:
            InvalidName, NameTooLong, IllegalByteSequence: (exit 2) a bad key.
            IsADirectory / NotADirectory: (exit 3) the path conflicts with a directory or key.
            ValueTooLarge: (EFBIG, exit 2) over MAX_VALUE_SIZE; nothing is written.
        """
        names.check_key(key)
        with self._atomic() as conn:
            node_id = self._put(conn, key, value, mode, ttl_s=ttl_s, owner=owner)
            return self._must(conn, key)._replace(id=node_id)

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
        """:meth:`set` with a condition checked in the same write transaction (SQLite's
        BEGIN IMMEDIATE, PostgreSQL's per-workspace advisory lock: two writers cannot
        both pass it): with ``if_version`` only when :meth:`current_version` of ``key``
        is that number, with ``if_absent`` only when nothing is stored at ``key``;
        without either, a plain set. Returns (the entry, its new version).

        Raises:
            VersionConflict: (EAGAIN, exit 7) the key's version is not ``if_version``,
                or the key is gone; nothing was written.
            KeyExists: (EEXIST, exit 7) ``if_absent`` and something is stored at ``key``.
            InvalidInput: (EINVAL, exit 2) both conditions, or a negative version.
            And what :meth:`set` raises.
        """
        names.check_key(key)
        if if_version is not None and if_absent:
            raise InvalidInput("give either a version to expect or absent, not both")
        if if_version is not None and if_version < 0:
            raise InvalidInput(f"a version is a number from 0, not {if_version}")
        with self._atomic() as conn:
            entry = self._lookup(conn, key)
            if if_absent and entry is not None:
                raise KeyExists(f"{key} exists (version {current_version(conn, key)})")
            if if_version is not None:
                if entry is None:
                    raise VersionConflict(f"{key} is gone (expected version {if_version})")
                found = current_version(conn, key)
                if found != if_version:
                    raise VersionConflict(
                        f"{key} is at version {found}, not {if_version}: read it again"
                    )
            node_id = self._put(conn, key, value, mode, ttl_s=ttl_s, owner=owner)
            return self._must(conn, key)._replace(id=node_id), current_version(conn, key)

    def _put(
        self,
        conn: Connection,
        key: str,
        value: bytes | BinaryIO,
        mode: int | None,
        created_ns: int | None = None,
        mtime_ns: int | None = None,
        ttl_s: float | None = None,
        detail: str | None = None,
        owner: Owner | None = None,
        source: tuple[int, int] | None = None,
    ) -> int:
        """Create or replace ``key`` with ``value`` inside the caller's transaction (with
        ``source``, (a block store owner, its size): that value instead, its blocks shared);
        the key's TTL becomes ``ttl_s`` (None: none, or the cache workspace's). Returns
        the node id."""
        now = time.time_ns()
        entry = self._lookup(conn, key)
        if entry is not None and (entry.kind == LNK or entry.is_special):
            self._drop_name(conn, entry, now)
            entry = None
        if entry is not None:
            if entry.is_dir:
                raise IsADirectory(f"is a directory: {key}")
            node_id = entry.id
            if mode is not None:
                conn.execute("UPDATE nodes SET mode = ? WHERE id = ?", (mode & 0o7777, node_id))
                narrow(conn, names_of(conn, node_id), mode)
        else:
            node_id = self._make(
                conn, key, REG, FILE_MODE if mode is None else mode, owner, now=now
            ).id  # created at the time the value is written: never after it
        if source is not None and source[0] == node_id:
            size = source[1]  # a version the value still is: it stays as it is
        else:
            materialize(conn, node_id)  # its versions keep the value it had
            if source is None:
                size = blocks.replace(conn, node_id, _pieces(value))
            else:
                blocks.share(conn, source[0], node_id)
                size = source[1]
        mtime = now if mtime_ns is None else mtime_ns
        conn.execute(_SQL_SET_SIZE, (size, mtime, now, None, None, None, None, node_id))
        if created_ns is not None:
            conn.execute("UPDATE nodes SET created_ns = ? WHERE id = ?", (created_ns, node_id))
        after_write(
            conn, node_id, ttl_s=ttl_s, replace_ttl=True, detail=detail, size=size,
            keep_version=not self.short(),
        )  # fmt: skip
        return node_id

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
        """Apply an open file's buffered changes to node ``node_id`` in one transaction.

        Args:
            size: the value's new length in bytes.
            valid: bytes of the stored value still meaningful; stored data at or past
                it is dropped (the file was truncated to ``valid`` while open).
            changes: the changed blocks: a kyfs.core.blocks.Changes, or ``(index,
                data)`` pairs of ``block_size`` blocks; block ``index`` covers bytes
                ``[index * block_size, (index + 1) * block_size)``: its data, then zeros.
                Read again if the commit is retried (ENOSPC), so pairs are taken whole.
            mtime_ns: the modification time to record; now when None.
            atime_ns: the access time to record; kept when None.
            mode, uid, gid: permission bits (``& 0o7777``), owner and group set while
                the file was being written (chmod(2), chown(2) on it); each kept when
                None. The ctime becomes now.
            pid: the process that wrote (its closes in quick succession make one
                version in the history); None: not known.
            holes: byte ranges ``[start, end)`` made holes after the changes are
                applied (fallocate(2)'s FALLOC_FL_PUNCH_HOLE and FALLOC_FL_ZERO_RANGE):
                they read as zeros and cost no block (kyfs.engine.sql.blocks.punch);
                the part of a range past ``size`` is ignored.

        Returns False when the node no longer exists (its last name was unlinked while
        open); then nothing is written.

        A commit that finds the disk full releases the workspace's undo data (history
        versions, the archive: :meth:`release_undo`), gives the freed space and the WAL
        back to the file system (a WAL that cannot restart from its beginning needs room
        to grow) and tries once more, so undo data goes before a write fails.

        Raises:
            ValueTooLarge: (EFBIG) ``size`` over MAX_VALUE_SIZE. NoSpace: (ENOSPC) disk
                full, even without undo data; nothing is written.
            SchemaViolation: (EINVAL) a schema rule refused the value; nothing is written.
            DamagedBlock: (EIO) a stored block the change must cut again is damaged.
        """
        check_size(size)
        if hasattr(changes, "indexes"):  # not isinstance: a Protocol check costs ~18 us
            given = cast(Changes, changes)
        else:  # (index, data) pairs
            given = BlockList(self.block_size, changes)
        attrs = {"mtime_ns": mtime_ns, "atime_ns": atime_ns, "mode": mode, "uid": uid,
                 "gid": gid, "pid": pid}  # fmt: skip
        try:
            return self._commit(node_id, size, valid, given, holes, **attrs)
        except NoSpace as full:  # undo data goes before a user's write fails
            try:  # (not the engine's reserve: that is kept for deletes)
                released = self._release_undo()
            except NoSpace:
                released = 0
            if not released:
                raise full from None
            self._give_back()  # the freed pages and the WAL's room: the retry needs both
        return self._commit(node_id, size, valid, given, holes, **attrs)

    def _commit(
        self,
        node_id: int,
        size: int,
        valid: int,
        changes: Changes,
        holes: Sequence[tuple[int, int]],
        *,
        mtime_ns: int | None,
        atime_ns: int | None,
        mode: int | None,
        uid: int | None,
        gid: int | None,
        pid: int | None,
    ) -> bool:
        """:meth:`commit`'s one transaction."""
        now = time.time_ns()
        with self._atomic() as conn:
            # What the commit must read, sent before any is read: on PostgreSQL, one
            # round trip with the BEGIN (kyfs.engine.postgres.connection's pipeline).
            head = conn.execute(_SQL_SIZE_AND_NAMES, (node_id, REG))
            lasts = None if pid is None else conn.execute(SQL_LAST_OF_NODE, (node_id,))
            sharers = conn.execute(SQL_SHARERS, (node_id, node_id))
            settings = conn.execute(SQL_META)
            reserved = self._history_ids(conn, node_id)
            found = head.fetchall()
            if not found:
                return False
            keys = [row[1] for row in found if row[1] is not None]
            replaces = bursts([] if lasts is None else lasts.fetchall(), pid, now)
            spare = [burst[0] for burst in replaces.values()]
            materialize(conn, node_id, spare=spare, sharers=sharers.fetchall())
            meta = dict(settings.fetchall())
            ids = None if reserved is None else sorted(int(row[0]) for row in reserved)
            try:
                blocks.rewrite(conn, node_id, int(found[0][0]), size, valid, changes)
                for start, end in holes:
                    blocks.punch(conn, node_id, max(start, 0), min(end, size))
            except DamagedBlock as exc:
                raise self._damaged(exc, node_id) from None
            mtime = now if mtime_ns is None else mtime_ns
            bits = None if mode is None else mode & MODE_MASK
            conn.execute(_SQL_SET_SIZE, (size, mtime, now, atime_ns, bits, uid, gid, node_id))
            if bits is not None:  # a chmod while open: its versions, as chmod's
                narrow(conn, keys, bits)
            after_write(conn, node_id, size=size, keep_version=not self.short(), pid=pid,
                        replaces=replaces, meta=meta, keys=keys, version_ids=ids)  # fmt: skip
        return True

    def truncate(self, key: str, size: int) -> None:
        """Set the value of ``key`` to ``size`` bytes: cut, or grown with zeros (a hole).

        Raises:
            KeyNotFound (ENOENT), IsADirectory (EISDIR), ValueTooLarge (EFBIG),
            InvalidInput (EINVAL) a symbolic link.
        """
        entry = self.stat(key)
        if entry.is_dir:
            raise IsADirectory(f"is a directory: {key}")
        if entry.kind == LNK or entry.is_special:
            raise InvalidInput(f"a {KIND_NAMES[entry.kind]} has no value to truncate: {key}")
        self.commit(entry.id, size=size, valid=min(size, entry.size), changes=())

    # --- TTL --------------------------------------------------------------------------
    def set_ttl(self, key: str, seconds: float | None) -> Entry:
        """Let ``key`` expire ``seconds`` from now (None: never). The TTL belongs to the
        node: every name of a hard-linked key expires with it.

        Raises:
            KeyNotFound: (ENOENT, exit 1). IsADirectory: (EISDIR).
        """
        expires = None if seconds is None else expiry_ns(time.time_ns(), seconds)
        with self._atomic() as conn:
            entry = self._must(conn, key)
            if entry.is_dir:
                raise IsADirectory(f"is a directory: {key}")
            conn.execute("UPDATE nodes SET expires_ns = ? WHERE id = ?", (expires, entry.id))
            return entry

    def expiry(self, key: str) -> int | None:
        """When ``key`` expires (ns since the epoch, UTC), or None.

        Raises:
            KeyNotFound: (ENOENT, exit 1).
        """
        row = self._row(
            "SELECT n.expires_ns FROM entries e JOIN nodes n ON n.id = e.node WHERE e.key = ?",
            (key,),
        )
        if row is None:
            raise KeyNotFound(f"key not found: {key}")
        return None if row[0] is None else int(row[0])

    @frees_space
    def sweep_expired(self, now_ns: int | None = None) -> int:
        """Remove every name of every node whose TTL has passed (the node goes to the
        archive); returns how many nodes."""
        now_ns = now_ns or time.time_ns()
        rows = self._rows("SELECT id FROM nodes WHERE expires_ns <= ? AND kind = ?", (now_ns, REG))
        if not rows:
            return 0
        with self._atomic() as conn:
            for (node_id,) in rows:
                still = conn.execute(
                    "SELECT 1 FROM nodes WHERE id = ? AND expires_ns <= ?", (node_id, now_ns)
                ).fetchone()
                if not still:
                    continue
                for key in names_of(conn, node_id):
                    entry = self._lookup(conn, key)
                    assert entry is not None
                    self._drop_name(conn, entry, now_ns)
                    record(conn, key, "delete", "expired", now_ns)
        return len(rows)

    # --- bulk import -------------------------------------------------------------------
    def import_entries(self, items: Iterable[ImportItem], conflict: str = "error") -> int:
        """Write many keys in one transaction; return how many were written.

        ``conflict`` says what happens when a key exists: ``"error"`` raises
        AlreadyExists (nothing is written), ``"keep"`` leaves the stored value,
        ``"replace"`` archives the stored value and writes the new one (unless they are
        the same bytes: then nothing changes, so an import run twice writes once).

        Raises:
            AlreadyExists: (EEXIST, exit 3) with ``conflict="error"``.
            InvalidName etc.: (exit 2) an item has an invalid key; nothing is written.
        """
        written = 0
        with self._atomic() as conn:
            for item in items:
                names.check_key(item.key)
                live = self._lookup(conn, item.key)
                if live is not None and not live.is_dir:
                    if conflict == "keep":
                        continue
                    if conflict != "replace":
                        raise AlreadyExists(f"key exists: {item.key}")
                    if live.size == len(item.value) and item.value == blocks.read(
                        conn, live.id, 0, live.size, live.size
                    ):
                        continue
                    self._drop_name(conn, live, time.time_ns())
                ttl = None
                if item.expires_ns is not None:  # a TTL that runs on where it was
                    left = (item.expires_ns - time.time_ns()) / 1e9
                    ttl = min(max(left, 0.001), names.MAX_DURATION_S)
                self._put(
                    conn, item.key, item.value, item.mode, item.created_ns, item.mtime_ns,
                    ttl_s=ttl, detail="imported",
                )  # fmt: skip
                written += 1
        return written

    def import_archived(self, items: Iterable[tuple[ImportItem, int]]) -> int:
        """Put ``(item, deleted_ns)`` pairs straight into the archive, in one transaction;
        returns how many. One the archive holds already (same key, deletion time and
        size) is skipped, so an import run twice (a migration killed and run again)
        archives it once."""
        count = 0
        owner = process_owner()
        with self._atomic() as conn:
            for item, deleted_ns in items:
                if conn.execute(_SQL_ARCHIVED, (item.key, deleted_ns, len(item.value))).fetchone():
                    continue
                created = item.created_ns or deleted_ns
                mtime = item.mtime_ns or deleted_ns
                node_id = conn.execute(
                    "INSERT INTO nodes (kind, mode, uid, gid, nlink, size, created_ns,"
                    " mtime_ns, ctime_ns, atime_ns) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?)"
                    " RETURNING id",
                    (REG, (item.mode or FILE_MODE) & 0o7777, owner.uid, owner.gid,
                     len(item.value), created, mtime, mtime, mtime),
                ).fetchall()[0][0]  # fmt: skip
                blocks.write(conn, node_id, _pieces(item.value))
                conn.execute(SQL_ARCHIVE, (item.key, 0, deleted_ns, node_id))
                conn.execute(
                    "UPDATE archive SET archived_ns = ? WHERE id = ?", (time.time_ns(), node_id)
                )
                conn.execute("DELETE FROM nodes WHERE id = ?", (node_id,))
                count += 1
        return count

    def violations(self, glob: str, schema: dict[str, Any]) -> list[str]:
        """The stored keys matching ``glob`` whose value breaks ``schema`` (either form),
        each as the sentence the write would have failed with."""
        from fnmatch import fnmatchcase

        rule = {"glob": glob, "schema": as_json_schema(schema)}
        found = []
        for key in self.keys():
            if not fnmatchcase(key, glob):
                continue
            try:
                validate(key, rule, self.get(key))
            except SchemaViolation as exc:
                found.append(str(exc))
        return found

    # --- versions ----------------------------------------------------------------------
    def restore_version(
        self, key: str, version: int | None = None, at_ns: int | None = None
    ) -> Entry:
        """Write back the value ``key`` had at history version ``version`` (its id) or at
        the time ``at_ns`` (the newest version not after it), as a new change.

        Raises:
            KeyNotFound: (ENOENT, exit 1) no such version holding a value.
        """
        sql = "SELECT id FROM history WHERE key = ? AND size IS NOT NULL"
        if version is not None:
            row = self._row(sql + " AND id = ?", (key, version))
        else:
            row = self._row(
                sql + " AND time_ns <= ? ORDER BY time_ns DESC, id DESC LIMIT 1", (key, at_ns)
            )
        if row is None:
            raise KeyNotFound(f"no stored version of {key} matches")
        names.check_key(key)
        with self._atomic() as conn:
            live = self._lookup(conn, key)
            if live is not None and live.is_dir:
                raise IsADirectory(f"is a directory: {key}")
            source = value_of(conn, int(row[0]))
            if source is None:  # thinned between the look and the write
                raise KeyNotFound(f"no stored version of {key} matches")
            node_id = self._put(
                conn, key, b"", None, detail=f"restored version {row[0]}", source=source
            )
            return self._must(conn, key)._replace(id=node_id)


def _pieces(value: bytes | BinaryIO) -> Iterator[bytes]:
    """``value`` in pieces of READ_PIECE bytes (a stream is read to its end).

    Raises:
        ValueTooLarge: (EFBIG) the pieces pass MAX_VALUE_SIZE.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        check_size(len(data))
        for start in range(0, len(data), READ_PIECE):
            yield data[start : start + READ_PIECE]
        return
    total = 0
    while True:
        piece = _read_full(value, READ_PIECE)
        if not piece:
            return
        total += len(piece)
        check_size(total)
        yield piece


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """Read exactly ``size`` bytes unless the stream ends first (pipes return short reads)."""
    parts, left = [], size
    while left:
        piece = stream.read(left)
        if not piece:
            break
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)
