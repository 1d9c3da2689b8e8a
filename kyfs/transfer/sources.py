"""Readers of other tools' files: KyCLI (plain SQLite and ``KYCLI\\x01`` dumps), KyCLI-style
scoped single files, and ProntoDB. Each yields kyfs-shaped records; nothing here writes.

This is the one module outside the SQLite engine (kyfs.engine.sqlite) that runs SQL: it
reads foreign schemas, never kyfs's own. Source files are opened read-only
(``mode=ro``) and never modified. KyCLI's FTS table is never read: KyCLI wrote
with INSERT OR REPLACE, so it is often stale or "malformed".

Facts about KyCLI (balakrishna-maduru/kycli):

* v0.1.x: plain SQLite, ``kvstore(key, value, expires_at)`` (older files lack
  ``expires_at``), ``audit_log(id, key, value, timestamp)`` (value NULL: a delete),
  ``archive(id, key, value, deleted_at)``. Times are UTC text
  ``%Y-%m-%d %H:%M:%S.%f`` or without the fraction.
* v0.2.0+: the bytes ``KYCLI\\x01``, then a zlib-compressed SQL dump of those
  tables, optionally wrapped in AES-GCM (12-byte nonce, then ciphertext; key =
  PBKDF2-HMAC-SHA256 of the master key, salt ``kycli_vault_salt``, 100,000
  iterations, 32 bytes). Single values may be ``enc:`` + base64(nonce +
  ciphertext) with the same key, or ``cmp:zlib:`` + base64(zlib data).

Thread-safety: the functions share nothing.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import sqlite3
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

from kyfs.core.address import parse as parse_address
from kyfs.core.errors import InvalidInput, KyfsError, MasterKeyRequired
from kyfs.core.names import check_key, check_workspace_name

P = ParamSpec("P")
R = TypeVar("R")
FOREIGN_SECONDS = 120.0  # seconds every statement on another tool's file may run, from open
VALUE_MAX = 64 * 1024**2  # bytes a cmp:zlib: value may inflate to
DUMP_MAX = 1024**3  # bytes a KYCLI\x01 dump may inflate to
KYCLI_MAGIC = b"KYCLI\x01"
SQLITE_MAGIC = b"SQLite format 3\x00"
KYCLI_SALT = b"kycli_vault_salt"
KYCLI_ITERATIONS = 100_000
_DUMP_TABLES = {"kvstore", "audit_log", "archive", "workspace_meta", "queue_items"}
_DUMP_SCHEMA = """
CREATE TABLE kvstore (key TEXT PRIMARY KEY, value TEXT, expires_at DATETIME);
CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, value TEXT,
                        timestamp DATETIME);
CREATE TABLE archive (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, value TEXT,
                      deleted_at DATETIME);
CREATE TABLE workspace_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE queue_items (id INTEGER PRIMARY KEY AUTOINCREMENT, value TEXT,
                          priority INTEGER DEFAULT 0, created_at DATETIME);
