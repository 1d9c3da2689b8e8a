"""The engines every contract test runs against. A new engine (PostgreSQL) adds itself to
ENGINES with a factory that gives an empty engine; nothing else changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kyfs.engine.base import Engine, Workspace


def _sqlite(tmp_path: Path) -> Engine:
    from kyfs.engine.sqlite.engine import SqliteEngine

    return SqliteEngine(tmp_path / "workspaces")


ENGINES: dict[str, Callable[[Path], Engine]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty engine of each kind."""
    made = ENGINES[request.param](tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def ws(engine: Engine) -> Iterator[Workspace]:
    """A fresh workspace ``w`` of each engine, open for the test."""
    engine.create("w")
    with engine.using("w") as workspace:
        yield workspace


@pytest.fixture
def peer(request: pytest.FixtureRequest, tmp_path: Path, engine: Engine) -> Iterator[Engine]:
    """A second engine of the same kind on the same data as ``engine``: what another
    process (a CLI command, another daemon) sees and does."""
    made = ENGINES[request.node.callspec.params["engine"]](tmp_path)
    try:
        yield made
    finally:
        made.close()
