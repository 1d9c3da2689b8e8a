"""kyfs's own consistency rules for a workspace's tables, in SQL both engines run
(``kyfs fsck``): each query selects the ids that break one rule; ``{root}`` stands for the
top directory's node id. :func:`damaged` reads every block against its checksum. The
engines add their own (SQLite's integrity_check and FTS5's tables; PostgreSQL's search
documents). :data:`REPAIRS` are the statements both engines' ``fsck --repair`` run for
the block store.
"""

from __future__ import annotations

from typing import Any

from kyfs.core.blocks import MAX_BLOCK, unseal
from kyfs.core.errors import DamagedBlock
from kyfs.core.nodes import DIR, REG
from kyfs.engine.sql.base import Connection

LOST_FOUND = "lost+found"  # fsck --repair archives nameless nodes under lost+found/<id>

# The size of the value an extent ``e`` belongs to: its node's (live or archived) or its
# version's (a negative owner); NULL when it belongs to none.
_OWNER_SIZE = (
    "CASE WHEN e.owner > 0 THEN coalesce((SELECT n.size FROM nodes n WHERE n.id = e.owner),"
    " (SELECT a.size FROM archive a WHERE a.id = e.owner))"
    " ELSE (SELECT h.size FROM history h WHERE h.id = -e.owner) END"
)
_EXTENTS_OF_NO_VALUE = f"SELECT e.owner, e.pos FROM extents e WHERE ({_OWNER_SIZE}) IS NULL"
_EXTENTS_PAST_SIZE = (
    "SELECT e.owner, e.pos FROM extents e JOIN blocks b ON b.id = e.block"
    f" WHERE e.pos < 0 OR e.pos + b.size > ({_OWNER_SIZE})"
)
_EXTENTS_OF_NO_BLOCK = (
    "SELECT e.owner, e.pos FROM extents e WHERE NOT EXISTS"
    " (SELECT 1 FROM blocks b WHERE b.id = e.block)"
)
_EXTENTS_OVERLAPPING = (
    "SELECT owner, pos FROM (SELECT e.owner, e.pos, e.pos + b.size AS stop, lead(e.pos) OVER"
    " (PARTITION BY e.owner ORDER BY e.pos) AS next FROM extents e JOIN blocks b"
    " ON b.id = e.block) AS s WHERE next < stop"
)

_VERSIONS_OF_NO_NODE = (
    "SELECT h.id FROM history h WHERE h.shared IS NOT NULL AND NOT EXISTS (SELECT 1"
    " FROM nodes n WHERE n.id = h.shared) AND NOT EXISTS (SELECT 1 FROM archive a"
    " WHERE a.id = h.shared)"
)

BLOCK_CHECKS = [  # the block store's rules (also run on every untrusted file)
    ("extents that belong to no value", _EXTENTS_OF_NO_VALUE),
    ("versions that share the value of a node that is gone", _VERSIONS_OF_NO_NODE),
    ("extents past the size of their value", _EXTENTS_PAST_SIZE),
    ("extents of no block", _EXTENTS_OF_NO_BLOCK),
    ("extents that overlap the next one", _EXTENTS_OVERLAPPING),
    (
        "blocks of a size out of range",
        f"SELECT id FROM blocks WHERE size <= 0 OR size > {MAX_BLOCK}",
    ),
    (
        "blocks whose reference count differs from their extents",
        "SELECT b.id FROM blocks b LEFT JOIN (SELECT block, count(*) AS n FROM extents"
        " GROUP BY block) AS c ON c.block = b.id WHERE b.refs != coalesce(c.n, 0)",
    ),
]

STRUCTURE_CHECKS = [
    *BLOCK_CHECKS,
    (
        "entries whose parent directory is missing",
        f"SELECT e.key FROM entries e WHERE e.parent != '' AND NOT EXISTS (SELECT 1 FROM"
        f" entries d JOIN nodes n ON n.id = d.node WHERE d.key = e.parent AND n.kind = {DIR})",
    ),
    (
        "entries of no node",
        "SELECT e.key FROM entries e WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = e.node)",
    ),
    (
        "nodes with no name",
        "SELECT n.id FROM nodes n WHERE n.id != {root} AND NOT EXISTS"
        " (SELECT 1 FROM entries e WHERE e.node = n.id)",
    ),
    (
        "link counts that differ from the names",
        f"SELECT n.id FROM nodes n WHERE n.kind != {DIR} AND n.nlink !="
        f" (SELECT count(*) FROM entries e WHERE e.node = n.id)",
    ),
    (
        "directory link counts that differ from 2 + subdirectories",
        f"SELECT n.id FROM nodes n LEFT JOIN entries d ON d.node = n.id WHERE n.kind = {DIR}"
        f" AND (d.key IS NOT NULL OR n.id = {{root}}) AND n.nlink != 2 + (SELECT count(*)"
        f" FROM entries c JOIN nodes cn ON cn.id = c.node WHERE cn.kind = {DIR}"
        f" AND c.parent = coalesce(d.key, ''))",
    ),
    (
        "keys missing from the search index",
        f"SELECT n.id FROM nodes n WHERE n.kind = {REG} AND EXISTS (SELECT 1 FROM entries e"
        f" WHERE e.node = n.id) AND NOT EXISTS (SELECT 1 FROM search_text t WHERE t.id = n.id)"
        f" AND n.id NOT IN (SELECT node_id FROM index_pending)",
    ),
    (
        "search index rows of no key",
        f"SELECT t.id FROM search_text t WHERE NOT EXISTS"
        f" (SELECT 1 FROM nodes n WHERE n.id = t.id AND n.kind = {REG})"
        f" AND t.id NOT IN (SELECT node_id FROM index_pending)",
    ),
]


