"""The block store of a workspace: every value as a list of content-addressed blocks, in
SQL both engines speak.

    blocks  (id, hash UNIQUE, refs, size, codec, data)   one row per distinct content
    extents (owner, pos, block, PRIMARY KEY (owner, pos)) where a block sits in a value

A value belongs to an *owner*: a node (``owner`` = the node's id, live or archived: the
archive keeps the id, so archiving and restoring move no block) or a history version
(``owner`` = minus the version's id, :func:`version_owner`). Its bytes are its extents in
``pos`` order, each block ``size`` bytes long (at most kyfs.core.blocks.MAX_BLOCK); a gap
between extents, or the end of the extents before the value's size, is a hole and reads
as zeros. ``blocks.hash`` is the SHA-256 of the block's bytes: equal content is stored
once (a version, an archived value or a copy costs only the blocks that differ), and a
read checks it (kyfs.core.blocks.unseal: DamagedBlock, EIO, never wrong bytes).

``nodes.stored`` is the bytes of a live node's extents (uncompressed, a block shared with
another value counted in each: what st_blocks shows, so ``du`` counts a hole as nothing):
every change of a node's extents here adds to it or takes from it in the same statement
sequence, so reading it costs nothing (a sum over a 1 GiB value's 131,072 extents would
cost each getattr milliseconds). An archived or version owner has none (computed again
when an archived node comes back: :func:`recount`).

``blocks.refs`` counts the extents that point at a block. Every change adds the new
references first and releases the old ones after, so a block that stays is never deleted
and stored again; a block whose count reaches 0 is deleted in the same transaction
(:func:`sweep`, served by the partial index ``blocks_unused``), so its pages are reused
by the next write at once.

Where the cuts fall is kyfs.core.blocks.cut's (FastCDC): a value written whole is cut
from its start; a change inside a stored value (:func:`rewrite`) is cut again from the
block before it, until a new cut meets an old one past the change, so the blocks after
it stay as they were and an append or an insert costs one or two new blocks.

Every function runs inside the caller's transaction; none commits.

Thread-safety: as kyfs.engine.sql.base.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence

from kyfs.core import blocks
from kyfs.core.blocks import MAX_BLOCK, Changes, unseal
from kyfs.core.errors import DamagedBlock
from kyfs.engine.sql.base import Connection

WINDOW = 4 * 1024 * 1024  # bytes cut at a time when a long value is written

SQL_RANGE = (  # the extents of one owner that may hold bytes of [? + MAX_BLOCK, ?)
    "SELECT e.pos, e.block, b.size, b.codec, b.hash, b.data FROM extents e"
    " LEFT JOIN blocks b ON b.id = e.block WHERE e.owner = ? AND e.pos > ? AND e.pos < ?"
    " ORDER BY e.pos"
)
SQL_HAS_START = "SELECT 1 FROM extents WHERE owner = ? AND pos = ?"
SQL_SPANS = (  # where the extents of one owner that may hold bytes of [? + MAX_BLOCK, ?) lie
    "SELECT e.pos, e.block, b.size FROM extents e LEFT JOIN blocks b ON b.id = e.block"
    " WHERE e.owner = ? AND e.pos > ? AND e.pos < ? ORDER BY e.pos"
)
SQL_BLOCK = "SELECT codec, hash, data FROM blocks WHERE id = ?"
SQL_EXTENT_AT = (  # the extent of one owner that starts last at or before a position
    "SELECT e.pos, b.size FROM extents e JOIN blocks b ON b.id = e.block"
    " WHERE e.owner = ? AND e.pos <= ? ORDER BY e.pos DESC LIMIT 1"
)
SQL_STORE = (  # a new block, or one more reference to the stored one with the same hash
    "INSERT INTO blocks (hash, refs, size, codec, data) VALUES (?, 1, ?, ?, ?)"
    " ON CONFLICT (hash) DO UPDATE SET refs = blocks.refs + 1"
)
# An extent of the block with a hash: the block's id is found by the server, so storing a
# value reads nothing back (on PostgreSQL its statements go without waiting: a pipeline).
SQL_PLACE = "INSERT INTO extents (owner, pos, block) SELECT ?, ?, id FROM blocks WHERE hash = ?"
SQL_RELEASE = "UPDATE blocks SET refs = refs - ? WHERE id = ?"
SQL_RELEASE_HASH = "UPDATE blocks SET refs = refs - 1 WHERE hash = ?"
SQL_SWEEP = "DELETE FROM blocks WHERE refs <= 0"
_SIZE_OF_CUT = "(SELECT b.size FROM blocks b WHERE b.id = extents.block)"
SQL_CUT_FROM = f"DELETE FROM extents WHERE owner = ? AND pos >= ? RETURNING block, {_SIZE_OF_CUT}"
SQL_CUT_RANGE = (
    f"DELETE FROM extents WHERE owner = ? AND pos >= ? AND pos < ? RETURNING block, {_SIZE_OF_CUT}"
)
SQL_ACCOUNT = "UPDATE nodes SET stored = stored + ? WHERE id = ?"
SQL_STORED_OF = (  # the bytes of one owner's extents (a pass over them: not per getattr)
    "SELECT coalesce(sum(b.size), 0) FROM extents e JOIN blocks b ON b.id = e.block"
    " WHERE e.owner = ?"
)
SQL_RECOUNT = (  # every node's stored bytes counted again from its extents (migration, repair)
    "UPDATE nodes SET stored = (SELECT coalesce(sum(b.size), 0) FROM extents e"
    " JOIN blocks b ON b.id = e.block WHERE e.owner = nodes.id)"
)
SQL_STORED_WRONG = (  # nodes whose stored bytes differ from their extents' (fsck)
    "SELECT n.id FROM nodes n WHERE n.stored != (SELECT coalesce(sum(b.size), 0) FROM extents e"
    " JOIN blocks b ON b.id = e.block WHERE e.owner = n.id)"
)
SQL_COPY = (
    "INSERT INTO extents (owner, pos, block) SELECT ?, pos, block FROM extents WHERE owner = ?"
)
SQL_REF_OWNER = (  # every block of one owner gains (or with a negative factor loses) a reference
    "UPDATE blocks SET refs = refs + ? * c.n FROM (SELECT block, count(*) AS n FROM extents"
    " WHERE owner = ? GROUP BY block) AS c WHERE blocks.id = c.block"
)
SQL_DROP_OWNER = "DELETE FROM extents WHERE owner = ?"


ITEM_OWNER = 1 << 40  # owners from here on: snapshot items (kyfs.engine.sql.snapshots)


def item_owner(item_id: int) -> int:
    """The owner of snapshot item ``item_id``'s own value: ITEM_OWNER plus its id (past
    every node id, which stays below 2^36, kyfs.core.inodes; versions' are negative)."""
    return ITEM_OWNER + item_id


