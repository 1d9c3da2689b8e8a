"""``kyfs shell``: an interactive prompt over every kyfs command (the TUI both KyCLI
documents plan), built on prompt_toolkit: line editing, a history file, completion of
commands, workspace names and keys, and a bottom bar ``[Workspace: NAME]`` with whether
the mount is up. ``use NAME`` switches the active workspace live.

Each line runs as the same command would after ``kyfs`` (in this process, through the
click group), so errors print the same one line; exit codes are shown as ``[exit N]``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from typing import Any

import click

from kyfs.app import resolve_workspace
from kyfs.cli.base import cli, key_names, load_commands, workspace_names
from kyfs.platform import paths

EXIT_WORDS = ("exit", "quit")
# Options after which the next word is a workspace name (completion).
WORKSPACE_OPTIONS = ("-w", "--workspace")
# Commands whose first argument is a workspace name (completion).
WORKSPACE_COMMANDS = ("use", "drop", "rename", "fsck", "exec")

load_commands()  # the shell completes every command: cli.commands must hold them all


def _words() -> list[str]:
    return sorted(cli.commands) + list(EXIT_WORDS)


def candidates(line: str) -> tuple[list[str], str]:
    """What completes the last word of ``line``: (candidates, the word being completed).
    The first word completes to commands; after ``-w``, or as the argument of a command
    that takes a workspace, to workspace names; otherwise to keys of the active
    workspace."""
    try:
        words = shlex.split(line)
    except ValueError:  # an open quote: complete nothing
        return [], ""
    if line and not line[-1].isspace() and words:
        current, before = words[-1], words[:-1]
    else:
        current, before = "", words
    if not before:
        return [w for w in _words() if w.startswith(current)], current
    if before[-1] in WORKSPACE_OPTIONS or (len(before) == 1 and before[0] in WORKSPACE_COMMANDS):
        return workspace_names(current), current
    command = cli.commands.get(before[0])
    if isinstance(command, click.Group) and len(before) == 1:
        return [c for c in sorted(command.commands) if c.startswith(current)], current
    return key_names(None, current), current


def bottom_bar() -> str:
    """The bottom bar: ``[Workspace: NAME]  mount: up (PATH)`` or ``mount: down``."""
    from kyfs.fuse.daemon import running_mounts

    try:
        mounts = running_mounts()
    except OSError:
        mounts = []
    up = next((m for m in mounts if os.path.ismount(m)), None)
    where = f"up ({up})" if up is not None else "down"
    return f" [Workspace: {resolve_workspace(None)}]  mount: {where}  (exit: Ctrl-D)"


def run_line(line: str) -> int:
    """Run one line as ``kyfs LINE`` in this process; returns its exit code (0 on
    success, the error's exit code, 2 for a line that does not parse)."""
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 2
    if not argv:
        return 0
    try:
        cli.main(args=argv, prog_name="kyfs", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except SystemExit as exc:  # status and exec leave with their own code
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def _completer() -> Any:
    from prompt_toolkit.completion import Completer, Completion

    class KyfsCompleter(Completer):
        """prompt_toolkit completer over :func:`candidates`."""

        def get_completions(self, document: Any, complete_event: Any) -> Iterable[Any]:
            """Completions of the word before the cursor."""
            found, current = candidates(document.text_before_cursor)
            for item in found:
                yield Completion(item, start_position=-len(current))

    return KyfsCompleter()


@cli.command()
def shell() -> None:
    """An interactive kyfs prompt: every command without the `kyfs` prefix, with
    history, completion of commands, workspaces and keys, and a bottom bar showing the
    active workspace and whether the mount is up. `use NAME` switches live; `exit`,
    `quit` or Ctrl-D leaves.

    Examples: kyfs shell; then: use project_alpha, set user.name Alice, keys
    """
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    history = paths.shell_history_file()
    paths.make_private_dir(history.parent)
    prompt: PromptSession[str] = PromptSession(
        history=FileHistory(str(history)),
        completer=_completer(),
        bottom_toolbar=bottom_bar,
        complete_while_typing=False,
    )
    while True:
        try:
            line = prompt.prompt(lambda: f"kyfs:{resolve_workspace(None)}> ")
        except KeyboardInterrupt:
            continue  # Ctrl-C drops the line, as a shell does
        except EOFError:
            break
        if line.strip() in EXIT_WORDS:
            break
        if line.strip() == "shell":
            click.echo("already in the kyfs shell", err=True)
            continue
        code = run_line(line)
        if code:
            click.echo(f"[exit {code}]", err=True)
