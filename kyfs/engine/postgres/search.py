"""Full-text search in a PostgreSQL workspace: ``tsvector`` documents, a GIN index,
``ts_rank_cd`` (postgresql.org/docs/current/textsearch.html).

A document is made from kyfs's own tokens (kyfs.core.tokens, FTS5's unicode61 rules), not
from a PostgreSQL text search configuration, so that a word matches on PostgreSQL exactly
when it matches on SQLite, and kyfs.search's cross-workspace BM25 counts the same terms on
both engines. The tokens of the key (every name of the node, as in SQLite) come first,
then those of the value, with their positions, as a ``tsvector`` literal. PostgreSQL keeps
at most 256 positions per word and none past 16,383 (textsearch-limitations): a phrase
deep inside a long value may then match less precisely; which keys match a word does not
change.

Queries are FTS5 syntax (what kyfs.search.build_query makes, or the user's with
``--raw``), translated to a ``tsquery``: phrases (``"a b"`` -> ``'a' <-> 'b'``), bare
words, prefixes (``tok*`` -> ``'tok':*``), AND, OR, NOT, implicit AND and parentheses,
with FTS5's precedence (NOT, then AND, then OR). NEAR groups, column filters (``key:``),
``^`` and ``+`` are refused with InvalidQuery: PostgreSQL has no equivalent kyfs keeps.

Every function runs inside the caller's transaction.
"""

from __future__ import annotations

import re
from typing import Any

from kyfs.core import tokens
from kyfs.core.blocks import unseal
from kyfs.core.errors import DamagedBlock, InvalidQuery
from kyfs.core.nodes import MARK_END, MARK_START, REG
from kyfs.engine.sql.vectors import mark_embeddings

BATCH = 256  # pending nodes indexed per batch
BATCH_BYTES = 8 * 1024 * 1024  # bytes of values read per query while indexing a batch
MAX_POSITION = 16_383  # tsvector positions stop here (PostgreSQL's MAXENTRYPOS - 1)
MAX_POSITIONS_PER_WORD = 256  # PostgreSQL's MAXNUMPOS
_HEADLINE = (
    f'StartSel="{MARK_START}", StopSel="{MARK_END}", MaxWords=12, MinWords=4,'
    ' ShortWord=0, MaxFragments=1, FragmentDelimiter="…"'
)
SEARCH = (
    "SELECT e.key, t.value, t.key_tokens + t.value_tokens,"
    f" ts_headline('simple', coalesce(t.value, e.key), q, '{_HEADLINE}'),"
    " -ts_rank_cd(t.document, q)"
    " FROM search_text t JOIN entries e ON e.node = t.id, CAST(? AS tsquery) q"
    " WHERE t.document @@ q ORDER BY ts_rank_cd(t.document, q) DESC, e.key LIMIT ?"
)
SEARCH_KEYS = (
    "SELECT e.key, NULL, t.key_tokens + t.value_tokens, e.key, -ts_rank_cd(t.document, q)"
    " FROM search_text t JOIN entries e ON e.node = t.id, CAST(? AS tsquery) q"
    " WHERE t.document @@ q ORDER BY ts_rank_cd(t.document, q) DESC, e.key LIMIT ?"
)
_UPSERT = (
    "INSERT INTO search_text (id, key, value, key_tokens, value_tokens, document)"
    " VALUES (?, ?, ?, ?, ?, CAST(? AS tsvector)) ON CONFLICT (id) DO UPDATE SET"
    " key = excluded.key, value = excluded.value, key_tokens = excluded.key_tokens,"
    " value_tokens = excluded.value_tokens, document = excluded.document"
)


def document(key_tokens: list[str], value_tokens: list[str]) -> str:
    """The ``tsvector`` literal of a key's and a value's tokens, in order, positions from 1
    (the value's after a gap, so no phrase spans key and value)."""
    positions: dict[str, list[int]] = {}
    at = 0
    for part in (key_tokens, value_tokens):
        for token in part:
            at += 1
            held = positions.setdefault(token, [])
            if len(held) < MAX_POSITIONS_PER_WORD and at <= MAX_POSITION:
                held.append(at)
        at += 1
    return " ".join(
        f"'{token}':{','.join(map(str, held))}" if held else f"'{token}'"
        for token, held in positions.items()
    )


def flush(conn: Any, limit: int | None = None) -> int:
    """Write the index rows of up to ``limit`` pending nodes (all when None) inside the
    caller's transaction, in batches (a few queries and one pipelined executemany per
    batch, not four round trips per node); returns how many were done."""
    done = 0
    while limit is None or done < limit:
        take = BATCH if limit is None else min(BATCH, limit - done)
        ids = [
            int(row[0])
            for row in conn.execute(
                "SELECT node_id FROM index_pending ORDER BY node_id LIMIT ?", (take,)
            ).fetchall()
        ]
        if not ids:
            break
        _index_batch(conn, ids)
        conn.execute("DELETE FROM index_pending WHERE node_id = ANY(?)", (ids,))
        mark_embeddings(conn, ids)
        done += len(ids)
    return done


def _index_batch(conn: Any, ids: list[int]) -> None:
    """(Re)index every node of ``ids`` under its names (at most INDEX_VALUE_MAX bytes of a
    value; values read BATCH_BYTES at a time); a node with no name left, or that is not a
    regular file, leaves the index."""
    sizes = {
        int(node): int(size)
        for node, size in conn.execute(
            "SELECT id, size FROM nodes WHERE id = ANY(?) AND kind = ?", (ids, REG)
        ).fetchall()
    }
    names: dict[int, list[str]] = {}
    for node, key in conn.execute(
        "SELECT node, key FROM entries WHERE node = ANY(?) ORDER BY node, key", (list(sizes),)
    ).fetchall():
        names.setdefault(int(node), []).append(key)
    gone = [node for node in ids if node not in names]
    if gone:
        conn.execute("DELETE FROM search_text WHERE id = ANY(?)", (gone,))
    small = [node for node in names if sizes[node] <= tokens.INDEX_VALUE_MAX]
    values: dict[int, bytearray | None] = {node: bytearray(sizes[node]) for node in small}
    group: list[int] = []
    held = 0
    for node in [*small, None]:
        if node is not None:
            group.append(node)
            held += sizes[node]
        if group and (node is None or held >= BATCH_BYTES):
            for owner, pos, block_id, size, codec, address, data in conn.execute(
                "SELECT e.owner, e.pos, b.id, b.size, b.codec, b.hash, b.data FROM extents e"
                " JOIN blocks b ON b.id = e.block WHERE e.owner = ANY(?)",
                (group,),
            ).fetchall():
                value = values[int(owner)]
                if value is None:
                    continue
                try:  # a hole reads as NUL bytes, which is binary: not indexed
                    raw = unseal(block_id, codec, data, size, address)
                except DamagedBlock:
                    values[int(owner)] = None  # indexed by its names only
                    continue
                value[pos : pos + size] = raw[: max(0, len(value) - pos)]
            group, held = [], 0
    rows = []
    for node, keys in names.items():
        value = values.get(node)
        text = None if value is None else tokens.indexable_text(bytes(value[: sizes[node]]))
        key = "\n".join(keys)
        key_tokens = tokens.tokenize(key)
        value_tokens = tokens.tokenize(text) if text else []
        rows.append((node, key, text, len(key_tokens), len(value_tokens),
                     document(key_tokens, value_tokens)))  # fmt: skip
    if rows:
        conn.executemany(_UPSERT, rows)


# --- FTS5 query syntax -> tsquery ---------------------------------------------------------
_LEXER = re.compile(
    r'\s*(?:(?P<open>\()|(?P<close>\))|"(?P<phrase>(?:[^"]|"")*)"(?P<pstar>\*)?'
    r'|(?P<bad>[:^+{}]|NEAR\b)|(?P<word>[^\s()"*:^+{}]+)(?P<wstar>\*)?|(?P<unclosed>"))'
)


def _lex(query: str) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    at = 0
    while at < len(query):
        if query[at:].strip() == "":
            break
        found = _LEXER.match(query, at)
        if found is None or found.end() == at:
            raise InvalidQuery(f"invalid search query {query!r}: syntax error near {query[at:]!r}")
        at = found.end()
        kind = found.lastgroup
        if found.group("open"):
            items.append(("(", ""))
        elif found.group("close"):
            items.append((")", ""))
        elif found.group("phrase") is not None:
            text = found.group("phrase").replace('""', '"')
            items.append(("phrase*" if found.group("pstar") else "phrase", text))
        elif found.group("unclosed"):
            raise InvalidQuery(f"invalid search query {query!r}: unterminated string")
        elif found.group("bad"):
            raise InvalidQuery(
                f"invalid search query {query!r}: {found.group('bad')!r} (NEAR, column filters,"
                " ^ and +) is not supported by the PostgreSQL engine"
            )
        else:
            word = found.group("word")
            if word in ("AND", "OR", "NOT") and not found.group("wstar"):
                items.append((word, ""))
            else:
                items.append(("phrase*" if found.group("wstar") else "phrase", word))
        assert kind is not None
    return items


class _Parser:
    """FTS5's grammar, as far as kyfs keeps it: or := and ("OR" and)*; and := not
    (["AND"] not)*; not := primary ("NOT" primary)*; primary := "(" or ")" | phrase."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.items = _lex(query)
        self.at = 0

    def _peek(self) -> str | None:
        return self.items[self.at][0] if self.at < len(self.items) else None

    def _fail(self, why: str) -> InvalidQuery:
        return InvalidQuery(f"invalid search query {self.query!r}: {why}")

    def parse(self) -> str:
        if not self.items:
            raise self._fail("no words")
        result = self._or()
        if self.at != len(self.items):
            raise self._fail(f"unexpected {self.items[self.at][0]!r}")
        return result

    def _or(self) -> str:
        parts = [self._and()]
        while self._peek() == "OR":
            self.at += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"

    def _and(self) -> str:
        parts = [self._not()]
        while self._peek() not in (None, ")", "OR"):
            if self._peek() == "AND":
                self.at += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else "(" + " & ".join(parts) + ")"

    def _not(self) -> str:
        result = self._primary()
        while self._peek() == "NOT":
            self.at += 1
            result = f"({result} & !{self._primary()})"
        return result

    def _primary(self) -> str:
        kind = self._peek()
        if kind == "(":
            self.at += 1
            inner = self._or()
            if self._peek() != ")":
                raise self._fail("missing )")
            self.at += 1
            return inner
        if kind in ("phrase", "phrase*"):
            text = self.items[self.at][1]
            self.at += 1
            words = tokens.tokenize(text)
            if not words:
                raise self._fail(f"no words in {text!r}")
            terms = [f"'{word}'" for word in words]
            if kind == "phrase*":
                terms[-1] += ":*"
            return terms[0] if len(terms) == 1 else "(" + " <-> ".join(terms) + ")"
        raise self._fail(f"expected a word, found {kind or 'the end'!r}")


def to_tsquery(query: str) -> str:
    """The ``tsquery`` literal of FTS5 query ``query`` (see the module's docstring).

    Raises:
        InvalidQuery: (EINVAL, exit 2) bad syntax, no words, or what PostgreSQL cannot do.
    """
    return _Parser(query).parse()
