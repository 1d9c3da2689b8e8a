"""The root ``kyfs`` group and what every command module shares: the error boundary
(a KyfsError leaves as one line and its exit code), the global options (``--user``,
``--cursor``), ``-w/--workspace``, ``--json``, completion of names and keys.

The workspace a data command uses: ``-w/--workspace``, else ``$KYFS_WORKSPACE``,
else the active workspace (``kyfs use``), else ``default`` (kyfs.app.resolve_workspace).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import json
import os
import select
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from click.shell_completion import CompletionItem

from kyfs import __version__
from kyfs.app import (
    ENV_DB_PATH,
    engine_session,
    ensure_shared,
    session,
)
from kyfs.core import names
from kyfs.core.errors import IllegalByteSequence, KyfsError, storage_error
from kyfs.platform import config, paths

F = TypeVar("F", bound=Callable[..., Any])
COMPLETION_MAX = 200  # keys offered at once by completion
EXIT_SIGPIPE = 128 + signal.SIGPIPE  # 141: what a shell reports for a reader gone (seq | head)


class KyfsCliError(click.ClickException):
    """A KyfsError shown as click shows its errors, with the error's own exit code."""

    def __init__(self, error: KyfsError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]  # click reads it per instance


# Which module defines each top-level command. The root group imports a command's module
# only when that command runs (click's "lazily loading subcommands" pattern), so
# `kyfs get` does not pay for the mount, transfer or shell code; `--help`, completion and
# docs/cli.md load them all (load_commands). tests/test_docs.py checks this table against
# the commands the modules define.
COMMAND_MODULES: dict[str, str] = {
    name: module
    for module, names in (
        ("daemon", "completion mount service stats status uninstall unmount"),
        ("keys", "delete exec get history keys restore retention scan schema set ttl"),
        ("mcp", "mcp"),
        ("search", "search"),
        ("shell", "shell"),
        ("snapshots", "diff fork snapshot"),
        ("space", "compact du"),
        ("vectors", "collection embeddings"),
        ("timeline", "log watch"),
        ("transfer", "backup export import migrate"),
        ("workspaces", "archive create cursor drop fsck project rename share trash"),
        ("workspaces", "unshare use users workspaces"),
    )
    for name in names.split()
}


def load_commands() -> None:
    """Import every command module, so that ``cli.commands`` holds every command."""
    for module in sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(f"kyfs.cli.{module}")


class KyfsGroup(click.Group):
    """The root group: loads a command's module when the command is asked for
    (COMMAND_MODULES) and turns KyfsError from any command into KyfsCliError."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, its module imported first; None if there is none."""
        module = COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"kyfs.cli.{module}")
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, sorted (every module loaded)."""
        load_commands()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a KyfsError leaves as one line and its exit code. A key takes
        any bytes (KEY); any other name with bytes that are not UTF-8 (argv carries them
        as surrogates) is EILSEQ, exit 2.
        Output into a pipe whose reader is gone (``kyfs keys | head -1``) ends the
        command quietly with status 141, as SIGPIPE ends ``seq``: :func:`_reader_gone`."""
        with contextlib.suppress(ValueError):  # not the main thread: left as it is
            signal.signal(signal.SIGPIPE, _on_sigpipe)  # (kyfs mount ignores it again: serve)
        reconfigure = getattr(sys.stdout, "reconfigure", None)
        if reconfigure is not None:  # a key's raw bytes leave as they came (for_terminal)
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="surrogateescape")
        try:
            result = super().invoke(ctx)
            _flush_stdout()  # what is still buffered meets the closed pipe here, not at exit
            return result
        except BrokenPipeError:
            _reader_gone()
        except KyfsError as exc:
            raise KyfsCliError(exc) from None
        except UnicodeEncodeError as exc:
            error = IllegalByteSequence(f"{exc.object[exc.start : exc.end]!r} is not valid UTF-8")
            raise KyfsCliError(error) from None
        except OSError as exc:  # the data directory itself: a file, read-only, full, ...
            if exc.errno == errno.EPIPE:
                _reader_gone()
            raise KyfsCliError(storage_error(exc)) from None


