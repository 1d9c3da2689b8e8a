"""Schema migrations of a workspace file, applied in order with ``PRAGMA user_version``.

Each migration is a function ``mNNN_name(conn)`` in MIGRATIONS; migration N
(1-based) brings ``user_version`` from N-1 to N. Migrations are written to be
safe to run again (``IF NOT EXISTS``), so ``kyfs fsck --repair`` can bring a file
whose version number was lost back to the current schema. ``apply`` runs the missing ones,
each in its own ``BEGIN IMMEDIATE`` transaction together with the
``user_version`` bump, so a crash leaves the file at a whole version. A file
whose version is newer than this code knows is refused rather than guessed at.

Times are integers: nanoseconds since the Unix epoch, UTC. Modes are permission
bits only (``0o7777``); from m006 on the type is ``nodes.kind`` (S_IFREG, S_IFDIR,
S_IFLNK). Migrations before m006 see the old layout (one ``entries`` row per key with
its attributes) and keep their own code for it; they never call the live engine.

Not thread-safe: call with a connection no other thread uses.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable

from kyfs.core import inodes, tokens
from kyfs.core.errors import StorageError
from kyfs.core.nodes import DIR, DIR_MODE, REG


def m001_entries_and_blocks(conn: sqlite3.Connection) -> None:
    """Keys and directories in ``entries``; values split into fixed-size ``blocks``.

    Entry ids are AUTOINCREMENT, so an id is never reused: the blocks of a
    deleted entry keep its id while it waits in the archive (m002).

    Values live in blocks (kyfs.engine.sqlite.workspace.BLOCK_SIZE bytes each, the last one
    shorter) because one SQLite BLOB stops at SQLITE_MAX_LENGTH (10^9 bytes by
    default), below the 1 GiB that kyfs promises. A missing block inside the
    value's size reads as zeros (a sparse hole).
    """
    _run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS entries (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            key         TEXT NOT NULL UNIQUE,
            parent      TEXT NOT NULL,
            is_dir      INTEGER NOT NULL DEFAULT 0,
            mode        INTEGER NOT NULL,
            size        INTEGER NOT NULL DEFAULT 0,
            created_ns  INTEGER NOT NULL,
            mtime_ns    INTEGER NOT NULL,
            ctime_ns    INTEGER NOT NULL,
            atime_ns    INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS entries_parent ON entries (parent, key);
        CREATE TABLE IF NOT EXISTS blocks (
            id        INTEGER PRIMARY KEY,
            entry_id  INTEGER NOT NULL,
            idx       INTEGER NOT NULL,
            data      BLOB NOT NULL,
            UNIQUE (entry_id, idx)
        );
        """,
    )


def _old_layout(conn: sqlite3.Connection) -> bool:
    """True while ``entries`` still has the layout before m006 (one row per key with its
    attributes). Migrations before m006 touch ``entries`` only then, so that running
    them again on a newer file (``fsck --repair`` after a lost version) is harmless."""
    return "is_dir" in {row[1] for row in conn.execute("PRAGMA table_info(entries)")}


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``script`` statement by statement inside the caller's transaction.

    ``Connection.executescript`` would COMMIT the open transaction first, which
    would split a migration from its ``user_version`` bump.
    """
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            conn.execute(pending)
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending!r}")


def m002_archive(conn: sqlite3.Connection) -> None:
    """Deleted keys and directories wait in ``archive`` for the retention period.

    An archived row keeps the id it had in ``entries``, and its value stays in
    ``blocks`` under that id, so archiving and restoring copy no data.
    """
    _run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS archive (
            id          INTEGER PRIMARY KEY,
            key         TEXT NOT NULL,
            is_dir      INTEGER NOT NULL,
            mode        INTEGER NOT NULL,
            size        INTEGER NOT NULL,
            created_ns  INTEGER NOT NULL,
            mtime_ns    INTEGER NOT NULL,
            ctime_ns    INTEGER NOT NULL,
            deleted_ns  INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS archive_key ON archive (key, deleted_ns);
        CREATE INDEX IF NOT EXISTS archive_deleted ON archive (deleted_ns);
        """,
    )


