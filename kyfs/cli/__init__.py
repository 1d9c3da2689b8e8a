"""The ``kyfs`` command line (click): thin commands over the application (kyfs.app), the
engine and the daemon, one module per topic:

    base.py        the root group, the error boundary, shared options and completion
    daemon.py      mount, unmount, status, stats, service, uninstall, completion
    workspaces.py  use, project, workspaces, create, drop, rename, cursor, archive, trash, fsck
    keys.py        set, get, delete, keys, restore, ttl, retention, schema, exec, history
    search.py      search
    timeline.py    log, watch
    snapshots.py   snapshot, fork, diff
    transfer.py    migrate, backup, export, import
    shell.py       shell (the interactive prompt, prompt_toolkit)

A command's module is imported when that command runs (base.COMMAND_MODULES), so a
short command such as ``kyfs get`` starts without loading the rest.

Each command opens what it needs, calls one library function and prints the result. A
kyfs.core.errors.KyfsError becomes one line ``Error: <message>`` on stderr and the
error's exit code (docs/exit-codes.md); no user error prints a traceback. No SQL and no
FUSE calls here.
"""

from __future__ import annotations

import click

from kyfs.cli.base import cli, load_commands, main

__all__ = ["cli", "cli_reference", "load_commands", "main"]


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

    load_commands()
    walk(cli, ["kyfs"], None)
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    main()