"""


@dataclass
class Record:
    """One key as kyfs will store it. ``renamed_from`` is the source's own key when it
    was not a valid kyfs key and was percent-encoded."""

    workspace: str
    key: str
    value: bytes
    created_ns: int | None = None
    mtime_ns: int | None = None
    renamed_from: str | None = None
    expires_ns: int | None = None  # a TTL in the future, kept (ns since the epoch, UTC)


@dataclass
class HistoryRow:
    """One version from a source's audit log: ``value`` None for a delete; ``when`` in
    ns since the epoch, UTC."""

    workspace: str
    key: str
    action: str  # "set" or "delete"
    value: bytes | None
    when: int


@dataclass
class SourceData:
    """Everything read from one source: live keys, archived (deleted or expired) values
    with their deletion time (ns, UTC), history rows, and notes on names that had to
    be changed."""

    live: list[Record] = field(default_factory=list)
    archived: list[tuple[Record, int]] = field(default_factory=list)
    history: list[HistoryRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    addressed: set[tuple[str, str]] = field(default_factory=set)  # keys noted as KEY@WORKSPACE


PRONTO_CONTEXT = "__"  # ProntoDB's key__context: a row's context joins its key so


# --- names and times ----------------------------------------------------------------------
def kyfs_key(key: str) -> tuple[str, bool]:
    """``key`` as a valid kyfs key, and whether it had to change: a key that breaks the
    rules (docs/usage.md) is percent-encoded whole (urllib.parse.quote, no safe
    characters), which is reversible."""
    try:
        return check_key(key), False
    except KyfsError:
        encoded = urllib.parse.quote(key, safe="") or "%00empty"
        if encoded in (".", ".."):
            encoded = encoded.replace(".", "%2E")
        return check_key(encoded[:255]), True


def workspace_for(name: str) -> str:
    """``name`` as a valid workspace name: characters outside ``[A-Za-z0-9._-]`` become
    ``_``, a leading non-alphanumeric gets an ``x`` in front, cut to 64."""
    try:
        return check_workspace_name(name)
    except KyfsError:
        cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
        if not cleaned or not cleaned[0].isalnum():
            cleaned = "x" + cleaned
        return check_workspace_name(cleaned[:64])


def parse_time(value: object) -> int | None:
    """A source time as ns since the epoch (UTC): numbers are epoch seconds; text is
    ``%Y-%m-%d %H:%M:%S[.%f]`` (UTC, KyCLI) or ISO 8601. None when missing, unreadable
    or out of range (before 1970, past 2262: what signed 64-bit nanoseconds hold)."""
    try:
        found = _parse_time(value)
    except (OverflowError, ValueError, OSError):  # inf, nan, years past 9999
        return None
    return found if found is not None and 0 <= found < 2**63 else None


def _parse_time(value: object) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value * 1_000_000_000)
    text = str(value).strip()
    for form in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            parsed = dt.datetime.strptime(text, form).replace(tzinfo=dt.UTC)
            return int(parsed.timestamp() * 1_000_000) * 1000
        except ValueError:
            pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1_000_000) * 1000


# --- KyCLI values and files ---------------------------------------------------------------
def _aes(master_key: str) -> object:
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
    except ImportError:
        raise InvalidInput(
            "reading encrypted KyCLI data needs the cryptography package: "
            "pip install 'kyfs[crypto]'"
        ) from None
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=KYCLI_SALT, iterations=KYCLI_ITERATIONS
    )
    return AESGCM(kdf.derive(master_key.encode("utf-8")))


def _decrypt(blob: bytes, master_key: str | None) -> bytes:
    if not master_key:
        raise MasterKeyRequired(
            "this KyCLI data is encrypted: give the master key with --master-key-env VAR"
        )
    if len(blob) < 12 + 16:
        raise MasterKeyRequired("encrypted KyCLI data is too short to be valid")
    try:
        return bytes(_aes(master_key).decrypt(blob[:12], blob[12:], None))  # type: ignore[attr-defined]
    except InvalidInput:
        raise
    except Exception:  # cryptography raises InvalidTag: wrong key or damaged data
        raise MasterKeyRequired("cannot decrypt KyCLI data: wrong master key?") from None


def decode_kycli_value(value: object, master_key: str | None) -> bytes:
    """A KyCLI stored value as the bytes it stands for: ``enc:`` decrypted, ``cmp:zlib:``
    decompressed (in either nesting), anything else UTF-8 as stored.

    Raises:
        MasterKeyRequired: (exit 2) an ``enc:`` value without (or with a wrong) key.
        InvalidInput: (exit 2) a ``cmp:zlib:`` value that is not valid base64/zlib.
    """
    if value is None:
        return b""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    for _ in range(4):  # enc: around cmp:zlib:, or the other way round
        if data.startswith(b"enc:"):
            data = _decrypt(_b64(data[4:]), master_key)
        elif data.startswith(b"cmp:zlib:"):
            data = _inflate(_b64(data[9:]), VALUE_MAX, "a cmp:zlib: value")
        else:
            break
    return data


def _b64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data.strip(), validate=True)
    except binascii.Error as exc:
        raise InvalidInput(f"a KyCLI value is not valid base64: {exc}") from None


def _open_readonly(path: Path) -> sqlite3.Connection:
    """Open another tool's SQLite file read-only as untrusted input: no function with side
    effects from its schema (``trusted_schema=OFF``), no views at all (a view can be made
    to never end: kyfs reads tables only), and every statement on it interrupted once
    FOREIGN_SECONDS have passed since it was opened (a progress handler).

    Raises:
        InvalidInput: (exit 2) not SQLite, or it holds a view.
    """
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        conn.execute("PRAGMA trusted_schema = OFF")
        views = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")]
    except sqlite3.Error as exc:
        raise InvalidInput(f"{path}: not a readable SQLite file: {exc}") from None
    if views:
        conn.close()
        raise InvalidInput(f"{path}: holds views ({', '.join(views[:3])}); kyfs reads tables only")
    end = time.monotonic() + FOREIGN_SECONDS
    conn.set_progress_handler(lambda: int(time.monotonic() > end), 10_000)
    return conn


def foreign_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn SQLite's errors while reading another tool's file (damage, an interrupted
    statement) into InvalidInput (exit 2), never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise InvalidInput(
                    f"reading the source took over {FOREIGN_SECONDS:.0f} s: refused"
                ) from None
            raise InvalidInput(f"the source could not be read: {exc}") from None
        except sqlite3.Error as exc:
            raise InvalidInput(f"the source could not be read: {exc}") from None

    return wrapper


def _inflate(data: bytes, limit: int, what: str) -> bytes:
    """zlib-decompress ``data`` to at most ``limit`` bytes, never more in memory.

    Raises:
        InvalidInput: (exit 2) damaged, or it would grow past ``limit`` (a zip bomb).
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"{what} is damaged: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise InvalidInput(f"{what} grows past the limit of {limit} bytes: refused")
    return out