def _stdout_broken() -> bool:
    """True when stdout is a pipe or socket whose reader is gone (poll(2) says POLLERR)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # POLLERR and POLLHUP are always reported
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no stdout, or not a descriptor
        return False


def _on_sigpipe(signum: int, frame: Any) -> None:
    """SIGPIPE: a write went to a pipe or socket whose reader is gone. When it was stdout,
    BrokenPipeError (raised in the command, :meth:`KyfsGroup.invoke` ends it quietly);
    else nothing, and the write that failed raises its own error as with SIG_IGN. A
    handler and not Python's SIG_IGN alone: a large write that the kernel cuts short when
    the reader leaves returns its partial count, and Python 3.11's buffered stdout then
    drops the rest and exits 0 (seen with ``kyfs keys --json | head -c 1``)."""
    if _stdout_broken():
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def _flush_stdout() -> None:
    """Flush Python's stdout (its text and binary layers)."""
    if sys.stdout is not None:
        sys.stdout.flush()


def _reader_gone() -> NoReturn:
    """Stdout's reader closed the pipe (EPIPE; Python ignores SIGPIPE, so writes fail
    instead of killing the process): exit with 141 and nothing on stderr, as a program
    that SIGPIPE ends. Stdout is pointed at /dev/null first, so that flushing what is
    still buffered at exit does not fail again (docs.python.org/3/library/signal.html,
    "Note on SIGPIPE"). The daemon never comes here: ``kyfs mount`` keeps ignoring
    SIGPIPE, and a reader gone is an error of that one request."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    raise SystemExit(EXIT_SIGPIPE)


TOUR = """kyfs: key-value workspaces that live as a filesystem.

Keys:        kyfs set user.name Alice        kyfs get user.name
             kyfs keys api/ --json           kyfs delete user.name
Workspaces:  kyfs use project_alpha --create kyfs workspaces
The mount:   kyfs mount                      echo Alice > ~/kyfs/default/user.name
Search:      kyfs search "jwt token" --all   ls ~/kyfs/.search/"jwt token"/
History:     kyfs history user.name          kyfs restore user.name --version 3
Safety:      kyfs trash restore NAME         kyfs backup create
From KyCLI:  kyfs migrate kycli              kys KEY VALUE / kyg KEY / kyl / kyd KEY

