"""The trust boundary of the SQLite engine: a workspace file is only used when its schema
is exactly what kyfs's own migrations make, and untrusted files are validated whole,
under a time limit, before kyfs adopts them.

Why: a SQLite file carries code. A view, a trigger, a CHECK constraint, a generated
column or an index expression in a file kyfs did not write (a restored backup, a
migrated or dropped-in file) runs inside kyfs's own statements: a recursive view hangs
the daemon and fills the disk with a sort file, an extra trigger deletes keys on the
next write (issue 13). So:

* every connection opens with ``PRAGMA trusted_schema=OFF`` (sqlite.org/pragma.html
  #pragma_trusted_schema): no function with side effects and no virtual table runs
  from the schema; only once :func:`check_schema` has proven the schema kyfs's own is
  it switched on (kyfs's triggers feed its FTS5 index);
* :func:`check_schema` compares every object of ``sqlite_schema`` (tables, indexes,
  triggers, views) with the reference for the file's ``user_version`` — a fresh file
  migrated to that version, its SQL compared after whitespace and case are normalised.
  Anything extra, missing or different (a view too: kyfs's only one is
  ``search_content``) is refused before a single
  statement touches the data. It runs at every open;
* :func:`validate_data` reads a whole untrusted file under a deadline
  (``Connection.set_progress_handler``): SQLite's integrity check, every key by the
  naming rules (no ``..``, no absolute path, no NUL, UTF-8), node types, modes, sizes
  and times in range, the block store's references and every block's checksum.
  Restores and adoptions call it on their own copy before the file becomes a
  workspace; a file that fails is reported and left out, never half used.

Thread-safety: the functions use only the connection they are given.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from kyfs.core import names, xattrs
from kyfs.core.blocks import RAW, ZSTD
from kyfs.core.errors import InvalidName, UnsoundInput
from kyfs.core.nodes import BLK, CHR, DIR, KINDS, LNK, MAX_RDEV, MAX_VALUE_SIZE, MODE_MASK, REG
from kyfs.engine.sql.check import BLOCK_CHECKS, damaged

VALIDATE_SECONDS = 60.0  # seconds a whole untrusted file may take to validate
PROGRESS_STEPS = 10_000  # SQLite virtual machine steps between two deadline checks
MAX_TIME_NS = 2**63 - 1  # times are signed 64-bit nanoseconds (the year 2262)
_ALLOWED_EXTRA = re.compile(r"sqlite_stat[1-4]")  # ANALYZE's tables: data, never code


def _normalise(sql: str | None) -> str | None:
    if sql is None:
        return None
    text = re.sub(r"\s+", " ", sql).strip().lower().replace("if not exists ", "")
    return re.sub(r"\s*([(),;=])\s*", r"\1", text)


@cache
def reference(version: int) -> dict[tuple[str, str], str | None]:
    """(type, name) -> normalised SQL of every schema object a file of ``version`` holds,
    made by running kyfs's own migrations 1..version on an empty in-memory database
    (about 4 ms; for the current version, kyfs.engine.sqlite.reference holds the result,
    so that a command that opens one workspace does not pay it)."""
    from kyfs.engine.sqlite import schema

    if version == schema.SCHEMA_VERSION and (stored := _stored_reference()) is not None:
        return stored
    return derive_reference(version)


def _stored_reference() -> dict[tuple[str, str], str | None] | None:
    from kyfs.engine.sqlite import reference as stored
    from kyfs.engine.sqlite import schema

    return stored.OBJECTS if stored.VERSION == schema.SCHEMA_VERSION else None


def derive_reference(version: int) -> dict[tuple[str, str], str | None]:
    """:func:`reference` made afresh from the migrations, never from the stored copy."""
    from kyfs.engine.sqlite import schema

    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for number in range(version):
            conn.execute("BEGIN")
            schema.MIGRATIONS[number](conn)
            conn.execute("COMMIT")
        rows = conn.execute("SELECT type, name, sql FROM sqlite_schema").fetchall()
    finally:
        conn.close()
    return {(kind, name): _normalise(sql) for kind, name, sql in rows}


def check_schema(conn: sqlite3.Connection) -> list[str]:
    """Every difference between this file's schema and kyfs's own for its user_version,
    as sentences; ``[]`` when they match. A version newer than this kyfs is one problem.

    Runs two small queries (``PRAGMA user_version``, ``sqlite_schema``); no object of the
    file's schema is used.
    """
    from kyfs.engine.sqlite import schema

    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > schema.SCHEMA_VERSION:
        return [f"schema version {version} is newer than this kyfs knows ({schema.SCHEMA_VERSION})"]
    found = _found(conn)
    if version == 0:
        return [] if not found else ["a SQLite file that is not a kyfs workspace"]
    expected = reference(version)
    if found != expected:
        actual = structure_version(conn)
        if actual is not None:  # kyfs's own schema under a wrong version number
            return [f"schema version is {version}, but its schema is version {actual}"]
    problems = []
    code_first = sorted(
        found.items(), key=lambda item: (item[0][0] not in ("view", "trigger"), item)
    )
    for (kind, name), sql in code_first:
        if (kind, name) not in expected:
            if not (kind == "table" and _ALLOWED_EXTRA.fullmatch(name)):
                problems.append(f"an extra {kind} {name!r}")
        elif expected[(kind, name)] != sql:
            problems.append(f"the {kind} {name!r} differs from kyfs's own")
    for kind, name in sorted(set(expected) - set(found)):
        problems.append(f"the {kind} {name!r} is missing")
    return problems


def _found(conn: sqlite3.Connection) -> dict[tuple[str, str], str | None]:
    """The file's schema objects, {(type, name): normalised sql}; a row whose columns
    are not text (a damaged schema page) is named by its repr, so it is reported as
    extra and never matched."""
    found = {}
    for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_schema"):
        if not (isinstance(kind, str) and isinstance(name, str)):
            kind, name = "damaged schema row", repr((kind, name))
        elif kind == "table" and _ALLOWED_EXTRA.fullmatch(name):
            continue
        found[(kind, name)] = _normalise(sql) if isinstance(sql, str) or sql is None else "?"
    return found


def structure_version(conn: sqlite3.Connection) -> int | None:
    """The schema version whose objects this file holds exactly, or None: lets ``fsck
    --repair`` mend a file whose ``user_version`` was lost or changed."""
    from kyfs.engine.sqlite import schema

    found = _found(conn)
    for version in range(schema.SCHEMA_VERSION, 0, -1):
        if reference(version) == found:
            return version
    return None


def write_reference(path: str) -> None:
    """Write kyfs/engine/sqlite/reference.py, the current version's reference schema
    (``make docs`` runs it; tests/test_hostile_files.py checks it is current)."""
    from kyfs.engine.sqlite import schema

    lines = [
        '"""Generated by `make docs` (kyfs.engine.sqlite.trust.write_reference): the schema',
        "objects of a current workspace file, normalised as trust._normalise does. Do not edit.",
        '"""',
        "",
        f"VERSION = {schema.SCHEMA_VERSION}",
        "OBJECTS: dict[tuple[str, str], str | None] = {",
    ]
    for key, sql in sorted(derive_reference(schema.SCHEMA_VERSION).items()):
        lines.append(f"    {key!r}: {sql!r},")
    lines.append("}")
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


