"""Storage engines behind one interface (kyfs.engine.base): today SQLite, one file per
workspace (kyfs.engine.sqlite). Upper layers open the engine here and never import an
engine's modules themselves."""

from __future__ import annotations

from pathlib import Path

from kyfs.engine.sqlite.engine import SqliteEngine


def open_engine(directory: Path | None = None, *, cache: bool = False) -> SqliteEngine:
    """The engine of the current data directory (kyfs.platform.paths.workspaces_dir(), or
    ``directory``); ``cache`` keeps workspaces open between uses (the daemon). Archived
    entries older than the configured retention (kyfs.platform.config) are purged when a
    workspace opens."""
    from kyfs.platform import config

    return SqliteEngine(directory, cache=cache, retention_s=config.archive_retention_s)


__all__ = ["SqliteEngine", "open_engine"]
