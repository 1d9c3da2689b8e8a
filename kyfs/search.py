"""Full-text search over one or many workspaces, ranked by one bm25 across all of them.

Each workspace has its own FTS5 index (kyfs.engine.sqlite.workspace.Store.search). FTS5's bm25
uses the statistics of its own index, so scores from two workspaces are not
comparable. kyfs therefore asks each workspace for its best candidates and its
statistics (number of keys, total length, keys per query term), and scores every
candidate again with Okapi BM25 (k1 = 1.2, b = 0.75, Lucene's IDF) over the
union of the searched workspaces, as if they were one index. Term frequencies
come from kyfs.core.tokens, which tokenizes as FTS5's unicode61 does.

With several workspaces the searches run concurrently: a thread pool
(concurrent.futures), one thread and one SQLite connection per workspace. A
workspace that cannot be searched is reported and the others still answer.

Semantic search (:func:`semantic`) ranks keys by the cosine similarity of their
embeddings with the query's (kyfs.platform.embedders, kyfs.engine.sql.vectors). The
first semantic search of a workspace makes it keep embeddings; from then on writes mark
them stale and whoever searches, or the daemon's indexer, embeds what is pending
(:func:`catch_up`), never the write itself. In a workspace that keeps embeddings the
default search is hybrid: the BM25 ranking and the vector ranking merged by reciprocal
rank fusion (kyfs.core.vectors.fuse).

Thread-safety: the functions share nothing; each call opens its own stores
unless the caller passes ``use``.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from kyfs.app import catch_up, engine_session
from kyfs.core import vectors
from kyfs.core.errors import (
    DamagedBlock,
    EmbedderUnavailable,
    InvalidQuery,
    KyfsError,
)
from kyfs.core.nodes import Match
from kyfs.core.tokens import tokenize
from kyfs.engine.base import Workspace
from kyfs.platform import embedders

log = logging.getLogger(__name__)

K1 = 1.2
B = 0.75
MAX_THREADS = 8
_PHRASE_OR_WORD = re.compile(r'"([^"]*)"|(\S+)')
_OPERATORS = re.compile(r"\b(?:AND|OR|NOT|NEAR)\b")


SNIPPET_BYTES = 160  # bytes of a value a semantic hit shows


@dataclass(frozen=True, slots=True)
class Hit:
    """One result: ``score`` is BM25 over every searched workspace, the cosine similarity
    of a semantic search, or the reciprocal rank fusion of both in a hybrid search
    (higher is better in each); ``snippet`` marks matches with
    kyfs.core.nodes.MARK_START / MARK_END."""

    workspace: str
    key: str
    score: float
    snippet: str


@dataclass
class Results:
    """What a search found: ``hits`` best first, and ``errors`` per workspace that failed."""

    hits: list[Hit] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def build_query(text: str, raw: bool = False) -> str:
    """The FTS5 query for what a user typed.

    Without ``raw`` every word is quoted, so words are ANDed, ``"a phrase"`` stays a
    phrase, a word ending in ``*`` is a prefix, and no user text can break FTS5 syntax:
    ``jwt "api token" tok*`` becomes ``"jwt" "api token" "tok"*``. With ``raw`` the text
    is FTS5 syntax, passed through.

    Raises:
        InvalidQuery: (exit 2) the query has no words.
    """
    if raw:
        if not text.strip():
            raise InvalidQuery("empty search query")
        return text
    parts = []
    for phrase, word in _PHRASE_OR_WORD.findall(text):
        piece = phrase if phrase else word.replace('"', "")
        prefix = not phrase and piece.endswith("*")  # tok*: every word that starts so
        piece = piece.rstrip("*") if prefix else piece
        if tokenize(piece):
            parts.append('"' + piece.replace('"', '""') + '"' + ("*" if prefix else ""))
    if not parts:
        raise InvalidQuery(f"no words to search for in {text!r}")
    return " ".join(parts)


def query_terms(text: str, raw: bool = False) -> list[str]:
    """The index terms of a query, for scoring (FTS5 operators left out with ``raw``); a
    prefix (a word ending in ``*``, as FTS5 writes one) as its last token and ``*``
    (``tok*``), which :func:`rank` and Workspace.search_stats count as every token that
    starts so."""
    terms = []
    for word in (_OPERATORS.sub(" ", text) if raw else text).split():
        tokens = tokenize(word)
        if tokens and word.rstrip('"').endswith("*"):
            tokens[-1] += "*"
        terms += tokens
    return terms


def _frequency(term: str, freq: Counter[str]) -> int:
    """How often ``term`` occurs among the counted tokens ``freq`` (a prefix ``tok*``:
    every token that starts with ``tok``)."""
    if not term.endswith("*"):
        return freq[term]
    stem = term[:-1]
    return sum(n for token, n in freq.items() if token.startswith(stem))


@dataclass
class _Answer:
    name: str
    matches: list[Match]
    count: int
    total: int
    docs: dict[str, int]
    vectors: bool = False  # the workspace keeps embeddings


@contextmanager
def open_workspace(name: str) -> Iterator[Workspace]:
    """Open workspace ``name`` on its own connection, under the shared workspaces lock."""
    with engine_session() as workspaces, workspaces.using(name) as store:
        yield store


def _ask(
    use: Callable[[str], AbstractContextManager[Workspace]],
    name: str,
    match: str,
    terms: list[str],
    candidates: int,
) -> _Answer:
    with use(name) as store:
        matches = store.search(match, candidates)
        count, total, docs = store.search_stats(terms)
        kept = store.vector_space() is not None
    return _Answer(name, matches, count, total, docs, kept)


def search(
    names: Sequence[str],
    text: str,
    *,
    raw: bool = False,
    limit: int = 20,
    use: Callable[[str], AbstractContextManager[Workspace]] = open_workspace,
    parallel: bool = True,
    hybrid: bool = True,
) -> Results:
    """Search workspaces ``names`` for ``text``; return the best ``limit`` hits overall.

    Args:
        raw: ``text`` is FTS5 syntax (see build_query); never hybrid.
        use: opens a workspace's Workspace for the duration of a ``with`` block.
        parallel: search the workspaces concurrently (one thread each, at most 8).
        hybrid: where a searched workspace keeps embeddings, merge the BM25 ranking with
            the semantic one (:func:`semantic`) by reciprocal rank fusion; when the
            embedder cannot be loaded, BM25 alone, with a warning in the log.

    Raises:
        InvalidQuery: (exit 2) an empty query, or bad FTS5 syntax with ``raw``.
    """
    match = build_query(text, raw)
    terms = query_terms(text, raw)
    candidates = max(3 * limit, limit + 20)  # rescoring may reorder: ask for more
    results = Results()
    answers: list[_Answer] = []

    def collect(name: str, outcome: Callable[[], _Answer]) -> None:
        try:
            answers.append(outcome())
        except InvalidQuery:
            raise
        except KyfsError as exc:
            results.errors[name] = str(exc)

    if parallel and len(names) > 1:
        with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(names))) as pool:
            futures = {n: pool.submit(_ask, use, n, match, terms, candidates) for n in names}
            for name, future in futures.items():
                collect(name, future.result)
    else:
        for name in names:
            collect(name, lambda n=name: _ask(use, n, match, terms, candidates))  # type: ignore[misc]
    ranked = rank(answers, terms)
    with_vectors = [a.name for a in answers if a.vectors] if hybrid and not raw else []
    if not with_vectors:
        results.hits = ranked[:limit]
        return results
    try:
        near = semantic(with_vectors, text, limit=candidates, use=use, keep=False)
    except EmbedderUnavailable as exc:  # words still answer: the ranking falls back to BM25
        log.warning("search by words only: %s", exc)
        results.hits = ranked[:limit]
        return results
    results.errors.update(near.errors)
    by_place = {(h.workspace, h.key): h for h in near.hits}
    by_place.update({(h.workspace, h.key): h for h in ranked})  # BM25's snippets first
    fused = vectors.fuse(
        [[(h.workspace, h.key) for h in ranked], [(h.workspace, h.key) for h in near.hits]],
        limit,
    )
    results.hits = [
        Hit(place[0], place[1], score, by_place[place].snippet)  # type: ignore[index]
        for place, score in fused
    ]
    return results


def semantic(
    names: Sequence[str],
    text: str,
    *,
    limit: int = 20,
    use: Callable[[str], AbstractContextManager[Workspace]] = open_workspace,
    keep: bool = True,
) -> Results:
    """The ``limit`` keys of workspaces ``names`` whose embeddings are nearest ``text``'s,
    best first: Hit.score is the cosine similarity (-1..1); a node with several names is
    listed under each; ties by workspace and key. Each workspace first embeds what is
    pending (:func:`catch_up`; with ``keep`` it starts keeping embeddings).

    Raises:
        InvalidQuery: (exit 2) an empty query.
        EmbedderUnavailable: (exit 4) the embedder cannot be loaded.
    """
    if not text.strip():
        raise InvalidQuery("empty search query")
    embedder = embedders.load()
    query = embedder.embed([text])[0]
    results = Results()
    hits: list[Hit] = []
    for name in names:
        try:
            with use(name) as workspace:
                catch_up(workspace, embedder, keep)
                if workspace.vector_space() is None:
                    continue
                for node, score in workspace.nearest(vectors.KEYS, query, limit):
                    try:
                        excerpt = workspace.read(node, 0, SNIPPET_BYTES)
                    except DamagedBlock:  # the hit stands; reading its value answers EIO
                        excerpt = b""
                    snippet = excerpt.decode("utf-8", errors="replace").replace("\x00", "")
                    hits += [Hit(name, key, score, snippet) for key in workspace.keys_of(node)]
        except (InvalidQuery, EmbedderUnavailable):
            raise
        except KyfsError as exc:
            results.errors[name] = str(exc)
    hits.sort(key=lambda h: (-h.score, h.workspace, h.key))
    results.hits = hits[:limit]
    return results


def rank(answers: list[_Answer], terms: list[str]) -> list[Hit]:
    """Score every candidate with BM25 over the union of the answering workspaces."""
    count = sum(a.count for a in answers)
    if count == 0:
        return []
    average = max(sum(a.total for a in answers) / count, 1.0)
    unique = sorted(set(terms))
    idf = {}
    for term in unique:
        holding = sum(a.docs.get(term, 0) for a in answers)
        idf[term] = math.log(1 + (count - holding + 0.5) / (holding + 0.5))
    hits = []
    for answer in answers:
        for m in answer.matches:
            freq = Counter(tokenize(m.key))
            if m.text:
                freq.update(tokenize(m.text))
            length = max(m.length, 1)
            norm = K1 * (1 - B + B * length / average)
            tf = {t: _frequency(t, freq) for t in unique}
            score = sum(idf[t] * tf[t] * (K1 + 1) / (tf[t] + norm) for t in unique if tf[t])
            hits.append(Hit(answer.name, m.key, round(score, 6), m.snippet))
    hits.sort(key=lambda h: (-h.score, h.workspace, h.key))
    return hits
