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
it), or a ``Query`` (the simple protocol, which psycopg uses for a statement without
parameters it has not prepared: the client waits for its answer). A Flush right after
a Sync (psycopg leaving a pipeline) asks for nothing more and is not counted again.

Thread-safety: libpq writes a connection's trace from whichever thread uses it (one at
a time); :func:`count` reads finished or growing files.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
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
    """Messages of one or more traces: ``statements`` sent, ``round_trips`` (waits for
    the server), ``transaction_trips`` (those from a BEGIN to the answer to its COMMIT or
    ROLLBACK), ``commits`` (COMMIT statements)."""

    statements: int = 0
    round_trips: int = 0
    transaction_trips: int = 0
    commits: int = 0

    def __add__(self, other: Count) -> Count:
        return Count(
            self.statements + other.statements,
            self.round_trips + other.round_trips,
            self.transaction_trips + other.transaction_trips,
            self.commits + other.commits,
        )

    def __sub__(self, other: Count) -> Count:
        return Count(
            self.statements - other.statements,
            self.round_trips - other.round_trips,
            self.transaction_trips - other.transaction_trips,
            self.commits - other.commits,
        )


def count_lines(lines: Iterable[str], ignore: Callable[[str], bool] | None = None) -> Count:
    """The count of one connection's trace lines (``F``/``B``, length, type, details);
    statements whose SQL ``ignore`` accepts (a background poll) are left out, with the
    waits for them alone."""
    found = Count()
    prepared: dict[str, str] = {}  # statement name -> its SQL (psycopg prepares the frequent)
    unnamed = ""
    waiting = False  # the last message sent asked for answers (a Flush after a Sync: one wait)
    sent = False  # a statement counted was sent since the last wait
    in_transaction = ending = False
    for line in lines:
        parts = line.split("\t", 3)
        if len(parts) < 3 or parts[0] != "F":
            continue
        kind, rest = parts[2], (parts[3] if len(parts) > 3 else "")
        if kind in WAITS:
            if not waiting and (sent or in_transaction):
                found.round_trips += 1
                found.transaction_trips += in_transaction
            waiting, sent = True, False
            if ending:
                in_transaction = ending = False
            continue
        if kind == "Parse":
            name, sql = _quoted(rest, 2)
            if name:
                prepared[name] = sql
            else:
                unnamed = sql
            continue
        if kind == "Bind":
            sql = prepared.get(_quoted(rest, 2)[1], "") or unnamed
        elif kind == "Query":
            sql = _quoted(rest, 1)[0]
        else:
            continue
        waiting = False
        if ignore is not None and ignore(sql):
            continue
        found.statements += 1
        found.commits += sql == "COMMIT"
        sent = True
        if sql.startswith("BEGIN"):
            in_transaction = True
        elif sql in ("COMMIT", "ROLLBACK"):
            ending = in_transaction
        if kind == "Query":  # the simple protocol: the client waits for its answer
            found.round_trips += 1
            found.transaction_trips += in_transaction
            waiting, sent = True, False
            if ending:
                in_transaction = ending = False
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


def count(directory: Path, ignore: Callable[[str], bool] | None = None) -> Count:
    """The sum over every trace file in ``directory`` (``ignore``: as :func:`count_lines`)."""
    total = Count()
    for path in sorted(directory.glob("*.trace")):
        total = total + count_lines(path.read_text(errors="replace").splitlines(), ignore)
    return total
