"""Locations and config, on a fake filesystem (pyfakefs): no SQLite here."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from kyfs.core.errors import InvalidInput
from kyfs.platform import config, paths


def test_kyfs_home_puts_everything_under_one_directory(tmp_path: Path) -> None:
    home = Path(paths.data_dir())
    assert paths.workspaces_dir() == home / "workspaces"
    assert paths.workspace_file("alpha") == home / "workspaces" / "alpha.db"
    assert paths.config_file() == home / "config.toml"
    assert paths.state_dir() == home / "state"
    assert paths.spill_dir().parent == home


def test_platformdirs_without_kyfs_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KYFS_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg/data")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/xdg/config")
    assert paths.workspaces_dir() == Path("/xdg/data/kyfs/workspaces")
    assert paths.config_file() == Path("/xdg/config/kyfs/config.toml")


def test_workspace_name_of_file() -> None:
    assert paths.workspace_name(Path("x/alpha.db")) == "alpha"
    assert paths.workspace_name(Path("x/alpha.db-wal")) is None
    assert paths.sidecar_files(Path("a.db")) == [Path("a.db-wal"), Path("a.db-shm")]


def test_mount_record_differs_per_mountpoint() -> None:
    assert paths.mount_record(Path("/a")) != paths.mount_record(Path("/b"))
    assert paths.mount_log(Path("/a")).suffix == ".log"


def test_active_workspace_round_trip(fs: FakeFilesystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYFS_USER", "agent1")
    assert config.active_workspace() is None
    config.set_active_workspace("alpha")
    assert config.active_workspace() == "alpha"
    state = paths.user_state_file("agent1")
    assert 'active_workspace = "alpha"' in state.read_text()
    config.set_active_workspace("beta")
    assert config.load(state) == {"active_workspace": "beta"}
    monkeypatch.setenv("KYFS_USER", "agent2")  # another user: their own state
    assert config.active_workspace() is None
    config.set_active_workspace("gamma")
    monkeypatch.setenv("KYFS_USER", "agent1")
    assert config.active_workspace() == "beta"


def test_cursors(fs: FakeFilesystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYFS_USER", "agent1")
    monkeypatch.setenv("KYFS_DATA", "")  # so that teardown removes what apply_cursor sets
    config.set_cursor("work", Path("/data/work"), "proj")
    assert config.list_cursors() == {"work": {"path": "/data/work", "workspace": "proj"}}
    assert config.active_cursor() is None
    config.set_active_cursor("work")
    assert config.active_workspace() == "proj"
    config.set_active_workspace("other")  # while a cursor is in effect: the cursor's
    assert config.get_cursor("work")["workspace"] == "other"
    assert config.apply_cursor() == "work"
    assert paths.data_dir() == Path("/data/work")
    monkeypatch.setenv("KYFS_DATA", "")
    config.delete_cursor("work")
    assert config.active_cursor() is None and config.list_cursors() == {}


def test_broken_config_is_a_clear_error(fs: FakeFilesystem) -> None:
    paths.config_file().parent.mkdir(parents=True, exist_ok=True)
    paths.config_file().write_text("active_workspace = [unclosed")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        config.load()