def m003_search(conn: sqlite3.Connection) -> None:
    """Full-text search: ``search_text`` holds what is indexed of each key (its key, and
    its value when that is text of at most kyfs.core.tokens.INDEX_VALUE_MAX bytes); the FTS5
    table ``search_index`` is external-content over it, kept in sync by triggers
    (sqlite.org/fts5.html#external_content_tables); ``search_vocab`` exposes the
    index's per-term document counts. Keys stored before this migration are indexed.
    """
    _run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS search_text (
            id            INTEGER PRIMARY KEY,
            key           TEXT NOT NULL,
            value         TEXT,
            key_tokens    INTEGER NOT NULL,
            value_tokens  INTEGER NOT NULL
        );
        CREATE VIRTUAL TABLE IF NOT EXISTS search_index USING fts5 (
            key, value, content = 'search_text', content_rowid = 'id'
        );
        CREATE VIRTUAL TABLE IF NOT EXISTS search_vocab USING fts5vocab (search_index, 'row');
        CREATE TRIGGER IF NOT EXISTS search_text_ai AFTER INSERT ON search_text BEGIN
            INSERT INTO search_index (rowid, key, value) VALUES (new.id, new.key, new.value);
        END;
        CREATE TRIGGER IF NOT EXISTS search_text_ad AFTER DELETE ON search_text BEGIN
            INSERT INTO search_index (search_index, rowid, key, value)
                VALUES ('delete', old.id, old.key, old.value);
        END;
        CREATE TRIGGER IF NOT EXISTS search_text_au AFTER UPDATE ON search_text BEGIN
            INSERT INTO search_index (search_index, rowid, key, value)
                VALUES ('delete', old.id, old.key, old.value);
            INSERT INTO search_index (rowid, key, value) VALUES (new.id, new.key, new.value);
        END;
        """,
    )
    if not _old_layout(conn):
        return
    conn.execute(
        "CREATE TRIGGER IF NOT EXISTS entries_search_ad AFTER DELETE ON entries"
        " WHEN old.is_dir = 0 BEGIN DELETE FROM search_text WHERE id = old.id; END"
    )
    for (entry_id,) in conn.execute("SELECT id FROM entries WHERE is_dir = 0").fetchall():
        _index_v5(conn, entry_id)


def _index_v5(
    conn: sqlite3.Connection,
    entry_id: int,
    key: str | None = None,
    size: int | None = None,
    value: bytes | None = None,
) -> None:
    """Index key ``entry_id`` of the schema before m006 in ``search_text`` (m003's own
    copy of the indexing, for files migrated from version 2; the live engine indexes
    with kyfs.engine.sqlite.index)."""
    if key is None or size is None:
        row = conn.execute(
            "SELECT key, size, is_dir FROM entries WHERE id = ?", (entry_id,)
        ).fetchone()
        if row is None or row[2]:
            return
        key, size, _ = row
    text = None
    if size <= tokens.INDEX_VALUE_MAX:
        if value is None:
            parts = conn.execute(
                "SELECT idx, data FROM blocks WHERE entry_id = ? ORDER BY idx", (entry_id,)
            ).fetchall()
            value = b"".join(part[1] for part in parts)
        if len(value) == size:  # no hole: a hole reads as NUL bytes, which is binary
            text = tokens.indexable_text(value)
    conn.execute(
        "INSERT INTO search_text (id, key, value, key_tokens, value_tokens)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET key = excluded.key,"
        " value = excluded.value, key_tokens = excluded.key_tokens,"
        " value_tokens = excluded.value_tokens",
        (
            entry_id,
            key,
            text,
            len(tokens.tokenize(key)),
            len(tokens.tokenize(text)) if text else 0,
        ),
    )


def m004_history(conn: sqlite3.Connection) -> None:
    """``history``: recorded changes of keys (action "set" with its value, or "delete"),
    e.g. a KyCLI audit log imported by ``kyfs migrate kycli``; and ``archive.archived_ns``."""
    _run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS history (
            id       INTEGER PRIMARY KEY,
            key      TEXT NOT NULL,
            action   TEXT NOT NULL,
            value    BLOB,
            time_ns  INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS history_key ON history (key, time_ns);
        """,
    )
    # When an entry entered kyfs's archive, if not at its deletion (imports keep the
    # source's deletion time; retention counts from the import).
    if "archived_ns" not in {row[1] for row in conn.execute("PRAGMA table_info(archive)")}:
        conn.execute("ALTER TABLE archive ADD COLUMN archived_ns INTEGER")


