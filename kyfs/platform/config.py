"""Small state in TOML files: shared settings, per-user state, and cursors.

* ``config.toml`` (kyfs.platform.paths.config_file()), shared: ``archive_retention_days``
  (number, default 15: how long a deleted key's last value is kept for ``kyfs
  restore``), ``undo_cap_mib`` and ``undo_cap_percent`` (numbers, default 10240 and 20:
  history, archive and trash together stay under the smaller of that many MiB and that
  share of the data directory's file system), ``write_buffer_mib`` (default 256: unsaved
  writes all open files keep in memory together), ``engine`` (where workspaces live:
  ``"sqlite"``, the default, or a PostgreSQL URL; ``--engine`` and ``KYFS_ENGINE`` win
  over it), ``kycli_hint_shown``.
* ``users/<user>.toml``, one per user (``--user``, ``KYFS_USER``, default the
  login name): ``active_workspace`` and ``active_cursor``. Separate files, so two
  agents running ``kyfs use`` as two users never overwrite each other.
* ``cursors/<user>/<name>.toml``: a cursor is a named pointer to a data directory
  (``path``) plus a default ``workspace`` (ProntoDB's cursors). While a cursor is
  in effect, ``kyfs use`` changes the cursor's workspace.

The file is read with tomllib and written with tomli-w, through a temporary
file and ``os.replace`` so that a reader never sees half a file (POSIX rename
is atomic). Concurrent writers: the last one wins; no lock is taken. Safe from
any thread as long as two threads do not write at once.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kyfs.core.errors import InvalidInput
from kyfs.platform import paths

if TYPE_CHECKING:
    from kyfs.core.identity import Grant, Scope

DEFAULT_WORKSPACE = "default"
SHARED_WORKSPACE = "shared"
ENV_USER = "KYFS_USER"
ENV_CURSOR = "KYFS_CURSOR"
DEFAULT_ARCHIVE_RETENTION_DAYS = 15.0
DEFAULT_UNDO_CAP_MIB = 10240.0  # MiB of history, archive and trash at most (10 GiB)
DEFAULT_UNDO_CAP_PERCENT = 20.0  # % of the data directory's file system at most
ENV_WORKSPACE = "KYFS_WORKSPACE"
# The one workspace a mount shows (kyfs -w NAME mount sets it for its daemon).
ENV_MOUNT_WORKSPACE = "KYFS_MOUNT_WORKSPACE"
ENV_ENGINE = "KYFS_ENGINE"
ENV_ADDRESSES = "KYFS_ADDRESSES"  # how key arguments are read: kyfs or prontodb


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None


def save(data: dict[str, Any], path: Path | None = None) -> None:
    """Write ``data`` as TOML, atomically (temporary file, fsync, rename), mode 0600."""
    import tempfile

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


def current_user() -> str:
    """Whose state commands use, and the identity they act as: ``$KYFS_USER``, else
    :func:`login_name`.

    Raises:
        InvalidName: (exit 2) not a valid name (the workspace-name rule).
    """
    from kyfs.core.names import check_workspace_name

    return check_workspace_name(os.environ.get(ENV_USER) or login_name())


def main_identity() -> str:
    """The data directory owner's identity (kyfs.core.identity): what grants.toml records
    as ``main`` (written the first time a data directory with workspaces is used), else
    :func:`login_name`."""
    recorded = load(paths.grants_file()).get("main")
    if isinstance(recorded, str):
        from kyfs.core.names import WORKSPACE_NAME_RE

        if WORKSPACE_NAME_RE.fullmatch(recorded):
            return recorded
    return login_name()


def login_name() -> str:
    """The login name of this process's uid from the password database (pwd(3)); for a
    uid with no entry (a container), ``uid<number>``. Not LOGNAME or USER: any caller
    sets those, and they would make it the main identity."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid{os.getuid()}"


def load_grants() -> tuple[Grant, ...]:
    """The grants of ``grants.toml`` (kyfs.platform.paths.grants_file), in file order.
    An entry that breaks the rules (a bad name, a missing field) is left out: the file
    is edited by every identity and read as untrusted input.

    Raises:
        InvalidInput: (exit 2) the file is not valid TOML.
    """
    from kyfs.core.identity import Grant
    from kyfs.core.names import WORKSPACE_NAME_RE

    found = []
    for item in load(paths.grants_file()).get("grant", []):
        if not isinstance(item, dict):
            continue
        owner, workspace, grantee = (item.get(f) for f in ("owner", "workspace", "grantee"))
        names = (owner, workspace, grantee)
        if all(isinstance(n, str) and WORKSPACE_NAME_RE.fullmatch(n) for n in names):
            read_only = item.get("read_only") is True
            found.append(Grant(str(owner), str(workspace), str(grantee), read_only))
    return tuple(found)


