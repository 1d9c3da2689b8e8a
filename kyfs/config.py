"""Small user state kept in ``config.toml`` (kyfs.paths.config_file()).

Keys used today:

* ``active_workspace`` (string): the workspace that commands use when neither
  ``-w/--workspace`` nor ``KYFS_WORKSPACE`` names one.
* ``archive_retention_days`` (number, default 15): how long a deleted key's last
  value is kept in its workspace's archive for ``kyfs restore``.

The file is read with tomllib and written with tomli-w, through a temporary
file and ``os.replace`` so that a reader never sees half a file (POSIX rename
is atomic). Concurrent writers: the last one wins; no lock is taken. Safe from
any thread as long as two threads do not write at once.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from kyfs import paths
from kyfs.errors import InvalidInput

DEFAULT_WORKSPACE = "default"
DEFAULT_ARCHIVE_RETENTION_DAYS = 15.0
ENV_WORKSPACE = "KYFS_WORKSPACE"


def load(path: Path | None = None) -> dict[str, Any]:
    """The config as a dict; ``{}`` when the file does not exist.

    Raises:
        InvalidInput: (exit 2) the file is not valid TOML; the message names the file.
    """
    path = path or paths.config_file()
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path}: not valid TOML: {exc}") from None


def save(data: dict[str, Any], path: Path | None = None) -> None:
    """Write ``data`` as TOML, atomically (temporary file, fsync, rename), mode 0600."""
    import tomli_w

    path = path or paths.config_file()
    paths.make_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            tomli_w.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def active_workspace() -> str | None:
    """The workspace set by ``kyfs use``, or None when none was set."""
    value = load().get("active_workspace")
    return value if isinstance(value, str) else None


def set_active_workspace(name: str) -> None:
    """Remember ``name`` as the active workspace."""
    data = load()
    data["active_workspace"] = name
    save(data)


def archive_retention_s() -> float:
    """Seconds a deleted key stays in the archive (``archive_retention_days``, default 15).

    Raises:
        InvalidInput: (exit 2) the setting is not a non-negative number.
    """
    value = load().get("archive_retention_days", DEFAULT_ARCHIVE_RETENTION_DAYS)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidInput(f"archive_retention_days must be a number of days >= 0, not {value!r}")
    return float(value) * 86400