def damaged(conn: Connection) -> list[str]:
    """Every block whose stored bytes fail its checksum (kyfs.core.blocks.unseal), as
    one sentence naming the keys, archived keys and versions that use them; ``[]`` when
    none does. Reads every block once."""
    bad: list[int] = []
    for block_id, codec, data, size, address in conn.execute(
        "SELECT id, codec, data, size, hash FROM blocks"
    ):
        try:
            unseal(block_id, codec, data, size, address)
        except DamagedBlock:
            bad.append(int(block_id))
    if not bad:
        return []
    marks = ",".join("?" * len(bad))
    owners = sorted({int(row[0]) for row in conn.execute(
        f"SELECT owner FROM extents WHERE block IN ({marks})", bad
    )})  # fmt: skip
    where: list[str] = []
    for owner in owners:
        where += _owner_names(conn, owner)
    shown = ", ".join(where[:10]) + (f" and {len(where) - 10} more" if len(where) > 10 else "")
    return [f"{len(bad)} damaged blocks (failing their checksum), used by: {shown or 'nothing'}"]


def _owner_names(conn: Connection, owner: int) -> list[str]:
    """How a person names the value of block store owner ``owner``."""
    rows: list[Any]
    if owner < 0:
        rows = conn.execute("SELECT key FROM history WHERE id = ?", (-owner,)).fetchall()
        return [f"{row[0]} (version {-owner})" for row in rows]
    rows = conn.execute("SELECT key FROM entries WHERE node = ? ORDER BY key", (owner,)).fetchall()
    if rows:
        return [row[0] for row in rows]
    rows = conn.execute("SELECT key FROM archive WHERE id = ?", (owner,)).fetchall()
    return [f"{row[0]} (archived)" for row in rows]


def repair_blocks(conn: Connection) -> list[str]:
    """``fsck --repair`` of the block store, inside the caller's transaction (both
    engines): extents that belong to no value, point at no block, lie past their value or
    over the next one go (a hole is left: those bytes were not readable anyway); versions
    that share the value of a node that is gone keep no value; every
    block's reference count is counted again from the extents, and the blocks no extent
    uses go. Returns what was done, as sentences."""
    done = []
    for label, sql in (
        ("extents that belong to no value", _EXTENTS_OF_NO_VALUE),
        ("extents of no block", _EXTENTS_OF_NO_BLOCK),
        ("extents past the size of their value", _EXTENTS_PAST_SIZE),
        ("extents that overlap the next one", _EXTENTS_OVERLAPPING),
    ):
        places = [(int(r[0]), int(r[1])) for r in conn.execute(sql).fetchall()]
        if places:
            conn.executemany("DELETE FROM extents WHERE owner = ? AND pos = ?", places)
            done.append(f"dropped {len(places)} {label}")
    lost = conn.execute(
        f"UPDATE history SET size = NULL, shared = NULL WHERE id IN ({_VERSIONS_OF_NO_NODE})"
    ).rowcount
    if lost:
        done.append(f"dropped the values of {lost} versions whose node is gone")
    recounted = conn.execute(
        "UPDATE blocks SET refs = coalesce(c.n, 0) FROM (SELECT b.id, n FROM blocks b"
        " LEFT JOIN (SELECT block, count(*) AS n FROM extents GROUP BY block) AS x"
        " ON x.block = b.id WHERE b.refs != coalesce(x.n, 0)) AS c WHERE blocks.id = c.id"
    ).rowcount
    if recounted:
        done.append(f"counted again the references of {recounted} blocks")
    conn.execute("DELETE FROM blocks WHERE refs <= 0")
    return done
