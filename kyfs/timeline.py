"""The timeline of workspaces: every change of a key, with who made it (``kyfs log``), and
the changes as they commit, from every writer (``kyfs watch``). Built on the history
rows (Workspace.timeline, kyfs.engine.sql.history) and kept apart from the CLI so the
Python API and an MCP server can use it as they are.

Watching polls each watched workspace for history rows after its cursor: one index probe
that finds nothing costs about 20 µs on SQLite, so it polls every POLL_S seconds (the
p50 delay from a commit to its line is about half of that). On PostgreSQL it waits on
LISTEN/NOTIFY (Engine.wait_for_changes) between polls, so a change shows as soon as it
commits and an idle watch polls every IDLE_S seconds only.

Thread-safety: :func:`watch` uses its engine from the calling thread only; ``stop`` may
be set from any thread (or a signal handler).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from kyfs.core.errors import InvalidInput, WorkspaceNotFound
from kyfs.core.names import parse_duration
from kyfs.core.nodes import Change
from kyfs.engine.base import Engine, Workspace

POLL_S = 0.02  # seconds between two polls of a watched workspace (SQLite, or no NOTIFY yet)
IDLE_S = 1.0  # seconds between two polls when the engine tells of commits (PostgreSQL)
RELIST_S = 1.0  # seconds between two listings of the workspaces (``--all``: new ones)
LOG_BATCH = 10_000  # history rows read at a time by :func:`log`


def parse_since(text: str, now_ns: int | None = None) -> int:
    """``--since``: a duration back from now (``10m``, ``2h``, ``7d``: kyfs.core.names.
    parse_duration) or an ISO 8601 time (``2026-12-01``, ``2026-12-01T09:30``, with or
    without a zone; without one it is local time); returns ns UTC.

    Raises:
        InvalidInput: (exit 2) neither, or a time before 1970 or after 2262 (ns UTC
            fit in 63 bits until then).
    """
    now = time.time_ns() if now_ns is None else now_ns
    try:
        return now - int(parse_duration(text) * 1e9)
    except InvalidInput:
        pass
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"invalid time {text!r}: use a duration back from now (10m, 2h, 7d)"
            " or an ISO 8601 time (2026-12-01T09:30)"
        ) from None
    try:
        since = int(when.timestamp() * 1e9)  # naive: local time (datetime.timestamp)
    except (OverflowError, OSError, ValueError):
        since = -1
    if not 0 <= since < 2**63:
        raise InvalidInput(f"time {text!r} is out of range (1970 to 2262)")
    return since


def log(
    workspaces: Iterable[tuple[str, Workspace]],
    *,
    since_ns: int | None = None,
    prefix: str = "",
) -> list[tuple[str, Change]]:
    """Every change the history of ``workspaces`` ((name, workspace) pairs, each read
    when its turn comes) holds: at or after ``since_ns`` (ns UTC), of keys starting with
    ``prefix``; as (workspace, change), oldest first (by time, then workspace, then
    history id). What retention thinned out is gone (kyfs.core.retention).

    Raises:
        WorkspaceNotFound: (ENOENT, exit 1) from the pairs' source.
        StorageError: (EIO, exit 4).
    """
    found: list[tuple[str, Change]] = []
    for name, workspace in workspaces:
        after = 0
        while True:
            batch = workspace.timeline(after, since_ns=since_ns, prefix=prefix, limit=LOG_BATCH)
            found += [(name, change) for change in batch]
            if len(batch) < LOG_BATCH:
                break
            after = batch[-1].id
    found.sort(key=lambda item: (item[1].time_ns, item[0], item[1].id))
    return found


def each(engine: Engine, names: Iterable[str]) -> Iterator[tuple[str, Workspace]]:
    """(name, workspace) for each of ``names`` in turn, each open (Engine.using) until
    the next is asked for.

    Raises:
        WorkspaceNotFound: (ENOENT, exit 1).
    """
    for name in names:
        with engine.using(name) as workspace:
            yield name, workspace


def watch(
    engine: Engine,
    names: Iterable[str] | None,
    *,
    prefix: str = "",
    stop: threading.Event | None = None,
    poll_s: float = POLL_S,
    ready: threading.Event | None = None,
) -> Iterator[tuple[str, Change]]:
    """The changes of workspaces ``names`` (None: every workspace the engine lists, new
    ones as they come) committed from now on, by any writer (this process included), as
    (workspace, change), each once, in commit order within a workspace; of keys starting
    with ``prefix`` (a rename or link also when its other name does). Runs until ``stop``
    is set (or the caller stops iterating). A workspace dropped meanwhile: with ``names``
    given, WorkspaceNotFound; with None it is no longer watched. ``ready`` is set once
    "now" is fixed (every cursor taken: a change committed after that is seen), at the
    first iteration.

    Raises:
        WorkspaceNotFound: (ENOENT, exit 1) a name given is not (or no longer) a workspace.
        StorageError: (EIO, exit 4).
    """
    every = names is None
    cursors: dict[str, int] = {}
    for name in engine.names() if names is None else names:
        cursors[name] = _last_id(engine, name)
    if ready is not None:
        ready.set()
    listed = time.monotonic()
    told = False  # the engine tells of commits (PostgreSQL's NOTIFY): poll less often
    while stop is None or not stop.is_set():
        if every and time.monotonic() - listed >= RELIST_S:
            listed = time.monotonic()
            current = set(engine.names())
            for name in current - set(cursors):
                cursors[name] = 0  # a new workspace: all of its changes
            for name in set(cursors) - current:
                del cursors[name]
        for name in list(cursors):
            try:
                with engine.using(name) as workspace:
                    changes = workspace.timeline(cursors[name])
            except WorkspaceNotFound:
                if not every:
                    raise
                del cursors[name]
                continue
            if changes:
                cursors[name] = changes[-1].id
            for change in changes:
                if not prefix or matches(change, prefix):
                    yield name, change
        if stop is not None and stop.is_set():
            break
        told = engine.wait_for_changes(IDLE_S if told else poll_s) or told


def _last_id(engine: Engine, name: str) -> int:
    """The id of workspace ``name``'s newest history row now (0: none). Workspace.changes
    starts a workspace opened earlier (a cached one: the Python API's) from when it was
    opened, so the rows since are stepped over: a watch begins now."""
    with engine.using(name) as workspace:
        cursor = workspace.changes(None)[0]
        later = workspace.timeline(cursor)
        return later[-1].id if later else cursor


def matches(change: Change, prefix: str) -> bool:
    """Whether ``change`` is of a key starting with ``prefix``: its key, or the other
    name of a rename or link (detail ``to NAME`` / ``from NAME``), as Workspace.timeline's
    ``prefix`` selects."""
    if change.key.startswith(prefix):
        return True
    detail = change.detail or ""
    return detail.startswith("to " + prefix) or detail.startswith("from " + prefix)


def as_json(workspace: str, change: Change) -> dict[str, Any]:
    """One change as ``kyfs log --json`` and ``kyfs watch --json`` print it: workspace,
    id, time (ISO 8601 UTC), time_ns, action, key, size (bytes, null: none kept), detail,
    source, user, pid, comm (null where not known)."""
    return {
        "workspace": workspace,
        "id": change.id,
        "time": iso(change.time_ns),
        "time_ns": change.time_ns,
        "action": change.action,
        "key": change.key,
        "size": change.size,
        "detail": change.detail,
        "source": change.source,
        "user": change.user,
        "pid": change.pid,
        "comm": change.comm,
    }


def iso(ns: int) -> str:
    """``ns`` (ns UTC) as ISO 8601 UTC with microseconds (``2026-12-07T00:17:33.123456Z``)."""
    when = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def as_line(workspace: str, change: Change, with_workspace: bool = False) -> str:
    """One change as a readable line: time, action, key, size, detail, and who
    (``source user``, and for the mount ``comm[pid]``)."""
    parts = [iso(change.time_ns)]
    if with_workspace:
        parts.append(workspace)
    parts += [f"{change.action:<7}", change.key]
    if change.size is not None:
        parts.append(f"{change.size} bytes")
    if change.detail:
        parts.append(f"({change.detail})")
    who = " ".join(p for p in (change.source, change.user) if p)
    if change.comm or change.pid:
        who += f" {change.comm or '?'}[{change.pid or '?'}]"
    if who:
        parts.append(f"by {who.strip()}")
    return "  ".join(parts)
