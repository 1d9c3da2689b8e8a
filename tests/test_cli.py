"""The CLI through click's CliRunner: exit codes and output."""

from __future__ import annotations

import base64
import json

import pytest
from click.testing import CliRunner, Result

from kyfs.cli import cli
from kyfs.platform import config

# Every command on both engines (with PostgreSQL, a database of the test's own).
pytestmark = pytest.mark.usefixtures("both_engines")


def run(*args: str, input: bytes | str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env)


@pytest.fixture
def alpha(both_engines: str) -> None:  # the engine first, then the workspace on it
    assert run("use", "alpha", "--create").exit_code == 0


def test_use_requires_create_for_a_new_workspace() -> None:
    result = run("use", "alpha")
    assert result.exit_code == 1
    assert "workspace not found: alpha" in result.output
    assert "Traceback" not in result.output
    result = run("use", "alpha", "--create")
    assert result.exit_code == 0, result.output
    assert config.active_workspace() == "alpha"


@pytest.mark.usefixtures("alpha")
def test_set_get_round_trip_text_and_stdin() -> None:
    assert run("set", "user.name", "Alice").exit_code == 0
    result = run("get", "user.name")
    assert result.exit_code == 0 and result.stdout_bytes == b"Alice"
    assert run("set", "note", input="line 1\nline 2\n").exit_code == 0
    assert run("get", "note").stdout_bytes == b"line 1\nline 2\n"
    assert run("set", "dash", "-", input="from stdin").exit_code == 0
    assert run("get", "dash").stdout_bytes == b"from stdin"


@pytest.mark.usefixtures("alpha")
def test_binary_values_are_exact_and_json_uses_base64() -> None:
    value = bytes(range(256))
    assert run("set", "bin", input=value).exit_code == 0
    assert run("get", "bin").stdout_bytes == value
    data = json.loads(run("get", "bin", "--json").output)
    assert data["encoding"] == "base64"
    assert base64.b64decode(data["value"]) == value
    assert data["workspace"] == "alpha" and data["size"] == 256
    run("set", "t", "héllo")
    text = json.loads(run("get", "t", "--json").output)
    assert text["value"] == "héllo" and text["encoding"] == "utf-8"
    assert text["updated"].endswith("Z")


@pytest.mark.usefixtures("alpha")
def test_missing_key_is_exit_1_with_message() -> None:
    result = run("get", "nope")
    assert result.exit_code == 1
    assert result.stdout_bytes == b""
    assert "key not found: nope" in result.stderr
    assert "Traceback" not in result.output
    assert run("delete", "nope").exit_code == 1


@pytest.mark.usefixtures("alpha")
@pytest.mark.parametrize("key", ["/abs", "a//b", "..", "x" * 256, "a/./b"])
def test_bad_keys_are_exit_2_and_write_nothing(key: str) -> None:
    result = run("set", key, "v")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert run("keys").output == ""


@pytest.mark.usefixtures("alpha")
def test_keys_delete_and_prefix() -> None:
    for key in ["user.name", "user.email", "token", "dir/x"]:
        run("set", key, "v")
    assert run("keys").output.split() == ["dir/x", "token", "user.email", "user.name"]
    assert run("keys", "user.").output.split() == ["user.email", "user.name"]
    assert json.loads(run("keys", "--json", "dir").output) == ["dir/x"]
    assert run("delete", "token").exit_code == 0
    assert "token" not in run("keys").output


def test_workspace_override_by_option_and_environment(alpha: None) -> None:
    run("create", "beta")
    run("set", "k", "in-alpha")
    assert run("set", "-w", "beta", "k", "in-beta").exit_code == 0
    assert run("get", "k").output == "in-alpha"
    assert run("get", "k", "--workspace", "beta").output == "in-beta"
    assert run("get", "k", env={"KYFS_WORKSPACE": "beta"}).output == "in-beta"
    result = run("get", "k", "-w", "missing")
    assert result.exit_code == 1 and "kyfs use missing --create" in result.output


def test_workspaces_listing(alpha: None) -> None:
    run("create", "beta")
    run("set", "a", "1")
    run("set", "b", "2")
    data = json.loads(run("workspaces", "--json").output)
    assert [(w["name"], w["active"], w["keys"]) for w in data] == [
        ("alpha", True, 2),
        ("beta", False, 0),
        ("shared", False, 0),
    ]
    lines = run("workspaces").output.splitlines()
    assert lines[0].startswith("* alpha") and "2 keys" in lines[0]
    assert lines[1].startswith("  beta")


def test_create_drop_rename(alpha: None) -> None:
    assert run("create", "beta").exit_code == 0
    assert run("create", "beta").exit_code == 3
    assert run("create", "bad/name").exit_code == 2
    result = run("drop", "beta", input="n\n")
    assert result.exit_code == 1  # click.Abort
    assert "beta" in run("workspaces").output
    assert run("drop", "beta", "--yes").exit_code == 0
    assert "beta" not in run("workspaces").output
    assert run("drop", "beta", "--yes").exit_code == 1
    run("set", "k", "v")
    assert run("rename", "alpha", "gamma").exit_code == 0
    assert config.active_workspace() == "gamma"
    assert run("get", "k").output == "v"
    assert run("rename", "nope", "other").exit_code == 1


def test_version_and_help() -> None:
    assert "kyfs, version" in run("--version").output
    assert "workspace" in run("--help").output


def test_unmount_of_nothing_is_a_mount_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run("unmount", str(tmp_path))
    assert result.exit_code == 5
    assert "not mounted" in result.output


@pytest.mark.usefixtures("alpha")
def test_du_shows_where_bytes_go_and_compact_gives_space_back() -> None:
    import os

    value = os.urandom(300_000)
    assert run("set", "a", input=value).exit_code == 0
    assert run("set", "b", input=value).exit_code == 0  # the same bytes: stored once
    assert run("set", "a", input=os.urandom(100_000)).exit_code == 0  # the old one: history
    usage = json.loads(run("du", "--json").output)["workspaces"]["alpha"]
    assert usage["values"] == 400_000
    assert 300_000 <= usage["live"] < 420_000 and usage["history"] == 0  # b still holds it
    assert run("delete", "b").exit_code == 0
    moved = json.loads(run("du", "--json").output)["workspaces"]["alpha"]
    assert moved["archive"] >= 300_000 and moved["live"] < 120_000
    table = run("du", "--all")
    assert table.exit_code == 0 and "alpha" in table.output and "trash:" in table.output
    done = run("compact", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["given_back"]["alpha"] >= 0
    assert run("get", "a").exit_code == 0