def m005_ttl_meta(conn: sqlite3.Connection) -> None:
    """``entries.expires_ns`` (TTL: when a key expires, ns UTC; NULL: never), the
    workspace's ``meta`` settings (project path, cache TTL, schema rules, history
    retention), and ``history.detail`` (e.g. the other name of a rename)."""
    _run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    )
    if "detail" not in {row[1] for row in conn.execute("PRAGMA table_info(history)")}:
        conn.execute("ALTER TABLE history ADD COLUMN detail TEXT")
    if not _old_layout(conn):
        return  # m006 moved expires_ns to nodes
    if "expires_ns" not in {row[1] for row in conn.execute("PRAGMA table_info(entries)")}:
        conn.execute("ALTER TABLE entries ADD COLUMN expires_ns INTEGER")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires_ns)"
        " WHERE expires_ns IS NOT NULL"
    )


def m006_nodes(conn: sqlite3.Connection) -> None:
    """Nodes apart from names: ``nodes`` (inodes: type, mode, owner, link count, size,
    times, TTL, a symlink's target) and ``entries`` (names: key -> node), so a node can
    have several names (hard links) and keeps its id (st_ino) across renames.

    Node ids are the old entry ids, so values (``blocks.node_id``, renamed from
    ``entry_id``), the archive and the search index keep pointing at the same rows and
    no value is copied. The AUTOINCREMENT sequence continues past every id ever used
    (archived ones included). Existing entries get the migrating process's uid and
    gid (the owner of the file). The workspace's top directory becomes a node of its
    own (``meta.root_node``), and ``meta.inode_tag`` a random 17-bit number
    (kyfs.core.inodes) that keeps st_ino unique across the workspaces of one mount. A
    directory's nlink is 2 plus its subdirectories. The archive gains the type, owner
    and target of what it holds.
    """
    if "node" in {row[1] for row in conn.execute("PRAGMA table_info(entries)")}:
        return  # already done (fsck --repair runs migrations again)
    uid, gid, now = os.getuid(), os.getgid(), time.time_ns()
    _run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS nodes (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            kind        INTEGER NOT NULL,
            mode        INTEGER NOT NULL,
            uid         INTEGER NOT NULL,
            gid         INTEGER NOT NULL,
            nlink       INTEGER NOT NULL,
            size        INTEGER NOT NULL DEFAULT 0,
            created_ns  INTEGER NOT NULL,
            mtime_ns    INTEGER NOT NULL,
            ctime_ns    INTEGER NOT NULL,
            atime_ns    INTEGER NOT NULL,
            expires_ns  INTEGER,
            target      BLOB
        );
        CREATE INDEX IF NOT EXISTS nodes_expires ON nodes (expires_ns)
            WHERE expires_ns IS NOT NULL;
        """,
    )
    conn.execute(
        "INSERT INTO nodes (id, kind, mode, uid, gid, nlink, size, created_ns, mtime_ns,"
        " ctime_ns, atime_ns, expires_ns) SELECT id, CASE WHEN is_dir THEN ? ELSE ? END,"
        " mode, ?, ?, 1, size, created_ns, mtime_ns, ctime_ns, atime_ns, expires_ns"
        " FROM entries",
        (DIR, REG, uid, gid),
    )
    used = conn.execute(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'entries'), 0),"
        " coalesce((SELECT max(id) FROM archive), 0), coalesce((SELECT max(id) FROM nodes), 0))"
    ).fetchone()[0]
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'nodes'")
    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('nodes', ?)", (used,))
    root = conn.execute(
        "INSERT INTO nodes (kind, mode, uid, gid, nlink, size, created_ns, mtime_ns, ctime_ns,"
        " atime_ns) VALUES (?, ?, ?, ?, 2, 0, ?, ?, ?, ?)",
        (DIR, DIR_MODE, uid, gid, now, now, now, now),
    ).lastrowid
    for name, value in (("root_node", root), ("inode_tag", inodes.new_tag(()))):
        conn.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, str(value)),
        )
    _run_script(
        conn,
        """
        DROP TRIGGER IF EXISTS entries_search_ad;
        DROP INDEX IF EXISTS entries_parent;
        DROP INDEX IF EXISTS entries_expires;
        ALTER TABLE entries RENAME TO entries_v5;
        CREATE TABLE entries (
            key     TEXT NOT NULL UNIQUE,
            parent  TEXT NOT NULL,
            node    INTEGER NOT NULL
        );
        INSERT INTO entries (key, parent, node) SELECT key, parent, id FROM entries_v5;
        DROP TABLE entries_v5;
        CREATE INDEX IF NOT EXISTS entries_parent ON entries (parent, key);
        CREATE INDEX IF NOT EXISTS entries_node ON entries (node);
        ALTER TABLE blocks RENAME COLUMN entry_id TO node_id;
        ALTER TABLE archive ADD COLUMN kind INTEGER;
        ALTER TABLE archive ADD COLUMN uid INTEGER;
        ALTER TABLE archive ADD COLUMN gid INTEGER;
        ALTER TABLE archive ADD COLUMN target BLOB;
        """,
    )
    conn.execute(
        "UPDATE archive SET kind = CASE WHEN is_dir THEN ? ELSE ? END, uid = ?, gid = ?",
        (DIR, REG, uid, gid),
    )
    conn.execute(
        "UPDATE nodes SET nlink = 2 + (SELECT count(*) FROM entries c JOIN nodes n"
        " ON n.id = c.node WHERE n.kind = ? AND c.parent ="
        " (SELECT e.key FROM entries e WHERE e.node = nodes.id)) WHERE kind = ? AND id != ?",
        (DIR, DIR, root),
    )
    conn.execute(
        "UPDATE nodes SET nlink = 2 + (SELECT count(*) FROM entries c JOIN nodes n"
        " ON n.id = c.node WHERE n.kind = ? AND c.parent = '') WHERE id = ?",
        (DIR, root),
    )


def m007_index_pending(conn: sqlite3.Connection) -> None:
    """``index_pending``: nodes whose search index row waits to be written. A write only
    marks its node here (one small insert); the search index catches up in batches
    (kyfs.engine.sqlite.index.flush), and every search drains it first, so a search
    still sees every write committed before it started."""
    _run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS index_pending (node_id INTEGER PRIMARY KEY);
        """,
    )


