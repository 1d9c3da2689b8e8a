"""The block store's SQL (kyfs.engine.sql.blocks) against a model: any sequence of writes,
truncations, holes punched and whole replacements reads back as a plain bytearray would,
every block is referenced exactly as often as ``refs`` says, no unreferenced block stays,
and a node's ``stored`` is the bytes of its extents. SQLite in
memory (the contract tests run the same code through both engines)."""

from __future__ import annotations

import random
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyfs.core import blocks as cutting
from kyfs.core.blocks import BlockList
from kyfs.core.errors import DamagedBlock
from kyfs.engine.sql import blocks
from kyfs.engine.sqlite.schema import BLOCK_STORE_DDL

STEP = 4096  # the buffer's block size in these tests


def connect() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(BLOCK_STORE_DDL)
    conn.execute("CREATE TABLE nodes (id INTEGER PRIMARY KEY, stored INTEGER NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO nodes (id) VALUES (1)")  # the owner the tests write
    return conn


def content(seed: int, size: int) -> bytes:
    """Half text-like (repeating words, so blocks dedupe), half random."""
    rng = random.Random(seed)
    words = [b"alpha ", b"beta\n", b"gamma ", b"delta; ", b"{key: 1}\n"]
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.5:
            out += rng.randbytes(rng.randrange(1, 2000))
        else:
            out += b"".join(rng.choice(words) for _ in range(rng.randrange(1, 400)))
    return bytes(out[:size])


def consistent(conn: sqlite3.Connection, owners: dict[int, bytearray]) -> None:
    """Every owner reads back as its model; refs match the extents; no block is unused
    or too long; extents never overlap."""
    for owner, model in owners.items():
        assert blocks.read(conn, owner, 0, len(model), len(model)) == bytes(model)
        rows = conn.execute(
            "SELECT e.pos, b.size FROM extents e JOIN blocks b ON b.id = e.block"
            " WHERE e.owner = ? ORDER BY e.pos",
            (owner,),
        ).fetchall()
        end = 0
        for pos, size in rows:
            assert pos >= end and 0 < size <= cutting.MAX_BLOCK
            end = pos + size
        assert end <= len(model)
        if owner > 0:  # a live node counts its extents' bytes (st_blocks)
            assert conn.execute("SELECT stored FROM nodes WHERE id = ?", (owner,)).fetchone() == (
                sum(size for _, size in rows),
            )
    counted = dict(conn.execute("SELECT block, count(*) FROM extents GROUP BY block").fetchall())
    stored = dict(conn.execute("SELECT id, refs FROM blocks").fetchall())
    assert counted == stored