@contextmanager
def deadline(conn: sqlite3.Connection, seconds: float) -> Iterator[None]:
    """Interrupt any statement on ``conn`` that runs past ``seconds`` from now (SQLite's
    progress handler); the statement fails with "interrupted".

    Raises:
        UnsoundInput: (EINVAL, exit 2) the time ran out.
    """
    end = time.monotonic() + seconds
    conn.set_progress_handler(lambda: int(time.monotonic() > end), PROGRESS_STEPS)
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise UnsoundInput(f"checking the file took over {seconds:.0f} s") from None
        raise
    finally:
        conn.set_progress_handler(None, 0)


def bad_keys(conn: sqlite3.Connection, table: str = "entries") -> Iterator[tuple[object, str]]:
    """(key, why) for every key of ``table`` (entries or archive) that is not text, breaks
    the naming rules (kyfs.core.names) or, for entries, has the wrong parent: only a file
    kyfs did not write holds them (``../x``, ``/abs``, empty components)."""
    parent = "parent" if table == "entries" else "NULL"
    for key, stored_parent in conn.execute(f"SELECT key, {parent} FROM {table}"):
        if not isinstance(key, str):
            yield key, "not text"
            continue
        try:
            names.check_key(key)
        except InvalidName as exc:
            yield key, str(exc)
            continue
        if table == "entries" and stored_parent != names.parent_of(key):
            yield key, f"its parent is recorded as {stored_parent!r}"


