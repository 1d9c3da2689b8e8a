"""Vectors on every engine (kyfs.engine.sql.vectors): the chunked store stays exact under
puts, replacements and removals across chunks; the keys' embeddings follow writes
through the pending marks; collections filter on metadata. The embedder here is a
small deterministic one (a hashed bag of words), so these tests check the store, not a
model; tests/test_semantic.py checks the real model."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import numpy as np
import pytest

from kyfs.app import catch_up
from kyfs.core import vectors
from kyfs.core.errors import AlreadyExists, InvalidInput, InvalidName, KeyNotFound, StorageError
from kyfs.engine.base import Engine, Workspace


class HashedWords:
    """A bag of words hashed into ``dim`` buckets: texts sharing words are near."""

    def __init__(self, name: str = "hashed/16", dim: int = 16) -> None:
        self.name = name
        self.dim = dim
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, hashlib.sha256(word.encode()).digest()[0] % self.dim] += 1
        return vectors.normalized(out)


def brute_force(stored: dict[int, np.ndarray], query: np.ndarray, limit: int) -> list[int]:
    q = vectors.normalized(query)[0]
    scored = sorted(
        stored, key=lambda i: (-round(float(vectors.normalized(stored[i])[0] @ q), 6), i)
    )
    return scored[:limit]


def test_collection_store_is_exact_across_chunks(ws: Workspace, engine: Engine) -> None:
    """2,500 vectors (three chunks), 1,000 removed and 300 replaced in mixed batches:
    every query answers as a brute-force scan of what should be there, also for a
    second engine on the same data."""
    rng = np.random.default_rng(7)
    ws.create_collection("docs", 8)
    stored: dict[str, np.ndarray] = {}
    for start in range(0, 2500, 700):
        batch = [
            (f"d{i}", rng.standard_normal(8), {"n": i % 3}, None)
            for i in range(start, min(2500, start + 700))
        ]
        ws.put_items("docs", batch)
        stored.update({name: np.asarray(v, dtype=np.float32) for name, v, _, _ in batch})
    names = sorted(stored)
    random.Random(3).shuffle(names)
    gone, replaced = names[:1000], names[1000:1300]
    assert ws.delete_items("docs", gone[:400]) == 400
    fresh = [(name, rng.standard_normal(8), {"n": 9}, "new") for name in replaced]
    ws.put_items("docs", fresh)
    assert ws.delete_items("docs", [*gone[400:], "no-such-item"]) == 600
    for name in gone:
        del stored[name]
    stored.update({name: np.asarray(v, dtype=np.float32) for name, v, _, _ in fresh})
    assert ws.count_items("docs") == len(stored) == 1500
    ids = sorted(stored)
    by_id = dict(enumerate(ids))
    matrix = {i: stored[name] for i, name in by_id.items()}
    for _ in range(5):
        query = rng.standard_normal(8)
        want = [by_id[i] for i in brute_force(matrix, query, 10)]
        got = [item.name for item in ws.query_items("docs", query, 10)]
        assert got == want
    with engine.using("w") as again:
        assert [i.name for i in again.query_items("docs", query, 10)] == want
    only = ws.query_items("docs", query, 500, where={"n": 9})
    assert {item.name for item in only} == set(replaced)
    assert all(item.document == "new" and item.metadata == {"n": 9} for item in only)
    # scores are the cosine similarities, best first
    top = ws.query_items("docs", query, 3)
    q = vectors.normalized(query)[0]
    for item in top:
        assert item.score == pytest.approx(
            float(vectors.normalized(stored[item.name])[0] @ q), abs=1e-5
        )
    assert [t.score for t in top] == sorted((t.score for t in top), reverse=True)


def test_emptying_a_collection_leaves_no_chunk(ws: Workspace) -> None:
    ws.create_collection("c", 4)
    ws.put_items("c", [(f"x{i}", [1, i, 0, 0], None, None) for i in range(1500)])
    assert ws.delete_items("c", [f"x{i}" for i in range(1500)]) == 1500
    assert ws.query_items("c", [1, 0, 0, 0], 5) == []
    ws.put_items("c", [("again", [0, 1, 0, 0], None, None)])
    assert [i.name for i in ws.query_items("c", [0, 1, 0, 0], 5)] == ["again"]
    assert ws.drop_collection("c") == 1
    assert ws.collections() == []


def test_collection_errors(ws: Workspace) -> None:
    with pytest.raises(InvalidName):
        ws.create_collection(".keys", 4)
    with pytest.raises(InvalidInput):
        ws.create_collection("c", 0)
    ws.create_collection("c", 3)
    with pytest.raises(AlreadyExists):
        ws.create_collection("c", 3)
    with pytest.raises(KeyNotFound):
        ws.put_items("nope", [("a", [1, 2, 3], None, None)])
    for bad in ([1, 2], [1, 2, float("nan")], ["a", "b", "c"]):
        with pytest.raises(InvalidInput):
            ws.put_items("c", [("ok", [1, 2, 3], None, None), ("bad", bad, None, None)])
    with pytest.raises(InvalidInput):
        ws.put_items("c", [("m", [1, 2, 3], ["not", "an", "object"], None)])  # type: ignore[list-item]
    assert ws.count_items("c") == 0  # the good item of a failed batch was not stored
    with pytest.raises(InvalidInput):
        ws.query_items("c", [1, 2], 3)
    with pytest.raises(KeyNotFound):
        ws.drop_collection("nope")


def test_keys_embeddings_follow_writes(ws: Workspace) -> None:
    """Embeddings are kept once asked for; a write marks its node, a catch-up embeds
    it; a delete takes its vector away; a value rewritten between the read of the
    pending text and the store is not stored stale."""
    embedder = HashedWords()
    ws.set("ops/deploy", b"release steps for the staging cluster")
    ws.set("food/lunch", b"pizza on friday in the kitchen")
    assert ws.vector_space() is None
    assert catch_up(ws, embedder, keep=False) == 0  # not kept: nothing made
    assert catch_up(ws, embedder) == 2
    query = embedder.embed(["staging cluster release"])[0]
    best = ws.nearest(vectors.KEYS, query, 1)
    assert ws.keys_of(best[0][0]) == ["ops/deploy"]
    ws.set("food/lunch", b"staging cluster release notes and steps")
    ws.delete("ops/deploy")
    assert catch_up(ws, embedder) == 2
    best = ws.nearest(vectors.KEYS, query, 5)
    assert [ws.keys_of(node) for node, _ in best] == [["food/lunch"]]
    # a mark after the read: the embedding made from the old text is refused
    ws.set("a", b"one two three")
    pending = ws.pending_embeddings(10)
    ws.set("a", b"four five six")
    made = [(node, mark, embedder.embed([text or ""])[0]) for node, mark, text in pending]
    assert ws.store_embeddings(embedder.name, made) == 0
    assert ws.count_pending_embeddings() == 1
    assert catch_up(ws, embedder) == 1
    assert ws.count_pending_embeddings() == 0


def test_another_model_embeds_every_key_again(ws: Workspace) -> None:
    first, second = HashedWords("hashed/16"), HashedWords("hashed/8", 8)
    for i in range(30):
        ws.set(f"k{i}", f"value number {i}".encode())
    assert catch_up(ws, first) == 30
    assert not ws.keep_embeddings(first.name, first.dim)  # kept already: nothing to do
    assert catch_up(ws, second) == 30
    assert ws.vector_space() is not None and ws.vector_space().dim == 8  # type: ignore[union-attr]
    assert ws.store_embeddings(first.name, [(1, 1, np.ones(16))]) == 0  # the old model's
    assert ws.drop_embeddings()
    assert ws.vector_space() is None and ws.count_pending_embeddings() == 0
    ws.set("k0", b"changed")
    ws.flush_index()
    assert ws.count_pending_embeddings() == 0  # not kept: writes mark nothing


def test_int8_keeps_cosine_close(ws: Workspace) -> None:
    """The keys' vectors are stored int8 with a scale each: a stored vector's score
    against any query is within 0.01 of the exact cosine."""
    rng = np.random.default_rng(1)
    ws.set("k", b"x")
    ws.keep_embeddings("fixed", 256)
    exact = rng.standard_normal(256)
    ((node, mark, _),) = ws.pending_embeddings(5)
    assert ws.store_embeddings("fixed", [(node, mark, exact)]) == 1
    for _ in range(20):
        query = rng.standard_normal(256)
        ((_, score),) = ws.nearest(vectors.KEYS, query, 1)
        want = float(vectors.normalized(exact)[0] @ vectors.normalized(query)[0])
        assert abs(score - want) < 0.01


def test_fsck_finds_and_repairs_damaged_vectors(ws: Workspace) -> None:
    """A chunk whose bytes were damaged (a flipped length): reads skip it, a write that
    needs it is one clear error, fsck names it, and --repair keeps every item whose
    vector is sound, removes (and names) the others, and makes the keys' embeddings
    again; afterwards fsck is clean."""
    embedder = HashedWords()
    for i in range(20):
        ws.set(f"k{i}", f"text {i}".encode())
    catch_up(ws, embedder)
    ws.create_collection("c", 2)
    ws.put_items("c", [(f"x{i}", [1, i], None, None) for i in range(2100)])
    assert ws.check() == []
    conn = ws._conn  # type: ignore[attr-defined]
    first = conn.execute("SELECT min(id) FROM vector_chunks WHERE space = 'c'").fetchone()[0]
    conn.execute("UPDATE vector_chunks SET vectors = ? WHERE id = ?", (b"\x00" * 5, first))
    keys_chunk = conn.execute("SELECT min(id) FROM vector_chunks WHERE space = '.keys'").fetchone()[
        0
    ]
    conn.execute(
        "DELETE FROM vector_slots WHERE chunk = ? AND item ="
        " (SELECT min(item) FROM vector_slots WHERE chunk = ?)",
        (keys_chunk, keys_chunk),
    )
    if conn.in_transaction:
        conn.execute("COMMIT")
    problems = ws.check()
    assert any("vector chunks whose bytes" in p for p in problems), problems
    assert any("slots" in p for p in problems), problems
    assert len(ws.query_items("c", [1, 0], 5000)) == 2100 - 1024  # the damaged chunk skipped
    with pytest.raises(StorageError):
        ws.delete_items("c", ["x0"])
    done = ws.repair()
    assert any("1024 items lost their vectors" in line for line in done), done
    assert ws.check() == []
    assert ws.count_items("c") == 2100 - 1024
    assert catch_up(ws, embedder) == 20
    assert ws.check() == []


def test_foreign_metadata_is_read_as_none(ws: Workspace) -> None:
    """A collection item whose stored metadata or document is not what kyfs writes (a
    damaged or foreign file) is found with empty metadata and no document, never a
    traceback."""
    ws.create_collection("c", 2)
    ws.put_items("c", [("a", [1, 0], {"k": 1}, "doc"), ("b", [0, 1], None, None)])
    conn = ws._conn  # type: ignore[attr-defined]
    conn.execute("UPDATE collection_items SET metadata = '{not json' WHERE name = 'a'")
    conn.execute("UPDATE collection_items SET metadata = '[1, 2]' WHERE name = 'b'")
    if conn.in_transaction:
        conn.execute("COMMIT")
    found = {item.name: item for item in ws.query_items("c", [1, 1], 5)}
    assert found["a"].metadata == {} and found["b"].metadata == {}
    assert ws.query_items("c", [1, 1], 5, where={"k": 1}) == []