def _load_dump(sql: str) -> sqlite3.Connection:
    """Run a KyCLI dump into a private in-memory database. An authorizer lets through
    only INSERTs into KyCLI's own tables and transaction control: a crafted dump cannot
    ATTACH files, create triggers or run anything else."""
    conn = sqlite3.connect(":memory:")
    for statement in _DUMP_SCHEMA.strip().split(";"):
        if statement.strip():
            conn.execute(statement)
    allowed_actions = {
        sqlite3.SQLITE_INSERT,
        sqlite3.SQLITE_TRANSACTION,
        sqlite3.SQLITE_UPDATE,
        sqlite3.SQLITE_DELETE,
        sqlite3.SQLITE_READ,
        sqlite3.SQLITE_SELECT,
    }

    def authorize(
        action: int, arg1: str | None, arg2: str | None, db: str | None, _: object
    ) -> int:
        if action not in allowed_actions:
            return sqlite3.SQLITE_DENY
        writes = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
        own_table = arg1 in _DUMP_TABLES or arg1 == "sqlite_sequence"
        if action in writes and (not own_table or db != "main"):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    conn.set_authorizer(authorize)
    try:
        conn.executescript(sql)
    except sqlite3.Error as exc:
        raise InvalidInput(f"the KyCLI dump could not be read: {exc}") from None
    finally:
        conn.set_authorizer(None)
    return conn