def version_owner(version_id: int) -> int:
    """The owner of history version ``version_id``'s value in ``extents``: minus its id
    (node ids are positive, so the two never meet)."""
    return -version_id


# --- accounting --------------------------------------------------------------------------
def _account(conn: Connection, owner: int, delta: int) -> None:
    """``delta`` bytes more (or fewer) in live node ``owner``'s ``stored`` (nothing for an
    archived node or a version: no row in ``nodes``, or a negative owner)."""
    if owner > 0 and delta:
        conn.execute(SQL_ACCOUNT, (delta, owner))


def _remove(conn: Connection, owner: int, sql: str, args: Sequence[object]) -> list[int]:
    """Run ``sql`` (SQL_CUT_FROM or SQL_CUT_RANGE with ``args``) on ``owner``'s extents;
    the ids of the blocks it removed (each still referenced: release them after), their
    bytes taken from the owner's ``stored``."""
    rows = conn.execute(sql, args).fetchall()
    _account(conn, owner, -sum(int(row[1] or 0) for row in rows))
    return [row[0] for row in rows]


def recount(conn: Connection, owner: int) -> None:
    """Count live node ``owner``'s ``stored`` again from its extents (one pass over
    them): after its extents came back from the archive."""
    if owner > 0:
        total = conn.execute(SQL_STORED_OF, (owner,)).fetchone()[0]
        conn.execute("UPDATE nodes SET stored = ? WHERE id = ?", (int(total), owner))


