"""History of a workspace file: one ``history`` row per change of a key, and settings.

A row records ``(key, action, value, time_ns, detail)``: "set" with the value (up to
HISTORY_VALUE_MAX bytes), "delete", "rename" (detail: the other name), "link" (detail:
the other name) or "symlink" (detail: the target). Version numbers are the rows' ids,
so they stay stable when old versions are pruned. History is kept by name: a write to
a node with several names (hard links) is recorded under each of its names.

Settings live in ``meta`` (name -> text): retention, cache TTL, schema rules, project.

Thread-safety: as kyfs.engine.sql.base.
"""

from __future__ import annotations

from collections.abc import Iterable

from kyfs.core.nodes import HistoryEntry
from kyfs.engine.sql.base import Base, Connection

HISTORY_VALUE_MAX = 16 * 1024**2  # bytes: a longer value's versions are recorded without it
HISTORY_VERSIONS = 100  # versions kept per key at least (meta history_versions)
HISTORY_DAYS = 30  # days of versions kept at least (meta history_days)
PRUNE_EVERY = 16  # history rows between two prunings of the key just written
_COLUMNS = "key, action, value, time_ns, detail, id"


def read_meta(conn: Connection) -> dict[str, str]:
    """The workspace's settings (``meta``), inside the caller's transaction."""
    return dict(conn.execute("SELECT name, value FROM meta").fetchall())


def record(
    conn: Connection,
    key: str,
    action: str,
    value: bytes | None,
    detail: str | None,
    now: int,
    meta: dict[str, str] | None = None,
) -> None:
    """Append to the history of ``key`` inside the caller's transaction, and every
    PRUNE_EVERY rows prune that key to the retention (meta history_versions, default
    100, and history_days, default 30: whichever keeps more; the retention is a minimum,
    so pruning late is safe)."""
    cur = conn.execute(
        "INSERT INTO history (key, action, value, time_ns, detail) VALUES (?, ?, ?, ?, ?)"
        " RETURNING id",
        (key, action, value, now, detail),
    )
    if cur.fetchall()[0][0] % PRUNE_EVERY:
        return
    meta = read_meta(conn) if meta is None else meta
    versions, days = retention(meta)
    cutoff = now - int(days * 86400e9)
    conn.execute(
        "DELETE FROM history WHERE key = ? AND time_ns < ? AND id NOT IN"
        " (SELECT id FROM history WHERE key = ? ORDER BY id DESC LIMIT ?)",
        (key, cutoff, key, versions),
    )


def retention(meta: dict[str, str]) -> tuple[int, float]:
    """(versions, days) of history kept per key, from the settings; a value out of range
    or unreadable (a foreign or old file) counts as the default, so no write ever fails
    on it (1 to 1,000,000 versions; 0 to MAX_RETENTION_DAYS days)."""
    from kyfs.core.names import MAX_RETENTION_DAYS

    try:
        versions = int(meta.get("history_versions", HISTORY_VERSIONS))
    except ValueError:
        versions = HISTORY_VERSIONS
    try:
        days = float(meta.get("history_days", HISTORY_DAYS))
    except ValueError:
        days = HISTORY_DAYS
    if not 1 <= versions <= 1_000_000:
        versions = HISTORY_VERSIONS
    if not 0 <= days <= MAX_RETENTION_DAYS:  # also NaN
        days = HISTORY_DAYS
    return versions, days


def cache_ttl(meta: dict[str, str]) -> float | None:
    """A cache workspace's TTL in seconds from the settings, or None (also for a value out
    of range or unreadable)."""
    from kyfs.core.names import MAX_DURATION_S

    try:
        seconds = float(meta["ttl_s"])
    except (KeyError, ValueError):
        return None
    return seconds if 0 < seconds <= MAX_DURATION_S else None