BLOCK_STORE_DDL = """
    CREATE TABLE IF NOT EXISTS blocks (
        id     INTEGER PRIMARY KEY,
        hash   BLOB NOT NULL UNIQUE,
        refs   INTEGER NOT NULL,
        size   INTEGER NOT NULL,
        codec  INTEGER NOT NULL,
        data   BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS blocks_unused ON blocks (id) WHERE refs <= 0;
    CREATE TABLE IF NOT EXISTS extents (
        owner  INTEGER NOT NULL,
        pos    INTEGER NOT NULL,
        block  INTEGER NOT NULL,
        PRIMARY KEY (owner, pos)
    ) WITHOUT ROWID;
"""


def m008_block_store(conn: sqlite3.Connection) -> None:
    """One block store for every value: ``blocks`` holds each distinct content once,
    addressed (and checked) by its SHA-256, zstd-compressed when it pays, with a count of
    the ``extents`` that place it in a value; a value's owner is its node (live or
    archived) or, negated, its history version (kyfs.engine.sql.blocks). History rows
    lose their ``value`` copy: ``size`` says how long the version's value is (NULL: none
    kept), ``pid`` which process wrote it, ``since_ns`` when the burst of writes it
    stands for began (closes in quick succession coalesce into one version), and
    ``shared`` the node whose value the version still is (its extents are the node's
    until that value changes: kyfs.engine.sql.history).

    Every stored value is cut again into content-defined blocks (kyfs.core.blocks); the
    old fixed 256 KiB blocks (``blocks_v7``) go. The whole file is rewritten in this one
    transaction, so its WAL grows to about the size of the data meanwhile.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(blocks)")}
    if "hash" in columns:
        return  # already done (fsck --repair runs migrations again)
    if columns:
        conn.execute("ALTER TABLE blocks RENAME TO blocks_v7")
    _run_script(conn, BLOCK_STORE_DDL)
    if columns:
        owners = [row[0] for row in conn.execute("SELECT DISTINCT node_id FROM blocks_v7")]
        for owner in owners:
            _store_v8_blocks(conn, owner)
        conn.execute("DROP TABLE blocks_v7")
    history = {row[1] for row in conn.execute("PRAGMA table_info(history)")}
    for column in ("size", "pid", "since_ns", "shared"):
        if column not in history:
            conn.execute(f"ALTER TABLE history ADD COLUMN {column} INTEGER")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS history_shared ON history (shared) WHERE shared IS NOT NULL"
    )
    if "value" in history:
        rows = conn.execute("SELECT id FROM history WHERE value IS NOT NULL").fetchall()
        for (version_id,) in rows:
            value = conn.execute("SELECT value FROM history WHERE id = ?", (version_id,))
            data = bytes(value.fetchone()[0])
            _store_v8_run(conn, -version_id, 0, data)
            conn.execute("UPDATE history SET size = ? WHERE id = ?", (len(data), version_id))
        conn.execute("ALTER TABLE history DROP COLUMN value")


def _store_v8_blocks(conn: sqlite3.Connection, owner: int) -> None:
    """Move node ``owner``'s fixed blocks (``blocks_v7``: 256 KiB each; a missing or
    short one ends a run of data) into the block store, in bounded memory."""
    old_block = 256 * 1024
    base, pending = 0, bytearray()
    for idx, data in conn.execute(
        "SELECT idx, data FROM blocks_v7 WHERE node_id = ? ORDER BY idx", (owner,)
    ):
        if pending and base + len(pending) != idx * old_block:  # a hole: the run ends
            _store_v8_run(conn, owner, base, bytes(pending), final=True)
            pending = bytearray()
        if not pending:
            base = idx * old_block
        pending += data
        if len(pending) >= 8 * 1024 * 1024:
            base, rest = _store_v8_run(conn, owner, base, bytes(pending), final=False)
            pending = bytearray(rest)
    if pending:
        _store_v8_run(conn, owner, base, bytes(pending), final=True)


def _store_v8_run(
    conn: sqlite3.Connection, owner: int, start: int, data: bytes, final: bool = True
) -> tuple[int, bytes]:
    """Store ``data`` as ``owner``'s bytes from ``start``: cut, deduplicated, placed (m008's
    own copy of the block store's write, kyfs.engine.sql.blocks.write). Unless ``final``
    the last block is not stored: returns where it starts and its bytes."""
    from kyfs.core import blocks

    lengths = list(blocks.cut(data))
    if not final and lengths:
        lengths.pop()
    at = 0
    for length in lengths:
        piece = data[at : at + length]
        address = blocks.digest(piece)
        row = conn.execute(
            "UPDATE blocks SET refs = refs + 1 WHERE hash = ? RETURNING id", (address,)
        ).fetchone()
        if row is None:
            codec, stored = blocks.seal(piece)
            row = conn.execute(
                "INSERT INTO blocks (hash, refs, size, codec, data) VALUES (?, 1, ?, ?, ?)"
                " RETURNING id",
                (address, length, codec, stored),
            ).fetchone()
        conn.execute(
            "INSERT INTO extents (owner, pos, block) VALUES (?, ?, ?)", (owner, start + at, row[0])
        )
        at += length
    return start + at, data[at:]


def m009_search_packed(conn: sqlite3.Connection) -> None:
    """The search index keeps the text it indexed packed (zstd): ``search_text.packed``
    instead of ``value``. It was a second, uncompressed copy of every text value beside
    its blocks (7.7 MiB beside 12.8 MiB of blocks for a tree of 20 MB, 40% of it text).
    FTS5's external content becomes the view ``search_content``, which unpacks it with
    the SQL function ``kyfs_text`` that every connection kyfs opens registers
    (kyfs.engine.sqlite.connection.unpack_text); the triggers hand FTS5 the unpacked
    text too. The index is made again by the indexer: every file node is marked pending
    (a search drains the queue first).
    """
    if "packed" in {row[1] for row in conn.execute("PRAGMA table_info(search_text)")}:
        return  # already done (fsck --repair runs migrations again)
    _run_script(
        conn,
        """
        DROP TRIGGER IF EXISTS search_text_ai;
        DROP TRIGGER IF EXISTS search_text_ad;
        DROP TRIGGER IF EXISTS search_text_au;
        DROP TABLE IF EXISTS search_vocab;
        DROP TABLE IF EXISTS search_index;
        DROP TABLE IF EXISTS search_text;
        CREATE TABLE search_text (
            id            INTEGER PRIMARY KEY,
            key           TEXT NOT NULL,
            packed        BLOB,
            key_tokens    INTEGER NOT NULL,
            value_tokens  INTEGER NOT NULL
        );
        CREATE VIEW search_content AS SELECT id, key, kyfs_text(packed) AS value
            FROM search_text;
        CREATE VIRTUAL TABLE search_index USING fts5 (
            key, value, content = 'search_content', content_rowid = 'id'
        );
        CREATE VIRTUAL TABLE search_vocab USING fts5vocab (search_index, 'row');
        CREATE TRIGGER search_text_ai AFTER INSERT ON search_text BEGIN
            INSERT INTO search_index (rowid, key, value)
                VALUES (new.id, new.key, kyfs_text(new.packed));
        END;
        CREATE TRIGGER search_text_ad AFTER DELETE ON search_text BEGIN
            INSERT INTO search_index (search_index, rowid, key, value)
                VALUES ('delete', old.id, old.key, kyfs_text(old.packed));
        END;
        CREATE TRIGGER search_text_au AFTER UPDATE ON search_text BEGIN
            INSERT INTO search_index (search_index, rowid, key, value)
                VALUES ('delete', old.id, old.key, kyfs_text(old.packed));
            INSERT INTO search_index (rowid, key, value)
                VALUES (new.id, new.key, kyfs_text(new.packed));
        END;
        """,
    )
    conn.execute(
        "INSERT INTO index_pending (node_id) SELECT id FROM nodes WHERE kind = ?"
        " ON CONFLICT DO NOTHING",
        (REG,),
    )


def m010_version_modes(conn: sqlite3.Connection) -> None:
    """``history.mode``: the permission bits a version is shown with under ``.versions``
    (kyfs.vfs.versions_tree): the node's mode when the version was recorded, narrowed
    (bitwise AND) by every mode its name has had since (kyfs.engine.sql.history.narrow),
    so ``echo secret > f; chmod 600 f`` does not leave the secret readable by all as a
    version. Versions from before get their key's current mode (the best known); a
    version whose key is gone keeps NULL (shown as the daemon's own, 0400).
    """
    if "mode" not in {row[1] for row in conn.execute("PRAGMA table_info(history)")}:
        conn.execute("ALTER TABLE history ADD COLUMN mode INTEGER")
    conn.execute(
        "UPDATE history SET mode = (SELECT n.mode FROM entries e JOIN nodes n"
        " ON n.id = e.node WHERE e.key = history.key) WHERE size IS NOT NULL AND mode IS NULL"
    )


def m011_special_nodes(conn: sqlite3.Connection) -> None:
    """``nodes.rdev`` and ``archive.rdev``: a device node's device number (st_rdev) for the
    special nodes mknod(2) makes (FIFOs, UNIX sockets, character and block devices;
    kyfs.core.nodes.SPECIAL); 0 for every other node.
    """
    for table in ("nodes", "archive"):
        if "rdev" not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN rdev INTEGER NOT NULL DEFAULT 0")


def m012_stored_bytes(conn: sqlite3.Connection) -> None:
    """``nodes.stored``: the bytes of a node's extents (kyfs.engine.sql.blocks keeps it
    with every change), what st_blocks shows: a hole costs nothing, so ``du`` of a sparse
    file is honest. Counted once here from the extents of every node.
    """
    if "stored" not in {row[1] for row in conn.execute("PRAGMA table_info(nodes)")}:
        conn.execute("ALTER TABLE nodes ADD COLUMN stored INTEGER NOT NULL DEFAULT 0")
    from kyfs.engine.sql.blocks import SQL_RECOUNT

    conn.execute(SQL_RECOUNT)


def m013_xattrs(conn: sqlite3.Connection) -> None:
    """``xattrs``: the extended attributes of each node (kyfs.engine.sql.xattrs), one row
    per attribute: the node's id (hard links share it; an archived node keeps its own),
    the name's bytes (at most 255) and the value (at most 64 KiB; kyfs.core.xattrs).
    A rowid table (not WITHOUT ROWID) so that salvage (kyfs.engine.sqlite.salvage) reads
    it by rowid as the other tables.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS xattrs (node INTEGER NOT NULL, name BLOB NOT NULL,"
        " value BLOB NOT NULL, PRIMARY KEY (node, name))"
    )


