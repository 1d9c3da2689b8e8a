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
from kyfs.engine.sql import blocks
from kyfs.engine.sql.base import Connection
from kyfs.engine.sql.blocks import ITEM_OWNER
from kyfs.engine.sql.vectors import VECTOR_CHECKS

LOST_FOUND = "lost+found"  # fsck --repair archives nameless nodes under lost+found/<id>

# The size of the value an extent ``e`` belongs to: its node's (live or archived), its
# version's (a negative owner) or its snapshot item's (from ITEM_OWNER, an item that
# does not share a node); NULL when it belongs to none.
_OWNER_SIZE = (
    f"CASE WHEN e.owner >= {ITEM_OWNER} THEN (SELECT i.size FROM snapshot_items i"
    f" WHERE i.id = e.owner - {ITEM_OWNER} AND i.shared IS NULL AND i.kind = {REG})"
    " WHEN e.owner > 0 THEN coalesce((SELECT n.size FROM nodes n WHERE n.id = e.owner),"
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

_ITEMS_OF_NO_NODE = (
    "SELECT i.id FROM snapshot_items i WHERE i.shared IS NOT NULL AND NOT EXISTS (SELECT 1"
    " FROM nodes n WHERE n.id = i.shared) AND NOT EXISTS (SELECT 1 FROM archive a"
    " WHERE a.id = i.shared)"
)

_NO_SNAPSHOT = "snapshot items of no snapshot"
BLOCK_CHECKS = [  # the block store's rules (also run on every untrusted file)
    ("extents that belong to no value", _EXTENTS_OF_NO_VALUE),
    ("versions that share the value of a node that is gone", _VERSIONS_OF_NO_NODE),
    ("snapshot items that share the value of a node that is gone", _ITEMS_OF_NO_NODE),
    (
        "snapshot attributes of no snapshot item",
        "SELECT x.item FROM snapshot_xattrs x WHERE NOT EXISTS"
        " (SELECT 1 FROM snapshot_items i WHERE i.id = x.item)",
    ),
    (
        _NO_SNAPSHOT,
        "SELECT i.id FROM snapshot_items i WHERE NOT EXISTS"
        " (SELECT 1 FROM snapshots s WHERE s.id = i.snapshot)",
    ),
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

XATTRS_OF_NO_NODE = "extended attributes of no node"
STRUCTURE_CHECKS = [
    *BLOCK_CHECKS,
    ("nodes whose stored bytes differ from their extents", blocks.SQL_STORED_WRONG),
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
    (  # a node's attributes go with it (kyfs.engine.sql.base.drop_xattrs)
        XATTRS_OF_NO_NODE,
        "SELECT x.node FROM xattrs x WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE"
        " n.id = x.node) AND NOT EXISTS (SELECT 1 FROM archive a WHERE a.id = x.node)",
    ),
    *VECTOR_CHECKS,
]


def drop_stray_xattrs(conn: Connection) -> list[str]:
    """fsck --repair: drop the extended attributes of nodes that exist neither live nor in
    the archive (XATTRS_OF_NO_NODE); returns what was done."""
    query = dict(STRUCTURE_CHECKS)[XATTRS_OF_NO_NODE]
    count = conn.execute(f"DELETE FROM xattrs WHERE node IN ({query})").rowcount
    return [f"dropped {count} {XATTRS_OF_NO_NODE}"] if count else []


def damaged_blocks(conn: Connection) -> list[int]:
    """The ids of every block whose stored bytes fail its checksum
    (kyfs.core.blocks.unseal: bytes that do not decompress, the wrong length or hash, or
    columns of the wrong type). Reads every block once."""
    bad: list[int] = []
    last = -(2**63)
    while True:
        try:
            for block_id, codec, data, size, address in conn.execute(
                "SELECT id, codec, data, size, hash FROM blocks WHERE id > ? ORDER BY id", (last,)
            ):
                last = block_id
                try:
                    unseal(block_id, codec, data, size, address)
                except DamagedBlock:
                    bad.append(int(block_id))
            return bad
        except Exception:  # a row that cannot even be fetched (SQLite: a damaged type,
            row = conn.execute(  # text that is not UTF-8 where bytes belong): damaged
                "SELECT min(id) FROM blocks WHERE id > ?", (last,)
            ).fetchone()
            if row is None or row[0] is None:
                return bad
            last = int(row[0])
            bad.append(last)


def damaged(conn: Connection) -> list[str]:
    """Every block whose stored bytes fail its checksum (:func:`damaged_blocks`), as
    one sentence naming the keys, archived keys and versions that use them; ``[]`` when
    none does."""
    bad = damaged_blocks(conn)
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
    if owner >= ITEM_OWNER:
        rows = conn.execute(
            "SELECT i.key, s.name FROM snapshot_items i JOIN snapshots s ON s.id = i.snapshot"
            " WHERE i.id = ?",
            (owner - ITEM_OWNER,),
        ).fetchall()
        return [f"{row[0]} (snapshot {row[1]})" for row in rows]
    if owner < 0:
        rows = conn.execute("SELECT key FROM history WHERE id = ?", (-owner,)).fetchall()
        return [f"{row[0]} (version {-owner})" for row in rows]
    rows = conn.execute("SELECT key FROM entries WHERE node = ? ORDER BY key", (owner,)).fetchall()
    if rows:
        return [row[0] for row in rows]
    rows = conn.execute("SELECT key FROM archive WHERE id = ?", (owner,)).fetchall()
    return [f"{row[0]} (archived)" for row in rows]


def repair_blocks(conn: Connection, now_ns: int) -> list[str]:
    """``fsck --repair`` of the block store, inside the caller's transaction (both
    engines): extents that belong to no value, point at no block, lie past their value or
    over the next one go, and so do damaged blocks (:func:`damaged_blocks`); a value that
    lost bytes that way, or has an extent on a block with fewer references than extents
    (a damaged block number), or has holes once any extent was found damaged
    (:func:`uncovered`), is never served with zeros in their place as if whole
    (:func:`set_aside`); versions that share the value of a node that is gone keep no
    value; every block's reference count is counted again from the extents, and the
    blocks no extent uses go. ``now_ns``: ns, UTC, the archive time of what is set aside.
    Returns what was done, as sentences."""
    done = []
    lost: set[int] = set()  # owners whose value lost bytes
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
            lost.update(owner for owner, _ in places)
    overcounted = [int(row[0]) for row in conn.execute(
        "SELECT b.id FROM blocks b JOIN (SELECT block, count(*) AS n FROM extents"
        " GROUP BY block) AS x ON x.block = b.id WHERE b.refs < x.n"
    )]  # fmt: skip
    for block_id in overcounted:  # more extents than references: some point here wrongly
        lost.update(int(row[0]) for row in conn.execute(
            "SELECT DISTINCT owner FROM extents WHERE block = ?", (block_id,)
        ))  # fmt: skip
    if lost:  # extents were damaged: one lost without a trace leaves a hole
        lost |= uncovered(conn)
    bad = damaged_blocks(conn)
    if bad:
        for block_id in bad:
            lost.update(int(row[0]) for row in conn.execute(
                "SELECT DISTINCT owner FROM extents WHERE block = ?", (block_id,)
            ))  # fmt: skip
            conn.execute("DELETE FROM extents WHERE block = ?", (block_id,))
        done.append(f"dropped {len(bad)} damaged blocks (failing their checksum)")
    done += set_aside(conn, lost, now_ns)
    lost = conn.execute(
        f"UPDATE history SET size = NULL, shared = NULL WHERE id IN ({_VERSIONS_OF_NO_NODE})"
    ).rowcount
    if lost:
        done.append(f"dropped the values of {lost} versions whose node is gone")
    done += drop_items(
        conn,
        [int(row[0]) for row in conn.execute(dict(BLOCK_CHECKS)[_NO_SNAPSHOT])],
        "of no snapshot",
    )
    done += drop_items(
        conn, [int(row[0]) for row in conn.execute(_ITEMS_OF_NO_NODE)], "whose node is gone"
    )
    stray = conn.execute(
        "DELETE FROM snapshot_xattrs WHERE item NOT IN (SELECT id FROM snapshot_items)"
    ).rowcount
    if stray:
        done.append(f"dropped {stray} snapshot attributes of no snapshot item")
    recounted = conn.execute(
        "UPDATE blocks SET refs = coalesce(c.n, 0) FROM (SELECT b.id, n FROM blocks b"
        " LEFT JOIN (SELECT block, count(*) AS n FROM extents GROUP BY block) AS x"
        " ON x.block = b.id WHERE b.refs != coalesce(x.n, 0)) AS c WHERE blocks.id = c.id"
    ).rowcount
    if recounted:
        done.append(f"counted again the references of {recounted} blocks")
    conn.execute("DELETE FROM blocks WHERE refs <= 0")
    wrong = [int(row[0]) for row in conn.execute(blocks.SQL_STORED_WRONG)]
    for node_id in wrong:
        blocks.recount(conn, node_id)
    if wrong:
        done.append(f"counted again the stored bytes of {len(wrong)} nodes")
    return done


def uncovered(conn: Connection) -> set[int]:
    """The block store owners (nodes, archived nodes, versions with a value of their
    own) whose extents do not cover their size: a value with holes. In a file whose
    extents were damaged a lost extent reads as a hole of zeros, as if the value were
    whole; a sparse value cannot be told from it."""
    return {
        int(owner)
        for owner, covered, size in conn.execute(
            "SELECT o.owner, coalesce((SELECT sum(b.size) FROM extents e JOIN blocks b"
            " ON b.id = e.block WHERE e.owner = o.owner), 0), o.size FROM ("
            " SELECT id AS owner, size FROM nodes WHERE kind = ?"
            " UNION ALL SELECT id, size FROM archive WHERE kind = ?"
            " UNION ALL SELECT -id, size FROM history WHERE size IS NOT NULL"
            " AND shared IS NULL UNION ALL SELECT ? + id, size FROM snapshot_items"
            " WHERE kind = ? AND shared IS NULL) AS o",
            (REG, REG, ITEM_OWNER, REG),
        )
        if isinstance(size, int) and isinstance(covered, int) and covered < size
    }


def drop_items(conn: Connection, items: list[int], why: str) -> list[str]:
    """fsck --repair: remove the snapshot items ``items`` (ids) with their own values from
    their snapshots (a snapshot never serves a damaged value); what was done."""
    for item in items:
        blocks.drop(conn, blocks.item_owner(item))
        conn.execute("DELETE FROM snapshot_xattrs WHERE item = ?", (item,))
        conn.execute("DELETE FROM snapshot_items WHERE id = ?", (item,))
    return [f"dropped {len(items)} keys of snapshots {why}"] if items else []


def set_aside(
    conn: Connection, owners: set[int], now_ns: int, why: str = "whose value lost bytes"
) -> list[str]:
    """Values in ``owners`` (block store owners) lost bytes: a version keeps no value
    (nor does any version that shares a lost node's); a key's node leaves its names for
    the archive under ``lost+found/KEY`` (as e2fsck's lost+found: the readable bytes
    stay, the lost ones read as zeros, and the key itself is gone, so nothing serves
    the damaged value as the key's); an archived value is renamed ``lost+found/KEY``.
    Returns what was done, as sentences."""
    from kyfs.engine.sql.nodes import archive_node  # nodes builds on this module's users

    done: list[str] = []
    versions = sorted(-owner for owner in owners if owner < 0)
    nodes = sorted(owner for owner in owners if 0 < owner < ITEM_OWNER)
    items = sorted(owner - ITEM_OWNER for owner in owners if owner >= ITEM_OWNER)
    for node_id in nodes:
        versions += [int(row[0]) for row in conn.execute(
            "SELECT id FROM history WHERE shared = ?", (node_id,)
        )]  # fmt: skip
        items += [int(row[0]) for row in conn.execute(
            "SELECT id FROM snapshot_items WHERE shared = ?", (node_id,)
        )]  # fmt: skip
    done += drop_items(conn, items, "whose value lost bytes")
    for version in versions:
        conn.execute("DELETE FROM extents WHERE owner = ?", (-version,))
        conn.execute("UPDATE history SET size = NULL, shared = NULL WHERE id = ?", (version,))
    if versions:
        done.append(f"dropped the values of {len(versions)} versions of what was set aside")
    moved: list[str] = []
    for node_id in nodes:
        keys = [str(row[0]) for row in conn.execute(
            "SELECT key FROM entries WHERE node = ? ORDER BY key", (node_id,)
        )]  # fmt: skip
        if keys:
            conn.execute("DELETE FROM entries WHERE node = ?", (node_id,))
            archive_node(conn, node_id, f"{LOST_FOUND}/{keys[0]}", now_ns)
            moved += keys
        else:
            conn.execute(
                "UPDATE archive SET key = ? || '/' || key WHERE id = ? AND key NOT LIKE ?",
                (LOST_FOUND, node_id, f"{LOST_FOUND}/%"),
            )
    if moved:
        shown = ", ".join(moved[:10]) + (f" and {len(moved) - 10} more" if len(moved) > 10 else "")
        done.append(
            f"set aside {len(moved)} keys {why} ({shown}): each waits in"
            f" the archive as {LOST_FOUND}/KEY (zeros for any bytes that were lost)"
            f" (kyfs archive); restore the key from a backup or an older version"
        )
    return done
