"""``kyfs log`` and ``kyfs watch``: the timeline of changes, with who made them
(kyfs.timeline)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

import click

from kyfs.app import ENV_DB_PATH, engine_session, resolve_workspace, session
from kyfs.cli.base import _echo_json, cli, for_terminal, json_option, workspace_option
from kyfs.core.errors import InvalidInput

_ALL = click.option("--all", "every", is_flag=True, help="Every workspace (-w is then ignored).")


def _print(name: str, change: Any, as_json: bool, every: bool) -> None:
    from kyfs import timeline

    if as_json:
        _echo_json(timeline.as_json(name, change))
    else:
        click.echo(for_terminal(timeline.as_line(name, change, with_workspace=every)))


@cli.command("log")
@workspace_option
@_ALL
@click.option("--since", "since", metavar="T", help="From T on: 10m, 2h, 7d ago, or ISO time.")
@click.option("--key", "prefix", metavar="PREFIX", default="", help="Keys starting with PREFIX.")
@json_option
def log_command(
    workspace: str | None, every: bool, since: str | None, prefix: str, as_json: bool
) -> None:
    """Show every recorded change, oldest first: time, action, key, size, and who made it
    (source: cli, mount, kycli; the user; for the mount the process's command name and
    pid). --json gives one JSON object per line (workspace, id, time, time_ns, action,
    key, size, detail, source, user, pid, comm).

    Example: kyfs log --since 1h --key notes/; kyfs log --all --json

    A write's versions thin out with the workspace's retention (kyfs retention), and so
    does its log: what is older is summarised as retention keeps it. Closes of one file
    by one process within 2 s are one change (its version).
    """
    from kyfs import timeline

    since_ns = None if since is None else timeline.parse_since(since)
    if every:
        with engine_session() as engine:
            found = timeline.log(
                timeline.each(engine, engine.names()), since_ns=since_ns, prefix=prefix
            )
    else:
        with session(workspace) as (name, store):
            found = timeline.log([(name, store)], since_ns=since_ns, prefix=prefix)
    for name, change in found:
        _print(name, change, as_json, every)


@cli.command("watch")
@click.argument("prefix", default="", required=False)
@workspace_option
@_ALL
@json_option
def watch_command(prefix: str, workspace: str | None, every: bool, as_json: bool) -> None:
    """Print each change of keys starting with PREFIX as it commits, from every writer
    (this or other commands, the mount, another daemon on a shared PostgreSQL), until
    interrupted (Ctrl-C or SIGTERM: exit 0). One line per change, flushed at once; --json
    gives the objects of `kyfs log --json`.

    Example: kyfs watch notes/ --json | jq .key

    A change shows within about 20 ms on SQLite (it polls) and at once on PostgreSQL
    (LISTEN/NOTIFY). Exit 1 when the workspace is dropped meanwhile; exit 2 with --db.
    """
    from kyfs import timeline

    if os.environ.get(ENV_DB_PATH):
        raise InvalidInput("kyfs watch watches workspaces of the data directory, not --db FILE")
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
    try:
        with engine_session(cache=True) as engine:
            names = None if every else [resolve_workspace(workspace)]
            for name, change in timeline.watch(engine, names, prefix=prefix):
                _print(name, change, as_json, every)
                sys.stdout.flush()
    except KeyboardInterrupt:
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()
    finally:
        signal.signal(signal.SIGTERM, previous)
