"""``kyfs collection`` (contextd's collections: caller-supplied vectors with metadata,
searched by similarity) and ``kyfs embeddings`` (the keys' embeddings that semantic
search keeps)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click

from kyfs.app import session
from kyfs.cli.base import _echo_json, cli, json_option, workspace_option
from kyfs.core.errors import InvalidInput

MAX_LINE = 16 * 2**20  # bytes of one JSON line of --vector-file


@cli.group()
def collection() -> None:
    """Collections: your own vectors with metadata, searched by similarity.

    A collection lives in a workspace and holds items, each a name, a vector of the
    collection's dimensions, optional metadata (a JSON object) and an optional document
    text. Search is exact (cosine similarity over every item), with filters on metadata.

    Examples: kyfs collection create docs --dim 384;
    kyfs collection add docs --vector-file items.jsonl;
    kyfs collection query docs --vector-file q.json --where lang=en
    """


@collection.command("create")
@click.argument("name")
@click.option("--dim", type=click.IntRange(1, 4096), required=True, help="Dimensions.")
@workspace_option
def collection_create(name: str, dim: int, workspace: str | None) -> None:
    """Create collection NAME of DIM-dimensional vectors.

    Examples: kyfs collection create docs --dim 384 -w project_alpha
    """
    with session(workspace) as (where, store):
        store.create_collection(name, dim)
    click.echo(f"created collection {name} ({dim} dimensions) in {where}", err=True)


@collection.command("list")
@workspace_option
@json_option
def collection_list(workspace: str | None, as_json: bool) -> None:
    """List the collections of a workspace, with their dimensions and item counts.

    Examples: kyfs collection list; kyfs collection list --json
    """
    with session(workspace) as (_, store):
        found = [(space, store.count_items(space.name)) for space in store.collections()]
    for space, count in found:
        if as_json:
            _echo_json({"name": space.name, "dim": space.dim, "items": count})
        else:
            click.echo(f"{space.name}\t{space.dim}\t{count}")


def _lines(stream: TextIO) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-empty JSON line of ``stream``.

    Raises:
        InvalidInput: (exit 2) a line that is not a JSON object, or over MAX_LINE bytes.
    """
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            raise InvalidInput(f"line {number}: longer than {MAX_LINE} bytes")
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"line {number}: not JSON: {exc.msg}") from None
        if not isinstance(item, dict):
            raise InvalidInput(f"line {number}: a JSON object is expected")
        yield number, item


@collection.command("add")
@click.argument("name")
@click.option(
    "--vector-file",
    type=click.File("r", encoding="utf-8"),
    required=True,
    help='JSON lines: {"name", "vector": [...], "metadata": {...}, "document"}; - is stdin.',
)
@workspace_option
def collection_add(name: str, vector_file: TextIO, workspace: str | None) -> None:
    """Insert or replace items of collection NAME, all in one transaction (nothing is
    stored when one line is bad).

    Examples: kyfs collection add docs --vector-file items.jsonl
    """
    items = []
    for number, item in _lines(vector_file):
        if "name" not in item or "vector" not in item:
            raise InvalidInput(f"line {number}: an item has a name and a vector")
        document = item.get("document")
        if document is not None and not isinstance(document, str):
            raise InvalidInput(f"line {number}: a document is a string")
        items.append((item["name"], item["vector"], item.get("metadata"), document))
    with session(workspace) as (_, store):
        count = store.put_items(name, items)
    click.echo(f"stored {count} items in {name}", err=True)