Global options go before or after the command: kyfs -w NAME keys, kyfs keys -w NAME.
One workspace file for one command: kyfs --db FILE get KEY (or KYFS_DB_PATH=FILE).
A key of another workspace: kyfs get KEY@WORKSPACE (skate's address form);
a key with an '@' of its own: kyfs get ./KEY or kyfs get --raw KEY.
Every command: kyfs --help; one command: kyfs COMMAND --help.
"""


@click.group(
    cls=KyfsGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="kyfs")
@click.option(
    "--user", envvar=config.ENV_USER, metavar="NAME", help="Whose state to use (default: login)."
)
@click.option(
    "--cursor", envvar=config.ENV_CURSOR, metavar="NAME", help="Use cursor NAME's data directory."
)
@click.option(
    "-w",
    "--workspace",
    "workspace",
    metavar="NAME",
    help="Workspace for the command (as -w after it; env KYFS_WORKSPACE).",
)
@click.option(
    "--engine",
    "engine",
    envvar=config.ENV_ENGINE,
    metavar="URL",
    help="Where workspaces live: sqlite (default) or a postgresql:// URL (env KYFS_ENGINE).",
)
@click.option(
    "--addresses",
    "addresses",
    envvar=config.ENV_ADDRESSES,
    type=click.Choice(["kyfs", "prontodb"]),
    help="How key arguments are read: kyfs (KEY@WORKSPACE) or prontodb (also"
    " PROJECT.NAMESPACE.KEY); env KYFS_ADDRESSES, or addresses in config.toml.",
)
@click.option(
    "--db",
    "db_path",
    envvar=ENV_DB_PATH,
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Use the workspace file FILE for this command (env KYFS_DB_PATH).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    user: str | None,
    cursor: str | None,
    workspace: str | None,
    engine: str | None,
    addresses: str | None,
    db_path: Path | None,
) -> None:
    """kyfs: key-value workspaces that live as a filesystem.

    Each workspace is one SQLite file; `kyfs mount` shows every workspace as a
    directory and every key as a file.
    """
    if ctx.resilient_parsing:  # shell completion: no side effects but whose names
        if user:  # the completion helpers list this identity's workspaces and keys
            os.environ[config.ENV_USER] = user
        return
    if ctx.invoked_subcommand is None:
        click.echo(TOUR, nl=False)
        return
    # In the environment for the command's duration, so that a daemon started by
    # `kyfs mount` inherits them, and a subcommand's own -w (KYFS_WORKSPACE) sees a
    # global one; put back afterwards (in-process callers, tests).
    names = (
        config.ENV_USER,
        config.ENV_CURSOR,
        paths.ENV_DATA,
        config.ENV_WORKSPACE,
        config.ENV_ENGINE,
        config.ENV_ADDRESSES,
        ENV_DB_PATH,
    )
    saved = {n: os.environ.get(n) for n in names}
    ctx.call_on_close(lambda: _restore_environment(saved))
    if user:
        os.environ[config.ENV_USER] = user
    if cursor:
        os.environ[config.ENV_CURSOR] = cursor
    if workspace is not None:
        os.environ[config.ENV_WORKSPACE] = workspace
    if engine is not None:
        os.environ[config.ENV_ENGINE] = engine
    if addresses is not None:
        os.environ[config.ENV_ADDRESSES] = addresses
    if db_path is not None:
        os.environ[ENV_DB_PATH] = str(db_path.absolute())
    from kyfs.core import actor

    # a bad --user is a clear error before anything runs; history records who
    ctx.call_on_close(functools.partial(actor.set_actor, actor.setting()))
    actor.set_actor(actor.Actor("cli", config.current_user()))
    config.apply_cursor()
    if ctx.invoked_subcommand != "completion":
        _recover()
    if ctx.invoked_subcommand in ("completion", "migrate"):
        return
    _kycli_hint_once()
    with engine_session() as workspaces:
        ensure_shared(workspaces)


def _recover() -> None:
    """Finish or undo what killed kyfs commands left (kyfs.transfer.recovery), saying
    so on stderr; the command goes on whatever happens here."""
    from kyfs.platform import journal

    if not journal.pending() and not journal.pending_in(paths.spill_dir()):
        return  # the common case: two scandirs, no import of the recovery code
    from kyfs.transfer import recovery

    for sentence in recovery.recover() + recovery.sweep_spill():
        click.echo(f"kyfs: {sentence}", err=True)


def _restore_environment(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _kycli_hint_once() -> None:
    """On a first run (no workspace yet) with KyCLI data (~/kydata.db, ~/.kycli/data):
    on a terminal, offer to import it now (the first design document moves it in on
    first run); otherwise say once how to import it. Asked or said once per data
    directory either way."""
    if config.load().get("kycli_hint_shown"):
        return
    if not (paths.kycli_legacy_file().is_file() or paths.kycli_data_dir().is_dir()):
        return  # the common case stays cheap: no import of the migration code
    if not config.current_scope().is_main:
        return  # an import is the main identity's (kyfs migrate)
    from kyfs.transfer import migrate

    with engine_session() as workspaces:
        names = [n for n in workspaces.names() if n != config.SHARED_WORKSPACE]
        needed = migrate.kycli_hint_needed(names)
    if not needed:
        return
    data = config.load()
    data["kycli_hint_shown"] = True
    config.save(data)
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        click.echo(
            "kyfs: KyCLI data found (~/kydata.db or ~/.kycli/data); import it with: "
            "kyfs migrate kycli",
            err=True,
        )
        return
    sources = migrate.kycli_sources()
    for source, name in sources:
        click.echo(f"KyCLI data: {source} -> workspace {name}", err=True)
    if not click.confirm("Import your KyCLI data into kyfs now?", default=True, err=True):
        click.echo("kyfs: later, with: kyfs migrate kycli", err=True)
        return
    try:
        plan = migrate.run_kycli(sources, None)
    except KyfsError as exc:  # encrypted without the key, unreadable: the command goes on
        click.echo(f"kyfs: not imported: {exc} (kyfs migrate kycli --help)", err=True)
        return
    click.echo(f"imported {plan.keys} keys into {len(plan.workspaces)} workspaces", err=True)


def main() -> None:
    """Entry point of the ``kyfs`` console script and ``python -m kyfs``."""
    cli(prog_name="kyfs")


# --- shared pieces ----------------------------------------------------------------------
def workspace_names(prefix: str = "") -> list[str]:
    """The workspace names starting with ``prefix``, for completion: [] on any error
    (completion must never print a traceback into a shell or break a prompt)."""
    try:
        with engine_session() as workspaces:
            return [n for n in workspaces.names() if n.startswith(prefix)]
    except Exception:
        return []


def key_names(workspace: str | None, prefix: str = "") -> list[str]:
    """Up to COMPLETION_MAX keys starting with ``prefix`` of the workspace a command
    would use, for completion: [] on any error (as :func:`workspace_names`)."""
    try:
        with session(workspace) as (_, store):
            return store.keys(prefix)[:COMPLETION_MAX]
    except Exception:
        return []


def complete_workspaces(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of workspace names (never fails: no names on any error)."""
    return [CompletionItem(n) for n in workspace_names(incomplete)]


def complete_keys(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of the keys of the workspace the command would use."""
    return [CompletionItem(k) for k in key_names(ctx.params.get("workspace"), incomplete)]


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


def raw_option(func: F) -> F:
    """The ``--raw`` flag of a command that takes a KEY: the argument is the key exactly
    as written, never an address (kyfs.core.address)."""
    return click.option(
        "--raw",
        is_flag=True,
        help="Take KEY exactly as written: no KEY@WORKSPACE, no ProntoDB address (as ./KEY).",
    )(func)


def json_option(func: F) -> F:
    """The ``--json`` flag."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def _iso(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")


def _value_fields(value: bytes) -> dict[str, str]:
    """A value for JSON output: ``{"value": text}`` when it is UTF-8 without NUL (text,
    as the search index judges it), else ``{"value_base64": ...}``."""
    import base64

    if b"\0" not in value:
        try:
            return {"value": value.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    return {"value_base64": base64.b64encode(value).decode("ascii")}


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


def _progress(quiet: bool, label: str, length: int) -> Any:
    """A progress bar on stderr, or a stand-in that shows nothing (``--quiet``/``--json``)."""
    if quiet:
        return contextlib.nullcontext(_NoBar())
    return click.progressbar(length=length, label=label, file=sys.stderr)


class _NoBar:
    """A progress bar that shows nothing."""

    def update(self, steps: int) -> None:
        """Ignore progress."""


# Bidirectional-text controls (Unicode category Cf) that reorder what a terminal shows
# ("Trojan Source", CVE-2021-42574), escaped with the control characters (category Cc).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str, keep: str = "") -> str:
    """``text`` with every control character (Unicode Cc: C0, DEL, C1) and bidi control
    escaped as Python writes them (``\\x1b``, ``\\u202e``), but those in ``keep``
    (e.g. "\\n\\t" for a value): a key or value cannot move the cursor, retitle, recolor or
    write to the clipboard of the terminal it is printed to."""
    import unicodedata

    out = []
    for char in text:
        if char in keep or not (char in _BIDI or unicodedata.category(char) == "Cc"):
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


def for_terminal(text: str, keep: str = "", stream: Any = None) -> str:
    """``text`` (which may hold keys) escaped with :func:`printable`, a key's bytes that
    are not UTF-8 as ``\\xNN`` (kyfs.core.names.shown), when ``stream`` (standard output
    by default) is a terminal; for a pipe or a file, where scripts read it, those bytes
    as they are (names.to_os: the line is written with surrogateescape, as ``ls`` writes
    a name into a pipe), so that a script can hand the key back."""
    stream = sys.stdout if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return printable(names.shown(text), keep) if tty else names.to_os(text)


class KeyParam(click.ParamType):  # type: ignore[type-arg]
    """A key on the command line: its bytes as the shell passed them, any but ``/`` and
    NUL (argv decoded with surrogateescape; kyfs.core.names.from_os keeps them exact).
    Bash's ``$'caf\\xe9'`` passes back a key that ``kyfs keys`` shows as ``caf\\xe9``.
    EILSEQ (exit 2) for a code point kyfs keeps for raw bytes."""

    name = "key"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return names.from_os(str(value))
        except KyfsError as exc:  # one line and its exit code, as from a command
            raise KyfsCliError(exc) from None


KEY = KeyParam()
