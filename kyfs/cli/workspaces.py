"""Commands on the set of workspaces: use, project, workspaces, create, drop, rename,
cursors, the archive, the trash and fsck."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from kyfs.app import (
    ENV_DB_PATH,
    drop_workspace,
    engine_session,
    identities,
    project_workspace,
    rename_workspace,
    resolve_workspace,
    session,
    use_project,
)
from kyfs.cli.base import (
    KEY,
    KyfsCliError,
    _echo_json,
    _iso,
    cli,
    complete_workspaces,
    for_terminal,
    json_option,
    workspace_option,
)
from kyfs.core.errors import (
    InvalidInput,
    KyfsError,
    NotFound,
    StorageError,
    WorkspaceNotFound,
)
from kyfs.core.names import check_workspace_name
from kyfs.platform import config


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
    """Make NAME (or a project's workspace, with --project) the active workspace.

    A missing NAME is created with --create; on a terminal kyfs asks (KyCLI's `use`),
    otherwise it exits 1 with the hint.

    Examples: kyfs use project_alpha; kyfs use --project ~/src/app

    A --project PATH that is not a directory is exit 1 (nothing is created).
    """
    with engine_session() as workspaces:
        if project is not None:
            if not Path(project).expanduser().is_dir():  # a typo must not make a workspace
                raise NotFound(f"no such project directory: {project}")
            name = use_project(workspaces, Path(project).expanduser())
        elif name is None:
            raise InvalidInput("give a workspace NAME, or --project [PATH]")
        elif not workspaces.exists(name):
            check_workspace_name(name)
            in_trash = any(t.name == name for t in workspaces.trash())
            hint = f"kyfs trash restore {name}" if in_trash else f"kyfs use {name} --create"
            if not create and not sys.stdin.isatty():
                where = " (it is in the trash)" if in_trash else ""
                raise WorkspaceNotFound(f"workspace not found: {name}{where}: {hint}")
            if not create:
                question = f"Workspace {name!r} does not exist"
                question += f" (one is in the trash: {hint})" if in_trash else ""
                if not click.confirm(f"{question}. Create it?", default=True):
                    raise WorkspaceNotFound(f"workspace not found: {name}: {hint}")
            workspaces.create(name)
            click.echo(f"created workspace {name}", err=True)
    config.set_active_workspace(name)
    click.echo(f"active workspace: {name}")


@cli.command()
@click.argument("path", required=False, default=".", type=click.Path(path_type=Path))
@json_option
def project(path: Path, as_json: bool) -> None:
    """Print the name of the project workspace of PATH (default: the current directory).

    Examples: kyfs project; kyfs project ~/src/app --json
    """
    name = project_workspace(path)
    if as_json:
        with engine_session() as workspaces:
            exists = workspaces.exists(name)
        _echo_json({"workspace": name, "path": str(path.expanduser().resolve()), "exists": exists})
        return  # fmt: skip
    click.echo(name)


@cli.command(name="workspaces")
@json_option
def list_workspaces(as_json: bool) -> None:
    """List every workspace: the active one marked *, its keys and size in bytes.

    A workspace file that cannot be read is reported on stderr and the rest are listed;
    the exit code is then 4.

    Examples: kyfs workspaces; kyfs workspaces --json
    """
    active = resolve_workspace(None)
    infos, failed = [], []
    with engine_session() as workspaces:
        for stray in workspaces.strays():
            click.echo(f"kyfs: {stray} is not a workspace (left alone)", err=True)
        for name in workspaces.names():
            try:
                infos.append(workspaces.info(name))
            except KyfsError as exc:
                failed.append(exc)
                click.echo(f"kyfs: cannot read workspace {name}: {exc}", err=True)

    if as_json:
        _echo_json(
            [
                {"name": i.name, "active": i.name == active, "keys": i.keys, "size": i.size,
                 "project": i.project, "ttl_s": i.ttl_s}
                for i in infos
            ]
        )  # fmt: skip
    else:
        # On a terminal the active workspace is also green and bold; NO_COLOR (no-color.org)
        # and pipes get plain text.
        color = False if os.environ.get("NO_COLOR") else None
        for info in infos:
            mark = "*" if info.name == active else " "
            extra = f"  {info.project}" if info.project else ""
            extra += f"  (cache, TTL {info.ttl_s:g} s)" if info.ttl_s else ""
            line = f"{mark} {info.name:<24} {info.keys:>8} keys {info.size:>12} bytes{extra}"
            if info.name == active:
                line = click.style(line, fg="green", bold=True)
            click.echo(line, color=color)
    if failed:
        raise click.exceptions.Exit(StorageError.exit_code)


@cli.command()
@click.argument("name")
@click.option("--ttl", metavar="DURATION", help="A cache workspace: every key written expires.")
def create(name: str, ttl: str | None) -> None:
    """Create the empty workspace NAME (a cache workspace with --ttl 1h).

    Examples: kyfs create project_beta; kyfs create cache --ttl 1h
    """
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
    """Drop the workspace NAME: it moves to the trash (`kyfs trash restore NAME` undoes it).

    Examples: kyfs drop project_beta; kyfs drop scratch --yes
    """
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
    """Rename the workspace OLD to NEW (the active workspace follows).

    Examples: kyfs rename project_beta project_gamma
    """
    with engine_session() as workspaces:
        rename_workspace(workspaces, old, new)
    click.echo(f"renamed workspace {old} to {new}")


# --- identities and grants ------------------------------------------------------------------
@cli.command()
@click.argument("name", shell_complete=complete_workspaces)
@click.option(
    "--with", "grantee", required=True, metavar="USER", help="The identity to share with."
)
@click.option("--read-only", is_flag=True, help="USER may read, not write (EROFS, exit 6).")
def share(name: str, grantee: str, read_only: bool) -> None:
    """Let identity USER use your workspace NAME; USER sees it as YOU~NAME.

    Identities are `kyfs --user NAME` (KYFS_USER); `shared` is everyone's already.

    Examples: kyfs --user alice share notes --with bob --read-only
    """
    with engine_session() as workspaces:
        grant = workspaces.share(name, grantee, read_only)
    how = "read-only" if grant.read_only else "read-write"
    click.echo(f"shared {name} with {grantee} ({how}): they see it as {grant.owner}~{name}")


@cli.command()
@click.argument("name", shell_complete=complete_workspaces)
@click.option("--with", "grantee", metavar="USER", help="Only USER's grant (default: all).")
def unshare(name: str, grantee: str | None) -> None:
    """End the grants of your workspace NAME (to USER, or to everyone).

    Example: kyfs --user alice unshare notes --with bob
    """
    with engine_session() as workspaces:
        ended = workspaces.unshare(name, grantee)
    click.echo(f"{name}: ended {len(ended)} grant(s)")


@cli.command()
@json_option
def users(as_json: bool) -> None:
    """List the identities (`--user NAME`) with their workspaces and what they were
    given (names only).

    Example: kyfs users --json
    """
    with engine_session() as workspaces:
        found = identities(workspaces)
    if as_json:
        _echo_json(found)
        return
    for item in found:
        own = ", ".join(item["workspaces"]) or "-"  # type: ignore[arg-type]
        mark = " (main)" if item["main"] else ""
        line = f"{item['name']}{mark}: {own}"
        granted = [
            g["workspace"] + (" (read-only)" if g["read_only"] else "")
            for g in item["granted"]  # type: ignore[attr-defined]
        ]
        if granted:
            line += "; shared with it: " + ", ".join(granted)
        click.echo(line)


# --- cursors -------------------------------------------------------------------------------
@cli.group()
def cursor() -> None:
    """Named pointers to data directories, with a default workspace (per user).

    Examples: kyfs cursor set work ~/kv-work -w notes; kyfs --cursor work keys
    """


@cursor.command(name="set")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path, file_okay=False))
@click.option("-w", "--workspace", "workspace", metavar="W", help="The cursor's workspace.")
def cursor_set(name: str, path: Path, workspace: str | None) -> None:
    """Create or change cursor NAME pointing at the data directory PATH.

    Examples: kyfs cursor set work ~/kv-work; kyfs cursor set team /srv/kyfs -w shared
    """
    config.set_cursor(name, path, workspace)
    click.echo(f"cursor {name} -> {path.expanduser().absolute()}")


@cursor.command(name="list")
@json_option
def cursor_list(as_json: bool) -> None:
    """List your cursors (* marks the active one).

    Examples: kyfs cursor list; kyfs cursor list --json
    """
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
@json_option
def cursor_active(name: str | None, clear: bool, as_json: bool) -> None:
    """Print the active cursor, or make NAME the active one.

    Examples: kyfs cursor active; kyfs cursor active staging; kyfs cursor active --none
    """
    if clear:
        config.set_active_cursor(None)
    elif name is not None:
        config.set_active_cursor(name)
    active = config.active_cursor()
    if as_json:
        cursor = config.get_cursor(active) if active else None
        _echo_json(
            {
                "cursor": active,
                "path": cursor["path"] if cursor else None,
                "workspace": cursor.get("workspace") if cursor else None,
            }
        )
        return  # fmt: skip
    click.echo(active or "(none)")


@cursor.command(name="delete")
@click.argument("name")
def cursor_delete(name: str) -> None:
    """Delete cursor NAME (its data directory is left alone).

    Examples: kyfs cursor delete work
    """
    config.delete_cursor(name)
    click.echo(f"deleted cursor {name}")


@cli.command(name="archive")
@click.argument("prefix", type=KEY, required=False, default="")
@workspace_option
@json_option
def list_archive(prefix: str, workspace: str | None, as_json: bool) -> None:
    """List deleted keys waiting in the archive (newest first), starting with PREFIX.

    Examples: kyfs archive; kyfs archive api/ -w notes --json
    """
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
        line = f"{row['deleted']}  {row['size']:>12}  {row['key']}{'/' * (row['type'] != 'key')}"
        click.echo(for_terminal(line))


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def trash(ctx: click.Context, as_json: bool) -> None:
    """List dropped workspaces (newest first); see `trash restore` and `trash empty`.

    Examples: kyfs trash; kyfs trash restore project_beta
    """
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
    """Bring back the newest dropped workspace NAME with every key it had.

    Examples: kyfs trash restore project_beta; kyfs trash restore notes --as notes_old
    """
    with engine_session() as workspaces:
        restored_name, count = workspaces.restore_trash(name, new_name)
    extra = f", {count} deleted entries brought back" if count else ""
    click.echo(f"restored workspace {restored_name}{extra}")


@trash.command(name="empty")
@click.option(
    "--older-than",
    type=click.FloatRange(0, 36500),
    metavar="DAYS",
    help="Only those dropped more than DAYS days ago (0 to 36500).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def trash_empty(older_than: float | None, yes: bool) -> None:
    """Delete dropped workspaces for good.

    Examples: kyfs trash empty --older-than 30; kyfs trash empty --yes
    """
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
    """Check workspaces (all by default); exit 4 when a problem is left.

    Examples: kyfs fsck; kyfs fsck notes --repair --json
    """
    report: dict[str, dict[str, Any]] = {}
    db_path = os.environ.get(ENV_DB_PATH)
    with engine_session() as workspaces:
        if db_path:  # kyfs --db FILE fsck: that file, and nothing else
            if names:
                raise KyfsCliError(InvalidInput("give either --db FILE or workspace names"))
            if not hasattr(workspaces, "check_file"):
                raise KyfsCliError(InvalidInput("--db opens a SQLite workspace file"))
            try:
                problems, done = workspaces.check_file(Path(db_path), repair=repair)
            except KyfsError as exc:
                problems, done = [str(exc)], []
            report[db_path] = {"ok": not problems, "problems": problems, "repaired": done}
        every = workspaces.writable_names() if repair else workspaces.names()
        missing = []
        for name in () if db_path else names or every:
            try:
                problems, done = workspaces.check(name, repair=repair)
            except WorkspaceNotFound as exc:  # a name that is no workspace: report it, go on
                problems, done = [str(exc)], []
                missing.append(name)
            except KyfsError as exc:
                problems, done = [str(exc)], []
            report[name] = {"ok": not problems, "problems": problems, "repaired": done}
        if not names and not db_path:
            for stray in workspaces.strays():
                report[stray.name] = {
                    "ok": False,
                    "problems": ["not a workspace (a link, or a name that breaks the rules)"],
                    "repaired": [],
                }
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
    if all(r["ok"] or name in missing for name, r in report.items()) and missing:
        raise KyfsCliError(WorkspaceNotFound(f"workspace not found: {', '.join(missing)}"))
    if any(not r["ok"] for r in report.values()):
        if not repair:
            raise KyfsCliError(StorageError("problems found (see above); try kyfs fsck --repair"))
        raise KyfsCliError(
            StorageError(
                "problems left that --repair cannot mend (see above): restore the workspace"
                " from a backup (kyfs backup restore) or the trash (kyfs trash restore)"
            )
        )
