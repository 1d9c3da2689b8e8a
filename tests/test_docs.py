"""The docs and the code agree: every command documented, every error class listed."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import click

from kyfs.cli import cli, load_commands
from kyfs.cli.base import COMMAND_MODULES
from kyfs.core.errors import all_error_classes

load_commands()  # cli.commands holds every command from here on

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_command_is_documented_and_has_help() -> None:
    usage = (DOCS / "usage.md").read_text()
    documented = set(re.findall(r"^### `kyfs ([a-z-]+(?: [a-z-]+)?)", usage, flags=re.M))
    commands: dict[str, click.Command] = {}
    for name, command in cli.commands.items():
        commands[name] = command
        if isinstance(command, click.Group):
            for sub_name, sub in command.commands.items():
                commands[f"{name} {sub_name}"] = sub
    assert set(commands) - documented == set(), "commands missing from docs/usage.md"
    assert documented - set(commands) == set(), "docs/usage.md documents unknown commands"
    for name, command in commands.items():
        assert command.help and command.help.strip(), f"kyfs {name} has no help text"


def test_every_command_is_loaded_from_its_own_module() -> None:
    """COMMAND_MODULES (the lazy root group's table) names, for every command, the module
    that defines it, and names no command that does not exist."""
    defined = {
        name: (command.callback.__module__ if command.callback else "")
        for name, command in cli.commands.items()
    }
    assert set(defined) == set(COMMAND_MODULES)
    for name, module in defined.items():
        assert module == f"kyfs.cli.{COMMAND_MODULES[name]}", name


def test_kyfs_get_loads_only_the_key_commands() -> None:
    """A new process running `kyfs get` imports the key commands' module and none of the
    others (mount, transfer, shell, search, workspaces)."""
    import subprocess
    import sys

    code = (
        "import sys; from kyfs.cli.base import cli\n"
        "try:\n    cli.main(['get', '--help'], prog_name='kyfs')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('kyfs.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = out.stdout.strip().splitlines()[-1]
    assert loaded == "['kyfs.cli.base', 'kyfs.cli.keys']", loaded


def test_exit_code_table_matches_error_classes() -> None:
    text = (DOCS / "exit-codes.md").read_text()
    rows = dict(
        (m.group(1), (m.group(2), int(m.group(3))))
        for m in re.finditer(r"^\| (\w+) \| (E[A-Z0-9]+) \| (\d+) \|$", text, flags=re.M)
    )
    classes = all_error_classes()
    assert set(rows) == {c.__name__ for c in classes}
    for cls in classes:
        name, code = rows[cls.__name__]
        assert getattr(errno, name) == cls.errno, cls.__name__
        assert code == cls.exit_code, cls.__name__


def test_readme_starts_with_the_two_commands() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    head = readme[: readme.index("## A short tour")]
    assert "make mount" in head and "make test" in head


def test_cli_reference_is_current() -> None:
    """docs/cli.md is `make docs` output: regenerate it after changing a command."""
    from kyfs.cli import cli_reference

    assert (DOCS / "cli.md").read_text() == cli_reference()


def test_every_command_gives_examples_that_parse() -> None:
    """Each command's help has an Examples line, and each example is a command line
    whose options and arguments that command accepts (parsed, not run)."""
    import shlex

    def leaves(command: click.Command, path: list[str]):  # type: ignore[no-untyped-def]
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from leaves(sub, [*path, name])

    for path, command in leaves(cli, []):
        if not path:
            continue
        found = re.search(r"Examples?: (.*?)(?:\n\n|$)", command.help or "", re.S)
        assert found, f"kyfs {' '.join(path)}: no Examples in its help"
        for example in found.group(1).replace("\n", " ").split(";"):
            words = shlex.split(example.split("then:")[0])
            cuts = [i for i, w in enumerate(words) if w in ("|", ">", ">>", "||", "&&")]
            words = words[: cuts[0]] if cuts else words
            if not words or words[0] != "kyfs":
                continue  # a shell part: cat FILE | kyfs set ...
            words = words[1:]
            while words and words[0] in ("--cursor", "--user", "-w", "--db"):
                words = words[2:]  # global options
            target: click.Command = cli
            while isinstance(target, click.Group) and words and words[0] in target.commands:
                target, words = target.commands[words[0]], words[1:]
            if isinstance(target, click.Group):
                continue  # a group's example naming a subcommand with options only
            try:
                target.make_context(target.name or "", list(words))  # raises on a bad option
            except click.BadParameter as exc:  # a file the example names need not exist here
                assert "No such file" in exc.message or "does not exist" in exc.message, (
                    f"kyfs {' '.join(path)}: {example}"
                )
