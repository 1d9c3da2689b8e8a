"""The set of workspaces in a data directory."""

from __future__ import annotations

import os
import stat

import pytest

from kyfs.app import rename_workspace
from kyfs.core.errors import InvalidName, NotEmpty, WorkspaceExists, WorkspaceNotFound
from kyfs.engine.sqlite.engine import SqliteEngine
from kyfs.platform import config, paths


@pytest.fixture
def workspaces() -> SqliteEngine:
    w = SqliteEngine()
    yield w
    w.close()


def test_create_list_info(workspaces: SqliteEngine) -> None:
    workspaces.create("alpha")
    workspaces.create("beta")
    assert workspaces.names() == ["alpha", "beta"]
    assert paths.workspace_file("alpha").is_file()
    assert stat.S_IMODE(os.stat(paths.workspaces_dir()).st_mode) == 0o700
    store = workspaces.open("alpha")
    store.set("k", b"v")
    store.close()
    info = workspaces.info("alpha")
    assert (info.name, info.keys) == ("alpha", 1)
    assert info.size > 0


def test_create_twice_and_bad_names(workspaces: SqliteEngine) -> None:
    workspaces.create("alpha")
    with pytest.raises(WorkspaceExists):
        workspaces.create("alpha")
    with pytest.raises(InvalidName):
        workspaces.create("../escape")
    assert not (paths.data_dir() / "escape.db").exists()
    assert workspaces.names() == ["alpha"]


def test_drop_removes_all_files(workspaces: SqliteEngine) -> None:
    workspaces.create("alpha")
    store = workspaces.open("alpha")
    store.set("k", b"v")
    store.close()
    workspaces.drop("alpha")
    assert workspaces.names() == []
    assert list(paths.workspaces_dir().glob("alpha*")) == []
    with pytest.raises(WorkspaceNotFound):
        workspaces.drop("alpha")


def test_drop_only_if_empty(workspaces: SqliteEngine) -> None:
    workspaces.create("alpha")
    store = workspaces.open("alpha")
    store.set("k", b"v")
    store.close()
    with pytest.raises(NotEmpty):
        workspaces.drop("alpha", only_if_empty=True)
    assert workspaces.exists("alpha")


def test_rename_keeps_data_and_active_follows(workspaces: SqliteEngine) -> None:
    workspaces.create("alpha")
    config.set_active_workspace("alpha")
    store = workspaces.open("alpha")
    store.set("k", b"v")
    store.close()
    rename_workspace(workspaces, "alpha", "gamma")  # the application's policy
    assert workspaces.names() == ["gamma"]
    assert config.active_workspace() == "gamma"
    store = workspaces.open("gamma")
    assert store.get("k") == b"v"
    store.close()
    workspaces.create("alpha")
    with pytest.raises(WorkspaceExists):
        workspaces.rename("gamma", "alpha")
    with pytest.raises(WorkspaceNotFound):
        workspaces.rename("nope", "other")


def test_cached_store_notices_changes_by_another_process(workspaces: SqliteEngine) -> None:
    daemon = SqliteEngine(cache=True)
    try:
        workspaces.create("alpha")
        first = daemon.open("alpha")
        first.set("k", b"1")
        assert daemon.open("alpha") is first  # cached while unchanged
        workspaces.rename("alpha", "beta")  # "the CLI" renames it
        with pytest.raises(WorkspaceNotFound):
            daemon.open("alpha")
        assert daemon.open("beta").get("k") == b"1"
        workspaces.drop("beta")
        workspaces.create("beta")  # a new file under the same name
        assert daemon.open("beta").keys() == []
    finally:
        daemon.close()


def test_daemon_rename_keeps_cached_store_usable() -> None:
    daemon = SqliteEngine(cache=True)
    try:
        daemon.create("alpha")
        store = daemon.open("alpha")
        store.set("k", b"1")
        daemon.rename("alpha", "beta")
        store.set("k2", b"2")  # an open file in the renamed workspace keeps working
        assert daemon.open("beta") is store
        assert sorted(store.keys()) == ["k", "k2"]
        assert store.stat("").is_dir
    finally:
        daemon.close()
