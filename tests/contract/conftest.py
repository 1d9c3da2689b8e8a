"""The engines every contract test runs against: each factory gives an empty engine,
and called again in the same test, a second engine on the same data (another process's
view). SQLite: a data directory in tmp_path. PostgreSQL: a database of the test's own on
the session's throwaway server (tests/conftest.py: pg_cluster, pg_url)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kyfs.engine.base import Engine, Workspace


def _sqlite(request: pytest.FixtureRequest) -> Engine:
    from kyfs.engine.sqlite.engine import SqliteEngine

    tmp_path = request.getfixturevalue("tmp_path")
    return SqliteEngine(tmp_path / "workspaces")


def _postgresql(request: pytest.FixtureRequest) -> Engine:
    from kyfs.engine.postgres.engine import PgEngine

    return PgEngine(request.getfixturevalue("pg_url"))


ENGINES: dict[str, Callable[[pytest.FixtureRequest], Engine]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An empty engine of each kind."""
    made = ENGINES[request.param](request)
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
def peer(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Engine]:
    """A second engine of the same kind on the same data as ``engine``: what another
    process (a CLI command, another daemon) sees and does."""
    made = ENGINES[request.node.callspec.params["engine"]](request)
    try:
        yield made
    finally:
        made.close()
