"""Commands on keys: set, get, delete, keys, restore, ttl, retention, schema, exec,
history."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import click

from kyfs import api
from kyfs.app import (
    session,
    split_address,
)
from kyfs.cli.base import (
    KEY,
    _echo_json,
    _iso,
    _value_fields,
    cli,
    complete_keys,
    for_terminal,
    json_option,
    printable,
    raw_option,
    workspace_option,
)
from kyfs.core import environ
from kyfs.core.errors import InvalidInput

COMMAND_NOT_FOUND = 127  # the exit status POSIX shells give a command they cannot find
ENV_VALUE_MAX = 128 * 1024 - 1  # bytes of one environment string (Linux MAX_ARG_STRLEN)
SCAN_VALUE_MAX = 1024**2  # bytes: a larger value is shown by its size only in kyfs scan
JSON_VALUE_MAX = 64 * 1024**2  # bytes: a larger value is refused by get --json (use get > FILE)


# --- keys -------------------------------------------------------------------------------
@cli.command(name="set")
@click.argument("key", type=KEY, shell_complete=complete_keys)
@click.argument("value", required=False)
@workspace_option
@raw_option
@click.option("--ttl", metavar="DURATION", help="Expire the key after DURATION (10m, 2h, 7d).")
@click.option(
    "--if-version",
    "if_version",
    type=click.IntRange(0),
    metavar="N",
    help="Only if KEY is still at version N (kyfs get KEY --version); else exit 7.",
)
@click.option("--if-absent", is_flag=True, help="Only if KEY does not exist; else exit 7.")
@json_option
def set_(
    key: str,
    value: str | None,
    workspace: str | None,
    raw: bool,
    ttl: str | None,
    if_version: int | None,
    if_absent: bool,
    as_json: bool,
) -> None:
    """Store VALUE at KEY; the value is read from stdin when omitted or `-` (binary-safe).

    KEY@WORKSPACE names a key of another workspace (when -w is not given); ./KEY or
    --raw takes KEY as written (a key with '@' of its own). With --addresses prontodb,
    PROJECT.NAMESPACE.KEY too (docs/usage.md, "Addresses").
    --if-version N and --if-absent make it a compare-and-swap: nothing is written and the
    exit status is 7 when another writer came first (docs/usage.md, "Compare-and-swap").

    Examples: kyfs set user.name Alice; cat notes.md | kyfs set notes@project_alpha --ttl 7d;
    kyfs set counter 8 --if-version 41
    """
    from kyfs.core.names import parse_duration

    if if_version is not None and if_absent:
        raise InvalidInput("give either --if-version N or --if-absent, not both")
    seconds = parse_duration(ttl) if ttl else None
    key, where = split_address(key, workspace, raw=raw)
    data = sys.stdin.buffer if value is None or value == "-" else os.fsencode(value)  # argv bytes
    with api.Workspace(where, addressed=where != workspace) as ws:
        stored = ws.set(key, data, if_version=if_version, if_absent=if_absent, ttl=seconds)
    if as_json:
        _echo_json(
            {"action": "set", "workspace": ws.name, "key": key, "size": stored.size,
             "version": stored.version,
             "expires": None if stored.expires_ns is None else _iso(stored.expires_ns)}
        )  # fmt: skip


@cli.command()
@click.argument("key", type=KEY, shell_complete=complete_keys)
@workspace_option
@raw_option
@json_option
@click.option(
    "--version",
    "version_only",
    is_flag=True,
    help="Print KEY's version (for kyfs set --if-version) instead of its value.",
)
def get(key: str, workspace: str | None, raw: bool, as_json: bool, version_only: bool) -> None:
    """Print the value of KEY: its raw bytes (or a JSON object with --json, which also
    gives its version, read with the value).

    A symbolic link's value is its target, as stored (not followed); --json says
    "type": "symlink" (or "key"), and gives the owner and the number of names.

    Examples: kyfs get user.name; kyfs get user.name@project_alpha --json;
    kyfs get counter --version
    """
    key, where = split_address(key, workspace, raw=raw)
    with api.Workspace(where, addressed=where != workspace) as ws:
        if version_only:
            version = ws.version(key)
            if as_json:
                _echo_json({"workspace": ws.name, "key": key, "version": version})
            else:
                click.echo(version)
            return
        if as_json:
            from kyfs.core.nodes import KIND_NAMES

            if ws.stat(key).size > JSON_VALUE_MAX:
                raise InvalidInput(
                    f"{key} is over {JSON_VALUE_MAX} bytes, too large for --json:"
                    f" use kyfs get {key} > FILE"
                )
            data, version = ws.get_versioned(key)  # one committed version
            entry = ws.stat(key)
            try:
                value, encoding = data.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                import base64

                value, encoding = base64.b64encode(data).decode("ascii"), "base64"
            _echo_json(
                {
                    "workspace": ws.name,
                    "key": key,
                    "value": value,
                    "encoding": encoding,
                    "version": version,
                    "type": KIND_NAMES[entry.kind],
                    "size": len(data),
                    "mode": f"{entry.mode:04o}",
                    "uid": entry.uid,
                    "gid": entry.gid,
                    "nlink": entry.nlink,
                    "created": _iso(entry.created_ns),
                    "updated": _iso(entry.mtime_ns),
                }
            )
            return
        out = sys.stdout.buffer
        if sys.stdout.isatty():  # a value may not drive the terminal: controls escaped
            import codecs

            decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
            for piece in ws.stream(key):
                out.write(printable(decoder.decode(piece), keep="\n\t").encode())
            out.write(printable(decoder.decode(b"", final=True), keep="\n\t").encode())
        else:
            for piece in ws.stream(key):
                out.write(piece)
        out.flush()


@cli.command()
@click.argument("key", type=KEY, shell_complete=complete_keys)
@workspace_option
@raw_option
@json_option
def delete(key: str, workspace: str | None, raw: bool, as_json: bool) -> None:
    """Delete KEY (it waits in the archive: kyfs restore KEY brings it back).

    Examples: kyfs delete user.name; kyfs delete user.name@project_alpha
    """
    key, where = split_address(key, workspace, raw=raw)
    with api.Workspace(where, addressed=where != workspace) as ws:
        ws.delete(key)
    if as_json:
        _echo_json({"action": "delete", "workspace": ws.name, "key": key})


def _found_by(regex: str | None, keys: list[str]) -> list[str]:
    """The ``keys`` that Python's ``re.search`` finds ``regex`` in (all without one), as
    KyCLI's ``kyl`` and ``kyg`` match (docs.python.org/3/library/re.html).

    Raises:
        InvalidInput: (exit 2) ``regex`` is not a regular expression.
    """
    if regex is None:
        return keys
    import re

    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise InvalidInput(f"not a regular expression: {regex!r}: {exc}") from None
    return [key for key in keys if pattern.search(key)]


@cli.command()
@click.argument("prefix", type=KEY, required=False, default="")
@workspace_option
@json_option
@click.option("--glob", metavar="PATTERN", help="Only keys matching a glob, e.g. 'user.*'.")
@click.option(
    "--regex", metavar="PATTERN", help="Only keys a Python regular expression finds (KyCLI's kyl)."
)
def keys(
    prefix: str, workspace: str | None, as_json: bool, glob: str | None, regex: str | None
) -> None:
    """List the keys (starting with PREFIX), one per line.

    Examples: kyfs keys; kyfs keys api/ --glob '*.json' --json; kyfs keys --regex 'user_.*'
    """
    with api.Workspace(workspace) as ws:
        found = _found_by(regex, ws.keys(prefix, glob=glob))
    if as_json:
        _echo_json(found)
        return
    for key in found:
        click.echo(for_terminal(key), color=True)  # as stored to a pipe (click strips ANSI)


@cli.command()
@click.argument("prefix", type=KEY, required=False, default="")
@workspace_option
@json_option
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
@click.option(
    "--regex", metavar="PATTERN", help="Only keys a Python regular expression finds (KyCLI's kyg)."
)
def scan(prefix: str, workspace: str | None, as_json: bool, limit: int, regex: str | None) -> None:
    """List the keys under PREFIX with their values (ProntoDB's scan): one
    ``KEY<TAB>VALUE`` line each (the value's first line of text, or <binary, N bytes>),
    or --json with whole values (UTF-8, else base64). Values over 1 MiB are shown by
    size only.

    Example: kyfs scan config/ --json
    """

    rows: list[dict[str, Any]] = []
    with session(workspace) as (_, store):
        for key in _found_by(regex, store.keys(prefix))[:limit]:
            size = store.stat(key).size
            row: dict[str, Any] = {"key": key, "size": size}
            if size <= SCAN_VALUE_MAX:
                row.update(_value_fields(store.get(key)))
            rows.append(row)
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        if "value" in row:
            shown = row["value"].split("\n", 1)[0]
        else:
            shown = (
                f"<binary, {row['size']} bytes>"
                if "value_base64" in row
                else (f"<{row['size']} bytes>")
            )
        click.echo(f"{for_terminal(row['key'])}\t{for_terminal(shown)}", color=True)


@cli.command()
@click.argument("key", type=KEY, shell_complete=complete_keys)
@workspace_option
@raw_option
@click.option("--force", is_flag=True, help="Replace a live key of that name (it is archived).")
@click.option("--version", "version", type=int, help="Write back version N (kyfs history).")
@click.option("--at", "at", metavar="TIME", help="Write back the value KEY had at TIME (UTC).")
@json_option
def restore(
    key: str,
    workspace: str | None,
    raw: bool,
    force: bool,
    version: int | None,
    at: str | None,
    as_json: bool,
) -> None:
    """Bring back a deleted KEY from the archive, or an older version of KEY.

    Examples: kyfs restore user.name; kyfs restore user.name@project_alpha --version 3
    """
    key, where = split_address(key, workspace, raw=raw)
    with session(where, addressed=where != workspace) as (name, store):
        if version is not None or at is not None:
            from kyfs.transfer.sources import parse_time

            when = parse_time(at) if at is not None else None
            if at is not None and when is None:
                raise InvalidInput(f"unreadable time {at!r}: use e.g. 2026-11-21T10:00:00Z")
            if when is not None:
                when += 999  # times are shown to the microsecond: include that whole microsecond
            entry = store.restore_version(key, version, when)
        else:
            entry = store.restore(key, force=force)
    if as_json:
        _echo_json(
            {
                "action": "restore",
                "workspace": name,
                "key": key,
                "size": entry.size,
                "version": version,
                "at": at,
            }
        )
        return  # fmt: skip
    click.echo(f"restored {key} ({entry.size} bytes) in {name}")


@cli.command()
@click.argument("key", type=KEY, shell_complete=complete_keys)
@click.argument("duration", required=False)
@workspace_option
@raw_option
@click.option("--clear", is_flag=True, help="Remove the TTL: the key never expires.")
@json_option
def ttl(
    key: str, duration: str | None, workspace: str | None, raw: bool, clear: bool, as_json: bool
) -> None:
    """Show KEY's time to live, set it to DURATION (10m, 2h), or --clear it.

    Examples: kyfs ttl session.token 2h; kyfs ttl session.token --clear
    """
    import time

    from kyfs.core.names import parse_duration

    key, where = split_address(key, workspace, raw=raw)
    with session(where, addressed=where != workspace) as (name, store):
        if clear:
            store.set_ttl(key, None)
        elif duration is not None:
            store.set_ttl(key, parse_duration(duration))
        expires = store.expiry(key)
    if as_json:
        left = None if expires is None else max(0.0, (expires - time.time_ns()) / 1e9)
        _echo_json(
            {"workspace": name, "key": key, "expires": None if expires is None else _iso(expires),
             "seconds_left": None if left is None else round(left, 3)}
        )  # fmt: skip
        return
    if expires is None:
        click.echo(f"{key}: no TTL")
    else:
        left = max(0.0, (expires - time.time_ns()) / 1e9)
        click.echo(f"{key}: expires {_iso(expires)} (in {left:.0f} s)")


@cli.command()
@workspace_option
@click.option(
    "--versions", type=click.IntRange(0, 1_000_000), help="Keep the newest N versions always."
)
@click.option(
    "--all-hours", type=click.FloatRange(0, 24 * 36500), help="Keep every version of H hours."
)
@click.option(
    "--hourly-hours",
    type=click.FloatRange(0, 24 * 36500),
    help="Then one version an hour, up to H hours old.",
)
@click.option(
    "--days", type=click.FloatRange(0, 36500), help="Then one version a day, up to D days old."
)
@json_option
def retention(
    workspace: str | None,
    versions: int | None,
    all_hours: float | None,
    hourly_hours: float | None,
    days: float | None,
    as_json: bool,
) -> None:
    """Show or set how much history a workspace keeps per key, as Time Machine thins it:
    every version of the last hours, then one an hour, then one a day, and the newest N
    whatever their age (defaults: 1 hour, 24 hours, 30 days, 10 versions).

    Examples: kyfs retention; kyfs retention --versions 20 --days 90
    """
    given = {"versions": versions, "all_hours": all_hours, "hourly_hours": hourly_hours,
             "days": days}  # fmt: skip
    with session(workspace) as (name, store):
        for setting, value in given.items():
            if value is not None:
                store.set_meta(f"history_{setting}", repr(value))
        kept = store.retention()
    if as_json:
        _echo_json({"workspace": name, **dataclasses.asdict(kept)})
        return
    click.echo(
        f"{name}: keeps every version of {kept.all_hours:g} hours, then one an hour up to"
        f" {kept.hourly_hours:g} hours, one a day up to {kept.days:g} days, and the newest"
        f" {kept.versions} versions of each key whatever their age"
    )


@cli.group()
def schema() -> None:
    """JSON Schema rules: writes of matching keys must validate.

    Examples: kyfs schema set --keys 'users/*' rule.json; kyfs schema show
    """


@schema.command(name="set")
@workspace_option
@click.option("--keys", "glob", required=True, metavar="GLOB", help="Keys the rule covers.")
@click.option("--check", is_flag=True, help="Only report the stored keys that break it.")
@click.argument("schema_file", type=click.File("rb"))
def schema_set(workspace: str | None, glob: str, check: bool, schema_file: Any) -> None:
    """Attach the rule in SCHEMA_FILE to keys matching GLOB (e.g. 'users/*'): a JSON
    Schema, or the short form {"name": "str", "age": "int?"} (str, int, float, bool,
    list, dict; ? for optional). Stored keys that break it are listed (exit 2 with
    --check, which sets nothing).

    Example: echo '{"name": "str", "age": "int?"}' | kyfs schema set --keys 'users/*' -
    """
    try:
        document = json.load(schema_file)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{schema_file.name}: not JSON: {exc}") from None
    with session(workspace) as (name, store):
        broken = store.violations(glob, document)
        if not check:
            store.set_schema(glob, document)
    for line in broken:
        click.echo(f"breaks the rule: {line}", err=True)
    if check:
        if broken:
            raise InvalidInput(f"{len(broken)} stored keys break the rule")
        click.echo(f"every stored key {glob!r} in {name} matches the rule")
        return
    click.echo(f"keys {glob!r} in {name} must now match the rule")
    if broken:
        click.echo(
            f"{len(broken)} stored keys break it (listed above); their next write must fix them"
        )


@schema.command(name="show")
@workspace_option
@json_option
def schema_show(workspace: str | None, as_json: bool) -> None:
    """List the schema rules of a workspace.

    Examples: kyfs schema show; kyfs schema show -w crm --json
    """
    with session(workspace) as (_, store):
        rules = store.schemas()
    if as_json:
        _echo_json(rules)
        return
    for rule in rules:
        click.echo(f"{rule['glob']}: {json.dumps(rule['schema'])}")


@schema.command(name="clear")
@workspace_option
@click.option("--keys", "glob", metavar="GLOB", help="Only the rule of GLOB (default: all).")
def schema_clear(workspace: str | None, glob: str | None) -> None:
    """Remove schema rules.

    Examples: kyfs schema clear --keys 'users/*'; kyfs schema clear
    """
    with session(workspace) as (_, store):
        removed = store.clear_schema(glob)
    click.echo(f"removed {removed} schema rule(s)")


class _ExecCommand(click.Command):
    """``kyfs exec [-w NAME | NAME] [--allow-env NAME]... -- CMD ...``: a word before
    ``--`` that is no option's value names the workspace (``kyfs exec project_alpha --
    env``), as -w does."""

    TAKE_VALUE = ("-w", "--workspace", "--allow-env")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Turn the one positional ``NAME`` before ``--`` into ``-w NAME`` before click
        parses (option values are skipped over)."""
        if "--" in args:
            end = args.index("--")
            options: list[str] = []
            positional: list[str] = []
            at = 0
            while at < end:
                word = args[at]
                if word in self.TAKE_VALUE and at + 1 < end:
                    options += args[at : at + 2]
                    at += 2
                    continue
                (options if word.startswith("-") else positional).append(word)
                at += 1
            if len(positional) == 1:
                args = [*options, "-w", positional[0], *args[end:]]
        return super().parse_args(ctx, args)


@cli.command(name="exec", cls=_ExecCommand, context_settings={"ignore_unknown_options": True})
@workspace_option
@click.option(
    "--allow-env",
    "allowed",
    metavar="NAME",
    multiple=True,
    help="Export key NAME even though its name changes how programs load or run"
    " (LD_PRELOAD, PATH, PYTHONPATH, BASH_ENV, ...). Repeatable.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_cmd(
    ctx: click.Context, workspace: str | None, allowed: tuple[str, ...], command: tuple[str, ...]
) -> None:
    """Run COMMAND with one environment variable per key (envdir's rule).

    Examples: kyfs exec -- ./deploy.sh; kyfs exec project_alpha -- env;
    kyfs exec --allow-env PATH -- make

    Keys that are valid variable names become variables whose value is the
    key's first line; the others (and values with NUL, or over 128 KiB, the most one
    environment string may hold on Linux) are skipped and named on stderr. Keys named
    like LD_*, PATH, PYTHON*, BASH_ENV, ENV, IFS and the like (kyfs.core.environ:
    names that choose the code a program or its shell runs) are left out unless named
    with --allow-env, and named on stderr.
    """
    import subprocess

    env = dict(os.environ)
    skipped, refused = [], []
    with session(workspace) as (_, store):
        for key in store.keys():
            if not environ.NAME.fullmatch(key):
                skipped.append(key)
                continue
            if environ.is_dangerous(key) and key not in allowed:
                refused.append(key)
                continue
            if store.stat(key).size > ENV_VALUE_MAX * 4:  # never read a huge value whole
                skipped.append(key)
                continue
            try:
                line = store.get(key).split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
            except UnicodeDecodeError:
                skipped.append(key)
                continue
            if "\0" in line or len(line.encode()) > ENV_VALUE_MAX:
                skipped.append(key)
                continue
            env[key] = line
    if skipped:
        click.echo(for_terminal("kyfs exec: skipped keys that are not variable names or text: "
                   + ", ".join(skipped), stream=sys.stderr), err=True)  # fmt: skip
    if refused:
        click.echo("kyfs exec: left out keys whose names change how programs load or run: "
                   + ", ".join(refused) + " (--allow-env NAME exports one)", err=True)  # fmt: skip
    try:
        done = subprocess.run(list(command), env=env, check=False)
    except FileNotFoundError:  # as a shell says it, and with the shell's exit status
        click.echo(f"kyfs exec: {command[0]}: command not found", err=True)
        ctx.exit(COMMAND_NOT_FOUND)
    except (OSError, ValueError) as exc:  # E2BIG: the environment as a whole is too large
        raise InvalidInput(f"cannot run {command[0]}: {exc}") from None
    ctx.exit(done.returncode)


# --- history ------------------------------------------------------------------------------
@cli.command()
@click.argument("key", type=KEY, required=False, shell_complete=complete_keys)
@workspace_option
@raw_option
@json_option
def history(key: str | None, workspace: str | None, raw: bool, as_json: bool) -> None:
    """List the recorded versions of KEY, oldest first: version, time, action, size, and a
    one-line preview of the value (its first line of text, cut to the terminal's width;
    <binary, N bytes> otherwise); --json gives each whole value (UTF-8, else base64).

    Example: kyfs history user.name; then kyfs restore user.name --version 3

    Exit 1 when KEY has no history and is not there (live or in the archive). Without
    KEY, every key's history, oldest first, each line naming its key (KyCLI's kyv).
    """
    import shutil

    items: list[dict[str, Any]] = []
    where = workspace
    if key is not None:
        key, where = split_address(key, workspace, raw=raw)
    with session(where, addressed=where != workspace) as (_, store):
        if key is None:
            found = sorted(
                (h for k in store.history_keys() for h in store.history(k)),
                key=lambda h: (h.time_ns, h.id or 0),
            )
        else:
            found = store.history(key)
            if not found and not store.archived(key):
                store.stat(key)  # KeyNotFound (exit 1) when it is not there either
        for h in found:
            item: dict[str, Any] = {
                **({"key": h.key} if key is None else {}),
                "version": h.id,
                "time": _iso(h.time_ns),
                "action": h.action,
                "size": h.size,
                "detail": h.detail,
            }
            if h.size is not None and h.id is not None:
                if as_json:
                    item.update(_value_fields(store.version_value(h.id)))
                else:  # a preview needs the first line only
                    item.update(_value_fields(_head(store.version_value(h.id, PREVIEW_BYTES))))
            items.append(item)
    if as_json:
        _echo_json(items)
        return
    width = shutil.get_terminal_size((100, 24)).columns
    for item in items:
        size = "" if item["size"] is None else f"{item['size']} bytes"
        detail = f"  ({for_terminal(item['detail'])})" if item["detail"] else ""
        line = f"{item['version']:>6}  {item['time']}  {item['action']:<6}  {size}{detail}"
        if key is None:
            line = f"{for_terminal(item['key'])}  {line}"
        preview = for_terminal(_preview(item))
        if preview:
            room = max(width - len(line) - 4, 12)
            line += "  " + (preview if len(preview) <= room else preview[: room - 1] + "…")
        click.echo(line, color=True)  # as stored to a pipe (click strips ANSI)


PREVIEW_BYTES = 4096  # bytes of a version read for its one-line preview


def _head(value: bytes) -> bytes:
    """``value`` (the first PREVIEW_BYTES of a version) without a UTF-8 character cut in
    two at its end, so text stays text."""
    if len(value) < PREVIEW_BYTES:
        return value
    for cut in range(4):
        try:
            value[: len(value) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return value[: len(value) - cut]
    return value


def _preview(item: dict[str, Any]) -> str:
    """One line that shows what a version held: its first line of text (control
    characters shown as ?), or ``<binary, N bytes>``."""
    if "value_base64" in item:
        return f"<binary, {item['size']} bytes>"
    text = item.get("value")
    if text is None:
        return ""
    first = text.split("\n", 1)[0]
    shown = "".join(c if c.isprintable() else "?" for c in first[:500])
    return repr(shown) if shown else "''"