def open_kycli(path: Path, master_key: str | None) -> sqlite3.Connection:
    """A connection to the KyCLI data in ``path`` (plain SQLite, or a KYCLI\\x01 dump
    loaded into memory).

    Raises:
        InvalidInput: (exit 2) not a KyCLI file. MasterKeyRequired: (exit 2).
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith(SQLITE_MAGIC):
        return _open_readonly(path)
    if not head.startswith(KYCLI_MAGIC):
        raise InvalidInput(f"{path}: neither SQLite nor a KYCLI\\x01 file")
    payload = path.read_bytes()[len(KYCLI_MAGIC) :]
    try:
        compressed = _inflate(payload, DUMP_MAX, "the KyCLI dump")
    except InvalidInput:
        compressed = _inflate(_decrypt(payload, master_key), DUMP_MAX, "the KyCLI dump")
    try:
        return _load_dump(compressed.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: the KyCLI dump is not UTF-8: {exc}") from None


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


@foreign_errors
def read_kycli(
    path: Path, workspace: str, master_key: str | None, now_ns: int | None = None
) -> SourceData:
    """Read one KyCLI workspace file into ``workspace``.

    Live keys keep their exact value; keys whose ``expires_at`` has passed are
    not live and go to the archive (deleted at their expiry); ``archive`` rows
    stay archived; ``audit_log`` rows become the keys' history.
    """
    now_ns = now_ns or time.time_ns()
    conn = open_kycli(path, master_key)
    data = SourceData()
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if "kvstore" not in tables:
            raise InvalidInput(f"{path}: no kvstore table: not KyCLI data")
        has_expiry = "expires_at" in _columns(conn, "kvstore")
        query = "SELECT key, value, " + ("expires_at" if has_expiry else "NULL") + " FROM kvstore"
        for key, value, expires in conn.execute(query):
            record = _record(workspace, key, decode_kycli_value(value, master_key), data)
            expiry = parse_time(expires)
            if expiry is not None and expiry < now_ns:
                data.archived.append((record, expiry))
            else:
                record.expires_ns = expiry
                data.live.append(record)
        if "archive" in tables:
            for key, value, deleted in conn.execute("SELECT key, value, deleted_at FROM archive"):
                record = _record(workspace, key, decode_kycli_value(value, master_key), data)
                data.archived.append((record, parse_time(deleted) or now_ns))
        if "audit_log" in tables:
            for key, value, stamp in conn.execute(
                "SELECT key, value, timestamp FROM audit_log ORDER BY id"
            ):
                _history(data, workspace, key, value, stamp, master_key, now_ns)
    finally:
        conn.close()
    return _disambiguate(data)


def _history(
    data: SourceData,
    workspace: str,
    key: object,
    value: object,
    stamp: object,
    master_key: str | None,
    now_ns: int,
) -> None:
    """One KyCLI ``audit_log`` row as history (a NULL value is a delete)."""
    name, _ = kyfs_key(str(key))
    when = parse_time(stamp) or now_ns
    if value is None:
        data.history.append(HistoryRow(workspace, name, "delete", None, when))
    else:
        decoded = decode_kycli_value(value, master_key)
        data.history.append(HistoryRow(workspace, name, "set", decoded, when))


def _record(workspace: str, key: object, value: bytes, data: SourceData) -> Record:
    name, changed = kyfs_key(str(key))
    if changed:
        data.notes.append(f"{workspace}: key {key!r} stored as {name!r} (not a valid kyfs key)")
    elif (workspace, name) not in data.addressed and parse_address(name).workspace is not None:
        data.addressed.add((workspace, name))  # noted once, live or archived
        data.notes.append(
            f"{workspace}: key {name!r} is kept as it is; as an argument it reads as"
            f" KEY@WORKSPACE: reach it with ./{name} or --raw"
        )
    return Record(workspace, name, value, renamed_from=str(key) if changed else None)


def _disambiguate(data: SourceData) -> SourceData:
    """Two source keys that become one kyfs key (a percent-encoded key equal to a valid
    one, two long keys cut at 255 bytes, two scopes that map to one workspace): the
    first keeps the name, each other one gets ``~2``, ``~3``... and the pair is noted,
    so analyze shows it and run imports both instead of failing on the clash."""
    taken: set[tuple[str, str]] = set()
    # Keys kept as they were claim their names before percent-encoded ones (a stable sort).
    for record in sorted(data.live, key=lambda r: r.renamed_from is not None):
        if (record.workspace, record.key) not in taken:
            taken.add((record.workspace, record.key))
            continue
        number = 2
        while (record.workspace, f"{record.key[:240]}~{number}") in taken:
            number += 1
        new = f"{record.key[:240]}~{number}"
        data.notes.append(
            f"{record.workspace}: key {record.renamed_from or record.key!r} collides with"
            f" {record.key!r}; stored as {new!r}"
        )
        record.renamed_from = record.renamed_from or record.key
        record.key = new
        taken.add((record.workspace, new))
    return data


# --- scoped single files ----------------------------------------------------------------
@foreign_errors
def detect(path: Path) -> str:
    """The kind of a single-file source: ``"scoped"`` (KyCLI-style ``kvstore`` with a
    ``scope`` column) or ``"prontodb"`` (``kv`` with ``project``, ``namespace``, ...).

    Raises:
        InvalidInput: (exit 2) neither.
    """
    conn = _open_readonly(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if "kvstore" in tables and "scope" in _columns(conn, "kvstore"):
            return "scoped"
        if "kv" in tables and {"project", "namespace", "key", "value"} <= _columns(conn, "kv"):
            return "prontodb"
    finally:
        conn.close()
    raise InvalidInput(f"{path}: not a scoped KyCLI file nor a ProntoDB file")


@foreign_errors
def read_single_file(path: Path, master_key: str | None = None) -> SourceData:
    """Read a scoped or ProntoDB file (see docs/usage.md for the mapping)."""
    kind = detect(path)
    conn = _open_readonly(path)
    data = SourceData()
    now_ns = time.time_ns()
    try:
        if kind == "scoped":
            cols = _columns(conn, "kvstore")
            expiry = "expires_at" if "expires_at" in cols else "NULL"
            rows = conn.execute(f"SELECT scope, key, value, {expiry} FROM kvstore")
            for scope, key, value, expires in rows:
                _add(data, str(scope), str(key), decode_kycli_value(value, master_key),
                     None, None, parse_time(expires), now_ns)  # fmt: skip
            _scoped_archive_and_audit(conn, data, master_key, now_ns)
        else:
            cols = _columns(conn, "kv")
            pick = [c if c in cols else "NULL" for c in
                    ("context", "created_at", "updated_at", "expires_at")]  # fmt: skip
            rows = conn.execute(f"SELECT project, namespace, key, value, {', '.join(pick)} FROM kv")
            for project, namespace, key, value, context, created, updated, expires in rows:
                name = f"{namespace}.{key}" if namespace else str(key)
                if context:  # ProntoDB's own form: never read as KEY@WORKSPACE
                    name += f"{PRONTO_CONTEXT}{context}"
                raw = value if isinstance(value, bytes) else str(value or "").encode("utf-8")
                _add(data, str(project), name, raw, parse_time(created), parse_time(updated),
                     parse_time(expires), now_ns)  # fmt: skip
    finally:
        conn.close()
    return _disambiguate(data)


def _scoped_archive_and_audit(
    conn: sqlite3.Connection, data: SourceData, master_key: str | None, now_ns: int
) -> None:
    """A scoped file's ``archive(scope, key, value, deleted_at)`` and ``audit_log(scope,
    key, value, timestamp)`` rows, as the KyCLI migration reads them: the archive stays
    archived, the audit log becomes history, each in its scope's workspace. Tables
    without a ``scope`` column belong to the file's only scope, or are skipped (noted)
    when it has several."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    scopes = {r.workspace for r in data.live} | {r.workspace for r, _ in data.archived}
    for table, stamp_column in (("archive", "deleted_at"), ("audit_log", "timestamp")):
        if table not in tables:
            continue
        columns = _columns(conn, table)
        if not {"key", "value", stamp_column} <= columns:
            data.notes.append(f"table {table} lacks key, value or {stamp_column}: skipped")
            continue
        if "scope" in columns:
            scope_sql = "scope"
        elif len(scopes) == 1:
            scope_sql = "NULL"
        else:
            data.notes.append(f"table {table} has no scope column and the file several scopes:"
                              " skipped")  # fmt: skip
            continue
        order = " ORDER BY id" if "id" in columns else ""
        query = f"SELECT {scope_sql}, key, value, {stamp_column} FROM {table}{order}"
        for scope, key, value, stamp in conn.execute(query):
            workspace = workspace_for(str(scope)) if scope is not None else next(iter(scopes))
            if table == "archive":
                if value is None:
                    continue
                record = _record(workspace, key, decode_kycli_value(value, master_key), data)
                data.archived.append((record, parse_time(stamp) or now_ns))
            else:
                _history(data, workspace, key, value, stamp, master_key, now_ns)


def _add(
    data: SourceData,
    scope: str,
    key: str,
    value: bytes,
    created: int | None,
    updated: int | None,
    expires: int | None,
    now_ns: int,
) -> None:
    workspace = workspace_for(scope)
    if workspace != scope:
        note = f"workspace {scope!r} becomes {workspace!r} (not a valid workspace name)"
        if note not in data.notes:
            data.notes.append(note)
    record = _record(workspace, key, value, data)
    record.created_ns, record.mtime_ns = created, updated
    if expires is not None and expires < now_ns:
        data.archived.append((record, expires))
    else:
        record.expires_ns = expires
        data.live.append(record)


def iter_workspaces(records: list[Record]) -> Iterator[tuple[str, list[Record]]]:
    """Records grouped by workspace, in name order."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.workspace, []).append(record)
    yield from sorted(groups.items())
