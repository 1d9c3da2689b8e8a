"""The ``kyfs`` command line (click): thin commands over the engine and the daemon.

Each command opens what it needs, calls one library function and prints the
result. A kyfs.core.errors.KyfsError becomes one line ``Error: <message>`` on stderr
and the error's exit code (docs/exit-codes.md); no user error prints a
traceback. No SQL and no FUSE calls here; the FUSE binding is imported only by
``kyfs mount``.

The workspace a data command uses: ``-w/--workspace``, else ``$KYFS_WORKSPACE``,
else the active workspace (``kyfs use``), else ``default``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem

from kyfs import __version__
from kyfs.app import (
    drop_workspace,
    engine_session,
    ensure_shared,
    project_workspace,
    rename_workspace,
    resolve_workspace,
    session,
    use_project,
)
from kyfs.core.errors import InvalidInput, KyfsError, NotFound, StorageError, WorkspaceNotFound
from kyfs.platform import config, paths

F = TypeVar("F", bound=Callable[..., Any])


class KyfsCliError(click.ClickException):
    """A KyfsError shown as click shows its errors, with the error's own exit code."""

    def __init__(self, error: KyfsError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]  # click reads it per instance


class KyfsGroup(click.Group):
    """The root group: turns KyfsError from any command into KyfsCliError."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a KyfsError leaves as one line and its exit code."""
        try:
            return super().invoke(ctx)
        except KyfsError as exc:
            raise KyfsCliError(exc) from None