def stored_of(conn: Connection, owner: int) -> int:
    """The bytes of ``owner``'s extents (holes cost none), counted from them."""
    return int(conn.execute(SQL_STORED_OF, (owner,)).fetchone()[0])


# --- one block ---------------------------------------------------------------------------
def store(conn: Connection, data: bytes) -> bytes:
    """The hash of a block holding ``data``, with one more reference: the stored one
    when the same bytes are stored already, else a new one (compressed when it pays).
    Nothing is read back: SQL_PLACE finds the block by its hash."""
    codec, stored = blocks.seal(data)  # before knowing: one statement (a round trip) less
    digest = blocks.digest(data)
    conn.execute(SQL_STORE, (digest, len(data), codec, stored))
    return digest


def release(conn: Connection, block_ids: Iterable[int]) -> None:
    """One reference less for each id in ``block_ids`` (an id may come several times);
    a block left with none is deleted at the next :func:`sweep`."""
    counts: dict[int, int] = {}
    for block_id in block_ids:
        counts[block_id] = counts.get(block_id, 0) + 1
    if counts:
        conn.executemany(SQL_RELEASE, [(n, block_id) for block_id, n in counts.items()])


def sweep(conn: Connection) -> None:
    """Delete every block no extent points at any more (an indexed, usually empty set)."""
    conn.execute(SQL_SWEEP)


# --- reading -----------------------------------------------------------------------------
def read(
    conn: Connection,
    owner: int,
    start: int,
    end: int,
    stored_end: int,
    value_size: int | None = None,
) -> bytes:
    """Bytes ``[start, end)`` of ``owner``'s value; bytes at or past ``stored_end`` and
    holes are zeros. ``value_size``: the value's stored size (default ``stored_end``);
    an extent that passes it, or overlaps the one before, is damage (a damaged size or
    place would otherwise serve a cut or shifted value).

    Raises:
        DamagedBlock: (EIO) a block it needs fails its checksum, is missing, or lies
            where no block can (past the value's size, over another).
    """
    out = bytearray(end - start)
    take_end = min(end, stored_end)
    if take_end <= start:
        return bytes(out)
    limit = stored_end if value_size is None else value_size
    reached = -1
    for pos, block_id, size, codec, address, data in conn.execute(
        SQL_RANGE, (owner, start - MAX_BLOCK, take_end)
    ):
        if size is None:
            raise DamagedBlock(f"block {block_id} is missing")
        if not (isinstance(pos, int) and isinstance(size, int)):
            raise DamagedBlock(f"block {block_id} is damaged (a place or size not a number)")
        if pos < reached or (pos + size > limit and pos < limit):
            raise DamagedBlock(f"block {block_id} lies at {pos}, where no block can")
        reached = pos + size
        if pos + size <= start:
            continue
        raw = unseal(block_id, codec, data, size, address)
        lo, hi = max(start, pos), min(take_end, pos + size)
        out[lo - start : hi - start] = raw[lo - pos : hi - pos]
    return bytes(out)


SQL_NEXT_START = "SELECT min(pos) FROM extents WHERE owner = ? AND pos > ?"
SQL_FIRST_GAP = (  # where the first gap after the extent at ? begins, or NULL: none
    "SELECT x.prev_end FROM (SELECT e.pos, lag(e.pos + b.size) OVER (ORDER BY e.pos)"
    " AS prev_end FROM extents e JOIN blocks b ON b.id = e.block WHERE e.owner = ?"
    " AND e.pos >= ?) AS x WHERE x.pos > x.prev_end ORDER BY x.pos LIMIT 1"
)


