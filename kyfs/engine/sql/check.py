"""kyfs's own consistency rules for a workspace's tables, in SQL both engines run
(``kyfs fsck``): each query selects the ids that break one rule; ``{root}`` stands for the
top directory's node id. The engines add their own (SQLite's integrity_check and FTS5's
tables; PostgreSQL's search documents).
"""

from __future__ import annotations

from kyfs.core.nodes import DIR, REG
from kyfs.engine.sql.values import BLOCK_SIZE

LOST_FOUND = "lost+found"  # fsck --repair archives nameless nodes under lost+found/<id>

STRUCTURE_CHECKS = [
    (
        "blocks that belong to no node",
        "SELECT b.id FROM blocks b WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id ="
        " b.node_id) AND NOT EXISTS (SELECT 1 FROM archive a WHERE a.id = b.node_id)",
    ),
    (
        "blocks past the size of their value",
        f"SELECT b.id FROM blocks b JOIN nodes n ON n.id = b.node_id"
        f" WHERE b.idx * {BLOCK_SIZE} >= n.size",
    ),
    (
        "blocks longer than the block size",
        f"SELECT id FROM blocks WHERE length(data) > {BLOCK_SIZE}",
    ),
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
