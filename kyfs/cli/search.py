"""``kyfs search``: ranked full-text search in one workspace or all of them."""

from __future__ import annotations

import os
import sys

import click

from kyfs.app import (
    engine_session,
    resolve_workspace,
)
from kyfs.cli.base import (
    KyfsCliError,
    _echo_json,
    cli,
    for_terminal,
    json_option,
)
from kyfs.core.errors import StorageError, WorkspaceNotFound
from kyfs.platform import config


@cli.command()
@click.argument("query")
@click.option(
    "-w", "--workspace", "names", multiple=True, metavar="NAME", help="Search NAME (repeatable)."
)
@click.option("--all", "search_all", is_flag=True, help="Search every workspace.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True)
@json_option
@click.option("--raw", is_flag=True, help="QUERY is FTS5 syntax (AND, OR, NOT, NEAR, prefix*).")
@click.option(
    "--semantic",
    is_flag=True,
    help="Rank by meaning (embeddings), not words; the workspace keeps embeddings from then on.",
)
@click.option(
    "--fts",
    "fts_only",
    is_flag=True,
    help="Rank by words only (BM25), even where embeddings exist.",
)
@click.option("--keys-only", is_flag=True, help="Print WORKSPACE/KEY of each hit, nothing else.")
@click.option(
    "--color/--no-color", default=None, help="Highlight matches (default: on a terminal)."
)
def search(
    query: str,
    names: tuple[str, ...],
    search_all: bool,
    limit: int,
    as_json: bool,
    raw: bool,
    semantic: bool,
    fts_only: bool,
    keys_only: bool,
    color: bool | None,
) -> None:
    """Search keys and values, best match first.

    Words are ANDed and "a phrase" stays a phrase; --raw takes FTS5 syntax.
    --semantic ranks by meaning: "how do I ship to staging" finds a note on deploy
    steps that shares none of those words. A workspace searched so keeps embeddings
    from then on, and its default search is hybrid (words and meaning, merged by
    reciprocal rank fusion); --fts ranks by words only.
    Without -w or --all, the active workspace is searched.

    Examples: kyfs search "jwt token"; kyfs search "auth*" --all --raw --json;
    kyfs search --semantic "who to call when the site is down"
    """
    from kyfs import search as searching
    from kyfs.core.nodes import MARK_END, MARK_START

    with engine_session() as workspaces:
        if search_all:
            targets = workspaces.names()
        else:
            targets = list(names) or [resolve_workspace(os.environ.get(config.ENV_WORKSPACE))]
            missing = [name for name in names if not workspaces.exists(name)]
            if missing:  # a name given that is no workspace: exit 1, as for any command
                raise WorkspaceNotFound(f"workspace not found: {', '.join(missing)}")
    if semantic and (raw or fts_only):
        raise click.UsageError("--semantic ranks by meaning: not with --raw or --fts")
    if semantic:
        results = searching.semantic(targets, query, limit=limit)
    else:
        results = searching.search(targets, query, raw=raw, limit=limit, hybrid=not fts_only)
    for name, message in results.errors.items():
        click.echo(f"kyfs: cannot search workspace {name}: {message}", err=True)
    if color is None:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    for hit in results.hits:
        plain = hit.snippet.replace(MARK_START, "").replace(MARK_END, "")
        if keys_only:
            click.echo(for_terminal(f"{hit.workspace}/{hit.key}"), color=True)
        elif as_json:
            _echo_json(
                {"workspace": hit.workspace, "key": hit.key, "score": hit.score, "snippet": plain}
            )
        else:
            shown = for_terminal(plain)
            if color:  # escaped first, then the marks become colors
                marked = for_terminal(hit.snippet, keep=MARK_START + MARK_END)
                shown = marked.replace(MARK_START, "\x1b[1;31m").replace(MARK_END, "\x1b[0m")
            click.echo(for_terminal(f"{hit.workspace}/{hit.key}") + f"  ({hit.score:.3f})",
                       color=True)  # fmt: skip
            click.echo("    " + " ".join(shown.split()), color=color)
    if results.errors:
        raise KyfsCliError(
            StorageError(f"{len(results.errors)} workspace(s) could not be searched")
        )