def m014_vectors(conn: sqlite3.Connection) -> None:
    """Vectors for semantic search (kyfs.engine.sql.vectors): ``vector_spaces``,
    ``vector_chunks``, ``vector_slots``, ``embed_pending`` and ``collection_items``.
    Empty until a semantic search or a collection asks for them.
    """
    _run_script(conn, VECTORS_DDL)


VECTORS_DDL = """
CREATE TABLE IF NOT EXISTS vector_spaces (
    name TEXT PRIMARY KEY, dim INTEGER NOT NULL, codec TEXT NOT NULL, model TEXT
);
CREATE TABLE IF NOT EXISTS vector_chunks (
    id INTEGER PRIMARY KEY, space TEXT NOT NULL, count INTEGER NOT NULL,
    items BLOB NOT NULL, scales BLOB NOT NULL, vectors BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS vector_chunks_space ON vector_chunks (space, id);
CREATE TABLE IF NOT EXISTS vector_slots (
    space TEXT NOT NULL, item INTEGER NOT NULL, chunk INTEGER NOT NULL,
    slot INTEGER NOT NULL, PRIMARY KEY (space, item)
);
CREATE TABLE IF NOT EXISTS embed_pending (node_id INTEGER PRIMARY KEY, gen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS collection_items (
    id INTEGER PRIMARY KEY, collection TEXT NOT NULL, name TEXT NOT NULL,
    metadata TEXT, document TEXT, UNIQUE (collection, name)
);
"""