@click.group(cls=KyfsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kyfs")
@click.option(
    "--user", envvar=config.ENV_USER, metavar="NAME", help="Whose state to use (default: login)."
)
@click.option(
    "--cursor", envvar=config.ENV_CURSOR, metavar="NAME", help="Use cursor NAME's data directory."
)
@click.pass_context
def cli(ctx: click.Context, user: str | None, cursor: str | None) -> None:
    """kyfs: key-value workspaces that live as a filesystem.

    Each workspace is one SQLite file; `kyfs mount` shows every workspace as a
    directory and every key as a file.
    """
    if ctx.resilient_parsing:  # shell completion: no side effects
        return
    # In the environment for the command's duration, so that a daemon started by
    # `kyfs mount` inherits them; put back afterwards (in-process callers, tests).
    saved = {n: os.environ.get(n) for n in (config.ENV_USER, config.ENV_CURSOR, paths.ENV_DATA)}
    ctx.call_on_close(lambda: _restore_environment(saved))
    if user:
        os.environ[config.ENV_USER] = user
    if cursor:
        os.environ[config.ENV_CURSOR] = cursor
    config.current_user()  # a bad --user is a clear error before anything runs
    config.apply_cursor()
    if ctx.invoked_subcommand in ("completion", "migrate", None):
        return
    _kycli_hint_once()
    with engine_session() as workspaces:
        ensure_shared(workspaces)


def _restore_environment(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _kycli_hint_once() -> None:
    """On a first run with KyCLI data and no workspace, say once how to import it."""
    if config.load().get("kycli_hint_shown"):
        return
    if not (paths.kycli_legacy_file().is_file() or paths.kycli_data_dir().is_dir()):
        return  # the common case stays cheap: no import of the migration code
    from kyfs.transfer import migrate

    with engine_session() as workspaces:
        names = [n for n in workspaces.names() if n != config.SHARED_WORKSPACE]
        needed = migrate.kycli_hint_needed(names)
    if needed:
        click.echo(
            "kyfs: KyCLI data found (~/kydata.db or ~/.kycli/data); import it with: "
            "kyfs migrate kycli",
            err=True,
        )
        data = config.load()
        data["kycli_hint_shown"] = True
        config.save(data)


def main() -> None:
    """Entry point of the ``kyfs`` console script and ``python -m kyfs``."""
    cli(prog_name="kyfs")


# --- shared pieces ----------------------------------------------------------------------
def complete_workspaces(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of workspace names (never fails: no names on any error)."""
    try:
        with engine_session() as workspaces:
            return [CompletionItem(n) for n in workspaces.names() if n.startswith(incomplete)]
    except Exception:  # completion must never print a traceback into the shell
        return []


def complete_keys(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of the keys of the workspace the command would use."""
    try:
        with session(ctx.params.get("workspace")) as (_, store):
            return [CompletionItem(k) for k in store.keys(incomplete)[:200]]
    except Exception:  # completion must never print a traceback into the shell
        return []


def workspace_option(func: F) -> F:
    """The ``-w/--workspace NAME`` option (environment: KYFS_WORKSPACE)."""
    return click.option(
        "-w",
        "--workspace",
        "workspace",
        envvar=config.ENV_WORKSPACE,
        metavar="NAME",
        help="Workspace to use instead of the active one (env KYFS_WORKSPACE).",
        shell_complete=complete_workspaces,
    )(func)


def json_option(func: F) -> F:
    """The ``--json`` flag."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def _iso(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


# --- mounting ---------------------------------------------------------------------------
@cli.command()
@click.argument("mountpoint", required=False, type=click.Path(path_type=Path))
@click.option("--foreground", "-f", is_flag=True, help="Serve in this process until unmounted.")
@click.option("-o", "options", metavar="OPTIONS", help="Mount options, e.g. -o allow_other.")
@click.option("-v", "--verbose", count=True, help="Log more: -v info, -vv debug.")
@click.option("--debug", is_flag=True, help="Log every operation (same as -vv).")
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), help="Serve metrics on 127.0.0.1:PORT."
)
@click.option(
    "--xattr/--no-xattr",
    default=True,
    help="Serve user.kyfs.* extended attributes (--no-xattr: faster ls -l and first writes).",
)
def mount(
    mountpoint: Path | None,
    foreground: bool,
    options: str | None,
    verbose: int,
    debug: bool,
    metrics_port: int | None,
    xattr: bool,
) -> None:
    """Mount the workspaces at MOUNTPOINT (default ~/kyfs), in the background.

    Creates the `default` workspace when there is none besides `shared`. A stale mountpoint
    (daemon gone) is recovered first.
    """
    from kyfs.fuse import daemon as mounting

    target = (mountpoint or paths.default_mountpoint()).expanduser().absolute()
    with engine_session() as workspaces:
        if not [n for n in workspaces.names() if n != config.SHARED_WORKSPACE]:
            workspaces.create(config.DEFAULT_WORKSPACE)
    verbosity = 2 if debug else verbose
    if foreground:
        from kyfs.platform import service

        service.setup_logging(verbosity, foreground=True)
        mounting.serve(target, mounting.parse_options(options), metrics_port, xattr)
        return
    pid = mounting.mount(target, options, verbosity, metrics_port, xattr)
    click.echo(f"kyfs mounted at {target} (daemon pid {pid}); unmount with: kyfs unmount {target}")


@cli.command()
@click.argument("mountpoint", required=False, type=click.Path(path_type=Path))
@click.option("--lazy", "-z", is_flag=True, help="Detach now even if files are open (umount -l).")
def unmount(mountpoint: Path | None, lazy: bool) -> None:
    """Unmount MOUNTPOINT (default ~/kyfs) and wait for the daemon to exit."""
    from kyfs.fuse import daemon as mounting

    target = (mountpoint or paths.default_mountpoint()).expanduser().absolute()
    mounting.unmount(target, lazy=lazy)
    click.echo(f"unmounted {target}")


@cli.command()
@click.argument("mountpoint", required=False, type=click.Path(path_type=Path))
@json_option
def status(mountpoint: Path | None, as_json: bool) -> None:
    """Is kyfs mounted at MOUNTPOINT (default ~/kyfs)? Daemon, data, active workspace."""
    from kyfs.fuse import daemon as mounting

    info = mounting.status((mountpoint or paths.default_mountpoint()).expanduser())
    if as_json:
        _echo_json(info)
        return
    state = (
        "stale (the daemon is gone; kyfs mount recovers it)"
        if info["stale"]
        else ("mounted" if info["mounted"] else "not mounted")
    )
    click.echo(f"{info['mountpoint']}: {state}")
    if info["pid"]:
        click.echo(f"daemon: pid {info['pid']}, up {info['uptime_s']} s")
    click.echo(f"data: {info['data_dir']} ({info['workspaces']} workspaces)")
    click.echo(f"active workspace: {info['active_workspace']} (user {info['user']})")
    click.echo(f"version: {info['version']}")


@cli.command()
@click.argument("mountpoint", required=False, type=click.Path(path_type=Path))
@json_option
def stats(mountpoint: Path | None, as_json: bool) -> None:
    """The mount's operation counts, errors, bytes and latencies (from .kyfs/metrics)."""
    from kyfs.core.errors import MountError
    from kyfs.platform import metrics as metrics_mod

    target = (mountpoint or paths.default_mountpoint()).expanduser().absolute()
    try:
        text = (target / ".kyfs" / "metrics").read_text()
    except OSError as exc:
        raise MountError(f"no kyfs mount answers at {target}: {exc.strerror}") from None
    data = metrics_mod.parse(text)
    if as_json:
        _echo_json(data)
        return
    click.echo(f"{'operation':<12}{'calls':>10}{'mean ms':>10}")
    for op, count in sorted(data["operations"].items(), key=lambda kv: -kv[1]):
        latency = data["latency_seconds"].get(op, {})
        mean = 1000 * latency.get("sum", 0.0) / max(latency.get("count", 1), 1)
        click.echo(f"{op:<12}{count:>10}{mean:>10.3f}")
    for label, count in sorted(data["errors"].items()):
        click.echo(f"error {label}: {count}")
    click.echo(f"read {data['read_bytes']} bytes, written {data['written_bytes']} bytes")


@cli.group()
def service() -> None:
    """The systemd user unit that keeps kyfs mounted."""


@service.command(name="install")
@click.option("--mountpoint", type=click.Path(path_type=Path), help="Default ~/kyfs.")
def service_install(mountpoint: Path | None) -> None:
    """Write the kyfs user unit with this installation's paths."""
    from kyfs.platform import service as services

    target = services.install(mountpoint)
    click.echo(f"wrote {target}")
    click.echo(
        "enable it with: systemctl --user daemon-reload && systemctl --user enable --now kyfs"
    )


@service.command(name="uninstall")
def service_uninstall() -> None:
    """Remove the kyfs user unit (stop it first: systemctl --user disable --now kyfs)."""
    from kyfs.platform import service as services

    removed = services.uninstall()
    click.echo(f"removed {removed}" if removed else "no kyfs unit was installed")


@cli.command()
@click.option("--purge", is_flag=True, help="Also remove every workspace and the config.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-keep", is_flag=True, help="With --purge --yes: no archive of the data first.")
def uninstall(purge: bool, yes: bool, no_keep: bool) -> None:
    """Remove the systemd unit; with --purge also the data (archived first)."""
    from kyfs.platform import service as services

    removed = services.uninstall()
    click.echo(f"removed {removed}" if removed else "no kyfs unit was installed")
    if not purge:
        return
    if not yes:
        click.confirm(f"Remove every workspace in {paths.data_dir()} and the config?", abort=True)
    archive = services.purge(keep=not (yes and no_keep))
    if archive is not None:
        click.echo(f"archived the data to {archive}")
    click.echo("removed the data and the config")


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(kyfs completion bash)"."""
    from click.shell_completion import get_completion_class

    complete_class = get_completion_class(shell)
    assert complete_class is not None
    click.echo(complete_class(cli, {}, "kyfs", "_KYFS_COMPLETE").source())


# --- workspaces -------------------------------------------------------------------------
@cli.command()
@click.argument("name", required=False, shell_complete=complete_workspaces)
@click.option("--create", is_flag=True, help="Create the workspace if it does not exist.")
@click.option(
    "--project",
    "project",
    is_flag=False,
    flag_value=".",
    default=None,
    metavar="[PATH]",
    help="Use the project workspace of PATH (default: the current directory).",
)
def use(name: str | None, create: bool, project: str | None) -> None:
    """Make NAME (or a project's workspace, with --project) the active workspace."""
    with engine_session() as workspaces:
        if project is not None:
            name = use_project(workspaces, Path(project))
        elif name is None:
            raise InvalidInput("give a workspace NAME, or --project [PATH]")
        elif not workspaces.exists(name):
            if not create:
                raise WorkspaceNotFound(f"workspace not found: {name} (add --create to create it)")
            workspaces.create(name)
            click.echo(f"created workspace {name}", err=True)
    config.set_active_workspace(name)
    click.echo(f"active workspace: {name}")


@cli.command()
@click.argument("path", required=False, default=".", type=click.Path(path_type=Path))
def project(path: Path) -> None:
    """Print the name of the project workspace of PATH (default: the current directory)."""

    click.echo(project_workspace(path))


@cli.command(name="workspaces")
@json_option
def list_workspaces(as_json: bool) -> None:
    """List every workspace: the active one marked *, its keys and size in bytes."""
    active = resolve_workspace(None)
    with engine_session() as workspaces:
        infos = [workspaces.info(name) for name in workspaces.names()]
    if as_json:
        _echo_json(
            [
                {"name": i.name, "active": i.name == active, "keys": i.keys, "size": i.size,
                 "project": i.project, "ttl_s": i.ttl_s}
                for i in infos
            ]
        )  # fmt: skip
        return
    for info in infos:
        mark = "*" if info.name == active else " "
        extra = f"  {info.project}" if info.project else ""
        extra += f"  (cache, TTL {info.ttl_s:g} s)" if info.ttl_s else ""
        click.echo(f"{mark} {info.name:<24} {info.keys:>8} keys {info.size:>12} bytes{extra}")


@cli.command()
@click.argument("name")
@click.option("--ttl", metavar="DURATION", help="A cache workspace: every key written expires.")
def create(name: str, ttl: str | None) -> None:
    """Create the empty workspace NAME (a cache workspace with --ttl 1h)."""
    from kyfs.core.names import parse_duration

    seconds = parse_duration(ttl) if ttl else None
    with engine_session() as workspaces:
        workspaces.create(name)
        if seconds is not None:
            with workspaces.shared():
                store = workspaces.open(name)
                store.set_meta("ttl_s", repr(seconds))
                store.close()
    click.echo(f"created workspace {name}")


@cli.command()
@click.argument("name", shell_complete=complete_workspaces)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def drop(name: str, yes: bool) -> None:
    """Drop the workspace NAME: it moves to the trash (`kyfs trash restore NAME` undoes it)."""
    with engine_session() as workspaces:
        if not workspaces.exists(name):
            raise WorkspaceNotFound(f"workspace not found: {name}")
        if not yes:
            click.confirm(f"Drop workspace {name!r} and all its keys?", abort=True)
        drop_workspace(workspaces, name)
    click.echo(f"dropped workspace {name} (in the trash: kyfs trash restore {name})")


@cli.command()
@click.argument("old", shell_complete=complete_workspaces)
@click.argument("new")
def rename(old: str, new: str) -> None:
    """Rename the workspace OLD to NEW (the active workspace follows)."""
    with engine_session() as workspaces:
        rename_workspace(workspaces, old, new)
    click.echo(f"renamed workspace {old} to {new}")


# --- keys -------------------------------------------------------------------------------
@cli.command(name="set")
@click.argument("key", shell_complete=complete_keys)
@click.argument("value", required=False)
@workspace_option
@click.option("--ttl", metavar="DURATION", help="Expire the key after DURATION (10m, 2h, 7d).")
def set_(key: str, value: str | None, workspace: str | None, ttl: str | None) -> None:
    """Store VALUE at KEY; the value is read from stdin when omitted or `-` (binary-safe)."""
    from kyfs.core.names import parse_duration

    seconds = parse_duration(ttl) if ttl else None
    with session(workspace) as (_, store):
        if value is None or value == "-":
            store.set(key, sys.stdin.buffer, ttl_s=seconds)
        else:
            store.set(key, os.fsencode(value), ttl_s=seconds)  # argv bytes, even non-UTF-8


@cli.command()
@click.argument("key", shell_complete=complete_keys)
@workspace_option
@json_option
def get(key: str, workspace: str | None, as_json: bool) -> None:
    """Print the value of KEY: its raw bytes (or a JSON object with --json).

    A symbolic link's value is its target, as stored (not followed); --json says
    "type": "symlink" (or "key"), and gives the owner and the number of names.
    """
    with session(workspace) as (name, store):
        if as_json:
            from kyfs.core.nodes import KIND_NAMES

            data = store.get(key)  # one committed version
            entry = store.stat(key)
            try:
                value, encoding = data.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                import base64

                value, encoding = base64.b64encode(data).decode("ascii"), "base64"
            _echo_json(
                {
                    "workspace": name,
                    "key": key,
                    "value": value,
                    "encoding": encoding,
                    "type": KIND_NAMES[entry.kind],
                    "size": len(data),
                    "mode": f"{entry.mode:04o}",
                    "uid": entry.uid,
                    "gid": entry.gid,
                    "nlink": entry.nlink,
                    "created": _iso(entry.created_ns),
                    "updated": _iso(entry.mtime_ns),
                }
            )
            return
        out = sys.stdout.buffer
        for piece in store.iter_value(key):
            out.write(piece)
        out.flush()


@cli.command()
@click.argument("key", shell_complete=complete_keys)
@workspace_option
def delete(key: str, workspace: str | None) -> None:
    """Delete KEY."""
    with session(workspace) as (_, store):
        store.delete(key)


@cli.command()
@click.argument("prefix", required=False, default="")
@workspace_option
@json_option
@click.option("--glob", metavar="PATTERN", help="Only keys matching a glob, e.g. 'user.*'.")
def keys(prefix: str, workspace: str | None, as_json: bool, glob: str | None) -> None:
    """List the keys (starting with PREFIX), one per line."""
    with session(workspace) as (_, store):
        found = store.keys(prefix, glob=glob)
    if as_json:
        _echo_json(found)
        return
    for key in found:
        click.echo(key)


@cli.command()
@click.argument("key", shell_complete=complete_keys)
@workspace_option
@click.option("--force", is_flag=True, help="Replace a live key of that name (it is archived).")
@click.option("--version", "version", type=int, help="Write back version N (kyfs history).")
@click.option("--at", "at", metavar="TIME", help="Write back the value KEY had at TIME (UTC).")
def restore(
    key: str, workspace: str | None, force: bool, version: int | None, at: str | None
) -> None:
    """Bring back a deleted KEY from the archive, or an older version of KEY."""
    with session(workspace) as (name, store):
        if version is not None or at is not None:
            from kyfs.transfer.sources import parse_time

            when = parse_time(at) if at is not None else None
            if at is not None and when is None:
                raise InvalidInput(f"unreadable time {at!r}: use e.g. 2026-11-21T10:00:00Z")
            if when is not None:
                when += 999  # times are shown to the microsecond: include that whole microsecond
            entry = store.restore_version(key, version, when)
        else:
            entry = store.restore(key, force=force)
    click.echo(f"restored {key} ({entry.size} bytes) in {name}")


@cli.command()
@click.argument("key", shell_complete=complete_keys)
@click.argument("duration", required=False)
@workspace_option
@click.option("--clear", is_flag=True, help="Remove the TTL: the key never expires.")
def ttl(key: str, duration: str | None, workspace: str | None, clear: bool) -> None:
    """Show KEY's time to live, set it to DURATION (10m, 2h), or --clear it."""
    from kyfs.core.names import parse_duration

    with session(workspace) as (_, store):
        if clear:
            store.set_ttl(key, None)
        elif duration is not None:
            store.set_ttl(key, parse_duration(duration))
        expires = store.expiry(key)
    if expires is None:
        click.echo(f"{key}: no TTL")
    else:
        import time

        left = max(0.0, (expires - time.time_ns()) / 1e9)
        click.echo(f"{key}: expires {_iso(expires)} (in {left:.0f} s)")


@cli.command()
@workspace_option
@click.option("--versions", type=click.IntRange(1, 1_000_000), help="Keep at least N versions.")
@click.option("--days", type=click.FloatRange(0), help="Keep at least D days of versions.")
def retention(workspace: str | None, versions: int | None, days: float | None) -> None:
    """Show or set how much history a workspace keeps (whichever keeps more)."""
    from kyfs.engine.sqlite.history import HISTORY_DAYS, HISTORY_VERSIONS

    with session(workspace) as (name, store):
        if versions is not None:
            store.set_meta("history_versions", str(versions))
        if days is not None:
            store.set_meta("history_days", repr(days))
        meta = store.meta()
    kept_versions = meta.get("history_versions", HISTORY_VERSIONS)
    kept_days = meta.get("history_days", HISTORY_DAYS)
    click.echo(f"{name}: keeps at least {kept_versions} versions and {kept_days} days per key")


@cli.group()
def schema() -> None:
    """JSON Schema rules: writes of matching keys must validate."""


@schema.command(name="set")
@workspace_option
@click.option("--keys", "glob", required=True, metavar="GLOB", help="Keys the rule covers.")
@click.argument("schema_file", type=click.File("rb"))
def schema_set(workspace: str | None, glob: str, schema_file: Any) -> None:
    """Attach the JSON Schema in SCHEMA_FILE to keys matching GLOB (e.g. 'users/*')."""
    try:
        document = json.load(schema_file)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{schema_file.name}: not JSON: {exc}") from None
    with session(workspace) as (name, store):
        store.set_schema(glob, document)
    click.echo(f"keys {glob!r} in {name} must now match the schema")


@schema.command(name="show")
@workspace_option
@json_option
def schema_show(workspace: str | None, as_json: bool) -> None:
    """List the schema rules of a workspace."""
    with session(workspace) as (_, store):
        rules = store.schemas()
    if as_json:
        _echo_json(rules)
        return
    for rule in rules:
        click.echo(f"{rule['glob']}: {json.dumps(rule['schema'])}")


@schema.command(name="clear")
@workspace_option
@click.option("--keys", "glob", metavar="GLOB", help="Only the rule of GLOB (default: all).")
def schema_clear(workspace: str | None, glob: str | None) -> None:
    """Remove schema rules."""
    with session(workspace) as (_, store):
        removed = store.clear_schema(glob)
    click.echo(f"removed {removed} schema rule(s)")


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@workspace_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_cmd(ctx: click.Context, workspace: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND with one environment variable per key (envdir's rule).

    Keys that are valid variable names become variables whose value is the
    key's first line; the others are skipped and named on stderr.
    """
    import re
    import subprocess

    env = dict(os.environ)
    skipped = []
    with session(workspace) as (_, store):
        for key in store.keys():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                skipped.append(key)
                continue
            try:
                env[key] = store.get(key).split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
            except UnicodeDecodeError:
                skipped.append(key)
    if skipped:
        click.echo("kyfs exec: skipped keys that are not variable names or text: "
                   + ", ".join(skipped), err=True)  # fmt: skip
    try:
        done = subprocess.run(list(command), env=env, check=False)
    except FileNotFoundError:
        raise NotFound(f"command not found: {command[0]}") from None
    ctx.exit(done.returncode)


# --- cursors -------------------------------------------------------------------------------
@cli.group()
def cursor() -> None:
    """Named pointers to data directories, with a default workspace (per user)."""


@cursor.command(name="set")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path, file_okay=False))
@click.option("-w", "--workspace", "workspace", metavar="W", help="The cursor's workspace.")
def cursor_set(name: str, path: Path, workspace: str | None) -> None:
    """Create or change cursor NAME pointing at the data directory PATH."""
    config.set_cursor(name, path, workspace)
    click.echo(f"cursor {name} -> {path.expanduser().absolute()}")


@cursor.command(name="list")
@json_option
def cursor_list(as_json: bool) -> None:
    """List your cursors (* marks the active one)."""
    cursors = config.list_cursors()
    active = config.active_cursor()
    if as_json:
        _echo_json([{"name": n, "active": n == active, **c} for n, c in cursors.items()])
        return
    for name, data in cursors.items():
        mark = "*" if name == active else " "
        click.echo(f"{mark} {name:<16} {data['path']}  {data.get('workspace', '')}")


@cursor.command(name="active")
@click.argument("name", required=False)
@click.option("--none", "clear", is_flag=True, help="Use no cursor (the default data directory).")
def cursor_active(name: str | None, clear: bool) -> None:
    """Print the active cursor, or make NAME the active one."""
    if clear:
        config.set_active_cursor(None)
    elif name is not None:
        config.set_active_cursor(name)
    click.echo(config.active_cursor() or "(none)")


@cursor.command(name="delete")
@click.argument("name")
def cursor_delete(name: str) -> None:
    """Delete cursor NAME (its data directory is left alone)."""
    config.delete_cursor(name)
    click.echo(f"deleted cursor {name}")


@cli.command(name="archive")
@click.argument("prefix", required=False, default="")
@workspace_option
@json_option
def list_archive(prefix: str, workspace: str | None, as_json: bool) -> None:
    """List deleted keys waiting in the archive (newest first), starting with PREFIX."""
    with session(workspace) as (_, store):
        items = [a for a in store.archived() if a.entry.key.startswith(prefix)]
    rows = [
        {
            "key": a.entry.key,
            "type": "directory" if a.entry.is_dir else "key",
            "size": a.entry.size,
            "deleted": _iso(a.deleted_ns),
        }
        for a in items
    ]
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        click.echo(
            f"{row['deleted']}  {row['size']:>12}  {row['key']}{'/' * (row['type'] != 'key')}"
        )


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def trash(ctx: click.Context, as_json: bool) -> None:
    """List dropped workspaces (newest first); see `trash restore` and `trash empty`."""
    if ctx.invoked_subcommand is not None:
        return
    with engine_session() as workspaces:
        items = workspaces.trash()
    rows = [
        {"name": t.name, "dropped": t.dropped.isoformat().replace("+00:00", "Z"), "size": t.size}
        for t in items
    ]
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['dropped']}  {row['size']:>12} bytes  {row['name']}")


@trash.command(name="restore")
@click.argument("name")
@click.option("--as", "new_name", metavar="NEW", help="Restore under another name.")
def trash_restore(name: str, new_name: str | None) -> None:
    """Bring back the newest dropped workspace NAME with every key it had."""
    with engine_session() as workspaces:
        restored_name, count = workspaces.restore_trash(name, new_name)
    extra = f", {count} deleted entries brought back" if count else ""
    click.echo(f"restored workspace {restored_name}{extra}")


@trash.command(name="empty")
@click.option("--older-than", type=float, metavar="DAYS", help="Only those dropped before.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def trash_empty(older_than: float | None, yes: bool) -> None:
    """Delete dropped workspaces for good."""
    if not yes:
        which = f"dropped more than {older_than} days ago" if older_than is not None else "all"
        click.confirm(f"Delete trashed workspaces for good ({which})?", abort=True)
    with engine_session() as workspaces:
        deleted = workspaces.empty_trash(None if older_than is None else older_than * 86400)
    click.echo(f"deleted {len(deleted)} trashed workspaces for good")


@cli.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--repair", is_flag=True, help="Repair what can be repaired, then check again.")
@json_option
def fsck(names: tuple[str, ...], repair: bool, as_json: bool) -> None:
    """Check workspaces (all by default); exit 4 when a problem is left."""
    report: dict[str, dict[str, Any]] = {}
    with engine_session() as workspaces:
        for name in names or workspaces.names():
            problems, done = workspaces.check(name, repair=repair)
            report[name] = {"ok": not problems, "problems": problems, "repaired": done}
    if as_json:
        _echo_json(report)
    else:
        for name, result in report.items():
            for action in result["repaired"]:
                click.echo(f"{name}: repaired: {action}")
            for problem in result["problems"]:
                click.echo(f"{name}: {problem}")
            if result["ok"]:
                click.echo(f"{name}: ok")
    if any(not r["ok"] for r in report.values()):
        raise KyfsCliError(StorageError("problems found (see above); try kyfs fsck --repair"))


@cli.command()
@click.argument("query")
@click.option(
    "-w", "--workspace", "names", multiple=True, metavar="NAME", help="Search NAME (repeatable)."
)
@click.option("--all", "search_all", is_flag=True, help="Search every workspace.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True)
@json_option
@click.option("--raw", is_flag=True, help="QUERY is FTS5 syntax (AND, OR, NOT, NEAR, prefix*).")
@click.option("--keys-only", is_flag=True, help="Print WORKSPACE/KEY of each hit, nothing else.")
@click.option(
    "--color/--no-color", default=None, help="Highlight matches (default: on a terminal)."
)
def search(
    query: str,
    names: tuple[str, ...],
    search_all: bool,
    limit: int,
    as_json: bool,
    raw: bool,
    keys_only: bool,
    color: bool | None,
) -> None:
    """Full-text search of keys and values, best match first.

    Words are ANDed and "a phrase" stays a phrase; --raw takes FTS5 syntax.
    Without -w or --all, the active workspace is searched.
    """
    from kyfs import search as searching
    from kyfs.core.nodes import MARK_END, MARK_START

    with engine_session() as workspaces:
        if search_all:
            targets = workspaces.names()
        else:
            targets = list(names) or [resolve_workspace(os.environ.get(config.ENV_WORKSPACE))]
    results = searching.search(targets, query, raw=raw, limit=limit)
    for name, message in results.errors.items():
        click.echo(f"kyfs: cannot search workspace {name}: {message}", err=True)
    if color is None:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    for hit in results.hits:
        plain = hit.snippet.replace(MARK_START, "").replace(MARK_END, "")
        if keys_only:
            click.echo(f"{hit.workspace}/{hit.key}")
        elif as_json:
            _echo_json(
                {"workspace": hit.workspace, "key": hit.key, "score": hit.score, "snippet": plain}
            )
        else:
            shown = plain
            if color:
                shown = hit.snippet.replace(MARK_START, "\x1b[1;31m").replace(MARK_END, "\x1b[0m")
            click.echo(f"{hit.workspace}/{hit.key}  ({hit.score:.3f})")
            click.echo("    " + " ".join(shown.split()), color=color)
    if results.errors:
        raise KyfsCliError(
            StorageError(f"{len(results.errors)} workspace(s) could not be searched")
        )


def _progress(quiet: bool, label: str, length: int) -> Any:
    """A progress bar on stderr, or a stand-in that shows nothing (``--quiet``/``--json``)."""
    if quiet:
        return contextlib.nullcontext(_NoBar())
    return click.progressbar(length=length, label=label, file=sys.stderr)


class _NoBar:
    """A progress bar that shows nothing."""

    def update(self, steps: int) -> None:
        """Ignore progress."""


# --- history ------------------------------------------------------------------------------
@cli.command()
@click.argument("key", shell_complete=complete_keys)
@workspace_option
@json_option
def history(key: str, workspace: str | None, as_json: bool) -> None:
    """List the recorded versions of KEY, oldest first: version, time, action, size."""
    with session(workspace) as (_, store):
        rows = store.history(key)
    items = [
        {
            "version": h.id,
            "time": _iso(h.time_ns),
            "action": h.action,
            "size": None if h.value is None else len(h.value),
            "detail": h.detail,
        }
        for h in rows
    ]
    if as_json:
        _echo_json(items)
        return
    for item in items:
        size = "" if item["size"] is None else f"{item['size']} bytes"
        detail = f"  ({item['detail']})" if item["detail"] else ""
        click.echo(f"{item['version']:>6}  {item['time']}  {item['action']:<6}  {size}{detail}")


# --- migration ------------------------------------------------------------------------------
def _master_key(env_var: str | None) -> str | None:
    if env_var is None:
        return None
    value = os.environ.get(env_var)
    if not value:
        raise InvalidInput(f"the environment variable {env_var} is not set")
    return value


def _show_plan(plan: Any, as_json: bool, report: Path | None = None) -> None:
    data = plan.as_dict()
    if report is not None:
        report.write_text(json.dumps(data, indent=2))
    if as_json:
        _echo_json(data)
        return
    click.echo(f"source: {plan.source}")
    click.echo(
        f"{'workspace':<24}{'keys':>8}{'bytes':>12}{'archived':>10}{'conflicts':>11}  exists"
    )
    for w in plan.workspaces:
        click.echo(
            f"{w.name:<24}{w.keys:>8}{w.bytes:>12}{w.archived:>10}{w.conflicts:>11}  "
            f"{'yes' if w.exists else 'no'}"
        )
    click.echo(f"total: {plan.keys} keys, {plan.bytes} bytes")
    for note in plan.notes:
        click.echo(f"note: {note}")


@cli.group()
def migrate() -> None:
    """Bring data in from KyCLI, KyCLI-style scoped files and ProntoDB."""


@migrate.command(name="kycli")
@click.argument("path", required=False, type=click.Path(path_type=Path, exists=True))
@click.option("--master-key-env", metavar="VAR", help="Environment variable with the master key.")
@click.option("--merge", type=click.Choice(["keep", "replace"]), help="Into existing workspaces.")
@click.option("--yes", "-y", is_flag=True, help="Import without asking.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def migrate_kycli(
    path: Path | None, master_key_env: str | None, merge: str | None, yes: bool, quiet: bool
) -> None:
    """Import KyCLI data (~/kydata.db into `default`, ~/.kycli/data/NAME.db into NAME)."""
    from kyfs.transfer import migrate as migrating

    sources = migrating.kycli_sources(path)
    if not sources:
        raise InvalidInput("no KyCLI data found (~/kydata.db or ~/.kycli/data/*.db)")
    for source, name in sources:
        click.echo(f"{source} -> workspace {name}", err=True)
    if not yes:
        click.confirm("Import?", abort=True)
    with _progress(quiet, "importing", len(sources)) as bar:
        plan = migrating.run_kycli(
            sources, _master_key(master_key_env), merge, progress=lambda *_: bar.update(1)
        )
    click.echo(
        f"imported {plan.keys} keys ({plan.bytes} bytes) into {len(plan.workspaces)} workspaces"
    )
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)


def _read_source(source: Path, master_key_env: str | None) -> Any:
    from kyfs.transfer.sources import read_single_file

    return read_single_file(source, _master_key(master_key_env))


@migrate.command(name="analyze")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--report", type=click.Path(path_type=Path), help="Also write the report as JSON.")
@click.option("--master-key-env", metavar="VAR", help="Environment variable with the master key.")
@json_option
def migrate_analyze(
    source: Path, report: Path | None, master_key_env: str | None, as_json: bool
) -> None:
    """Show what migrating SOURCE would do: keys, bytes, conflicts, invalid names."""
    from kyfs.transfer import migrate as migrating

    _show_plan(
        migrating.analyze(_read_source(source, master_key_env), str(source)), as_json, report
    )


@migrate.command(name="run")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Show the plan; write nothing.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--merge",
    type=click.Choice(["keep", "replace"]),
    help="Write into existing workspaces: keep stored values, or replace them (archived).",
)
@click.option("--master-key-env", metavar="VAR", help="Environment variable with the master key.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def migrate_run(
    source: Path,
    dry_run: bool,
    concurrency: int,
    merge: str | None,
    master_key_env: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Migrate SOURCE into kyfs, workspaces in parallel."""
    from kyfs.transfer import migrate as migrating

    data = _read_source(source, master_key_env)
    names = {r.workspace for r in data.live} | {r.workspace for r, _ in data.archived}
    with _progress(quiet or as_json or dry_run, "migrating", len(names)) as bar:
        plan = migrating.run(
            data, str(source), merge=merge, concurrency=concurrency, dry_run=dry_run,
            progress=lambda *_: bar.update(1),
        )  # fmt: skip
    _show_plan(plan, as_json)


@migrate.command(name="validate")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--master-key-env", metavar="VAR", help="Environment variable with the master key.")
@json_option
def migrate_validate(source: Path, master_key_env: str | None, as_json: bool) -> None:
    """Check that every key of SOURCE is in kyfs with an equal SHA-256; exit 4 if not."""
    from kyfs.transfer import migrate as migrating

    result = migrating.validate(_read_source(source, master_key_env))
    if as_json:
        _echo_json(
            {"ok": result.ok, "keys": result.keys, "matched": result.matched,
             "missing": result.missing, "different": result.different}
        )  # fmt: skip
    else:
        click.echo(result.summary())
        for key in result.missing:
            click.echo(f"missing: {key}")
        for key in result.different:
            click.echo(f"different: {key}")
    if not result.ok:
        raise KyfsCliError(StorageError("validation failed"))


@migrate.command(name="cleanup")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--confirm", is_flag=True, help="Required: move SOURCE to the trash.")
@click.option("--master-key-env", metavar="VAR", help="Environment variable with the master key.")
def migrate_cleanup(source: Path, confirm: bool, master_key_env: str | None) -> None:
    """After a passing validate, move SOURCE into kyfs's trash (never deleted)."""
    from kyfs.transfer import migrate as migrating

    if not confirm:
        raise InvalidInput("cleanup moves the source away: add --confirm")
    moved = migrating.cleanup([source], _read_source(source, master_key_env))
    for path in moved:
        click.echo(f"moved {source} to {path}")


# --- backup, export, import -----------------------------------------------------------------
@cli.group()
def backup() -> None:
    """Backups of workspaces: create, verify, restore."""


@backup.command(name="create")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="The .tar.gz to write.")
@click.option("-w", "--workspace", "names", multiple=True, metavar="NAME", help="Only NAME.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def backup_create(output: Path | None, names: tuple[str, ...], quiet: bool, as_json: bool) -> None:
    """Write a .tar.gz of consistent workspace snapshots, the config and a manifest."""
    from kyfs.transfer import backup as backups

    target = output or backups.default_backup_name()
    with engine_session() as workspaces:
        count = len(names) or len(workspaces.names())
    with _progress(quiet or as_json, "backing up", count) as bar:
        manifest = backups.create(target, list(names) or None, progress=lambda _: bar.update(1))
    if as_json:
        _echo_json({"file": str(target), **manifest})
        return
    workspaces_in = [f for f in manifest["files"] if "workspace" in f]
    keys = sum(f["keys"] for f in workspaces_in)
    click.echo(f"wrote {target}: {len(workspaces_in)} workspaces, {keys} keys")


@backup.command(name="verify")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
def backup_verify(file: Path) -> None:
    """Check FILE against its manifest (checksums, sizes, key counts)."""
    import shutil
    import tempfile

    from kyfs.transfer import backup as backups

    scratch = Path(tempfile.mkdtemp(dir=paths.make_private_dir(paths.spill_dir())))
    try:
        checked = backups.verify(file, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    files = checked.manifest["files"]
    click.echo(f"{file}: ok, {len(files)} files match the manifest")


@backup.command(name="restore")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-w", "--workspace", "name", metavar="NAME", help="Only workspace NAME.")
@click.option("--as", "as_name", metavar="NEW", help="Restore under the name NEW.")
@click.option("--force", is_flag=True, help="Replace existing workspaces (they go to the trash).")
def backup_restore(file: Path, name: str | None, as_name: str | None, force: bool) -> None:
    """Restore workspaces from FILE, after verifying it."""
    from kyfs.transfer import backup as backups

    restored = backups.restore(file, name, as_name, force)
    click.echo("restored: " + ", ".join(restored))


@cli.command(name="export")
@workspace_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "json", "dir"]), default="jsonl")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File or directory.")
def export_cmd(workspace: str | None, fmt: str, output: Path | None) -> None:
    """Export every key of a workspace as JSON Lines, JSON or a directory tree."""
    from kyfs.transfer import backup as backups

    with session(workspace) as (name, store):
        count = backups.export(store, name, fmt, output)
    if output is not None:
        click.echo(f"exported {count} keys to {output}", err=True)


@cli.command(name="import")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@workspace_option
@click.option(
    "--merge", type=click.Choice(["keep", "replace"]), help="When a key exists (default: refuse)."
)
def import_cmd(path: Path, workspace: str | None, merge: str | None) -> None:
    """Import an export (.jsonl, .json or a directory) into a workspace, in one transaction."""
    from kyfs.transfer import backup as backups

    with session(workspace) as (name, store):
        count = backups.import_path(store, path, conflict=merge or "error")
    click.echo(f"imported {count} keys into {name}")


def cli_reference() -> str:
    """docs/cli.md: every command with its help, as ``kyfs CMD --help`` prints it
    (``make docs`` writes it; tests/test_docs.py checks it is current)."""
    parts = [
        "# Command reference\n",
        "Generated from the commands' own help by `make docs`; do not edit by hand.\n",
    ]

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(
            command,
            info_name=path[-1],
            parent=parent,
            max_content_width=100,
            **command.context_settings,
        )
        ctx.terminal_width = 100
        parts.append(f"## `{' '.join(path)}`\n\n```\n{command.get_help(ctx)}\n```\n")
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name], ctx)

    walk(cli, ["kyfs"], None)
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    main()