class Buffer:
    """An open file's changes as the mount keeps them (kyfs.vfs.openfile), simplified."""

    def __init__(self, model: bytearray) -> None:
        self.old = bytes(model)
        self.size = len(model)
        self.valid = len(model)
        self.changed = BlockList(STEP)
        self.view = bytearray(model)

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end > len(self.view):
            self.view += bytes(end - len(self.view))
        self.view[offset:end] = data
        self.size = max(self.size, end)
        for idx in range(offset // STEP, (end - 1) // STEP + 1):
            block = bytes(self.view[idx * STEP : min((idx + 1) * STEP, self.size)])
            self.changed._blocks[idx] = block

    def truncate(self, size: int) -> None:
        if size < self.size:
            del self.view[size:]
            self.valid = min(self.valid, size)
            for idx in [i for i in self.changed._blocks if i * STEP >= size]:
                del self.changed._blocks[idx]
            if size % STEP and size // STEP in self.changed._blocks:
                self.changed._blocks[size // STEP] = bytes(self.view[(size // STEP) * STEP :])
        else:
            self.view += bytes(size - len(self.view))
        self.size = size


operation = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 200_000), st.integers(1, 70_000), st.integers()),
    st.tuples(st.just("truncate"), st.integers(0, 250_000), st.just(0), st.just(0)),
    st.tuples(st.just("commit"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("replace"), st.integers(0, 150_000), st.just(0), st.integers()),
    st.tuples(st.just("punch"), st.integers(0, 200_000), st.integers(1, 90_000), st.just(0)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(operation, min_size=1, max_size=12), st.integers(0, 2**32))
def test_rewrites_read_back_as_the_model(ops: list[tuple[str, int, int, int]], seed: int) -> None:
    conn = connect()
    model = bytearray()
    copies: dict[int, bytearray] = {}
    buffer = Buffer(model)
    for n, (kind, a, b, c) in enumerate(ops):
        conn.execute("BEGIN")
        if kind == "write":
            buffer.write(a, content(c, b))
        elif kind == "truncate":
            buffer.truncate(a)
        elif kind == "replace":
            model = bytearray(content(c, a))
            blocks.replace(
                conn, 1, [bytes(model[i : i + 5000]) for i in range(0, len(model), 5000)]
            )
            buffer = Buffer(model)
        elif kind == "punch":  # fallocate(PUNCH_HOLE) commits the buffer, then the hole
            blocks.rewrite(conn, 1, len(model), buffer.size, buffer.valid, buffer.changed)
            model = bytearray(buffer.view[: buffer.size])
            blocks.punch(conn, 1, a, min(a + b, len(model)))
            model[a : a + b] = bytes(len(model[a : a + b]))
            buffer = Buffer(model)
        else:
            blocks.rewrite(conn, 1, len(model), buffer.size, buffer.valid, buffer.changed)
            model = bytearray(buffer.view[: buffer.size])
            buffer = Buffer(model)
            if n % 3 == 0:  # a history version shares the value's blocks
                blocks.copy(conn, 1, -(n + 1))
                copies[-(n + 1)] = bytearray(model)
        conn.execute("COMMIT")
        consistent(conn, {1: model, **copies})
    for owner in list(copies):
        blocks.drop(conn, owner)
        del copies[owner]
        consistent(conn, {1: model, **copies})


def test_an_append_costs_one_new_block() -> None:
    conn = connect()
    base = content(7, 100_000)
    blocks.replace(conn, 1, [base])
    before = conn.execute("SELECT count(*) FROM blocks").fetchone()[0]
    size = len(base)
    for n in range(20):
        line = f"line {n} appended to the log\n".encode()
        changes = BlockList(STEP)
        first = size // STEP
        value = blocks.read(conn, 1, first * STEP, size, size) + line
        for at in range(0, len(value), STEP):
            changes._blocks[first + at // STEP] = value[at : at + STEP]
        blocks.copy(conn, 1, -(n + 1))  # the version before keeps its blocks
        blocks.rewrite(conn, 1, size, size + len(line), size, changes)
        size += len(line)
    after = conn.execute("SELECT count(*) FROM blocks").fetchone()[0]
    assert after - before <= 20 + 2  # one new last block per append
    assert blocks.read(conn, 1, 0, size, size).startswith(base)


def test_an_insert_in_the_middle_keeps_most_blocks() -> None:
    conn = connect()
    base = content(3, 400_000)
    blocks.replace(conn, 1, [base])
    old = set(conn.execute("SELECT id FROM blocks").fetchall())
    blocks.copy(conn, 1, -1)
    edited = base[:200_000] + b"an inserted line\n" + base[200_000:]
    blocks.replace(conn, 1, [edited])
    new = set(conn.execute("SELECT block FROM extents WHERE owner = 1").fetchall())
    assert len(new - old) <= 3


def test_a_flipped_byte_is_never_served() -> None:
    conn = connect()
    value = content(11, 50_000)
    blocks.replace(conn, 1, [value])
    block_id, data = conn.execute("SELECT id, data FROM blocks ORDER BY id LIMIT 1").fetchone()
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x10
    conn.execute("UPDATE blocks SET data = ? WHERE id = ?", (bytes(damaged), block_id))
    with pytest.raises(DamagedBlock):
        blocks.read(conn, 1, 0, len(value), len(value))


def test_a_change_in_the_middle_cuts_only_the_blocks_around_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database's page write in the middle of a 4 MiB file cuts again a few blocks, not
    everything after it (each commit of a SQLite database kept in a workspace)."""
    conn = connect()
    value = bytearray(content(5, 4_000_000))
    blocks.replace(conn, 1, [bytes(value)])
    stored: list[int] = []
    real = blocks.store
    monkeypatch.setattr(blocks, "store", lambda c, data: stored.append(len(data)) or real(c, data))
    at = 2_000_000 // STEP
    value[at * STEP + 100 : at * STEP + 200] = b"x" * 100
    changes = BlockList(STEP, [(at, bytes(value[at * STEP : (at + 1) * STEP]))])
    blocks.rewrite(conn, 1, len(value), len(value), len(value), changes)
    assert blocks.read(conn, 1, 0, len(value), len(value)) == bytes(value)
    assert sum(stored) < 3 * STEP + 4 * cutting.MAX_BLOCK  # not the 2 MB after it
    consistent(conn, {1: value})
