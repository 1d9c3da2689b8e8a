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
# bytes.translate table: ASCII letters and digits kept, every other byte a space.
_ASCII_SEPARATORS = bytes(c if c < 128 and chr(c).isalnum() else 32 for c in range(256))
# The same for UTF-8, keeping every non-ASCII byte; and a whole run of non-space bytes
# that holds at least one of them (tried only where a run starts).
_ASCII_SEPARATORS_UTF8 = bytes(c if c >= 128 or chr(c).isalnum() else 32 for c in range(256))
_NON_ASCII_RUN = re.compile(
    rb"(?<![^ ])[^ \x80-\xff]*+[\x80-\xff][^ ]*+"
)  # linear: no backtracking


class _DropCombining(dict[int, int | None]):
    """A str.translate table that deletes combining marks (diacritics after NFKD) and keeps
    every other character; each code point is looked up once, then translate runs at C
    speed (instead of a Python loop over every character)."""

    def __missing__(self, code: int) -> int | None:
        value = None if unicodedata.combining(chr(code)) else code
        self[code] = value
        return value


_DROP_COMBINING = _DropCombining()


def tokenize(text: str) -> list[str]:
    """The tokens of ``text``: ``"Café user.name"`` -> ``["cafe", "user", "name"]``."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    return _WORD.findall(folded.translate(_DROP_COMBINING))


def count_tokens(text: str) -> int:
    """``len(tokenize(text))``, faster: ASCII text (most keys, code and configuration)
    needs neither case folding nor NFKD, and its tokens are the runs of ASCII letters
    and digits, counted at C speed (every other byte becomes a space, then split).
    In other text only the runs holding a non-ASCII character take the full path: an
    ASCII separator separates whatever surrounds it, and folding never turns an ASCII
    letter or digit into a separator, so the runs between ASCII separators tokenize
    apart (UTF-8 never puts an ASCII byte inside a multi-byte character)."""
    if text.isascii():
        return len(text.encode("ascii").translate(_ASCII_SEPARATORS).split())
    spaced = text.encode("utf-8").translate(_ASCII_SEPARATORS_UTF8)
    mixed = _NON_ASCII_RUN.findall(spaced)
    return (
        len(spaced.split()) - len(mixed) + sum(len(tokenize(run.decode("utf-8"))) for run in mixed)
    )


def indexable_text(value: bytes) -> str | None:
    """The text of ``value`` to index, or None when it is binary (not valid UTF-8, or
    holding NUL bytes) or longer than INDEX_VALUE_MAX bytes."""
    if len(value) > INDEX_VALUE_MAX or b"\0" in value:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None
