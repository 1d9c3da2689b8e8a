"""kyfs: key-value workspaces that live as a filesystem.

Layers (see docs/design.md): core (no I/O) under platform under engine (SQLite and
PostgreSQL) under app, api and transfer; then vfs, fuse and cli on top.

The Python API (docs/api.md): ``ws = kyfs.open("name")`` gives a kyfs.api.Workspace.
It is imported on first use, so ``import kyfs`` (every CLI command) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kyfs.api import Workspace

__version__ = "0.1.0"


def open(name: str | None = None, *, create: bool = False) -> Workspace:
    """Workspace ``name`` for the Python API: kyfs.api.open (docs/api.md)."""
    from kyfs import api

    return api.open(name, create=create)
