"""What a PostgreSQL connection says to its server, for counting statements and round
trips: libpq's own trace (PQtrace, postgresql.org/docs/current/libpq-control.html) of
every protocol message, written one a line to a file per connection, and the count of
those files.

A connection traces when KYFS_PG_TRACE names a directory (kyfs.engine.postgres.connection
starts it); nothing reads this in normal use: the bench and the tests measure with it.

A trace line is ``F`` (sent by the client) or ``B`` (sent by the server), the message's
length and its type (``Parse``, ``Bind``, ``Sync``, ``ReadyForQuery``...). A statement is
one ``Bind`` (extended protocol) or ``Query`` (simple protocol) sent. A round trip is a
``Sync`` or ``Flush`` sent: the client asks for the answers so far and waits for them
(one per statement without pipeline mode; one per result read, and one at the end, in
it). A Flush right after a Sync (psycopg leaving a pipeline) asks for nothing more and
is not counted again.

Thread-safety: libpq writes a connection's trace from whichever thread uses it (one at
a time); :func:`count` reads finished or growing files.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

# Messages after which the client waits for the server: Sync (the end of a statement,
# or of a pipeline's batch) and Flush (psycopg's request for a pipeline's results so far).
WAITS = ("Sync", "Flush")


def start(conn: psycopg.Connection[Any], directory: Path) -> Path:
    """Trace ``conn`` into a new file in ``directory`` (without timestamps); the file
    stays open as long as the process (libpq's stream owns the descriptor). Returns its
    path.

    Raises:
        OSError: the file cannot be made.
    """
    path = directory / f"{os.getpid()}-{secrets.token_hex(4)}.trace"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    conn.pgconn.trace(fd)
    conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
    return path


@dataclass
class Count:
    """Messages of one or more traces: ``statements`` sent, ``round_trips`` (runs of
    client messages answered before the next run), ``commits`` (COMMIT statements)."""

    statements: int = 0
    round_trips: int = 0
    commits: int = 0

    def __add__(self, other: Count) -> Count:
        return Count(
            self.statements + other.statements,
            self.round_trips + other.round_trips,
            self.commits + other.commits,
        )


def count_lines(lines: list[str]) -> Count:
    """The count of one connection's trace lines (``F``/``B``, length, type, details)."""
    found = Count()
    prepared: dict[str, str] = {}  # statement name -> its SQL (psycopg prepares the frequent)
    unnamed = ""
    waiting = False  # the last message sent asked for answers (a Flush after a Sync: one wait)
    for line in lines:
        parts = line.split("\t", 3)
        if len(parts) < 3 or parts[0] != "F":
            continue
        kind, rest = parts[2], (parts[3] if len(parts) > 3 else "")
        if kind in WAITS:
            found.round_trips += not waiting
            waiting = True
            continue
        waiting = False
        if kind == "Parse":
            name, sql = _quoted(rest, 2)
            if name:
                prepared[name] = sql
            else:
                unnamed = sql
        elif kind == "Bind":
            found.statements += 1
            sql = prepared.get(_quoted(rest, 2)[1], "") or unnamed
            found.commits += sql == "COMMIT"
        elif kind == "Query":
            found.statements += 1
            found.commits += _quoted(rest, 1)[0] == "COMMIT"
    return found


def _quoted(text: str, count: int) -> list[str]:
    """The first ``count`` double-quoted fields of a trace line's details."""
    fields = []
    at = 0
    for _ in range(count):
        start = text.find('"', at)
        end = text.find('"', start + 1)
        if start < 0 or end < 0:
            fields.append("")
            continue
        fields.append(text[start + 1 : end])
        at = end + 1
    return fields


def count(directory: Path) -> Count:
    """The sum over every trace file in ``directory``."""
    total = Count()
    for path in sorted(directory.glob("*.trace")):
        total = total + count_lines(path.read_text(errors="replace").splitlines())
    return total
