"""``kyfs snapshot``, ``kyfs fork`` and ``kyfs diff``: read-only images of a workspace,
new workspaces copied from one, and what changed between two (kyfs.snapshots,
kyfs.engine.sql.snapshots)."""

from __future__ import annotations

import click

from kyfs.app import engine_session, resolve_workspace, session
from kyfs.cli.base import _echo_json, _iso, cli, for_terminal, json_option
from kyfs.core.errors import InvalidInput
from kyfs.core.snapshots import SEPARATOR, parse_tree


def _workspace_and_name(args: tuple[str, ...], need_name: bool) -> tuple[str | None, str | None]:
    """(workspace or None: the active one, snapshot name or None) from the arguments
    ``[WORKSPACE] [NAME]``, ``WORKSPACE@NAME`` or, with ``need_name``, ``NAME`` alone.

    Raises:
        InvalidInput: (exit 2) too many arguments, or a name missing.
    """
    if len(args) > 2:
        raise InvalidInput("at most two arguments: [WORKSPACE] [NAME]")
    if len(args) == 2:
        return args[0], args[1]
    if len(args) == 1:
        if SEPARATOR in args[0]:
            return parse_tree(args[0])
        return (None, args[0]) if need_name else (args[0], None)
    if need_name:
        raise InvalidInput("which snapshot? give NAME, WORKSPACE NAME or WORKSPACE@NAME")
    return None, None


@cli.group()
def snapshot() -> None:
    """Snapshots: read-only images of a workspace, made in an instant.

    A snapshot shares every value's blocks with the workspace: making one copies no
    value, and later changes cost only the blocks that differ. Snapshots show read-only
    in the mount at WORKSPACE/.snapshots/NAME/, and kyfs diff compares them.

    Examples: kyfs snapshot create project_alpha before-refactor;
    kyfs snapshot list; kyfs snapshot restore project_alpha@before-refactor
    """


@snapshot.command("create")
@click.argument("args", nargs=-1, metavar="[WORKSPACE] [NAME]")
@json_option
def snapshot_create(args: tuple[str, ...], as_json: bool) -> None:
    """Make a snapshot of WORKSPACE (default: the active one) named NAME (default: the
    UTC time, e.g. 20261207T101500Z). Writes still in files open in the mount are in
    it once they are saved (at close or fsync).

    Examples: kyfs snapshot create; kyfs snapshot create project_alpha before-refactor;
    kyfs snapshot create project_alpha@before-refactor
    """
    workspace, name = _workspace_and_name(args, need_name=False)
    with session(workspace) as (where, store):
        made = store.create_snapshot(name)
    if as_json:
        _echo_json({"workspace": where, "name": made.name, "keys": made.keys, "size": made.size})
    else:
        click.echo(made.name)
        click.echo(f"snapshot {where}@{made.name}: {made.keys} names, {made.size} bytes", err=True)


@snapshot.command("list")
@click.argument("workspace", required=False)
@json_option
def snapshot_list(workspace: str | None, as_json: bool) -> None:
    """List the snapshots of WORKSPACE (default: the active one), oldest first: name,
    time (UTC), names and bytes. --json: one object per line.

    Examples: kyfs snapshot list; kyfs snapshot list project_alpha --json
    """
    with session(workspace) as (where, store):
        found = store.snapshots()
    for item in found:
        if as_json:
            _echo_json({
                "workspace": where, "name": item.name, "time": _iso(item.created_ns),
                "time_ns": item.created_ns, "keys": item.keys, "size": item.size,
            })  # fmt: skip
        else:
            click.echo(f"{item.name}\t{_iso(item.created_ns)}\t{item.keys}\t{item.size}")


@snapshot.command("restore")
@click.argument("args", nargs=-1, metavar="[WORKSPACE] NAME")
def snapshot_restore(args: tuple[str, ...]) -> None:
    """Make WORKSPACE (default: the active one) hold again what snapshot NAME holds: keys
    made since are removed (to the archive, as rm: kyfs restore brings one back), the
    others get their values, types, modes and owners back. Every change is recorded in
    history; the snapshot stays. Take a snapshot first to be able to undo it.

    Examples: kyfs snapshot restore before-refactor;
    kyfs snapshot restore project_alpha@before-refactor
    """
    workspace, name = _workspace_and_name(args, need_name=True)
    assert name is not None
    with session(workspace) as (where, store):
        changed = store.restore_snapshot(name)
    click.echo(f"restored {where}@{name}: {changed} names changed", err=True)


@snapshot.command("delete")
@click.argument("args", nargs=-1, metavar="[WORKSPACE] NAME")
def snapshot_delete(args: tuple[str, ...]) -> None:
    """Delete snapshot NAME of WORKSPACE (default: the active one); the space only it
    used is free at once (kyfs compact gives it back to the disk).

    Examples: kyfs snapshot delete before-refactor; kyfs snapshot delete project_alpha@old
    """
    workspace, name = _workspace_and_name(args, need_name=True)
    assert name is not None
    with session(workspace) as (where, store):
        store.delete_snapshot(name)
    click.echo(f"deleted snapshot {where}@{name}", err=True)


@cli.command("fork")
@click.argument("source")
@click.argument("new")
def fork_command(source: str, new: str) -> None:
    """Make workspace NEW a copy of SOURCE (a workspace, or WORKSPACE@SNAPSHOT) that then
    lives on its own, with SOURCE's history and snapshots, taken consistently while
    others write. On XFS or btrfs it is a reflink (milliseconds, almost no space);
    elsewhere a copy of the whole workspace (its size on disk again).

    Examples: kyfs fork project_alpha experiment; kyfs fork project_alpha@monday monday
    """
    from kyfs.snapshots import fork

    with engine_session() as engine:
        keys = fork(engine, source, new)
    click.echo(f"forked {source} as {new}: {keys} keys", err=True)


@cli.command("diff")
@click.argument("old")
@click.argument("new", required=False)
@json_option
@click.option("--patch", "-p", "with_patch", is_flag=True, help="Show text changes as diff -u.")
def diff_command(old: str, new: str | None, as_json: bool, with_patch: bool) -> None:
    """List the keys added (A), changed (M) and deleted (D) from OLD to NEW, each a
    workspace as it is now or WORKSPACE@SNAPSHOT; with one argument W@S, from snapshot
    S to W now. --json: one object per line (key, status, what); --patch: unified
    diffs of the values that are text. Exit status 0 either way, as kyfs keys.

    Examples: kyfs diff project_alpha@monday; kyfs diff project_alpha experiment --patch
    """
    from kyfs import snapshots

    old, new = snapshots.check_pair(_named(old), None if new is None else _named(new))
    with engine_session() as engine:
        changes = snapshots.diff(engine, old, new)
        for change in changes:
            if as_json:
                _echo_json({"key": change.key, "status": change.status, "what": list(change.what)})
            else:
                click.echo(for_terminal(f"{snapshots.status_letter(change)}\t{change.key}"))
        if with_patch and not as_json:
            for line in snapshots.patch(engine, old, new, changes):
                click.echo(for_terminal(line))


def _named(tree: str) -> str:
    """``tree`` with an empty workspace part (``@S``) made the active workspace's."""
    name, snapshot = parse_tree(tree)
    if name:
        return tree
    return f"{resolve_workspace(None)}{SEPARATOR}{snapshot}"