KNOWN_KINDS = ", ".join(str(kind) for kind in sorted(KINDS))
NODE_RANGES = [  # (what, the nodes that break it): rows no kyfs writes
    ("node types kyfs does not know", f"kind NOT IN ({KNOWN_KINDS})"),
    ("special nodes with a size", f"kind NOT IN ({REG}, {DIR}, {LNK}) AND size != 0"),
    ("device numbers out of range", "typeof(rdev) != 'integer' OR rdev < 0"
     f" OR rdev > {MAX_RDEV} OR (rdev != 0 AND kind NOT IN ({CHR}, {BLK}))"),
    ("modes out of range", f"typeof(mode) != 'integer' OR mode < 0 OR mode > {MODE_MASK}"),
    ("sizes out of range", f"typeof(size) != 'integer' OR size < 0 OR size > {MAX_VALUE_SIZE}"),
    ("owners out of range", "typeof(uid) != 'integer' OR typeof(gid) != 'integer'"
     " OR uid < 0 OR uid > 4294967295 OR gid < 0 OR gid > 4294967295"),
    ("times out of range", " OR ".join(
        f"typeof({c}) != 'integer' OR {c} < 0"
        for c in ("created_ns", "mtime_ns", "ctime_ns", "atime_ns"))),
    ("link counts out of range", "typeof(nlink) != 'integer' OR nlink < 0 OR nlink > 65000"),
    ("expiry times out of range", "expires_ns IS NOT NULL AND typeof(expires_ns) != 'integer'"),
]  # fmt: skip
TABLE_RANGES = [  # (what, table, the rows that break it)
    ("history rows", "history", "typeof(time_ns) != 'integer' OR typeof(key) != 'text'"
     f" OR (size IS NOT NULL AND (typeof(size) != 'integer' OR size < 0"
     f" OR size > {MAX_VALUE_SIZE}))"),
    ("version modes", "history", "mode IS NOT NULL AND (typeof(mode) != 'integer'"
     f" OR mode < 0 OR mode > {MODE_MASK})"),
    # kyfs.core.actor: who made a change, text (a command name at most 15 bytes: 64 here)
    ("history actors", "history", " OR ".join(
        f"({c} IS NOT NULL AND (typeof({c}) != 'text' OR length({c}) > {n}))"
        for c, n in (("source", 16), ("user_name", 256), ("comm", 64)))
     + " OR (pid IS NOT NULL AND typeof(pid) != 'integer')"),
    ("archived nodes", "archive", f"(kind IS NOT NULL AND kind NOT IN ({KNOWN_KINDS}))"
     f" OR typeof(rdev) != 'integer' OR rdev < 0 OR rdev > {MAX_RDEV}"),
    ("blocks", "blocks", "typeof(hash) != 'blob' OR length(hash) != 32"
     " OR typeof(refs) != 'integer' OR typeof(size) != 'integer'"
     f" OR typeof(data) != 'blob' OR codec NOT IN ({RAW}, {ZSTD})"),
    ("extents", "extents", "typeof(owner) != 'integer' OR typeof(pos) != 'integer'"
     " OR typeof(block) != 'integer'"),
    # kyfs.core.xattrs: a stored namespace, not kyfs's own; name and value limits
    ("extended attributes", "xattrs", "typeof(node) != 'integer' OR typeof(name) != 'blob'"
     f" OR length(name) > {xattrs.NAME_MAX} OR typeof(value) != 'blob'"
     f" OR length(value) > {xattrs.SIZE_MAX} OR NOT (CAST(name AS TEXT) GLOB 'user.?*'"
     " OR CAST(name AS TEXT) GLOB 'trusted.?*' OR CAST(name AS TEXT) GLOB 'security.?*'"
     " OR CAST(name AS TEXT) IN ('system.posix_acl_access', 'system.posix_acl_default'))"
     f" OR CAST(name AS TEXT) GLOB '{xattrs.OWN}*'"),
]  # fmt: skip


def rows_out_of_range(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
    """Counts of rows whose numbers or types no kyfs writes (NODE_RANGES, TABLE_RANGES),
    as sentences, and the tables among ``history``, ``blocks`` and ``extents`` that hold
    any: for :func:`validate_data` and fsck (kyfs.engine.sqlite.check)."""
    problems, tables = [], []
    for label, where in NODE_RANGES:
        count = conn.execute(f"SELECT count(*) FROM nodes WHERE {where}").fetchone()[0]
        if count:
            problems.append(f"{count} {label}")
    for label, table, where in TABLE_RANGES:
        count = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
        if count:
            tables.append(table)
            problems.append(f"{count} {label} out of range")
    return problems, tables


def validate_data(
    conn: sqlite3.Connection, seconds: float = VALIDATE_SECONDS, whole: bool = True
) -> list[str]:
    """Every way the data of a current-schema file breaks kyfs's rules, as
    sentences (at most a few of each kind); ``[]`` when it is sound. Reads the whole
    file under a deadline of ``seconds``; without ``whole`` (``kyfs --db``, at every
    command) SQLite's page check and the blocks' checksums are left out: rows only
    (names, sizes, types, references), and each block is checked as it is read.

    Raises:
        UnsoundInput: (EINVAL, exit 2) the deadline passed.
    """
    problems: list[str] = []
    with deadline(conn, seconds):
        if whole:
            bad = [r[0] for r in conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
            problems += [f"integrity: {line}" for line in bad[:5]]
            if bad:
                return problems
        for key, why in bad_keys(conn):
            problems.append(f"a key that breaks the naming rules: {str(key)[:80]!r} ({why})")
            if len(problems) > 20:
                return problems
        for key, _ in bad_keys(conn, "archive"):
            problems.append(f"an archived key that breaks the naming rules: {str(key)[:80]!r}")
            break
        for key, _ in bad_keys(conn, "snapshot_items"):
            problems.append(f"a snapshot's key that breaks the naming rules: {str(key)[:80]!r}")
            break
        found, out_of_range = rows_out_of_range(conn)
        problems += found
        if not {"blocks", "extents"} & set(out_of_range):  # the block store's own rules
            for label, sql in BLOCK_CHECKS:
                count = conn.execute(f"SELECT count(*) FROM ({sql}) AS broken").fetchone()[0]
                if count:
                    problems.append(f"{count} {label}")
            if whole:
                problems += damaged(conn)
    return problems