def save_grants(grants: Iterable[Grant]) -> None:
    """Write ``grants`` to ``grants.toml`` (atomically, as :func:`save`), with the main
    identity (:func:`main_identity`) recorded beside them."""
    save(
        {
            "main": main_identity(),
            "grant": [
                {"owner": g.owner, "workspace": g.workspace, "grantee": g.grantee,
                 "read_only": g.read_only}
                for g in grants
            ]
        },
        paths.grants_file(),
    )  # fmt: skip


def current_scope() -> Scope:
    """What the current identity (:func:`current_user`) sees (kyfs.core.identity.Scope).

    Raises:
        InvalidName: (exit 2) a bad ``--user``. InvalidInput: (exit 2) grants.toml.
    """
    from kyfs.core.identity import Scope

    return Scope(current_user(), main_identity(), load_grants())


def _user_state() -> dict[str, Any]:
    return load(paths.user_state_file(current_user()))


def _save_user_state(data: dict[str, Any]) -> None:
    save(data, paths.user_state_file(current_user()))


def active_cursor() -> str | None:
    """The cursor in effect: ``$KYFS_CURSOR`` (``--cursor``), else the user's active one."""
    name = os.environ.get(ENV_CURSOR) or _user_state().get("active_cursor")
    return name if isinstance(name, str) and name else None


def active_workspace() -> str | None:
    """The workspace set by ``kyfs use`` for the current user (and cursor), or None."""
    cursor = active_cursor()
    if cursor is not None:
        value = get_cursor(cursor).get("workspace")
    else:
        value = _user_state().get("active_workspace", load().get("active_workspace"))
    return value if isinstance(value, str) else None


def set_active_workspace(name: str) -> None:
    """Remember ``name`` as the current user's (or the cursor's) active workspace."""
    cursor = active_cursor()
    if cursor is not None:
        data = get_cursor(cursor)
        data["workspace"] = name
        save(data, paths.cursor_file(current_user(), cursor))
        return
    data = _user_state()
    data["active_workspace"] = name
    _save_user_state(data)


def follow_rename(old: str, new: str) -> None:
    """After the current identity's workspace ``old`` became ``new``: its own state, and
    every other identity's whose active workspace was it (as ``OWNER~old``, through a
    grant), now name ``new``. Another identity's own workspace of the same name is
    another workspace and stays (kyfs.core.identity)."""
    owner, main = current_user(), main_identity()
    directory = paths.config_dir() / "users"
    for file in directory.glob("*.toml") if directory.is_dir() else []:
        data = load(file)
        mine = file.stem == owner
        before, after = (old, new) if mine else (f"{owner}~{old}", f"{owner}~{new}")
        if data.get("active_workspace") == before:
            data["active_workspace"] = after
            save(data, file)
    shared = load()
    if owner == main and shared.get("active_workspace") == old:
        shared["active_workspace"] = new
        save(shared)


# --- cursors -----------------------------------------------------------------------------
def get_cursor(name: str) -> dict[str, Any]:
    """The current user's cursor ``name``: ``{"path": ..., "workspace": ...}``.

    Raises:
        NotFound: (exit 1) no such cursor.
    """
    from kyfs.core.errors import NotFound
    from kyfs.core.names import check_workspace_name

    file = paths.cursor_file(current_user(), check_workspace_name(name))
    data = load(file)
    if not data:
        raise NotFound(f"no cursor named {name} (kyfs cursor list)")
    return data


def set_cursor(name: str, path: Path, workspace: str | None = None) -> None:
    """Create or change the current user's cursor ``name``."""
    from kyfs.core.names import check_workspace_name

    data: dict[str, Any] = {"path": str(path.expanduser().absolute())}
    if workspace:
        data["workspace"] = check_workspace_name(workspace)
    save(data, paths.cursor_file(current_user(), check_workspace_name(name)))


def list_cursors() -> dict[str, dict[str, Any]]:
    """The current user's cursors by name."""
    directory = paths.cursor_file(current_user(), "x").parent
    if not directory.is_dir():
        return {}
    return {file.stem: load(file) for file in sorted(directory.glob("*.toml"))}


def delete_cursor(name: str) -> None:
    """Delete the current user's cursor ``name`` (and stop using it if it was active)."""
    get_cursor(name)
    paths.cursor_file(current_user(), name).unlink()
    data = _user_state()
    if data.get("active_cursor") == name:
        del data["active_cursor"]
        _save_user_state(data)


def set_active_cursor(name: str | None) -> None:
    """Make cursor ``name`` the current user's active one (None: no cursor)."""
    data = _user_state()
    if name is None:
        data.pop("active_cursor", None)
    else:
        get_cursor(name)
        data["active_cursor"] = name
    _save_user_state(data)