class HistoryMixin(Base):
    """Reading history, importing it, and the workspace's settings."""

    def history(self, key: str) -> list[HistoryEntry]:
        """The recorded history of ``key``, oldest first.

        Raises:
            StorageError: (EIO, exit 4).
        """
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM history WHERE key = ? ORDER BY time_ns, id", (key,)
        )
        return [HistoryEntry(*row) for row in rows]

    def version(self, version: int) -> HistoryEntry | None:
        """History row ``version`` (its id), or None."""
        row = self._row(f"SELECT {_COLUMNS} FROM history WHERE id = ?", (version,))
        return HistoryEntry(*row) if row else None

    def history_keys(self, prefix: str = "") -> list[str]:
        """Every key with recorded history (live or not), starting with ``prefix``."""
        rows = self._rows(
            "SELECT DISTINCT key FROM history WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\U0010ffff"),
        )
        return [row[0] for row in rows]

    def changes(self, cursor: int | None) -> tuple[int, list[str]]:
        """Names changed since ``cursor`` by any other connection to this workspace
        (another process, a CLI command, another daemon) or by TTL expiry on this one, and
        the new cursor; ``cursor`` None starts watching: the cursor of when
        :meth:`start_watching` was called (the daemon's engine calls it as it opens the
        workspace, so nothing another process changes between that open and a watcher's
        first look is missed), else the current one; and no names.

        A change is what history records (set, delete, rename, link, symlink, expiry);
        for a rename or link both names. The engine tells this connection's own rows apart
        (:meth:`_change_rows`), so the daemon, whose own changes the kernel already knows,
        is told only of the others. Cost: one range scan of the rows added since
        ``cursor``.

        Raises:
            StorageError: (EIO, exit 4).
        """
        if cursor is None:
            if self._watch_from is not None:
                return self._watch_from, []
            self._watch()
            row = self._row("SELECT coalesce(max(id), 0) FROM history")
            return int(row[0]), []
        rows = self._change_rows(cursor)
        if not rows:
            return cursor, []
        names: list[str] = []
        for _, key, detail, own in rows:
            if own and detail != "expired":
                continue
            names.append(key)
            other = (detail or "").partition(" ")
            if other[0] in ("to", "from") and other[2]:
                names.append(other[2])  # rename's and link's other name
        return int(rows[-1][0]), names

    _watch_from: int | None = None

    def start_watching(self) -> None:
        """From now on, tell this connection's history rows apart, and remember the cursor
        where the first ``changes(None)`` will start (see :meth:`changes`)."""
        self._watch()
        self._watch_from = int(self._row("SELECT coalesce(max(id), 0) FROM history")[0])

    def _watch(self) -> None:
        """Start telling this connection's own history rows apart (see
        :meth:`_change_rows`)."""
        raise NotImplementedError

    def _change_rows(self, cursor: int) -> list[tuple[int, str, str | None, bool]]:
        """History rows after id ``cursor``, oldest first: (id, key, detail, written by
        this connection)."""
        raise NotImplementedError

    def retention(self) -> tuple[int, float]:
        """(versions, days) of history this workspace keeps per key at least (the
        settings, or the defaults: 100 versions, 30 days)."""
        return retention(self.meta())

    def import_history(self, items: Iterable[HistoryEntry]) -> int:
        """Append imported history rows (e.g. KyCLI's audit log), in one transaction;
        returns how many."""
        count = 0
        with self._atomic() as conn:
            for item in items:
                conn.execute(
                    "INSERT INTO history (key, action, value, time_ns) VALUES (?, ?, ?, ?)",
                    (item.key, item.action, item.value, item.time_ns),
                )
                count += 1
        return count

    # --- settings --------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        """The workspace's settings (``meta``): project_path, ttl_s, schemas (JSON), ..."""
        try:
            return read_meta(self._conn)
        except self._errors as exc:
            raise self._convert(exc) from None

    def set_meta(self, name: str, value: str | None) -> None:
        """Set (or with None remove) the workspace setting ``name``."""
        with self._atomic() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE name = ?", (name,))
            else:
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )
