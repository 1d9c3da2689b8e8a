"""Embedders: what turns text into vectors for semantic search.

An :class:`Embedder` has a ``name`` (stored beside the vectors it made: a workspace
whose vectors another embedder made embeds its keys again), a dimension ``dim`` and
``embed(texts)``, which returns one unit-length float32 row per text.

The default is WordLlama (github.com/dleemiller/WordLlama, ``l2_supercat``, 256
dimensions): a static embedding (token vectors taken from an LLM's embedding table,
averaged), whose wheel carries its weights and tokenizer, so semantic search works on a
fresh machine without a network. Measured on this project's labelled notes (tests/data/
semantic) against all-MiniLM-L6-v2 (sentence-transformers on PyTorch): see
docs/design.md, "Semantic search".

WordLlama 0.4 ships its tokenizer under ``wordllama/tokenizers/`` but looks for it under
``wordllama/tokenizer/`` first and then downloads it; loading with the package's own
directory as ``cache_dir`` (which it searches as ``<cache_dir>/tokenizers/``) and
``disable_download=True`` finds the shipped file and never reaches for the network.

Another embedder plugs in by name, ``module:factory`` (a callable taking no arguments
and returning an Embedder: a wrapper of fastembed or sentence-transformers, say), from
``$KYFS_EMBEDDER`` or ``embedder`` in config.toml.

Thread-safety: an embedder is loaded once per process (:func:`load`) and may be used
from one thread at a time.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from kyfs.core.errors import EmbedderUnavailable, InvalidInput

ENV_EMBEDDER = "KYFS_EMBEDDER"
DEFAULT = "wordllama"
BATCH = 256  # texts embedded per call by those who catch up (a search, the daemon)


class Embedder(Protocol):
    """Turns texts into vectors. ``name`` identifies the model and its settings;
    ``dim`` is the length of its vectors."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Any:
        """One row per text: a (len(texts), dim) float32 array of unit-length rows."""
        ...


class WordLlamaEmbedder:
    """WordLlama's ``l2_supercat`` model at ``dim`` dimensions (64, 128, 256: its
    Matryoshka truncations), loaded from its wheel."""

    def __init__(self, dim: int = 256) -> None:
        try:
            import wordllama
            from wordllama import WordLlama
        except ImportError as exc:
            raise EmbedderUnavailable(f"the wordllama package is missing: {exc}") from None
        here = Path(wordllama.__file__).parent
        try:
            self._model = WordLlama.load(
                cache_dir=here, disable_download=True, trunc_dim=dim if dim != 256 else None
            )
        except (OSError, ValueError) as exc:
            raise EmbedderUnavailable(f"cannot load WordLlama's model: {exc}") from None
        self.dim = dim
        self.name = f"wordllama/l2_supercat/{dim}"

    def embed(self, texts: Sequence[str]) -> Any:
        """Unit-length float32 rows, one per text."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._model.embed(list(texts), norm=True), dtype=np.float32)


_loaded: dict[str, Embedder] = {}
_lock = threading.Lock()


def configured() -> str:
    """The embedder's name as configured: ``$KYFS_EMBEDDER``, else ``embedder`` in
    config.toml, else ``wordllama``.

    Raises:
        InvalidInput: (exit 2) config.toml's ``embedder`` is not a string.
    """
    from kyfs.platform import config

    value = os.environ.get(ENV_EMBEDDER) or config.load().get("embedder") or DEFAULT
    if not isinstance(value, str):
        raise InvalidInput("embedder in config.toml must be a string: wordllama or module:factory")
    return value


def load(spec: str | None = None) -> Embedder:
    """The embedder ``spec`` (default: :func:`configured`), loaded once per process:
    ``wordllama`` (256 dimensions), ``wordllama:DIM`` (64, 128 or 256), or
    ``module:factory``.

    Raises:
        EmbedderUnavailable: (exit 4) it cannot be imported or loaded.
        InvalidInput: (exit 2) a spec of neither form.
    """
    spec = spec or configured()
    with _lock:
        if spec not in _loaded:
            _loaded[spec] = _make(spec)
        return _loaded[spec]


def _make(spec: str) -> Embedder:
    if spec == DEFAULT or spec.startswith(DEFAULT + ":"):
        _, _, dim = spec.partition(":")
        if dim and dim not in ("64", "128", "256"):
            raise InvalidInput(f"wordllama's dimensions are 64, 128 or 256, not {dim}")
        return WordLlamaEmbedder(int(dim or 256))
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInput(f"an embedder is wordllama[:DIM] or module:factory, not {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
        made = factory()
    except Exception as exc:  # a plug-in's own failure, whatever it is
        raise EmbedderUnavailable(f"cannot load the embedder {spec}: {exc}") from None
    if not isinstance(getattr(made, "name", None), str) or not isinstance(
        getattr(made, "dim", None), int
    ):
        raise EmbedderUnavailable(f"the embedder {spec} has no str name and int dim")
    return made  # type: ignore[no-any-return]
