"""Semantic search with the real default embedder (WordLlama, from its wheel, offline),
on a labelled set made for these tests (tests/data/semantic): 221 short notes of the
kinds kyfs's users keep, and 72 queries, each a paraphrase of one note sharing at most
one content word with it. Measured figures are in docs/design.md ("Semantic search");
the floors asserted here leave room below them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from kyfs import search
from kyfs.engine.base import Engine, Workspace

DATA = Path(__file__).parent / "data" / "semantic"
NOTES = [json.loads(line) for line in (DATA / "notes.jsonl").read_text().splitlines()]
QUERIES = [json.loads(line) for line in (DATA / "queries.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: the model must come from the wheel."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")


def _load(engine: Engine) -> Callable[[str], AbstractContextManager[Workspace]]:
    engine.create("notes")
    with engine.using("notes") as workspace:
        for note in NOTES:
            workspace.set(note["key"], note["value"].encode())
    return engine.using


def _found(hits: list[search.Hit], key: str) -> bool:
    return any(hit.key == key for hit in hits[:5])


@pytest.fixture
def sqlite_notes(tmp_path: Path) -> Iterator[Callable[[str], AbstractContextManager[Workspace]]]:
    from kyfs.engine.sqlite.engine import SqliteEngine

    engine = SqliteEngine(tmp_path / "workspaces")
    try:
        yield _load(engine)
    finally:
        engine.close()


def test_paraphrases_found_by_meaning_not_by_words(
    sqlite_notes: Callable[[str], AbstractContextManager[Workspace]],
) -> None:
    """Top 5 of each paraphrase: full-text search finds almost none (its words are not
    the note's); semantic search finds about half, hybrid as many."""
    fts = sum(
        _found(
            search.search(["notes"], q["query"], use=sqlite_notes, limit=5, hybrid=False).hits,
            q["key"],
        )
        for q in QUERIES
    )
    meaning = sum(
        _found(search.semantic(["notes"], q["query"], use=sqlite_notes, limit=5).hits, q["key"])
        for q in QUERIES
    )
    hybrid = sum(
        _found(search.search(["notes"], q["query"], use=sqlite_notes, limit=5).hits, q["key"])
        for q in QUERIES
    )
    print(f"top-5 of {len(QUERIES)}: fts {fts}, semantic {meaning}, hybrid {hybrid}")
    assert fts / len(QUERIES) < 0.1
    assert meaning / len(QUERIES) >= 0.45
    assert hybrid / len(QUERIES) >= 0.45


def test_same_results_on_sqlite_and_postgresql(
    sqlite_notes: Callable[[str], AbstractContextManager[Workspace]], pg_url: str
) -> None:
    from kyfs.engine.postgres.engine import PgEngine

    engine = PgEngine(pg_url)
    try:
        on_pg = _load(engine)
        for q in QUERIES[:25]:
            one = search.semantic(["notes"], q["query"], use=sqlite_notes, limit=10).hits
            other = search.semantic(["notes"], q["query"], use=on_pg, limit=10).hits
            assert [(h.key, h.score) for h in one] == [(h.key, h.score) for h in other]
            one = search.search(["notes"], q["query"], use=sqlite_notes, limit=10).hits
            other = search.search(["notes"], q["query"], use=on_pg, limit=10).hits
            assert [h.key for h in one] == [h.key for h in other]
    finally:
        engine.close()


def test_cli_semantic_then_hybrid(tmp_path: Path) -> None:
    """The CLI end to end: --semantic finds a paraphrased note, the workspace keeps
    embeddings, a new key is embedded by the next search, --fts keeps words only."""
    env = {**os.environ, "KYFS_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    kyfs = [sys.executable, "-m", "kyfs"]

    def run(*args: str, code: int = 0) -> str:
        done = subprocess.run([*kyfs, *args], env=env, capture_output=True, text=True)
        assert done.returncode == code, done.stderr
        return done.stdout

    run("use", "notes", "--create")
    run("set", "ops/deploy.staging", "Staging deploys go through make release ENV=staging.")
    run("set", "food/lunch", "Pizza arrives on Fridays at noon in the kitchen.")
    out = run("search", "--semantic", "--json", "--limit", "1", "ship code to the test environment")
    assert json.loads(out)["key"] == "ops/deploy.staging"
    run("set", "oncall/pager", "The pager rotation changes every Monday at 10:00.")
    out = run("search", "--semantic", "--json", "--limit", "1", "who is woken up at night")
    assert json.loads(out)["key"] == "oncall/pager"
    assert run("search", "--fts", "--keys-only", "who is woken up at night") == ""
    hybrid = run("search", "--keys-only", "pizza")
    assert hybrid.splitlines()[0] == "notes/food/lunch"
    run("search", "--semantic", "--raw", "x", code=2)
    run("search", "--semantic", "   ", code=2)
    env["KYFS_EMBEDDER"] = "no_such_module:make"  # a plug-in that cannot be loaded
    assert run("search", "--keys-only", "pizza").splitlines()[0] == "notes/food/lunch"
    done = subprocess.run(
        [*kyfs, "search", "--semantic", "pizza"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 4 and "Traceback" not in done.stderr
    assert "no_such_module" in done.stderr


def test_cli_collections(tmp_path: Path) -> None:
    """contextd's collections through the CLI: create, add JSON lines (one bad line
    stores nothing), query with a metadata filter, list, delete, drop; errors exit with
    the errors table's codes and one line."""
    env = {**os.environ, "KYFS_HOME": str(tmp_path / "home")}

    def run(*args: str, code: int = 0, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "kyfs", *args], env=env, capture_output=True, text=True,
            input=stdin,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    run("use", "c", "--create")
    run("collection", "create", "docs", "--dim", "3")
    run("collection", "create", "docs", "--dim", "3", code=3)
    run("collection", "create", ".keys", "--dim", "3", code=2)
    lines = [
        {"name": "a", "vector": [1, 0, 0], "metadata": {"lang": "en"}, "document": "hello"},
        {"name": "b", "vector": [0, 1, 0], "metadata": {"lang": "fr"}},
        {"name": "c", "vector": [0.9, 0.1, 0], "metadata": {"lang": "fr"}},
    ]
    good = "".join(json.dumps(line) + "\n" for line in lines)
    run("collection", "add", "docs", "--vector-file", "-", stdin=good + '{"name": "x"}\n', code=2)
    run("collection", "add", "docs", "--vector-file", "-", stdin=good + "not json\n", code=2)
    assert run("collection", "list", "--json") == '{"name": "docs", "dim": 3, "items": 0}\n'
    run("collection", "add", "docs", "--vector-file", "-", stdin=good)
    found = run("collection", "query", "docs", "--vector", "[1, 0, 0]", "--json").splitlines()
    assert [json.loads(line)["name"] for line in found] == ["a", "c", "b"]
    assert json.loads(found[0])["document"] == "hello"
    only = run("collection", "query", "docs", "--vector", "[1, 0, 0]", "--where", "lang=fr")
    assert [line.split("\t")[0] for line in only.splitlines()] == ["c", "b"]
    run("collection", "query", "docs", "--vector", "[1, 0]", code=2)
    run("collection", "query", "nope", "--vector", "[1, 0, 0]", code=1)
    run("collection", "delete", "docs", "c")
    assert run("collection", "list") == "docs\t3\t2\n"
    run("collection", "drop", "docs", "--yes")
    assert run("collection", "list") == ""
