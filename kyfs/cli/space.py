"""Commands about the space workspaces take: ``kyfs du`` and ``kyfs compact``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

from kyfs.app import engine_session, session
from kyfs.cli.base import _echo_json, cli, json_option, workspace_option
from kyfs.engine.base import Workspace

_COLUMNS = ("live", "history", "archive", "search", "free", "file", "values")


def _size(count: int | None) -> str:
    """Bytes as a person reads them (1024-based, as du -h)."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _each(
    workspace: str | None, every: bool, writing: bool = False
) -> Iterator[tuple[str, Workspace]]:
    """(name, workspace) of every workspace with ``every`` (those it may write, when
    ``writing``: no read-only grant), else of the one a data command uses (``-w``, the
    active one, or ``--db FILE``), each open while the caller uses it."""
    if not every:
        with session(workspace) as (name, store):
            yield name, store
        return
    with engine_session() as engine:
        for name in engine.writable_names() if writing else engine.names():
            with engine.using(name) as store:
                yield name, store


@cli.command()
@workspace_option
@click.option("--all", "every", is_flag=True, help="Every workspace, and the trash.")
@json_option
def du(workspace: str | None, every: bool, as_json: bool) -> None:
    """Show where a workspace's bytes go: live values, history versions, the archive,
    the search index, free space inside its file (which kyfs compact gives back), the
    file itself, and the values' own length. Blocks shared by several values are counted
    once, where a live value uses them first, then the archive, then history. --all
    adds the trash.

    Examples: kyfs du; kyfs du --all --json
    """
    report: dict[str, Any] = {"workspaces": {}}
    for name, store in _each(workspace, every):
        report["workspaces"][name] = store.usage()._asdict()
    if every:
        with engine_session() as engine:
            trashed = engine.trash()
        report["trash"] = {"workspaces": len(trashed), "bytes": sum(t.size for t in trashed)}
    if as_json:
        _echo_json(report)
        return
    click.echo(f"{'workspace':<24}" + "".join(f"{c:>12}" for c in _COLUMNS))
    for name, usage in report["workspaces"].items():
        click.echo(f"{name:<24}" + "".join(f"{_size(usage[c]):>12}" for c in _COLUMNS))
    if "trash" in report:
        trash = report["trash"]
        click.echo(f"trash: {trash['workspaces']} workspaces, {_size(trash['bytes'])}")


@cli.command()
@workspace_option
@click.option("--all", "every", is_flag=True, help="Every workspace.")
@json_option
def compact(workspace: str | None, every: bool, as_json: bool) -> None:
    """Give the free space inside workspaces' files back to the operating system now
    (space freed by deletes, expired history and an emptied archive is reused at once
    anyway; this shrinks the files). Works on a full disk.

    Examples: kyfs compact; kyfs compact --all
    """
    given = {name: store.compact() for name, store in _each(workspace, every, writing=True)}
    if as_json:
        _echo_json({"given_back": given})
        return
    for name, count in given.items():
        click.echo(f"{name}: {_size(count)} given back")
