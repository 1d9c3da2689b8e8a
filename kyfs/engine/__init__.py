"""Storage engines behind one interface (kyfs.engine.base): SQLite, one file per
workspace (kyfs.engine.sqlite, the default), and PostgreSQL, one schema per workspace
(kyfs.engine.postgres). Upper layers open the engine here and never import an engine's
modules themselves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from kyfs.engine.sqlite.engine import SqliteEngine

if TYPE_CHECKING:
    from kyfs.engine.postgres.engine import PgEngine
    from kyfs.engine.scoped import ScopedEngine

    AnyEngine: TypeAlias = SqliteEngine | PgEngine | ScopedEngine
else:
    AnyEngine = SqliteEngine


def open_engine(
    directory: Path | None = None, *, cache: bool = False, autocheckpoint: bool = True
) -> AnyEngine:
    """The engine configured (kyfs.platform.config.engine_url: ``--engine``,
    ``KYFS_ENGINE``, config.toml): a PostgreSQL database, or by default the SQLite files
    of the data directory (kyfs.platform.paths.workspaces_dir(), or ``directory``).
    ``cache`` keeps workspaces open between uses (the daemon); without ``autocheckpoint``
    SQLite's commits leave folding the WAL in to Engine.checkpoint (the daemon). Archived
    entries older than the configured retention are purged when a workspace opens.

    Raises:
        InvalidInput: (exit 2) the engine setting is not understood.
        StorageError: (EIO, exit 4) the PostgreSQL server cannot be reached.
    """
    from kyfs.platform import config

    url = None if directory is not None else config.engine_url()
    return open_engine_at(url, directory, cache=cache, autocheckpoint=autocheckpoint)


def open_engine_at(
    url: str | None,
    directory: Path | None = None,
    *,
    cache: bool = False,
    autocheckpoint: bool = True,
) -> AnyEngine:
    """The engine at ``url``: a PostgreSQL URL or connection string, or None (or
    ``sqlite``) for the SQLite files of the data directory (or ``directory``).

    Raises:
        InvalidInput: (exit 2) ``url`` is neither. StorageError: (EIO, exit 4) the
            server cannot be reached.
    """
    from kyfs.platform import config

    url = config.check_engine(url)
    if url is not None:
        from kyfs.engine.postgres.engine import PgEngine

        return PgEngine(url, cache=cache, retention_s=config.archive_retention_s)
    return SqliteEngine(
        directory,
        cache=cache,
        retention_s=config.archive_retention_s,
        autocheckpoint=autocheckpoint,
        reserve=directory is None,  # the data directory's own: its disk-full reserve
    )


__all__ = ["AnyEngine", "SqliteEngine", "open_engine", "open_engine_at"]