def _where(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` filters: VALUE as JSON when it parses (numbers, true, "text"), else
    as a string."""
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--where")
        try:
            found[key] = json.loads(value)
        except json.JSONDecodeError:
            found[key] = value
    return found


@collection.command("query")
@click.argument("name")
@click.option("--vector", "vector_text", metavar="JSON", help="The query vector, a JSON list.")
@click.option(
    "--vector-file",
    type=click.File("r", encoding="utf-8"),
    help="A file holding the query vector (a JSON list, or an object with a vector).",
)
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE", help="Metadata filter.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=10, show_default=True)
@workspace_option
@json_option
def collection_query(
    name: str,
    vector_text: str | None,
    vector_file: TextIO | None,
    where: tuple[str, ...],
    limit: int,
    workspace: str | None,
    as_json: bool,
) -> None:
    """The items of collection NAME nearest a vector, best first (cosine similarity),
    among those whose metadata holds every --where KEY=VALUE.

    Examples: kyfs collection query docs --vector '[0.1, 0.2, 0.3]' --where lang=en
    """
    if (vector_text is None) == (vector_file is None):
        raise click.UsageError("give the query vector with --vector or --vector-file")
    text = vector_text if vector_text is not None else vector_file.read(MAX_LINE)  # type: ignore[union-attr]
    try:
        vector = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the query vector is not JSON: {exc.msg}") from None
    if isinstance(vector, dict):
        vector = vector.get("vector")
    if not isinstance(vector, list):
        raise InvalidInput("the query vector is a JSON list of numbers")
    with session(workspace) as (_, store):
        found = store.query_items(name, vector, limit, _where(where))
    for item in found:
        if as_json:
            _echo_json(item._asdict())
        else:
            click.echo(f"{item.name}\t{item.score:.4f}\t{json.dumps(item.metadata)}")


@collection.command("delete")
@click.argument("name")
@click.argument("items", nargs=-1, required=True)
@workspace_option
def collection_delete(name: str, items: tuple[str, ...], workspace: str | None) -> None:
    """Remove ITEMS from collection NAME.

    Examples: kyfs collection delete docs intro faq
    """
    with session(workspace) as (_, store):
        count = store.delete_items(name, items)
    click.echo(f"removed {count} items from {name}", err=True)


@collection.command("drop")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
@workspace_option
def collection_drop(name: str, yes: bool, workspace: str | None) -> None:
    """Remove collection NAME and all its items (no undo).

    Examples: kyfs collection drop docs --yes
    """
    if not yes and sys.stdin.isatty():
        click.confirm(f"remove collection {name} and all its items?", abort=True)
    elif not yes:
        raise click.UsageError("removing a collection asks first: add --yes")
    with session(workspace) as (_, store):
        count = store.drop_collection(name)
    click.echo(f"removed collection {name} ({count} items)", err=True)


@cli.group()
def embeddings() -> None:
    """The keys' embeddings that semantic search keeps.

    kyfs search --semantic makes a workspace keep an embedding of every key (made in
    the background by the mount's indexer, or by the next search); its default search
    is then hybrid.

    Examples: kyfs embeddings status; kyfs embeddings drop -w notes
    """


@embeddings.command("status")
@workspace_option
@json_option
def embeddings_status(workspace: str | None, as_json: bool) -> None:
    """Say whether a workspace keeps embeddings, by which model, and how many wait.

    Examples: kyfs embeddings status --json
    """
    with session(workspace) as (name, store):
        space = store.vector_space()
        waiting = store.count_pending_embeddings() if space else 0
    report = {
        "workspace": name,
        "kept": space is not None,
        "model": space.model if space else None,
        "dim": space.dim if space else None,
        "pending": waiting,
    }
    if as_json:
        _echo_json(report)
    elif space is None:
        click.echo(f"{name}: no embeddings (kyfs search --semantic starts them)")
    else:
        click.echo(f"{name}: {space.model}, {space.dim} dimensions, {waiting} pending")


@embeddings.command("drop")
@workspace_option
def embeddings_drop(workspace: str | None) -> None:
    """Keep no embeddings of a workspace's keys any more (search is by words again).

    Examples: kyfs embeddings drop -w notes
    """
    with session(workspace) as (name, store):
        dropped = store.drop_embeddings()
    click.echo(f"{name}: " + ("embeddings dropped" if dropped else "kept no embeddings"), err=True)
