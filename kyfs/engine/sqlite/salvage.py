"""Salvage of a damaged workspace file (``kyfs fsck --repair``).

A file whose pages SQLite reports damaged (``PRAGMA integrity_check``: a b-tree out of
order, a cell past its page, a wrong pointer-map entry) cannot be mended in place: its
indexes and free lists may point anywhere. As sqlite3's ``.recover`` does, every row that
can still be read is copied into a new file with kyfs's schema (sqlite.org/recovery.html),
table by table in key order, stepping over the keys whose pages cannot be read; the
workspace's own repair (SearchCheckMixin.repair) then sets the copy's rules right:
names of no node, nodes of no name (archived under ``lost+found/``), extents of no
block, blocks that fail their checksum, the search index (rebuilt: it is not copied).

Thread-safety: none; the engine holds the data directory's lock exclusively.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kyfs.core.nodes import DIR, DIR_MODE
from kyfs.engine.sqlite.connection import connect
from kyfs.platform import paths

BATCH = 256  # rows read per query while the pages answer
MAX_SKIPS = 64  # probes past a damaged key range (each twice as far) before a table ends
# Rebuilt from what is copied, or made afresh by the new file: never copied.
_NOT_COPIED = ("search_text", "index_pending", "sqlite_sequence")


@dataclass
class Salvaged:
    """What :func:`salvage` copied: ``rows`` in all, ``damaged_ranges`` key ranges of
    tables it had to step over (their rows are lost), ``tables`` it could not read at
    all."""

    rows: int = 0
    damaged_ranges: int = 0
    tables: tuple[str, ...] = ()


def salvage(source: Path, target: Path) -> Salvaged:
    """Copy every readable row of kyfs's tables from the damaged workspace file
    ``source`` (and its WAL) into the new file ``target``, which must not exist and is
    made with kyfs's current schema (its own top directory and settings stay where
    ``source`` has none readable). ``source`` is never written: a copy of it is read,
    whose schema is first set back to kyfs's own (a damaged ``CREATE`` statement would
    hide its table; indexes and triggers are not needed to read rows and go).

    When not even the schema can be read, ``target`` is an empty workspace (every table
    is listed in :attr:`Salvaged.tables`).
    """
    from kyfs.engine.sqlite.workspace import SqliteWorkspace  # it builds on this package

    SqliteWorkspace(target, create=True).close()
    copy = target.with_name(target.name + ".source")
    try:
        for here, there in zip(
            (source, *paths.sidecar_files(source)), (copy, *paths.sidecar_files(copy)), strict=True
        ):
            if here.exists():
                shutil.copyfile(here, there)
        dst = connect(target)
        try:
            _mend_schema(copy, dst)
            src = sqlite3.connect(copy)
            try:
                src.execute("PRAGMA trusted_schema = OFF")  # nothing in it runs while we read
                src.text_factory = _text
                try:
                    have = {
                        str(row[0])
                        for row in src.execute(
                            "SELECT name FROM sqlite_master WHERE type = 'table'"
                        )
                    }
                except (sqlite3.Error, ValueError):  # (UnicodeDecodeError: SQLite quoting
                    have = set()  # damaged text) no table can be found: the copy stays empty
                return _copy_tables(src, dst, have)
            finally:
                src.close()
        finally:
            dst.close()
    finally:
        for part in (copy, *paths.sidecar_files(copy)):
            part.unlink(missing_ok=True)


def _mend_schema(copy: Path, dst: sqlite3.Connection) -> None:
    """Set the schema of ``copy`` back to the tables of ``dst`` (kyfs's own): each
    table's ``CREATE`` statement as kyfs writes it, found by its name or, when the name
    is damaged, by the name of its table; every other schema row (indexes, triggers, the
    search index) goes. SQLite reads a schema it cannot parse with ``PRAGMA
    writable_schema = ON`` (sqlite.org/pragma.html#pragma_writable_schema). A schema
    that cannot be read or written is left as it is (what it lets be read is read).
    """
    tables = {
        str(name): str(sql)
        for name, sql in dst.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE"
            " 'CREATE VIRTUAL%' AND name NOT LIKE 'search_index%' AND name NOT LIKE 'sqlite_%'"
        )
    }
    conn = sqlite3.connect(copy)
    try:
        conn.text_factory = _text
        conn.execute("PRAGMA writable_schema = ON")
        rows = conn.execute("SELECT rowid, type, name, tbl_name FROM sqlite_master").fetchall()
        conn.execute("BEGIN")
        for rowid, kind, name, table in rows:
            known = name if name in tables else table if table in tables else None
            if kind == "table" and known is not None:
                conn.execute(
                    "UPDATE sqlite_master SET name = ?, tbl_name = ?, sql = ? WHERE rowid = ?",
                    (known, known, tables[known], rowid),
                )
            elif not (isinstance(name, str) and name.startswith("sqlite_")):
                conn.execute("DELETE FROM sqlite_master WHERE rowid = ?", (rowid,))
        conn.execute("COMMIT")
    except (sqlite3.Error, ValueError):  # a damaged schema page that cannot be written: the
        with contextlib.suppress(sqlite3.Error):  # copy is read as it is
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def _text(raw: bytes) -> str:
    """Text as stored; bytes that are not UTF-8 are kept as U+FFFD (the name rules of
    the repair then drop such a key)."""
    return raw.decode("utf-8", "replace")


def _copy_tables(src: sqlite3.Connection, dst: sqlite3.Connection, have: set[str]) -> Salvaged:
    done = Salvaged()
    unreadable: list[str] = []
    tables = [
        str(row[0])
        for row in dst.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE"
            " 'CREATE VIRTUAL%' AND name NOT LIKE 'search_index%' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    fresh = _identity(dst)
    dst.execute("BEGIN IMMEDIATE")
    try:
        for table in tables:
            if table in _NOT_COPIED:
                continue
            if table not in have:
                unreadable.append(table)
                continue
            columns, order = _shape(src, dst, table)
            if not columns:
                unreadable.append(table)
                continue
            marks = ",".join("?" * len(columns))
            insert = f"INSERT OR REPLACE INTO {table} ({','.join(columns)}) VALUES ({marks})"
            for row in _readable_rows(src, table, columns, order, done):
                try:
                    dst.execute(insert, row)
                    done.rows += 1
                except sqlite3.Error:  # a row that breaks the table's constraints
                    done.damaged_ranges += 1
        _keep_identity(dst, fresh)
        _set_aside_holes(dst)
        dst.execute("COMMIT")
    except BaseException:
        dst.execute("ROLLBACK")
        raise
    done.tables = tuple(unreadable)
    return done


def _shape(
    src: sqlite3.Connection, dst: sqlite3.Connection, table: str
) -> tuple[list[str], list[str]]:
    """The columns both files' ``table`` have, and the order to read it in: its rowid,
    or its primary key's columns for a WITHOUT ROWID table (integers, in kyfs's)."""
    try:
        theirs = {str(row[1]) for row in src.execute(f"PRAGMA table_info({table})")}
    except (sqlite3.Error, ValueError):
        return [], []
    info = list(dst.execute(f"PRAGMA table_info({table})"))
    columns = [str(row[1]) for row in info if str(row[1]) in theirs]
    without_rowid = dst.execute(
        "SELECT 1 FROM sqlite_master WHERE name = ? AND sql LIKE '%WITHOUT ROWID%'", (table,)
    ).fetchone()
    if without_rowid:
        return columns, [str(row[1]) for row in sorted(info, key=lambda r: r[5]) if row[5]]
    return columns, ["rowid"]


def _readable_rows(
    src: sqlite3.Connection, table: str, columns: list[str], order: list[str], done: Salvaged
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``table`` in ``order`` (integer columns) that can be read: BATCH at a
    time, one at a time near damage, and past a first-column value whose page cannot be
    read by probing ever further (1, 2, 4, ... on), counted in ``done.damaged_ranges``."""
    keys = ", ".join(order)
    after = f"({keys}) > ({', '.join('?' * len(order))})"
    select = f"SELECT {keys}, {','.join(columns)} FROM {table} WHERE {after} ORDER BY {keys}"
    low = -(2**63)
    last: tuple[int, ...] = (low,) * len(order)
    batch = BATCH
    while True:
        try:
            rows = src.execute(f"{select} LIMIT {batch}", last).fetchall()
        except (sqlite3.Error, ValueError, OverflowError):
            if batch > 1:
                batch = 1
                continue
            found = _step_over(src, select, last[0], len(order))
            done.damaged_ranges += 1
            if found is None:
                return
            last = (found,) + (2**63 - 1,) * (len(order) - 1)
            continue
        if not rows:
            return
        for row in rows:
            key = tuple(row[: len(order)])
            if not all(isinstance(part, int) for part in key):
                return  # an order that is not a number: nothing after it can be trusted
            if key <= last:  # a damaged b-tree answers out of order: step over it (keys
                done.damaged_ranges += 1  # only ever grow, so the scan ends)
                found = _step_over(src, select, last[0], len(order))
                if found is None:
                    return
                last = (found,) + (2**63 - 1,) * (len(order) - 1)
                break
            last = key
            yield tuple(row[len(order) :])
        batch = BATCH


def _step_over(src: sqlite3.Connection, select: str, last: int, width: int) -> int | None:
    """The first-column value just before the first readable row past the damage after
    ``last``, or None when MAX_SKIPS probes found none."""
    step = 1
    for _ in range(MAX_SKIPS):
        probe = last + step
        if probe >= 2**63 - 1:
            return None
        try:
            row = src.execute(f"{select} LIMIT 1", (probe,) + (2**63 - 1,) * (width - 1)).fetchone()
        except (sqlite3.Error, ValueError, OverflowError):
            step *= 2
            continue
        return None if row is None else probe
    return None


def _identity(dst: sqlite3.Connection) -> dict[str, int | None]:
    """The settings ``root_node`` and ``inode_tag`` as numbers (None: missing or not one)."""
    found: dict[str, int | None] = {"root_node": None, "inode_tag": None}
    for name, value in dst.execute(
        "SELECT name, value FROM meta WHERE name IN ('root_node', 'inode_tag')"
    ):
        with contextlib.suppress(TypeError, ValueError):
            found[str(name)] = int(value)
    return found


def _keep_identity(dst: sqlite3.Connection, fresh: dict[str, int | None]) -> None:
    """The copy's settings must name a top directory it has (the source's when its node
    came through, else the new file's own, else a new one) and an inode tag (the
    source's, else the new file's); node ids go on past every id copied (an id is never
    given twice: the archive and history keep theirs)."""
    now = time.time_ns()
    found = _identity(dst)
    is_dir = "SELECT 1 FROM nodes WHERE id = ? AND kind = ?"
    root = found["root_node"]
    if root is None or not dst.execute(is_dir, (root, DIR)).fetchone():
        root = fresh["root_node"]
        if root is None or not dst.execute(is_dir, (root, DIR)).fetchone():
            root = dst.execute(
                "INSERT INTO nodes (kind, mode, uid, gid, nlink, size, created_ns, mtime_ns,"
                " ctime_ns, atime_ns) VALUES (?, ?, 0, 0, 2, 0, ?, ?, ?, ?)",
                (DIR, DIR_MODE, now, now, now, now),
            ).lastrowid
    tag = found["inode_tag"] or fresh["inode_tag"]
    for name, value in (("root_node", root), ("inode_tag", tag)):
        dst.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))
    used = dst.execute(
        "SELECT max(coalesce((SELECT max(id) FROM nodes), 0),"
        " coalesce((SELECT max(id) FROM archive), 0))"
    ).fetchone()[0]
    dst.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'nodes'", (used,))


def _set_aside_holes(dst: sqlite3.Connection) -> None:
    """Values with holes are set aside (kyfs.engine.sql.check.uncovered, set_aside): in
    a damaged file an extent can be lost without an error (a damaged page of the
    extents' b-tree hides its rows from a seek) and would read as zeros."""
    from kyfs.engine.sql.check import set_aside, uncovered  # the repair's own rules

    set_aside(dst, uncovered(dst), time.time_ns())
