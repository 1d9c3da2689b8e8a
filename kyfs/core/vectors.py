"""Vectors for semantic search, without I/O: how they are stored, scored and fused.

A vector space holds vectors of one dimension, made by one embedder (``model``) or
given by a caller (a collection). Its vectors are stored in chunks of up to CHUNK
vectors each: one row holds the items' ids (int64), and the vectors themselves in the
space's codec. Exact search reads every chunk and scores it with one matrix product,
which at 100,000 keys is a few dozen rows and tens of milliseconds; one row per vector
would cost a Python row fetch per key (measured: 236 ms for 100,000 float32 vectors of
256 dimensions, against 66 ms in chunks and 31 ms in int8 chunks).

Codecs:
    ``int8``: each vector scaled by its largest absolute component to int8
        (-127..127), with that scale kept as float32: 4x smaller than float32, and a
        cosine similarity within about 0.01 of the exact one (the keys' vectors).
    ``float32``: stored as given (little-endian), scored exactly (a collection's
        caller-supplied vectors).

Rankings from full-text and vector search are merged by reciprocal rank fusion
(Cormack, Clarke and Buettcher, SIGIR 2009): ``score = sum(1 / (RRF_K + rank))`` over
the rankings that hold a result, ranks from 1.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np


CHUNK = 1024  # vectors per stored chunk
RRF_K = 60  # reciprocal rank fusion's constant (the paper's value)
CODECS = ("int8", "float32")
MAX_DIM = 4096  # dimensions a vector may have

_ORDER = "<"  # stored little-endian, whatever the machine
KEYS = ".keys"  # the space of the keys' embeddings (a collection name cannot start with .)


class Space(NamedTuple):
    """A vector space: ``dim`` dimensions, ``codec`` (kyfs.core.vectors.CODECS),
    ``model`` the embedder that made its vectors (None: a caller's)."""

    name: str
    dim: int
    codec: str
    model: str | None


class CollectionItem(NamedTuple):
    """A collection's item as found: ``score`` cosine similarity (higher is better),
    ``metadata`` a JSON object, ``document`` its text or None."""

    name: str
    score: float
    metadata: dict[str, Any]
    document: str | None


def normalized(vectors: Any) -> np.ndarray:
    """``vectors`` (n, dim) as float32 rows of length 1 (a zero row stays zero)."""
    import numpy as np

    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def encode(vectors: np.ndarray, codec: str) -> tuple[bytes, bytes]:
    """(vector bytes, scale bytes) of ``vectors`` (n, dim) float32 in ``codec``; the scale
    bytes are empty for float32."""
    import numpy as np

    if codec == "float32":
        return vectors.astype(_ORDER + "f4").tobytes(), b""
    peak = np.abs(vectors).max(axis=1)
    scale = np.where(peak == 0, 1.0, peak / 127.0).astype(np.float32)
    quantized = np.rint(vectors / scale[:, None]).clip(-127, 127).astype(np.int8)
    return quantized.tobytes(), scale.astype(_ORDER + "f4").tobytes()


def decode(data: bytes, scales: bytes, count: int, dim: int, codec: str) -> np.ndarray:
    """The (count, dim) float32 matrix stored as ``data`` and ``scales`` in ``codec``.

    Raises:
        ValueError: the bytes do not hold ``count`` vectors of ``dim`` (a damaged row).
    """
    import numpy as np

    if codec == "float32":
        return np.frombuffer(data, dtype=_ORDER + "f4", count=count * dim).reshape(count, dim)
    quantized = np.frombuffer(data, dtype=np.int8, count=count * dim).reshape(count, dim)
    factor = np.frombuffer(scales, dtype=_ORDER + "f4", count=count)
    matrix: np.ndarray = quantized.astype(np.float32) * factor[:, None]
    return matrix


def similarities(
    data: bytes, scales: bytes, count: int, dim: int, codec: str, query: np.ndarray
) -> np.ndarray:
    """Cosine similarities (count,) of the unit ``query`` (dim,) with the ``count`` unit
    vectors stored as ``data`` and ``scales`` in ``codec`` (one matrix product; an int8
    vector's scale applied to its score rather than to each of its components).

    Raises:
        ValueError: the bytes do not hold ``count`` vectors of ``dim`` (a damaged row).
    """
    import numpy as np

    if codec == "float32":
        exact: np.ndarray = decode(data, scales, count, dim, codec) @ query
        return exact
    quantized = np.frombuffer(data, dtype=np.int8, count=count * dim).reshape(count, dim)
    factor = np.frombuffer(scales, dtype=_ORDER + "f4", count=count)
    scores: np.ndarray = (quantized @ query.astype(np.float32)) * factor
    return scores


def encode_ids(ids: Sequence[int]) -> bytes:
    """The int64 bytes of item ids."""
    import numpy as np

    return bytes(np.asarray(ids, dtype=_ORDER + "i8").tobytes())


def decode_ids(data: bytes) -> np.ndarray:
    """The item ids stored as ``data`` (int64)."""
    import numpy as np

    return np.frombuffer(data, dtype=_ORDER + "i8")


def parse_vector(values: Iterable[Any], dim: int) -> np.ndarray:
    """A caller's vector (numbers) as float32 (dim,).

    Raises:
        ValueError: not ``dim`` finite numbers.
    """
    import numpy as np

    try:
        vector = np.asarray(list(values), dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError("a vector is a list of numbers") from None
    if vector.ndim != 1 or vector.shape[0] != dim:
        raise ValueError(f"a vector of {dim} numbers was expected, not {vector.size}")
    if not np.isfinite(vector).all():
        raise ValueError("a vector holds only finite numbers")
    return vector


class TopK:
    """The best ``limit`` (item, score) pairs seen over several chunks, by cosine
    similarity with a unit ``query`` (higher is better)."""

    def __init__(self, query: np.ndarray, limit: int) -> None:

        self.query = normalized(query)[0]
        self.limit = limit
        self._ids: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def add(self, ids: np.ndarray, scores: np.ndarray, allowed: np.ndarray | None = None) -> None:
        """Take a chunk's ``ids`` (n,) and their ``scores`` (n,) (:func:`similarities`);
        ``allowed`` (n,) bool keeps only some (a filter)."""
        import numpy as np

        if allowed is not None:
            ids, scores = ids[allowed], scores[allowed]
        if len(scores) > self.limit:
            best = np.argpartition(-scores, self.limit - 1)[: self.limit]
            ids, scores = ids[best], scores[best]
        self._ids.append(ids)
        self._scores.append(scores)

    def best(self) -> list[tuple[int, float]]:
        """The best pairs, best first (ties by item id)."""
        import numpy as np

        if not self._ids:
            return []
        ids = np.concatenate(self._ids)
        scores = np.concatenate(self._scores)
        order = np.lexsort((ids, -scores))[: self.limit]
        return [(int(ids[i]), round(float(scores[i]), 6)) for i in order]


def fuse(rankings: Iterable[Sequence[Hashable]], limit: int) -> list[tuple[Hashable, float]]:
    """Reciprocal rank fusion of ``rankings`` (each best first): the best ``limit``
    results with their fused scores, best first (ties in first-seen order)."""
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        for rank, result in enumerate(ranking, start=1):
            scores[result] = scores.get(result, 0.0) + 1.0 / (RRF_K + rank)
    ordered = sorted(scores.items(), key=lambda pair: -pair[1])
    return [(result, round(score, 6)) for result, score in ordered[:limit]]