def next_data(conn: Connection, owner: int, offset: int) -> int | None:
    """The first position at or after ``offset`` that an extent of ``owner`` covers, or
    None when only a hole follows (lseek(2)'s SEEK_DATA). Two indexed look-ups."""
    row = conn.execute(SQL_EXTENT_AT, (owner, offset)).fetchone()
    if row is not None and row[0] + row[1] > offset:
        return offset
    found = conn.execute(SQL_NEXT_START, (owner, offset)).fetchone()[0]
    return None if found is None else int(found)


def next_hole(conn: Connection, owner: int, offset: int) -> int:
    """The first position at or after ``offset`` that no extent of ``owner`` covers
    (lseek(2)'s SEEK_HOLE; past the last extent everything is a hole, so it may be the
    value's size). A run of extents without a gap is read in one statement, from the
    extent holding ``offset`` to the first gap: a value without holes costs a pass over
    its extents from there."""
    row = conn.execute(SQL_EXTENT_AT, (owner, offset)).fetchone()
    if row is None or row[0] + row[1] <= offset:
        return offset
    gap = conn.execute(SQL_FIRST_GAP, (owner, row[0])).fetchone()
    if gap is not None:
        return int(gap[0])
    last = conn.execute(SQL_EXTENT_AT, (owner, 1 << 62)).fetchone()
    return int(last[0] + last[1])


def iter_value(conn: Connection, owner: int, size: int, piece: int) -> Iterator[bytes]:
    """``owner``'s value of ``size`` bytes as consecutive pieces of at most ``piece``
    bytes (holes as zeros). Raises DamagedBlock (EIO)."""
    if not isinstance(size, int) or size < 0:
        raise DamagedBlock(f"the size of the value is damaged ({size!r})")
    for offset in range(0, size, piece):
        yield read(conn, owner, offset, min(offset + piece, size), size)


