"""Searching one workspace file, and checking it (``kyfs fsck``).

Thread-safety: as kyfs.engine.sqlite.connection.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable

from kyfs.core import names
from kyfs.core.blocks import MAX_BLOCK
from kyfs.core.errors import InvalidQuery, ReadOnlyStorage
from kyfs.core.nodes import (
    DIR,
    DIR_MODE,
    FILE_MODE,
    LINK_MODE,
    LNK,
    MARK_END,
    MARK_START,
    MAX_VALUE_SIZE,
    REG,
    Match,
    Owner,
)  # fmt: skip
from kyfs.engine.sql.archive import ArchiveMixin
from kyfs.engine.sql.check import (
    LOST_FOUND,
    STRUCTURE_CHECKS,
    damaged,
    drop_stray_xattrs,
    repair_blocks,
    set_aside,
)
from kyfs.engine.sql.nodes import archive_node
from kyfs.engine.sql.vectors import repair_vectors
from kyfs.engine.sqlite import schema
from kyfs.engine.sqlite.index import SEARCH, SEARCH_KEYS, flush, index_node
from kyfs.engine.sqlite.trust import (
    KNOWN_KINDS,
    NODE_RANGES,
    TABLE_RANGES,
    bad_keys,
    rows_out_of_range,
)

# kyfs's own consistency rules (kyfs.engine.sql.check), and FTS5's.
_CHECKS = [
    *STRUCTURE_CHECKS,
    # FTS5 keeps one row per indexed document in its shadow table %_docsize; before
    # SQLite 3.44 'integrity-check' does not compare the index with its content table.
    (
        "keys missing from the full-text index",
        "SELECT t.id FROM search_text t WHERE NOT EXISTS"
        " (SELECT 1 FROM search_index_docsize d WHERE d.id = t.id)",
    ),
    (
        "full-text index rows of no key",
        "SELECT d.id FROM search_index_docsize d WHERE NOT EXISTS"
        " (SELECT 1 FROM search_text t WHERE t.id = d.id)",
    ),
]


class SearchCheckMixin(ArchiveMixin):
    """Full-text search of this workspace, and fsck."""

    # --- search ---------------------------------------------------------------------
    def flush_index(self, limit: int | None = None) -> int:
        """Bring the search index up to date for up to ``limit`` pending nodes (all when
        None), in one transaction; returns how many. Writes only mark their node
        (kyfs.engine.sqlite.index.mark); searches and a background indexer call this."""
        if not self._row("SELECT 1 FROM index_pending LIMIT 1"):
            return 0  # the usual case takes no write lock
        with self._atomic() as conn:
            return flush(conn, limit)

    def _catch_up_index(self) -> None:
        """Index what is pending before a search; a file that cannot be written (a
        read-only data directory) is searched as it was indexed."""
        with contextlib.suppress(ReadOnlyStorage):
            self.flush_index()

    def search(self, match: str, limit: int, with_text: bool = True) -> list[Match]:
        """The best ``limit`` keys for the FTS5 query ``match``, best first (by bm25); a
        node with several names is listed under each. Pending index work is done first,
        so every write committed before the search began is seen.

        Raises:
            InvalidQuery: (EINVAL, exit 2) ``match`` is not valid FTS5 syntax
                (sqlite.org/fts5.html#full_text_query_syntax).
        """
        self._catch_up_index()
        try:
            if with_text:
                rows = self._conn.execute(SEARCH, (MARK_START, MARK_END, match, limit))
            else:
                rows = self._conn.execute(SEARCH_KEYS, (match, limit))
            return [Match(*row) for row in rows.fetchall()]
        except sqlite3.OperationalError as exc:
            # FTS5 reports a bad query as an OperationalError ("fts5: syntax error near",
            # "unterminated string", "no such column", ...); storage trouble is told apart
            # by its error code.
            code = getattr(exc, "sqlite_errorcode", None)
            if code == sqlite3.SQLITE_ERROR:
                raise InvalidQuery(f"invalid search query {match!r}: {exc}") from None
            raise self._convert(exc) from None
        except sqlite3.Error as exc:
            raise self._convert(exc) from None

    def search_stats(self, terms: Iterable[str]) -> tuple[int, int, dict[str, int]]:
        """(indexed keys, their total length in tokens, {term: keys holding it}) for scoring;
        a term ending in ``*`` is a prefix (kyfs.search.query_terms)."""
        wanted = sorted(set(terms))
        self._catch_up_index()
        with self._snapshot() as conn:
            count, total = conn.execute(
                "SELECT count(*), total(key_tokens + value_tokens) FROM search_text"
            ).fetchone()
            docs: dict[str, int] = dict.fromkeys(wanted, 0)
            exact = [t for t in wanted if not t.endswith("*")]
            if exact:
                marks = ",".join("?" * len(exact))
                for term, doc in conn.execute(
                    f"SELECT term, doc FROM search_vocab WHERE term IN ({marks})", exact
                ):
                    docs[term] = doc
            for term in wanted:
                if term.endswith("*"):  # a prefix: the keys holding any word that starts so
                    docs[term] = conn.execute(
                        "SELECT count(*) FROM search_index WHERE search_index MATCH ?",
                        ('"' + term[:-1].replace('"', '""') + '"*',),
                    ).fetchone()[0]
        return int(count), int(total), docs

    # --- checking -----------------------------------------------------------------------
    def _checks(self) -> list[tuple[str, str]]:
        return [(label, sql.replace("{root}", str(self._root_id))) for label, sql in _CHECKS]

    def check(self) -> list[str]:
        """Every problem found in the file, as sentences; ``[]`` when it is sound.

        Checks SQLite's ``PRAGMA integrity_check`` (pages, indexes, UNIQUE), the schema
        version, and kyfs's own rules: every block against its checksum (naming the keys
        that use a damaged one), extents of no value or block, past a value's size or
        overlapping, blocks of a size out of range or miscounted references; names whose
        directory or node is missing; nodes with no name;
        link counts (a file's names; a directory's 2 + subdirectories); keys missing
        from (or left over in) the search index. A file at an older schema version is
        reported as such and not checked further (``fsck --repair`` migrates it).
        """
        try:
            problems = [
                f"integrity: {row[0]}"
                for row in self._conn.execute("PRAGMA integrity_check")
                if row[0] != "ok"
            ]
            found = schema.version(self._conn)
            if found != schema.SCHEMA_VERSION:
                problems.append(f"schema version is {found}, expected {schema.SCHEMA_VERSION}")
                return problems
            problems += rows_out_of_range(self._conn)[0]  # what --db refuses, fsck reports
            bad = [str(key) for key, _ in bad_keys(self._conn)]
            if bad:
                shown = ", ".join(repr(k[:60]) for k in bad[:3])
                problems.append(f"{len(bad)} keys that break the naming rules ({shown})")
            for label, sql in self._checks():
                count = self._conn.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
                if count:
                    problems.append(f"{count} {label}")
            problems += damaged(self._conn)
        except sqlite3.Error as exc:
            problems = [f"cannot be read: {exc}"]
        return problems

    def repair(self) -> list[str]:
        """Repair what can be repaired; return what was done, as sentences.

        Migrates an old schema, rebuilds every index (REINDEX), drops extents that nothing
        can read and counts block references again (kyfs.engine.sql.check.repair_blocks),
        recreates missing parent directories, drops names of no node, sets aside a node
        with more names than links (a damaged name points at it: which name is its own
        cannot be told) under ``lost+found/KEY``, archives nameless nodes under
        ``lost+found/<id>``, recounts links, re-reads
        every key into the search index and rebuilds it (FTS5 'rebuild'). Damage that
        ``integrity_check`` reports in the tables themselves cannot be repaired here:
        restore the workspace from the trash or a backup; nor can a block that fails
        its checksum (its keys answer EIO; ``kyfs restore`` of an older version, or a
        backup, brings their values back).
        """
        done: list[str] = []
        schema.apply(self._conn)
        self._load_identity()
        checks = dict(self._checks())
        now = time.time_ns()
        with self._atomic() as conn:
            conn.execute("REINDEX")
            done.append("rebuilt every index")
            done += _mend_ranges(conn, now)
            done += repair_blocks(conn, now)
            cur = conn.execute(f"DELETE FROM entries WHERE key IN ({checks['entries of no node']})")
            if cur.rowcount:
                done.append(f"dropped {cur.rowcount} entries of no node")
            bad = [key for key, _ in bad_keys(conn)]
            conn.execute("DELETE FROM entries WHERE typeof(key) != 'text'")  # flipped types
            for key in bad:
                if isinstance(key, str) and names.valid_key(key):  # only its parent is wrong
                    conn.execute(
                        "UPDATE entries SET parent = ? WHERE key = ?", (names.parent_of(key), key)
                    )
                else:  # dropped, never given parents: no '..' directory is made
                    conn.execute("DELETE FROM entries WHERE key = ?", (key,))
            if bad:
                done.append(f"mended {len(bad)} keys that break the naming rules (a wrong"
                            f" parent is set right; other names are dropped, their nodes wait"
                            f" in the archive under {LOST_FOUND}/)")  # fmt: skip
            orphans = [
                row[0] for row in conn.execute(checks["entries whose parent directory is missing"])
            ]
            for key in orphans:
                if isinstance(key, str):  # (not text: dropped above)
                    self._ensure_parents(conn, key, now, Owner(0, 0))
            if orphans:
                done.append(f"recreated the parent directories of {len(orphans)} entries")
            overlinked = [int(row[0]) for row in conn.execute(
                "SELECT n.id FROM nodes n WHERE n.kind != ? AND n.id != ? AND"
                " (SELECT count(*) FROM entries e WHERE e.node = n.id) > n.nlink",
                (DIR, self._root_id),
            )]  # fmt: skip
            if overlinked:  # a damaged name points at another key's node: which is it?
                done += set_aside(
                    conn, set(overlinked), now, "whose node had more names than links"
                )
            nameless = [row[0] for row in conn.execute(checks["nodes with no name"])]
            for node_id in nameless:
                archive_node(conn, node_id, f"{LOST_FOUND}/{node_id}", now)
            if nameless:
                done.append(f"archived {len(nameless)} nodes with no name under {LOST_FOUND}/")
            done += drop_stray_xattrs(conn)
            done += repair_vectors(conn)
            relinked = conn.execute(
                f"UPDATE nodes SET nlink = (SELECT count(*) FROM entries e WHERE e.node = nodes.id)"
                f" WHERE id IN ({checks['link counts that differ from the names']})"
            ).rowcount
            for (node_id,) in conn.execute(
                checks["directory link counts that differ from 2 + subdirectories"]
            ).fetchall():
                key = (
                    ""
                    if node_id == self._root_id
                    else conn.execute(
                        "SELECT key FROM entries WHERE node = ?", (node_id,)
                    ).fetchone()[0]
                )
                conn.execute(
                    "UPDATE nodes SET nlink = 2 + (SELECT count(*) FROM entries c JOIN nodes n"
                    " ON n.id = c.node WHERE n.kind = ? AND c.parent = ?) WHERE id = ?",
                    (DIR, key, node_id),
                )
                relinked += 1
            if relinked:
                done.append(f"recounted the links of {relinked} nodes")
            flush(conn)
            conn.execute(
                f"DELETE FROM search_text WHERE id IN ({checks['search index rows of no key']})"
            )
            for (node_id,) in conn.execute(
                "SELECT id FROM nodes WHERE kind = ?", (REG,)
            ).fetchall():
                index_node(conn, node_id)
            conn.execute("INSERT INTO search_index (search_index) VALUES ('rebuild')")
            done.append("rebuilt the search index")
        return done


def _mend_ranges(conn: sqlite3.Connection, now_ns: int) -> list[str]:
    """Set right the numbers and types no kyfs writes (kyfs.engine.sqlite.trust's
    NODE_RANGES and TABLE_RANGES): a mode, owner, time, link count or expiry is given
    a value kyfs would have written (the default mode, root, now, a count recounted
    later, no expiry); a node of no known type, or whose size is out of range, cannot be
    trusted to hold its value: its size becomes what its blocks hold and it is set aside
    under ``lost+found/`` (kyfs.engine.sql.check.set_aside); history rows out of range
    are dropped, who made a change (source, user, pid, command name) out of range is
    forgotten (NULL), and a version's mode out of range becomes 0, the most restrictive (blocks
    and extents: kyfs.engine.sql.check.repair_blocks). Returns what was done, as
    sentences."""
    where = dict(NODE_RANGES)
    fixes = [
        ("modes out of range", f"mode = CASE kind WHEN {DIR} THEN {DIR_MODE} WHEN {LNK}"
         f" THEN {LINK_MODE} ELSE {FILE_MODE} END"),
        ("owners out of range", "uid = 0, gid = 0"),
        ("times out of range", "created_ns = :now, mtime_ns = :now, ctime_ns = :now,"
         " atime_ns = :now"),
        ("link counts out of range", "nlink = 1"),
        ("expiry times out of range", "expires_ns = NULL"),
        ("special nodes with a size", "size = 0"),
        ("device numbers out of range", "rdev = 0"),
    ]  # fmt: skip
    done = []
    for label, assignment in fixes:
        count = conn.execute(
            f"UPDATE nodes SET {assignment} WHERE {where[label]}", {"now": now_ns}
        ).rowcount
        if count:
            done.append(f"set right {count} {label}")
    lost = {
        int(row[0])
        for label in ("node types kyfs does not know", "sizes out of range")
        for row in conn.execute(f"SELECT id FROM nodes WHERE {where[label]}").fetchall()
    }
    for node_id in sorted(lost):
        conn.execute(
            f"UPDATE nodes SET kind = CASE WHEN kind IN ({KNOWN_KINDS}) THEN kind"
            f" ELSE {REG} END, size = (SELECT min(coalesce(max(e.pos + b.size), 0),"
            f" {MAX_VALUE_SIZE}) FROM extents e JOIN blocks b ON b.id = e.block"
            " WHERE e.owner = ? AND typeof(e.pos) = 'integer' AND e.pos >= 0"
            f" AND typeof(b.size) = 'integer' AND b.size BETWEEN 0 AND {MAX_BLOCK})"
            " WHERE id = ?",
            (node_id, node_id),
        )
    if lost:
        done += set_aside(conn, lost, now_ns, "whose type or size was out of range")
    ranges = {label: sql for label, _, sql in TABLE_RANGES}
    count = conn.execute(f"DELETE FROM history WHERE {ranges['history rows']}").rowcount
    if count:
        done.append(f"dropped {count} history rows out of range")
    count = conn.execute(f"UPDATE history SET mode = 0 WHERE {ranges['version modes']}").rowcount
    if count:  # the most restrictive: such versions are shown to their owner only
        done.append(f"set {count} version modes out of range to 0")
    count = conn.execute(
        "UPDATE history SET source = NULL, user_name = NULL, pid = NULL, comm = NULL"
        f" WHERE {ranges['history actors']}"
    ).rowcount
    if count:  # who made those changes is then not known
        done.append(f"forgot who made {count} changes (out of range)")
    count = conn.execute(f"DELETE FROM archive WHERE {ranges['archived nodes']}").rowcount
    if count:  # their blocks: orphaned extents, which repair_blocks releases
        done.append(f"dropped {count} archived nodes out of range")
    count = conn.execute(f"DELETE FROM xattrs WHERE {ranges['extended attributes']}").rowcount
    if count:
        done.append(f"dropped {count} extended attributes out of range")
    return done