HISTORY_ACTOR_COLUMNS = ("source", "user_name", "comm")  # m015's, all TEXT


def m015_history_actors(conn: sqlite3.Connection) -> None:
    """Who made each change (kyfs.core.actor), for ``kyfs log`` and ``kyfs watch``:
    ``history.source`` (cli, mount, api, mcp, kycli), ``history.user_name`` (the kyfs
    identity, or for the mount the caller's login name) and ``history.comm`` (for the
    mount, the calling process's command name; ``history.pid`` already holds its pid).
    Rows from before stay NULL: not known.
    """
    history = {row[1] for row in conn.execute("PRAGMA table_info(history)")}
    for column in HISTORY_ACTOR_COLUMNS:
        if column not in history:
            conn.execute(f"ALTER TABLE history ADD COLUMN {column} TEXT")


def m016_snapshots(conn: sqlite3.Connection) -> None:
    """Snapshots (kyfs.engine.sql.snapshots): ``snapshots``, ``snapshot_items`` and
    ``snapshot_xattrs``. Empty until the first ``kyfs snapshot create``."""
    _run_script(conn, SNAPSHOTS_DDL)


SNAPSHOTS_DDL = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    created_ns INTEGER NOT NULL, history_id INTEGER NOT NULL,
    keys INTEGER NOT NULL, size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT, snapshot INTEGER NOT NULL, key TEXT NOT NULL,
    parent TEXT NOT NULL, node INTEGER NOT NULL, kind INTEGER NOT NULL,
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    size INTEGER NOT NULL, created_ns INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, target BLOB, rdev INTEGER NOT NULL DEFAULT 0, shared INTEGER,
    expires_ns INTEGER
);
CREATE INDEX IF NOT EXISTS snapshot_items_key ON snapshot_items (snapshot, key);
CREATE INDEX IF NOT EXISTS snapshot_items_parent ON snapshot_items (snapshot, parent, key);
CREATE INDEX IF NOT EXISTS snapshot_items_shared ON snapshot_items (shared)
    WHERE shared IS NOT NULL;
