"""Vectors of a workspace, for semantic search: its keys' embeddings and its collections.

Tables (both engines; kyfs.core.vectors says how vectors are stored and scored):

``vector_spaces(name, dim, codec, model)``
    One row per vector space: KEYS (the keys' embeddings, made by the embedder named
    ``model``, kyfs.platform.embedders) or a collection's name.
``vector_chunks(id, space, count, items, scales, vectors)``
    Up to kyfs.core.vectors.CHUNK vectors of one space per row; a space's chunks are
    kept dense (a removed vector's place is taken by the space's last one), so that a
    search reads few rows.
``vector_slots(space, item, chunk, slot)``
    Where each item's vector is: an item is a node id (KEYS) or a collection item's id.
``embed_pending(node_id, gen)``
    Nodes whose embedding is stale: the full-text index marks every node it (re)indexes
    once the workspace has KEYS (:func:`mark_embeddings`), ``gen`` counting the marks, so
    that an embedding made from text read before a newer mark is not taken as current.
``collection_items(id, collection, name, metadata, document)``
    A collection's items (contextd's collections): a name unique in its collection,
    metadata as a JSON object, an optional document text.

Embedding runs outside any transaction, in whoever catches up (a search, the daemon's
indexer): :meth:`VectorsMixin.pending_embeddings` reads the texts,
:meth:`VectorsMixin.store_embeddings` writes the vectors in one transaction.

Thread-safety: as kyfs.engine.sql.base.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kyfs.core import vectors
from kyfs.core.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidName,
    KeyNotFound,
    StorageError,
)
from kyfs.core.vectors import KEYS, CollectionItem, Space
from kyfs.engine.sql.base import Base, Connection

if TYPE_CHECKING:
    import numpy as np

COLLECTION_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_METADATA = 64 * 1024  # bytes of one item's metadata, as JSON
MAX_DOCUMENT = 1024 * 1024  # bytes of one item's document
EMBED_CHARS = 4000  # characters of a value an embedding reads

SQL_SPACE = "SELECT dim, codec, model FROM vector_spaces WHERE name = ?"
SQL_CHUNKS = (
    "SELECT id, count, items, scales, vectors FROM vector_chunks WHERE space = ? ORDER BY id"
)
SQL_MARK = (  # a node indexed, or one that had a vector: others have nothing to embed
    "INSERT INTO embed_pending (node_id, gen) SELECT ?, 1 WHERE EXISTS (SELECT 1 FROM"
    f" search_text WHERE id = ?) OR EXISTS (SELECT 1 FROM vector_slots WHERE space = '{KEYS}'"
    " AND item = ?) ON CONFLICT (node_id) DO UPDATE SET gen = embed_pending.gen + 1"
)


_WIDTH = "(CASE WHEN s.codec = 'int8' THEN 1 ELSE 4 END)"
_PENDING = (
    "s.item IN (SELECT node_id FROM embed_pending) OR s.item IN (SELECT node_id FROM index_pending)"
)
CHUNKS_MALFORMED = "vector chunks whose bytes do not hold their vectors"
VECTOR_CHECKS = [  # fsck's rules for the vectors (run by both engines)
    (
        CHUNKS_MALFORMED,
        "SELECT c.id FROM vector_chunks c LEFT JOIN vector_spaces s ON s.name = c.space"
        " WHERE s.name IS NULL OR s.codec NOT IN ('int8', 'float32') OR s.dim < 1"
        f" OR s.dim > {vectors.MAX_DIM} OR c.count < 1 OR c.count > {vectors.CHUNK}"
        " OR length(c.items) != 8 * c.count"
        f" OR length(c.vectors) != c.count * s.dim * {_WIDTH}"
        " OR length(c.scales) != (CASE WHEN s.codec = 'int8' THEN 4 * c.count ELSE 0 END)",
    ),
    (
        "vector slots of no chunk, or past its end",
        "SELECT s.item FROM vector_slots s LEFT JOIN vector_chunks c ON c.id = s.chunk"
        " AND c.space = s.space WHERE c.id IS NULL OR s.slot < 0 OR s.slot >= c.count",
    ),
    (
        "vector chunks holding another number of vectors than their slots say",
        "SELECT c.id FROM vector_chunks c WHERE c.count !="
        " (SELECT count(*) FROM vector_slots s WHERE s.chunk = c.id)",
    ),
    (
        "collection items without a vector",
        "SELECT i.id FROM collection_items i WHERE NOT EXISTS (SELECT 1 FROM vector_slots s"
        " WHERE s.space = i.collection AND s.item = i.id)",
    ),
    (
        "vectors of no collection item or key",
        f"SELECT s.item FROM vector_slots s WHERE (s.space = '{KEYS}' AND NOT EXISTS (SELECT 1"
        f" FROM search_text t WHERE t.id = s.item) AND NOT ({_PENDING})) OR (s.space !="
        f" '{KEYS}' AND NOT EXISTS (SELECT 1 FROM collection_items i WHERE i.id = s.item"
        f" AND i.collection = s.space))",
    ),
    (
        "keys without an embedding in a workspace that keeps them",
        f"SELECT t.id FROM search_text t WHERE EXISTS (SELECT 1 FROM vector_spaces"
        f" WHERE name = '{KEYS}') AND NOT EXISTS (SELECT 1 FROM vector_slots s WHERE"
        f" s.space = '{KEYS}' AND s.item = t.id) AND t.id NOT IN (SELECT node_id FROM"
        f" embed_pending) AND t.id NOT IN (SELECT node_id FROM index_pending)",
    ),
]


def repair_vectors(conn: Connection) -> list[str]:
    """fsck --repair, inside the caller's transaction: when any of VECTOR_CHECKS finds
    something, every space is written again from what can still be read. The keys'
    embeddings are dropped and every key marked to be embedded again (they are derived);
    a collection keeps each item whose vector is in a sound chunk and loses the others
    (named in what is returned: their vectors are gone, put them again). Returns what
    was done."""
    if not any(conn.execute(query).fetchone() for _, query in VECTOR_CHECKS):
        return []
    done: list[str] = []
    kept = conn.execute(SQL_SPACE, (KEYS,)).fetchone()
    conn.execute("DELETE FROM vector_chunks WHERE space = ?", (KEYS,))
    conn.execute("DELETE FROM vector_slots WHERE space = ?", (KEYS,))
    if kept is not None:
        conn.execute("DELETE FROM embed_pending")
        conn.execute("INSERT INTO embed_pending (node_id, gen) SELECT id, 1 FROM search_text")
        done.append("the keys' embeddings will be made again")
    bad = {int(row[0]) for row in conn.execute(dict(VECTOR_CHECKS)[CHUNKS_MALFORMED])}
    spaces = conn.execute(
        "SELECT name, dim, codec, model FROM vector_spaces WHERE name != ?", (KEYS,)
    ).fetchall()
    for name, dim, codec, model in spaces:
        space = Space(name, int(dim), codec, model)
        if codec not in vectors.CODECS or not 0 < space.dim <= vectors.MAX_DIM:
            conn.execute("DELETE FROM vector_spaces WHERE name = ?", (name,))
            conn.execute("DELETE FROM collection_items WHERE collection = ?", (name,))
            conn.execute("DELETE FROM vector_chunks WHERE space = ?", (name,))
            conn.execute("DELETE FROM vector_slots WHERE space = ?", (name,))
            done.append(f"removed collection {name}: its settings cannot be read")
            continue
        found: dict[int, Any] = {}
        for chunk_id, count, items, scales, data in conn.execute(
            "SELECT id, count, items, scales, vectors FROM vector_chunks WHERE space = ?",
            (name,),
        ).fetchall():
            if int(chunk_id) in bad:
                continue
            ids = vectors.decode_ids(bytes(items))
            matrix = vectors.decode(bytes(data), bytes(scales), int(count), space.dim, codec)
            found.update(zip((int(i) for i in ids), matrix, strict=True))
        conn.execute("DELETE FROM vector_chunks WHERE space = ?", (name,))
        conn.execute("DELETE FROM vector_slots WHERE space = ?", (name,))
        editor = _Editor(conn, space)
        lost = []
        for item, item_name in conn.execute(
            "SELECT id, name FROM collection_items WHERE collection = ? ORDER BY id", (name,)
        ).fetchall():
            if int(item) in found:
                editor.put(int(item), found[int(item)])
            else:
                lost.append(item_name)
                conn.execute("DELETE FROM collection_items WHERE id = ?", (item,))
        editor.save()
        done.append(f"rewrote the vectors of collection {name}")
        if lost:
            shown = ", ".join(str(n) for n in lost[:10]) + (" ..." if len(lost) > 10 else "")
            done.append(
                f"collection {name}: {len(lost)} items lost their vectors and were removed"
                f" (put them again): {shown}"
            )
    return done


def mark_embeddings(conn: Connection, node_ids: Sequence[int]) -> None:
    """Inside the caller's transaction (the full-text index's flush): the embeddings of
    ``node_ids`` are stale, when the workspace keeps embeddings at all."""
    if node_ids and conn.execute(SQL_SPACE, (KEYS,)).fetchone() is not None:
        conn.executemany(SQL_MARK, [(node_id, node_id, node_id) for node_id in node_ids])


def check_collection_name(name: str) -> None:
    """Raises InvalidName (exit 2) unless ``name`` is a collection's name: 1-128 of
    ``A-Z a-z 0-9 _ . -``, starting with a letter or digit."""
    if not COLLECTION_NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid collection name {name!r}: 1-128 of A-Z a-z 0-9 _ . -,"
            " starting with a letter or digit"
        )


@dataclass
class _Chunk:
    """One stored chunk, held in memory while a transaction edits it."""

    id: int
    ids: list[int]
    data: np.ndarray  # (n, dim) in the codec's own type (int8 or float32)
    scales: np.ndarray  # (n,) float32; ones for float32
    dirty: bool = False


class _Editor:
    """Edits one space's chunks inside a transaction: put and remove vectors, then
    :meth:`save`. Chunks are read as they are needed, and written once each."""

    def __init__(self, conn: Connection, space: Space) -> None:
        import numpy as np

        self.conn = conn
        self.space = space
        self.raw = np.int8 if space.codec == "int8" else np.float32
        self.chunks: dict[int, _Chunk] = {}
        self.slots: dict[int, tuple[int, int] | None] = {}  # item -> (chunk, slot); None: gone
        self.changed: set[int] = set()  # items whose slot row must be written
        self.last_id: int | None = None  # the last chunk's id (0: none), once known

    def _chunk(self, chunk_id: int) -> _Chunk:
        import numpy as np

        if chunk_id not in self.chunks:
            row = self.conn.execute(
                "SELECT count, items, scales, vectors FROM vector_chunks WHERE id = ?",
                (chunk_id,),
            ).fetchone()
            count, dim = int(row[0]), self.space.dim
            try:
                data = np.frombuffer(bytes(row[3]), dtype=self.raw, count=count * dim)
                scales = (
                    np.frombuffer(bytes(row[2]), dtype="<f4", count=count)
                    if self.space.codec == "int8"
                    else np.ones(count, dtype=np.float32)
                )
                ids = [int(i) for i in vectors.decode_ids(bytes(row[1]))]
                if len(ids) != count:
                    raise ValueError("ids")
            except (ValueError, TypeError):
                raise StorageError(
                    f"the vectors of {self.space.name} are damaged (chunk {chunk_id}):"
                    " kyfs fsck --repair rewrites them"
                ) from None
            self.chunks[chunk_id] = _Chunk(
                chunk_id, ids, data.reshape(count, dim).copy(), scales.copy()
            )
        return self.chunks[chunk_id]

    def _slot(self, item: int) -> tuple[int, int] | None:
        if item not in self.slots:
            row = self.conn.execute(
                "SELECT chunk, slot FROM vector_slots WHERE space = ? AND item = ?",
                (self.space.name, item),
            ).fetchone()
            self.slots[item] = None if row is None else (int(row[0]), int(row[1]))
        return self.slots[item]

    def _last(self) -> _Chunk | None:
        """The space's last chunk (the only one that may be less than full), or None."""
        if self.last_id is None:
            row = self.conn.execute(
                "SELECT max(id) FROM vector_chunks WHERE space = ?",
                (self.space.name,),
            ).fetchone()
            self.last_id = 0 if row[0] is None else int(row[0])
        return self._chunk(self.last_id) if self.last_id else None

    def _emptied(self, chunk: _Chunk) -> None:
        """``chunk``, the last, lost its last vector: the one before it is last now."""
        row = self.conn.execute(
            "SELECT max(id) FROM vector_chunks WHERE space = ? AND id < ?",
            (self.space.name, chunk.id),
        ).fetchone()
        self.last_id = 0 if row[0] is None else int(row[0])

    def put(self, item: int, vector: np.ndarray) -> None:
        """Store ``vector`` (dim,) float32 for ``item``, replacing its old one."""
        import numpy as np

        data, scales = vectors.encode(vector[None, :], self.space.codec)
        raw = np.frombuffer(data, dtype=self.raw).reshape(1, self.space.dim)
        scale = (
            np.frombuffer(scales, dtype="<f4", count=1)[0]
            if self.space.codec == "int8"
            else np.float32(1.0)
        )
        where = self._slot(item)
        if where is None:
            chunk = self._last()
            if chunk is None or len(chunk.ids) >= vectors.CHUNK:
                chunk = self._new_chunk()
            chunk.ids.append(item)
            chunk.data = np.concatenate([chunk.data, raw])
            chunk.scales = np.append(chunk.scales, scale).astype(np.float32)
            where = (chunk.id, len(chunk.ids) - 1)
            self.slots[item] = where
            self.changed.add(item)
        else:
            chunk = self._chunk(where[0])
            chunk.data[where[1]] = raw[0]
            chunk.scales[where[1]] = scale
        chunk.dirty = True

    def _new_chunk(self) -> _Chunk:
        import numpy as np

        row = self.conn.execute(
            "INSERT INTO vector_chunks (space, count, items, scales, vectors)"
            " VALUES (?, 0, ?, ?, ?) RETURNING id",
            (self.space.name, b"", b"", b""),
        ).fetchone()
        chunk = _Chunk(
            int(row[0]),
            [],
            np.empty((0, self.space.dim), dtype=self.raw),
            np.empty(0, dtype=np.float32),
        )
        self.chunks[chunk.id] = chunk
        self.last_id = chunk.id
        return chunk

    def remove(self, item: int) -> None:
        """Remove ``item``'s vector, if it has one: the space's last vector takes its place."""
        where = self._slot(item)
        if where is None:
            return
        chunk = self._chunk(where[0])
        last = self._last()
        assert last is not None  # the item's own chunk exists
        moved = last.ids[-1]
        if moved != item:
            chunk.data[where[1]] = last.data[-1]
            chunk.scales[where[1]] = last.scales[-1]
            chunk.ids[where[1]] = moved
            self.slots[moved] = where
            self.changed.add(moved)
            chunk.dirty = True
        last.ids.pop()
        last.data = last.data[:-1]
        last.scales = last.scales[:-1]
        last.dirty = True
        if not last.ids:
            self._emptied(last)
        self.slots[item] = None
        self.changed.add(item)

    def save(self) -> None:
        """Write every changed chunk and slot."""
        import numpy as np

        for chunk in self.chunks.values():
            if not chunk.dirty:
                continue
            if not chunk.ids:
                self.conn.execute("DELETE FROM vector_chunks WHERE id = ?", (chunk.id,))
                continue
            scales = chunk.scales.astype("<f4").tobytes() if self.space.codec == "int8" else b""
            data = chunk.data.astype("<f4" if self.space.codec == "float32" else np.int8)
            self.conn.execute(
                "UPDATE vector_chunks SET count = ?, items = ?, scales = ?, vectors = ?"
                " WHERE id = ?",
                (len(chunk.ids), vectors.encode_ids(chunk.ids), scales, data.tobytes(),
                 chunk.id),
            )  # fmt: skip
        gone = [(self.space.name, item) for item in self.changed if self.slots[item] is None]
        kept = [
            (self.space.name, item, *where)
            for item in self.changed
            if (where := self.slots[item]) is not None
        ]
        if gone:
            self.conn.executemany("DELETE FROM vector_slots WHERE space = ? AND item = ?", gone)
        if kept:
            self.conn.executemany(
                "INSERT INTO vector_slots (space, item, chunk, slot) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (space, item) DO UPDATE SET chunk = excluded.chunk,"
                " slot = excluded.slot",
                kept,
            )


