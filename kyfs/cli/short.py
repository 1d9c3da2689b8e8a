"""KyCLI's short commands, so that scripts written for KyCLI keep working:

    kys KEY VALUE     kyfs set KEY VALUE      (value from stdin when omitted or -)
    kyg KEY           kyfs get KEY
    kyl [PATTERN]     kyfs keys --glob PATTERN (a shell glob; every key without one)
    kyd KEY           kyfs delete KEY

Each accepts the global options of ``kyfs`` first (``-w NAME``, ``--user``,
``--cursor``) and exits as ``kyfs`` does (docs/exit-codes.md).
"""

from __future__ import annotations

import sys

from kyfs.cli import cli

_GLOBAL_WITH_VALUE = {"-w", "--workspace", "--user", "--cursor"}


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the global options, the rest) of a short command's arguments."""
    head: list[str] = []
    rest = list(argv)
    while rest and rest[0] in _GLOBAL_WITH_VALUE and len(rest) > 1:
        head += rest[:2]
        rest = rest[2:]
    return head, rest


def _run(name: str, command: list[str], argv: list[str] | None = None) -> None:
    head, rest = _split(sys.argv[1:] if argv is None else argv)
    cli.main(args=[*head, *command, *rest], prog_name=name)


def kys(argv: list[str] | None = None) -> None:
    """``kys KEY [VALUE]``: set a key (KyCLI's kys)."""
    _run("kys", ["set"], argv)


def kyg(argv: list[str] | None = None) -> None:
    """``kyg KEY``: print a key's value (KyCLI's kyg)."""
    _run("kyg", ["get"], argv)


def kyl(argv: list[str] | None = None) -> None:
    """``kyl [PATTERN]``: list keys, those matching the glob PATTERN when given."""
    head, rest = _split(sys.argv[1:] if argv is None else argv)
    glob = ["--glob", rest[0]] if rest else []
    cli.main(args=[*head, "keys", *glob, *rest[1:]], prog_name="kyl")


def kyd(argv: list[str] | None = None) -> None:
    """``kyd KEY``: delete a key (KyCLI's kyd)."""
    _run("kyd", ["delete"], argv)