def apply_cursor() -> str | None:
    """Point kyfs.platform.paths at the active cursor's data directory (``KYFS_DATA``, inherited by
    the daemon a ``kyfs mount`` starts); return the cursor's name."""
    name = active_cursor()
    if name is not None:
        os.environ[paths.ENV_DATA] = get_cursor(name)["path"]
    return name


def archive_retention_s() -> float:
    """Seconds a deleted key stays in the archive (``archive_retention_days``, default 15).

    Raises:
        InvalidInput: (exit 2) the setting is not a non-negative number.
    """
    value = load().get("archive_retention_days", DEFAULT_ARCHIVE_RETENTION_DAYS)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 36500:
        raise InvalidInput(
            f"archive_retention_days must be a number of days from 0 to 36500, not {value!r}"
        )
    return float(value) * 86400


def undo_cap_bytes(directory: Path | None = None) -> int:
    """How many bytes undo data (history versions, the archive, the trash) may take in
    all: the smaller of ``undo_cap_mib`` MiB (default 10240) and ``undo_cap_percent`` %
    (default 20) of the file system that holds ``directory`` (the data directory; None:
    the MiB alone, as for a PostgreSQL server).

    Raises:
        InvalidInput: (exit 2) a setting that is not a number in range (0 to 2^40 MiB;
            0 to 100 %).
    """
    data = load()
    limits = {"undo_cap_mib": (DEFAULT_UNDO_CAP_MIB, 2.0**40), "undo_cap_percent":
              (DEFAULT_UNDO_CAP_PERCENT, 100.0)}  # fmt: skip
    values = {}
    for name, (default, highest) in limits.items():
        value = data.get(name, default)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not 0 <= value <= highest:  # also NaN
            raise InvalidInput(f"{name} must be a number from 0 to {highest:g}, not {value!r}")
        values[name] = float(value)
    cap = int(values["undo_cap_mib"] * 2**20)
    if directory is not None:
        disk = os.statvfs(directory)
        cap = min(cap, int(disk.f_blocks * disk.f_frsize * values["undo_cap_percent"] / 100))
    return cap


def write_buffer_bytes() -> int:
    """How many bytes of unsaved writes all files open through a mount keep in memory
    together (``write_buffer_mib``, default 256; the rest waits in spill files on the
    data directory's disk: kyfs.vfs.openfile).

    Raises:
        InvalidInput: (exit 2) not a number of MiB from 1 to 65536.
    """
    value = load().get("write_buffer_mib", 256)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 65536:
        raise InvalidInput(f"write_buffer_mib must be a number from 1 to 65536, not {value!r}")
    return int(value * 2**20)


def address_style() -> str:
    """How key arguments are read (kyfs.core.address): ``$KYFS_ADDRESSES``
    (``kyfs --addresses``), else ``addresses`` in config.toml, else ``kyfs``;
    ``prontodb`` also reads ProntoDB's ``PROJECT.NAMESPACE.KEY``.

    Raises:
        InvalidInput: (exit 2) neither ``kyfs`` nor ``prontodb``.
    """
    from kyfs.core.address import check_style

    value = os.environ.get(ENV_ADDRESSES)
    if value:
        return check_style(value, ENV_ADDRESSES)
    return check_style(load().get("addresses", "kyfs"), "addresses in config.toml")


def engine_url() -> str | None:
    """Where workspaces live: a PostgreSQL URL (``postgresql://...`` or ``postgres://...``)
    or libpq connection string (``host=... dbname=...``), or None for the SQLite engine
    (one file per workspace in the data directory). From ``--engine`` / ``KYFS_ENGINE``,
    else ``engine`` in config.toml; ``sqlite`` or empty means SQLite.

    Raises:
        InvalidInput: (exit 2) neither ``sqlite`` nor a PostgreSQL URL. The message never
            repeats the value, which may hold a password.
    """
    value = os.environ.get(ENV_ENGINE)
    source = ENV_ENGINE
    if not value:
        value = load().get("engine")
        source = "engine in config.toml"
    return check_engine(value, source)


def check_engine(value: object, source: str = "the engine") -> str | None:
    """``value`` as an engine: None for SQLite (None, empty or ``sqlite``), else the
    PostgreSQL URL or libpq connection string, stripped.

    Raises:
        InvalidInput: (exit 2) anything else, said of ``source``, never repeating the
            value, which may hold a password.
    """
    if value is None or value == "" or value == "sqlite":
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{source} must be a string: sqlite or a postgresql:// URL")
    text = value.strip()
    if text.startswith(("postgresql://", "postgres://")) or ("=" in text and "://" not in text):
        return text
    raise InvalidInput(f"{source} must be sqlite, a postgresql:// URL or a libpq connection string")