CREATE INDEX IF NOT EXISTS snapshot_items_node ON snapshot_items (snapshot, node);
CREATE TABLE IF NOT EXISTS snapshot_xattrs (
    item INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (item, name)
);
"""


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    m001_entries_and_blocks,
    m002_archive,
    m003_search,
    m004_history,
    m005_ttl_meta,
    m006_nodes,
    m007_index_pending,
    m008_block_store,
    m009_search_packed,
    m010_version_modes,
    m011_special_nodes,
    m012_stored_bytes,
    m013_xattrs,
    m014_vectors,
    m015_history_actors,
    m016_snapshots,
]
SCHEMA_VERSION = len(MIGRATIONS)


def version(conn: sqlite3.Connection) -> int:
    """The file's ``PRAGMA user_version``."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def apply(conn: sqlite3.Connection) -> int:
    """Run every migration the file lacks; return the version it is at afterwards.

    The connection must be in autocommit mode (``isolation_level=None``).

    Raises:
        StorageError: (EIO, exit 4) the file is newer than this kyfs (downgrade).
    """
    current = version(conn)
    if current > SCHEMA_VERSION:
        raise StorageError(
            f"workspace schema version {current} is newer than this kyfs knows "
            f"({SCHEMA_VERSION}); upgrade kyfs"
        )
    for number in range(current + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version(conn) >= number:  # another process migrated meanwhile
                conn.execute("COMMIT")
                continue
            MIGRATIONS[number - 1](conn)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION
