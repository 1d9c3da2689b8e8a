"""Text tokens as SQLite FTS5's ``unicode61`` tokenizer makes them (pure functions).

kyfs scores search hits itself (kyfs.search) so that scores from different
workspaces are comparable; for that it needs the same tokens as the index:
case-folded, diacritics removed, split on every character that is not a letter
or a digit (sqlite.org/fts5.html#unicode61_tokenizer; underscores separate).
The match is close, not exact, for exotic scripts; it only affects scores,
never which keys match.
"""

from __future__ import annotations

import re
import unicodedata

INDEX_VALUE_MAX = 1024 * 1024  # bytes: longer values are indexed by key only
_WORD = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """The tokens of ``text``: ``"Café user.name"`` -> ``["cafe", "user", "name"]``."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return _WORD.findall(plain)


def indexable_text(value: bytes) -> str | None:
    """The text of ``value`` to index, or None when it is binary (not valid UTF-8, or
    holding NUL bytes) or longer than INDEX_VALUE_MAX bytes."""
    if len(value) > INDEX_VALUE_MAX or b"\0" in value:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None
