"""The full-text search index of one workspace file: what is indexed, and the queries.

``search_text(id, key, packed, key_tokens, value_tokens)`` holds one row per regular
file node (``id`` is the node's id): its names (``key``: every name of the node, one
per line, so a hard link is found under each of its names) and its value, packed with
zstd (kyfs.core.blocks.pack), when that is UTF-8 text without NUL of at most
kyfs.core.tokens.INDEX_VALUE_MAX bytes. The FTS5 table ``search_index`` is
external-content over the view ``search_content``, which unpacks it (the SQL function
``kyfs_text``), kept in sync by triggers (sqlite.org/fts5.html#external_content_tables).
Rows are written with ``INSERT ... ON CONFLICT DO UPDATE``, never ``INSERT OR
REPLACE``, whose implicit delete would not fire the delete trigger and would leave the
index stale.

Directories and symbolic links are not indexed. Every function runs inside the
caller's transaction; none is thread-safe on its own.
"""

from __future__ import annotations

import sqlite3

from kyfs.core import tokens
from kyfs.core.blocks import pack
from kyfs.core.errors import DamagedBlock
from kyfs.core.nodes import REG
from kyfs.engine.sql import blocks
from kyfs.engine.sql.base import names_of
from kyfs.engine.sql.vectors import mark_embeddings

SEARCH = (
    "SELECT e.key, kyfs_text(t.packed), t.key_tokens + t.value_tokens,"
    " snippet(search_index, -1, ?, ?, '…', 12), bm25(search_index)"
    " FROM search_index JOIN search_text t ON t.id = search_index.rowid"
    " JOIN entries e ON e.node = t.id"
    " WHERE search_index MATCH ? ORDER BY rank, e.key LIMIT ?"
)
SEARCH_KEYS = (
    "SELECT e.key, NULL, t.key_tokens + t.value_tokens, e.key, bm25(search_index)"
    " FROM search_index JOIN search_text t ON t.id = search_index.rowid"
    " JOIN entries e ON e.node = t.id"
    " WHERE search_index MATCH ? ORDER BY rank, e.key LIMIT ?"
)
_UPSERT = (
    "INSERT INTO search_text (id, key, packed, key_tokens, value_tokens)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET key = excluded.key,"
    " packed = excluded.packed, key_tokens = excluded.key_tokens,"
    " value_tokens = excluded.value_tokens"
)


def flush(conn: sqlite3.Connection, limit: int | None = None) -> int:
    """Write the index rows of up to ``limit`` pending nodes (all when None) inside the
    caller's transaction, and mark their embeddings stale
    (kyfs.engine.sql.vectors.mark_embeddings); returns how many were done."""
    sql = "SELECT node_id FROM index_pending ORDER BY node_id"
    rows = conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
    for (node_id,) in rows:
        index_node(conn, node_id)
        conn.execute("DELETE FROM index_pending WHERE node_id = ?", (node_id,))
    mark_embeddings(conn, [node_id for (node_id,) in rows])
    return len(rows)


def index_node(conn: sqlite3.Connection, node_id: int) -> None:
    """(Re)index node ``node_id`` under its names, reading its value (at most
    INDEX_VALUE_MAX bytes are indexed): an upsert, so the update trigger replaces its old
    tokens in the FTS index. A node with no name left, or that is not a regular file,
    leaves the index."""
    row = conn.execute("SELECT kind, size FROM nodes WHERE id = ?", (node_id,)).fetchone()
    keys = names_of(conn, node_id) if row is not None and row[0] == REG else []
    if not keys:
        conn.execute("DELETE FROM search_text WHERE id = ?", (node_id,))
        return
    size = row[1]
    text = None
    if size <= tokens.INDEX_VALUE_MAX:
        try:  # a hole reads as NUL bytes, which is binary: not indexed
            text = tokens.indexable_text(blocks.read(conn, node_id, 0, size, size))
        except DamagedBlock:
            text = None  # indexed by its names only; reads of it answer EIO
    key = "\n".join(keys)
    packed = None if text is None else pack(text.encode("utf-8"))
    conn.execute(
        _UPSERT,
        (node_id, key, packed, tokens.count_tokens(key), tokens.count_tokens(text) if text else 0),
    )
