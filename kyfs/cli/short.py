"""KyCLI's short commands, so that scripts written for KyCLI keep working:

    kys KEY VALUE     kyfs set KEY VALUE      (value from stdin when omitted or -;
                      without one on a terminal: exit 2, as KyCLI saves no empty value)
    kyg KEY           kyfs get KEY; when no key is named so, KEY is a regular
                      expression: kyfs scan --regex KEY (KyCLI's kyg "user_.*")
    kyl [PATTERN]     kyfs keys --regex PATTERN (Python's re.search, as KyCLI's kyl)
    kyv [KEY]         kyfs history KEY; every key's history without one (KyCLI's kyv)
    kye FILE [FORMAT] kyfs export --format FORMAT -o FILE (csv by default, or json,
                      jsonl; KyCLI's kye)
    kyi FILE          kyfs import FILE (.csv, .json, .jsonl or a directory; KyCLI's kyi)
    kyd KEY           kyfs delete KEY

Each accepts the global options of ``kyfs`` first (``-w NAME``, ``--user``,
``--cursor``, ``--addresses``) and exits as ``kyfs`` does (docs/exit-codes.md).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from typing import NoReturn

import click

from kyfs.cli import cli
from kyfs.cli.base import KyfsCliError
from kyfs.core.errors import InvalidInput, KeyNotFound, KyfsError

_SPECIAL = re.compile(r"[.^$*+?{}\[\]|()\\]")  # a regular expression's special characters

_GLOBAL_WITH_VALUE = {"-w", "--workspace", "--user", "--cursor", "--addresses"}


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
    """``kys KEY [VALUE]``: set a key (KyCLI's kys). Without VALUE the value is read from
    stdin when it is not a terminal; on a terminal that is exit 2 (InvalidInput), as
    KyCLI saves no empty value."""
    head, rest = _split(sys.argv[1:] if argv is None else argv)
    positional = [a for a in rest if not a.startswith("-") or a == "-"]
    if len(positional) == 1 and "-" not in rest and sys.stdin.isatty():
        _fail(InvalidInput("kys KEY VALUE: give a VALUE, or pipe one in"))
    cli.main(args=[*head, "set", *rest], prog_name="kys")


def kyg(argv: list[str] | None = None) -> None:
    """``kyg KEY``: print a key's value (KyCLI's kyg). When no key is named KEY and KEY
    holds a regular expression's special characters (``.^$*+?{}[]|()``), the keys
    Python's ``re.search`` finds it in, as ``KEY<TAB>VALUE`` lines (kyfs scan --regex),
    as KyCLI's ``kyg "user_.*"``; exit 1 when none."""
    head, rest = _split(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=[*head, "get", *rest], prog_name="kyg", standalone_mode=False)
    except click.ClickException as exc:
        pattern = next((a for a in rest if not a.startswith("-")), None)
        if exc.exit_code != 1 or pattern is None or not _SPECIAL.search(pattern):
            _fail(exc)
        _kyg_regex(head, rest, pattern)
    except click.exceptions.Exit as done:
        raise SystemExit(done.exit_code) from None
    except click.Abort:
        raise SystemExit(1) from None


def _kyg_regex(head: list[str], rest: list[str], pattern: str) -> None:
    """``kyg PATTERN`` of no key: ``kyfs scan --regex PATTERN``, exit 1 when it finds none."""
    options = [a for a in rest if a != pattern]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            cli.main(
                args=[*head, "scan", "--regex", pattern, *options],
                prog_name="kyg",
                standalone_mode=False,
            )
        except click.ClickException as exc:
            _fail(exc)
    if not out.getvalue():
        _fail(KeyNotFound(f"no key is named or matches {pattern!r}"))
    sys.stdout.write(out.getvalue())


def _fail(error: click.ClickException | KyfsError) -> NoReturn:
    """Show ``error`` as kyfs does (one line, ``Error: ...``) and exit with its code."""
    shown = error if isinstance(error, click.ClickException) else KyfsCliError(error)
    shown.show()
    raise SystemExit(shown.exit_code)


def kyl(argv: list[str] | None = None) -> None:
    """``kyl [PATTERN]``: list keys, those a regular expression PATTERN finds when given
    (KyCLI's kyl; ``kyfs keys --glob`` takes shell globs)."""
    head, rest = _split(sys.argv[1:] if argv is None else argv)
    regex = ["--regex", rest[0]] if rest else []
    cli.main(args=[*head, "keys", *regex, *rest[1:]], prog_name="kyl")


def kye(argv: list[str] | None = None) -> None:
    """``kye FILE [FORMAT]``: export the workspace to FILE as FORMAT (csv, json or jsonl;
    csv by default, as KyCLI's kye)."""
    head, rest = _split(sys.argv[1:] if argv is None else argv)
    if not rest:
        _fail(InvalidInput("kye FILE [csv|json|jsonl]: name the file to write"))
    fmt = rest[1] if len(rest) > 1 else "csv"
    cli.main(args=[*head, "export", "--format", fmt, "-o", rest[0], *rest[2:]], prog_name="kye")


def kyi(argv: list[str] | None = None) -> None:
    """``kyi FILE``: import FILE into the workspace (its format from its name, KyCLI's kyi)."""
    _run("kyi", ["import"], argv)


def kyv(argv: list[str] | None = None) -> None:
    """``kyv [KEY]``: KEY's history, or every key's without one (KyCLI's kyv)."""
    _run("kyv", ["history"], argv)


def kyd(argv: list[str] | None = None) -> None:
    """``kyd KEY``: delete a key (KyCLI's kyd)."""
    _run("kyd", ["delete"], argv)
