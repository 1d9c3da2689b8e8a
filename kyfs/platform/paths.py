"""Every location kyfs uses; no other module does path math on the data directory.

Locations come from platformdirs (which follows the XDG Base Directory
specification on Linux) unless the environment variable ``KYFS_HOME`` is set,
in which case everything lives under that one directory:

=====================  ==========================================  ============================
what                   default (Linux)                             with KYFS_HOME=DIR
=====================  ==========================================  ============================
workspaces             ~/.local/share/kyfs/workspaces/<name>.db    DIR/workspaces/<name>.db
dropped workspaces     ~/.local/share/kyfs/trash/<name>@<UTC>.db   DIR/trash/<name>@<UTC>.db
config                 ~/.config/kyfs/config.toml                  DIR/config.toml
state (mount records)  ~/.local/state/kyfs/                        DIR/state/
spill (big writes)     ~/.local/share/kyfs/spill/                  DIR/spill/
mountpoint             ~/kyfs                                      ~/kyfs
=====================  ==========================================  ============================

The functions read the environment on every call (the tests change it), create
nothing (except make_private_dir), and are safe from any thread. Directories
kyfs creates are mode 0700 and its files 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "kyfs"
ENV_HOME = "KYFS_HOME"
DB_SUFFIX = ".db"


def _home() -> Path | None:
    value = os.environ.get(ENV_HOME)
    return Path(value).expanduser().absolute() if value else None


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and every missing parent with mode 0700 (owner only); return it."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    return path


ENV_DATA = "KYFS_DATA"  # set from a cursor (kyfs --cursor NAME): another data directory


def data_dir() -> Path:
    """The data directory: ``$KYFS_DATA`` (a cursor's), else ``$KYFS_HOME``, else
    ``user_data_dir("kyfs")``."""
    cursor = os.environ.get(ENV_DATA)
    if cursor:
        return Path(cursor).expanduser().absolute()
    return _home() or Path(platformdirs.user_data_dir(APP))


def workspaces_dir() -> Path:
    """The directory that holds one ``<name>.db`` SQLite file per workspace."""
    return data_dir() / "workspaces"


def workspace_file(name: str) -> Path:
    """The SQLite file of workspace ``name``; the name must already be validated
    (kyfs.core.names.check_workspace_name), since this joins it into a path."""
    return workspaces_dir() / f"{name}{DB_SUFFIX}"


def workspace_name(path: Path) -> str | None:
    """The workspace name of a file in workspaces_dir(), or None when it is not a workspace."""
    return path.name[: -len(DB_SUFFIX)] if path.name.endswith(DB_SUFFIX) else None


def sidecar_files(db_file: Path) -> list[Path]:
    """SQLite's companion files of a WAL database: ``-wal`` and ``-shm`` (sqlite.org/wal.html)."""
    return [db_file.with_name(db_file.name + suffix) for suffix in ("-wal", "-shm")]


def grants_file() -> Path:
    """Which identity may use which other identity's workspace (``kyfs share``):
    ``<data dir>/grants.toml``, kept with the workspaces it is about."""
    return data_dir() / "grants.toml"


def trash_dir() -> Path:
    """Where dropped workspaces wait until ``kyfs trash empty``: ``<data dir>/trash``."""
    return data_dir() / "trash"


TRASH_STAMP = "%Y%m%dT%H%M%S%fZ"  # strftime format of the drop time (UTC) in trash names


def trash_file(name: str, stamp: str) -> Path:
    """The trash file of workspace ``name`` dropped at ``stamp`` (TRASH_STAMP, UTC)."""
    return trash_dir() / f"{name}@{stamp}{DB_SUFFIX}"


def parse_trash_file(path: Path) -> tuple[str, str] | None:
    """``(name, stamp)`` of a trash file, or None for any other file."""
    base = workspace_name(path)
    if base is None or "@" not in base:
        return None
    name, _, stamp = base.rpartition("@")
    return name, stamp


def config_dir() -> Path:
    """The config directory: ``user_config_dir("kyfs")``, or ``$KYFS_HOME``."""
    return _home() or Path(platformdirs.user_config_dir(APP))


def config_file() -> Path:
    """The TOML file of settings shared by every user (kyfs.platform.config)."""
    return config_dir() / "config.toml"


def user_state_file(user: str) -> Path:
    """Per-user state (active workspace, active cursor): ``<config dir>/users/<user>.toml``;
    ``user`` must already be validated (kyfs.core.names.check_workspace_name's rule)."""
    return config_dir() / "users" / f"{user}.toml"


def cursor_file(user: str, name: str) -> Path:
    """A user's cursor ``name``: ``<config dir>/cursors/<user>/<name>.toml``."""
    return config_dir() / "cursors" / user / f"{name}.toml"


def config_files() -> list[tuple[str, Path]]:
    """Every settings file that exists: ``config.toml``, each user's state and each
    user's cursors, as (path relative to the config dir, file), in name order."""
    top = config_dir()
    found = [config_file(), *sorted((top / "users").glob("*.toml"))]
    found += sorted((top / "cursors").glob("*/*.toml"))
    return [(f.relative_to(top).as_posix(), f) for f in found if f.is_file()]


def config_member(relative: str) -> Path:
    """The file of ``relative`` (a path :func:`config_files` gives) in the config dir;
    the caller has checked its shape."""
    return config_dir() / relative


def state_dir() -> Path:
    """Runtime records of running mounts and their logs: ``user_state_dir("kyfs")``."""
    home = _home()
    return home / "state" if home else Path(platformdirs.user_state_dir(APP))


def spill_dir() -> Path:
    """Where open files spill large writes before commit: on the data directory's disk."""
    return data_dir() / "spill"


def kycli_legacy_file() -> Path:
    """KyCLI's legacy single file, ``~/kydata.db`` (imported into ``default``)."""
    return Path.home() / "kydata.db"


def kycli_data_dir() -> Path:
    """KyCLI's per-workspace files, ``~/.kycli/data/<workspace>.db``."""
    return Path.home() / ".kycli" / "data"


def purge_archive_file(stamp: str) -> Path:
    """Where ``kyfs uninstall --purge`` archives the data first: ``~/kyfs-data-<UTC>.tar.gz``."""
    return Path.home() / f"kyfs-data-{stamp}.tar.gz"


def default_mountpoint() -> Path:
    """The mountpoint used when none is given: ``~/kyfs``."""
    return Path.home() / APP


def log_file() -> Path:
    """The daemon's rotating log: ``user_log_dir("kyfs")/kyfs.log``, or
    ``$KYFS_HOME/state/kyfs.log``."""
    home = _home()
    return (home / "state" if home else Path(platformdirs.user_log_dir(APP))) / "kyfs.log"


def systemd_user_unit() -> Path:
    """Where ``kyfs service install`` writes the unit: ``$XDG_CONFIG_HOME/systemd/user``
    (systemd.unit(5), user unit search path)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / "kyfs.service"


def mount_record(mountpoint: Path) -> Path:
    """The JSON record (pid, mountpoint, data directory) of the daemon serving ``mountpoint``."""
    import hashlib  # lazily: most commands never need it (cold start)

    digest = hashlib.sha256(str(mountpoint.absolute()).encode()).hexdigest()[:16]
    return state_dir() / "mounts" / f"{digest}.json"


def mount_records() -> list[Path]:
    """Every daemon record (see :func:`mount_record`) in the state directory."""
    return sorted((state_dir() / "mounts").glob("*.json"))


def shell_history_file() -> Path:
    """The history of ``kyfs shell``: ``<state dir>/shell_history``."""
    return state_dir() / "shell_history"


def mount_log(mountpoint: Path) -> Path:
    """The log file of a background daemon serving ``mountpoint``."""
    return mount_record(mountpoint).with_suffix(".log")