class VectorsMixin(Base):
    """The keys' embeddings and the collections of one workspace (see the module)."""

    def flush_index(self, limit: int | None = None) -> int:
        """The engine's full-text index catch-up (kyfs.engine.base.Workspace)."""
        raise NotImplementedError

    # The pending nodes with the text to embed: (node_id, gen, key, value or NULL); a
    # node without a full-text row (gone, or not a regular file) has NULL key. Set by
    # each engine (the text is packed in SQLite's index, plain in PostgreSQL's).
    _SQL_PENDING_TEXT: str = ""

    # --- spaces ----------------------------------------------------------------------------
    def vector_space(self, name: str = KEYS) -> Space | None:
        """The vector space ``name`` (KEYS: the keys' embeddings), or None."""
        row = self._row(SQL_SPACE, (name,))
        return None if row is None else Space(name, int(row[0]), row[1], row[2])

    def keep_embeddings(self, model: str, dim: int) -> bool:
        """From now on keep an embedding of every key, made by the embedder ``model``
        (``dim`` dimensions, stored int8). When the workspace kept none, or kept another
        model's, every key becomes pending (:meth:`pending_embeddings`) and the old
        vectors go. True when that happened, False when it kept ``model``'s already.

        Raises:
            InvalidInput: (exit 2) ``dim`` is not 1..kyfs.core.vectors.MAX_DIM.
        """
        if not 0 < dim <= vectors.MAX_DIM:
            raise InvalidInput(f"an embedding has 1 to {vectors.MAX_DIM} dimensions, not {dim}")
        space = self.vector_space(KEYS)
        if space is not None and space.model == model and space.dim == dim:
            return False
        with self._atomic() as conn:
            self._drop_space(conn, KEYS)
            conn.execute(
                "INSERT INTO vector_spaces (name, dim, codec, model) VALUES (?, ?, 'int8', ?)",
                (KEYS, dim, model),
            )
            conn.execute("DELETE FROM embed_pending")
            conn.execute("INSERT INTO embed_pending (node_id, gen) SELECT id, 1 FROM search_text")
        return True

    def drop_embeddings(self) -> bool:
        """Keep no embeddings of the keys any more (their vectors go); True when it kept
        some."""
        if self.vector_space(KEYS) is None:
            return False
        with self._atomic() as conn:
            self._drop_space(conn, KEYS)
            conn.execute("DELETE FROM embed_pending")
        return True

    def _drop_space(self, conn: Connection, name: str) -> None:
        for table in ("vector_chunks", "vector_slots"):
            conn.execute(f"DELETE FROM {table} WHERE space = ?", (name,))
        conn.execute("DELETE FROM vector_spaces WHERE name = ?", (name,))

    def pending_embeddings(self, limit: int) -> list[tuple[int, int, str | None]]:
        """Up to ``limit`` nodes whose embedding is stale: (node id, mark, the text to
        embed: its keys and the start of its value, EMBED_CHARS characters at most;
        None when the node left the index: its vector goes). The full-text index is
        brought up to date first."""
        self.flush_index()
        rows = self._rows(self._SQL_PENDING_TEXT, (limit,))
        out: list[tuple[int, int, str | None]] = []
        for node_id, gen, key, value in rows:
            if key is None:
                out.append((int(node_id), int(gen), None))
                continue
            words = re.sub(r"[/._-]+", " ", key)
            text = words if not value else f"{words}\n{value[:EMBED_CHARS]}"
            out.append((int(node_id), int(gen), text))
        return out

    def store_embeddings(self, model: str, done: Iterable[tuple[int, int, Any]]) -> int:
        """Store the embeddings ``done``: (node id, the mark :meth:`pending_embeddings`
        gave, a (dim,) float vector or None to remove the node's), in one transaction.
        An embedding whose node was written again meanwhile is left out (its new text is
        pending: the full-text index is caught up first, which marks it); so is
        everything when the workspace now keeps another model's. A write that lands
        between that catch-up and the store marks its node afresh once indexed, so its
        embedding is made again.
        Returns how many were stored or removed."""
        stored = 0
        self.flush_index()  # a write since the texts were read marks its node again
        with self._atomic() as conn:
            row = conn.execute(SQL_SPACE, (KEYS,)).fetchone()
            if row is None or row[2] != model:
                return 0
            editor = _Editor(conn, Space(KEYS, int(row[0]), row[1], row[2]))
            for node_id, gen, vector in done:
                current = conn.execute(
                    "SELECT gen FROM embed_pending WHERE node_id = ?", (node_id,)
                ).fetchone()
                if current is None or int(current[0]) != gen:
                    continue
                if vector is None:
                    editor.remove(node_id)
                else:
                    editor.put(node_id, vectors.normalized(vector)[0])
                conn.execute("DELETE FROM embed_pending WHERE node_id = ?", (node_id,))
                stored += 1
            editor.save()
        return stored

    def count_pending_embeddings(self) -> int:
        """How many nodes wait for their embedding: those marked, and, where the
        workspace keeps embeddings, those still waiting for the full-text index (which
        marks them)."""
        marked = int(self._row("SELECT count(*) FROM embed_pending")[0])
        if self.vector_space(KEYS) is None:
            return marked
        return marked + int(self._row("SELECT count(*) FROM index_pending")[0])

    def nearest(
        self, space: str, query: Any, limit: int, allowed: Collection[int] | None = None
    ) -> list[tuple[int, float]]:
        """The ``limit`` items of ``space`` whose vectors are nearest ``query`` ((dim,)
        floats) by cosine similarity: (item id, similarity in [-1, 1]), best first, ties
        by id; only items in ``allowed`` when given. Exact: every stored vector is scored
        (kyfs.core.vectors).

        Raises:
            InvalidInput: (exit 2) ``query`` has not the space's dimensions.
            KeyNotFound: (exit 1) no such space.
        """
        import numpy as np

        found = self.vector_space(space)
        if found is None:
            raise KeyNotFound(f"no vectors: {space}")
        try:
            query = vectors.parse_vector(query, found.dim)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        top = vectors.TopK(query, limit)
        with self._bulk_read(), self._snapshot() as conn:
            for _, count, items, scales, data in conn.execute(SQL_CHUNKS, (space,)):
                ids = vectors.decode_ids(bytes(items))[: int(count)]
                try:
                    scores = vectors.similarities(
                        bytes(data), bytes(scales), int(count), found.dim, found.codec, top.query
                    )
                except ValueError:  # a chunk that does not hold its vectors: fsck tells
                    continue
                mask = None if allowed is None else np.isin(ids, list(allowed))
                top.add(ids, scores, mask)
        return top.best()

    # --- collections (contextd's) ------------------------------------------------------
    def collections(self) -> list[Space]:
        """Every collection, by name."""
        rows = self._rows(
            "SELECT name, dim, codec, model FROM vector_spaces WHERE name <> ? ORDER BY name",
            (KEYS,),
        )
        return [Space(r[0], int(r[1]), r[2], r[3]) for r in rows]

    def create_collection(self, name: str, dim: int) -> None:
        """A new, empty collection ``name`` of ``dim``-dimensional vectors (float32, exact).

        Raises:
            InvalidName: (exit 2) a bad name. InvalidInput: (exit 2) a bad ``dim``.
            AlreadyExists: (EEXIST, exit 3) the collection exists.
        """
        check_collection_name(name)
        if not 0 < dim <= vectors.MAX_DIM:
            raise InvalidInput(f"a collection's vectors have 1 to {vectors.MAX_DIM} dimensions")
        with self._atomic() as conn:
            if conn.execute(SQL_SPACE, (name,)).fetchone() is not None:
                raise AlreadyExists(f"collection exists: {name}")
            conn.execute(
                "INSERT INTO vector_spaces (name, dim, codec, model)"
                " VALUES (?, ?, 'float32', NULL)",
                (name, dim),
            )

    def drop_collection(self, name: str) -> int:
        """Remove collection ``name`` and its items; returns how many items it had.

        Raises:
            KeyNotFound: (ENOENT, exit 1) no such collection.
        """
        with self._atomic() as conn:
            self._collection(conn, name)
            count = conn.execute(
                "SELECT count(*) FROM collection_items WHERE collection = ?", (name,)
            ).fetchone()[0]
            conn.execute("DELETE FROM collection_items WHERE collection = ?", (name,))
            self._drop_space(conn, name)
        return int(count)

    def _collection(self, conn: Connection, name: str) -> Space:
        row = conn.execute(SQL_SPACE, (name,)).fetchone()
        if row is None or name == KEYS:
            raise KeyNotFound(f"collection not found: {name}")
        return Space(name, int(row[0]), row[1], row[2])

    def put_items(
        self,
        collection: str,
        items: Iterable[tuple[str, Any, dict[str, Any] | None, str | None]],
    ) -> int:
        """Insert or replace items of ``collection``: (name, vector, metadata, document),
        all in one transaction (nothing is stored when one is bad). Returns how many.

        Raises:
            KeyNotFound: (exit 1) no such collection.
            InvalidInput: (exit 2) a vector of other dimensions or not finite numbers,
                metadata that is not a JSON object or over MAX_METADATA bytes, a document
                over MAX_DOCUMENT bytes, an empty or over-long name (1-1024 characters).
        """
        count = 0
        with self._atomic() as conn:
            space = self._collection(conn, collection)
            editor = _Editor(conn, space)
            for name, vector, metadata, document in items:
                if not isinstance(name, str) or not 0 < len(name) <= 1024:
                    raise InvalidInput(f"an item's name is 1-1024 characters: {name!r}")
                try:
                    parsed = vectors.parse_vector(vector, space.dim)
                except ValueError as exc:
                    raise InvalidInput(f"item {name}: {exc}") from None
                meta = _metadata_json(name, metadata)
                if document is not None and len(document.encode("utf-8")) > MAX_DOCUMENT:
                    raise InvalidInput(f"item {name}: a document is at most {MAX_DOCUMENT} bytes")
                row = conn.execute(
                    "INSERT INTO collection_items (collection, name, metadata, document)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (collection, name) DO UPDATE SET"
                    " metadata = excluded.metadata, document = excluded.document RETURNING id",
                    (collection, name, meta, document),
                ).fetchone()
                editor.put(int(row[0]), vectors.normalized(parsed)[0])
                count += 1
            editor.save()
        return count

    def delete_items(self, collection: str, names: Iterable[str]) -> int:
        """Remove the items ``names`` of ``collection``; returns how many there were.

        Raises:
            KeyNotFound: (exit 1) no such collection.
        """
        count = 0
        with self._atomic() as conn:
            editor = _Editor(conn, self._collection(conn, collection))
            for name in names:
                row = conn.execute(
                    "DELETE FROM collection_items WHERE collection = ? AND name = ? RETURNING id",
                    (collection, name),
                ).fetchone()
                if row is not None:
                    editor.remove(int(row[0]))
                    count += 1
            editor.save()
        return count

    def count_items(self, collection: str) -> int:
        """How many items ``collection`` holds.

        Raises:
            KeyNotFound: (exit 1) no such collection.
        """
        with self._snapshot() as conn:
            self._collection(conn, collection)
            return int(conn.execute(
                "SELECT count(*) FROM collection_items WHERE collection = ?", (collection,)
            ).fetchone()[0])  # fmt: skip

    def query_items(
        self, collection: str, query: Any, limit: int, where: dict[str, Any] | None = None
    ) -> list[CollectionItem]:
        """The ``limit`` items of ``collection`` nearest the vector ``query`` (cosine
        similarity, best first), among those whose metadata holds every ``where``
        field with the same JSON value.

        Raises:
            KeyNotFound: (exit 1) no such collection.
            InvalidInput: (exit 2) ``query`` has not the collection's dimensions.
        """
        with self._snapshot() as conn:
            self._collection(conn, collection)
            rows = conn.execute(
                "SELECT id, name, metadata, document FROM collection_items WHERE collection = ?",
                (collection,),
            ).fetchall()
        items = {
            int(r[0]): (str(r[1]), _metadata_of(r[2]), r[3] if isinstance(r[3], str) else None)
            for r in rows
        }
        allowed = None
        if where:
            allowed = {
                item
                for item, (_, meta, _) in items.items()
                if all(key in meta and meta[key] == value for key, value in where.items())
            }
        best = self.nearest(collection, query, limit, allowed)
        return [
            CollectionItem(items[i][0], score, items[i][1], items[i][2])
            for i, score in best
            if i in items
        ]


def _metadata_of(stored: Any) -> dict[str, Any]:
    """An item's stored metadata as a dict; {} for none, or for what is not a JSON object
    (a damaged or foreign file)."""
    if not isinstance(stored, str) or not stored:
        return {}
    try:
        found = json.loads(stored)
    except (ValueError, RecursionError):
        return {}
    return found if isinstance(found, dict) else {}


def _metadata_json(name: str, metadata: dict[str, Any] | None) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidInput(f"item {name}: metadata is a JSON object")
    text = json.dumps(metadata, sort_keys=True, ensure_ascii=False)
    if len(text.encode("utf-8")) > MAX_METADATA:
        raise InvalidInput(f"item {name}: metadata is at most {MAX_METADATA} bytes of JSON")
    return text