def usage(conn: Connection) -> tuple[int, int, int, int]:
    """(live, archive, history, blocks): bytes stored (compressed) of the blocks a live
    value uses; of those only archived values use (beyond live ones); of those only
    history versions and snapshots use (beyond both); and how many blocks there are. Each block is
    counted once, so the three add up to what the block store holds. One pass over the
    extents and the blocks."""
    row = conn.execute(
        "WITH live AS (SELECT DISTINCT e.block FROM extents e JOIN nodes n ON n.id = e.owner),"
        " kept AS (SELECT DISTINCT e.block FROM extents e JOIN archive a ON a.id = e.owner)"
        " SELECT coalesce(sum(CASE WHEN b.id IN (SELECT block FROM live)"
        " THEN length(b.data) END), 0),"
        " coalesce(sum(CASE WHEN b.id NOT IN (SELECT block FROM live) AND b.id IN"
        " (SELECT block FROM kept) THEN length(b.data) END), 0),"
        " coalesce(sum(CASE WHEN b.id NOT IN (SELECT block FROM live) AND b.id NOT IN"
        " (SELECT block FROM kept) THEN length(b.data) END), 0), count(*) FROM blocks b"
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


# --- writing -----------------------------------------------------------------------------
def write(conn: Connection, owner: int, pieces: Iterable[bytes], start: int = 0) -> int:
    """Store the bytes of ``pieces`` (consecutive) as ``owner``'s value from ``start``,
    where it holds nothing yet, cut from ``start``; returns the position after the last
    byte. Memory: one WINDOW plus a piece."""
    placed: list[tuple[int, int, bytes]] = []
    pending = bytearray()
    base = start
    for piece in pieces:
        pending += piece
        if len(pending) >= WINDOW:
            base, pending = _cut(conn, base, pending, final=False, out=placed)
            _place(conn, owner, placed)
    base, _ = _cut(conn, base, pending, final=True, out=placed)
    _place(conn, owner, placed)
    return base


def _cut(
    conn: Connection,
    base: int,
    pending: bytearray,
    *,
    final: bool,
    out: list[tuple[int, int, bytes]],
) -> tuple[int, bytearray]:
    """Cut ``pending`` (the bytes from position ``base``) and store its blocks, appending
    (pos, length, block hash) to ``out``; unless ``final`` the last block stays pending (a
    cut at the window's end is not the content's). Returns the new base and what stays
    pending."""
    lengths = list(blocks.cut(pending))
    if not final and lengths:
        lengths.pop()
    at = 0
    with memoryview(pending) as view:
        for length in lengths:
            out.append((base + at, length, store(conn, bytes(view[at : at + length]))))
            at += length
    return base + at, pending[at:]


def _place(conn: Connection, owner: int, placed: list[tuple[int, int, bytes]]) -> None:
    """Insert the extents ``placed`` (pos, length, block hash) of ``owner``, counted in
    its ``stored``; empties it."""
    conn.executemany(SQL_PLACE, [(owner, pos, digest) for pos, _, digest in placed])
    _account(conn, owner, sum(length for _, length, _ in placed))
    placed.clear()


def copy(conn: Connection, source: int, target: int) -> None:
    """Give ``target`` (which holds nothing) the same value as ``source``: its extents,
    each block one more reference; no byte is copied."""
    conn.execute(SQL_COPY, (target, source))
    conn.execute(SQL_REF_OWNER, (1, source))
    if target > 0:
        _account(conn, target, stored_of(conn, source))


def drop(conn: Connection, owner: int) -> None:
    """Remove ``owner``'s value: its extents go, its blocks lose a reference each, and
    those left with none are deleted."""
    conn.execute(SQL_REF_OWNER, (-1, owner))
    conn.execute(SQL_DROP_OWNER, (owner,))
    if owner > 0:
        conn.execute("UPDATE nodes SET stored = 0 WHERE id = ?", (owner,))
    sweep(conn)


def drop_selected(conn: Connection, owners: str, args: Sequence[object] = ()) -> None:
    """Remove the values of every owner the query ``owners`` (SQL selecting one column of
    owners, with ``args``) selects, in three statements, whatever their number."""
    conn.execute(
        "UPDATE blocks SET refs = refs - c.n FROM (SELECT block, count(*) AS n FROM extents"
        f" WHERE owner IN ({owners}) GROUP BY block) AS c WHERE blocks.id = c.block",
        args,
    )
    conn.execute(f"DELETE FROM extents WHERE owner IN ({owners})", args)
    conn.execute(f"UPDATE nodes SET stored = 0 WHERE id IN ({owners})", args)
    sweep(conn)


def share(conn: Connection, source: int, target: int) -> None:
    """Make ``target``'s whole value the same as ``source``'s, blocks shared (no byte
    copied; the old blocks of ``target`` are released after)."""
    old = _remove(conn, target, SQL_CUT_FROM, (target, 0))
    copy(conn, source, target)
    release(conn, old)
    sweep(conn)


def replace(conn: Connection, owner: int, pieces: Iterable[bytes]) -> int:
    """Make ``pieces`` ``owner``'s whole value; returns its length. The new blocks are
    referenced before the old ones are released, so blocks both share stay stored."""
    old = _remove(conn, owner, SQL_CUT_FROM, (owner, 0))
    size = write(conn, owner, pieces)
    if old:
        release(conn, old)
        sweep(conn)
    return size


def rewrite(
    conn: Connection, owner: int, stored_size: int, size: int, valid: int, changes: Changes
) -> None:
    """Apply an open file's changes to ``owner``'s value of ``stored_size`` bytes: the new
    value is ``size`` bytes long; of the stored bytes those below ``valid`` stay (where
    no changed block covers them); changed blocks replace what they cover; the rest is a
    hole. Only the blocks around a change are cut again (see the module docstring).

    Raises:
        DamagedBlock: (EIO) a stored block that must be cut again fails its checksum.
    """
    keep = min(valid, size, stored_size)
    step = changes.block_size
    regions: list[tuple[int, int]] = []
    for idx in changes.indexes():
        lo, hi = idx * step, min((idx + 1) * step, size)
        if lo >= size:
            break
        if regions and regions[-1][1] >= lo:
            regions[-1] = (regions[-1][0], max(regions[-1][1], hi))
        else:
            regions.append((lo, hi))
    released: list[int] = []
    marks = list(regions)
    if stored_size > keep:  # what lies past ``keep`` goes; the block across it is cut again
        released += _remove(conn, owner, SQL_CUT_FROM, (owner, keep))
        if keep and not any(lo <= keep <= hi for lo, hi in regions):
            marks = sorted([*regions, (keep, keep)])
    if not keep:  # nothing stored stays (a new file, O_TRUNC): each region as it comes
        for lo, hi in regions:
            write(conn, owner, _region(changes, lo, hi), start=lo)
        if released:
            release(conn, released)
            sweep(conn)
        return
    source = _NewValue(conn, owner, keep, size, regions, changes)
    done = -1
    for lo, hi in marks:
        if hi <= done:
            continue
        done = _recut(conn, owner, source, lo, hi, released)
    if released:
        release(conn, released)
        sweep(conn)


def punch(conn: Connection, owner: int, start: int, end: int) -> None:
    """Make bytes ``[start, end)`` of ``owner``'s value a hole (reads as zeros, costs no
    block): the extents inside the range go; an extent across an edge is replaced by a
    block of its bytes outside the range (at its own position, or at ``end``), so no
    byte outside the range changes. Those edge blocks are not cut again by FastCDC: the
    next change near them (:func:`rewrite`) cuts from them as from any block. Only the
    two edge blocks are read, whatever the range's length (fallocate(2)'s
    FALLOC_FL_PUNCH_HOLE).

    Raises:
        DamagedBlock: (EIO) an edge block fails its checksum or is missing.
    """
    if end <= start:
        return
    spans = conn.execute(SQL_SPANS, (owner, start - MAX_BLOCK, end)).fetchall()
    spans = [row for row in spans if row[2] is None or row[0] + row[2] > start]
    if not spans:
        return
    placed: list[tuple[int, int, bytes]] = []
    for pos, block_id, size in (spans[0], spans[-1]) if len(spans) > 1 else spans[:1]:
        if size is None:
            raise DamagedBlock(f"block {block_id} is missing")
        if pos >= start and pos + size <= end:
            continue  # wholly inside: it just goes
        row = conn.execute(SQL_BLOCK, (block_id,)).fetchone()
        if row is None:
            raise DamagedBlock(f"block {block_id} is missing")
        raw = unseal(block_id, row[0], row[2], size, row[1])
        if pos < start:  # the bytes before the range stay where they are
            placed.append((pos, start - pos, store(conn, raw[: start - pos])))
        if pos + size > end:  # the bytes after it, from ``end``
            placed.append((end, pos + size - end, store(conn, raw[end - pos :])))
    released = _remove(conn, owner, SQL_CUT_RANGE, (owner, spans[0][0], end))
    _place(conn, owner, placed)
    release(conn, released)
    sweep(conn)


def _region(changes: Changes, lo: int, hi: int) -> Iterator[bytes]:
    """The bytes of the changed region ``[lo, hi)`` (block-aligned at ``lo``), block by
    block: each changed block's bytes, then zeros to its end."""
    step = changes.block_size
    for idx in range(lo // step, (hi - 1) // step + 1):
        data = changes.block(idx)
        length = min(step, hi - idx * step)
        yield data[:length] + bytes(max(0, length - len(data)))


def _recut(
    conn: Connection, owner: int, source: _NewValue, lo: int, hi: int, released: list[int]
) -> int:
    """Cut the new value again around the change ``[lo, hi)``: from the start of the
    stored block holding byte ``lo - 1`` (so an append grows the last block) until a new
    cut past ``hi`` meets the start of a stored block with unchanged bytes after it (the
    rest stays as it is) or the data ends (a hole, or the end); replace the extents in
    between. Returns where it stopped."""
    start = lo
    row = conn.execute(SQL_EXTENT_AT, (owner, max(lo - 1, 0))).fetchone()
    if row is not None and row[0] + row[1] >= lo:
        start = int(row[0])
    placed: list[tuple[int, int, bytes]] = []
    base, pending = start, bytearray()
    stop = None
    while stop is None:  # read to the change's end and two blocks on, then as needed
        want = max(min(WINDOW, max(hi - base, 0) + 2 * MAX_BLOCK) - len(pending), MAX_BLOCK)
        piece = source.explicit(base + len(pending), want)
        pending += piece
        final = len(piece) < want  # the data ended: a hole, or the end
        first = len(placed)
        base, pending = _cut(conn, base, pending, final=final, out=placed)
        for at in range(first, len(placed)):
            end = placed[at][0] + placed[at][1]
            if end >= hi and source.resumes(end):
                stop = end
                conn.executemany(SQL_RELEASE_HASH, [(d,) for _, _, d in placed[at + 1 :]])
                del placed[at + 1 :]
                break
        if stop is None and final:
            stop = base
    released += _remove(conn, owner, SQL_CUT_RANGE, (owner, start, stop))
    _place(conn, owner, placed)
    return stop


class _NewValue:
    """The bytes of a value being rewritten (:func:`rewrite`), read before its extents
    change: changed blocks where they are, else the stored bytes below ``keep``, else a
    hole."""

    def __init__(
        self,
        conn: Connection,
        owner: int,
        keep: int,
        size: int,
        regions: Sequence[tuple[int, int]],
        changes: Changes,
    ) -> None:
        self._conn = conn
        self._owner = owner
        self.keep = keep  # stored bytes below this stay where no change covers them
        self._size = size
        self._regions = [r for r in regions if r[1] > r[0]]
        self._starts = [lo for lo, _ in self._regions]
        self._changes = changes

    def _region(self, pos: int) -> tuple[int, int] | None:
        """The changed region holding ``pos``, or None."""
        at = bisect.bisect_right(self._starts, pos) - 1
        if at >= 0 and pos < self._regions[at][1]:
            return self._regions[at]
        return None

    def resumes(self, pos: int) -> bool:
        """True when the stored value goes on unchanged from ``pos``: a stored extent that
        stays starts there and no change covers it."""
        if pos >= self.keep or self._region(pos) is not None:
            return False
        return self._conn.execute(SQL_HAS_START, (self._owner, pos)).fetchone() is not None

    def explicit(self, pos: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of the new value from ``pos``, stopping where a hole or
        the end begins (b"" when one begins at ``pos``)."""
        out = bytearray()
        while len(out) < limit and pos < self._size:
            region = self._region(pos)
            if region is not None:
                taken = self._changed(pos, min(region[1], pos + limit - len(out)))
            else:
                taken = self._stored(pos, limit - len(out))
            if not taken:
                break
            out += taken
            pos += len(taken)
        return bytes(out)

    def _changed(self, pos: int, end: int) -> bytes:
        """The changed bytes ``[pos, end)`` (inside one changed region)."""
        step = self._changes.block_size
        out = bytearray()
        while pos < end:
            idx, within = divmod(pos, step)
            take = min(end - pos, step - within)
            piece = self._changes.block(idx)[within : within + take]
            out += piece
            out += bytes(take - len(piece))
            pos += take
        return bytes(out)

    def _stored(self, pos: int, limit: int) -> bytes:
        """Stored bytes from ``pos`` while they run on without a hole, up to ``limit``
        bytes, the next changed region or ``keep``."""
        end = min(pos + limit, self.keep)
        at = bisect.bisect_right(self._starts, pos)
        if at < len(self._starts):
            end = min(end, self._starts[at])
        if end <= pos:
            return b""
        out = bytearray()
        at = pos
        for stored_pos, block_id, size, codec, address, data in self._conn.execute(
            SQL_RANGE, (self._owner, pos - MAX_BLOCK, end)
        ):
            if size is None:
                raise DamagedBlock(f"block {block_id} is missing")
            if stored_pos + size <= at:
                continue
            if stored_pos > at:
                break  # a hole
            raw = unseal(block_id, codec, data, size, address)
            take_end = min(end, stored_pos + size)
            out += raw[at - stored_pos : take_end - stored_pos]
            at = take_end
            if at >= end:
                break
        return bytes(out)
