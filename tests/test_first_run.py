"""A KyCLI user's first minutes (issue 14): the first command works on a fresh data
directory, global options go before the command too, ``kyfs`` alone shows a short tour,
and KyCLI's short commands (kys, kyg, kyl, kyd, kyv, kye, kyi) keep working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    command = [str(BIN / args[0]), *args[1:]] if args and args[0] in SHORT else [
        sys.executable, "-m", "kyfs", *args
    ]  # fmt: skip
    return subprocess.run(command, input=stdin, capture_output=True, check=False, timeout=60)


SHORT = {"kys", "kyg", "kyl", "kyd", "kyv", "kye", "kyi"}


def on_terminal(
    *args: str, dialogue: tuple[tuple[str, str | None], ...] = (), env: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """Run ``kyfs ARGS`` on a pseudo-terminal (pexpect), waiting for each (pattern, reply)
    of ``dialogue`` in turn and typing the reply (None: only wait); returns (exit status,
    what it printed after the last pattern)."""
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "kyfs", *args], env=env, timeout=30)
    for pattern, reply in dialogue:
        child.expect(pattern)
        if reply is not None:
            child.sendline(reply)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before or b""


def test_the_first_command_on_a_fresh_home_works(kyfs_home: Path) -> None:
    done = run("set", "foo", "bar")
    assert done.returncode == 0, done.stderr
    assert run("get", "foo").stdout == b"bar"
    names = [w["name"] for w in json.loads(run("workspaces", "--json").stdout)]
    assert names == ["default", "shared"]


def test_a_dropped_default_is_not_brought_back(kyfs_home: Path) -> None:
    assert run("set", "foo", "bar").returncode == 0
    assert run("drop", "default", "--yes").returncode == 0
    done = run("keys")
    assert done.returncode == 1 and b"kyfs trash restore default" in done.stderr
    names = [w["name"] for w in json.loads(run("workspaces", "--json").stdout)]
    assert "default" not in names
    assert run("create", "default").returncode == 0  # as any name, on purpose


def test_global_options_go_before_the_command_too(kyfs_home: Path) -> None:
    assert run("create", "wa").returncode == 0
    assert run("-w", "wa", "set", "k", "v").returncode == 0
    assert run("-w", "wa", "keys").stdout == b"k\n"
    assert run("keys", "-w", "wa").stdout == b"k\n"
    assert run("-w", "wa", "keys", "-w", "default").stdout == b""  # the nearer one wins


def test_kyfs_alone_shows_a_short_tour(kyfs_home: Path) -> None:
    done = run()
    assert done.returncode == 0
    assert b"kyfs set user.name Alice" in done.stdout and b"kys KEY VALUE" in done.stdout


def test_kycli_short_commands(kyfs_home: Path) -> None:
    assert run("kys", "user.name", "Alice").returncode == 0
    assert run("kys", "api.token", stdin=b"s3cr3t").returncode == 0
    assert run("kyg", "user.name").stdout == b"Alice"
    assert run("kyl").stdout == b"api.token\nuser.name\n"
    assert run("kyl", "user.*").stdout == b"user.name\n"
    assert run("kyd", "user.name").returncode == 0
    assert run("kyg", "user.name").returncode == 1  # not found, as kyfs get
    assert run("kys", "-w", "shared", "k", "v").returncode == 0
    assert run("kyg", "-w", "shared", "k").stdout == b"v"


def test_kycli_regex_history_and_db_path(kyfs_home: Path) -> None:
    """Issue 30 item 3: what KyCLI's documentation promises its users."""
    for key, value in (("user_a", "1"), ("user_b", "2"), ("other", "3")):
        assert run("kys", key, value).returncode == 0
    assert run("kyl", "user_.*").stdout == b"user_a\nuser_b\n"  # a regular expression
    assert run("kyl", "^o").stdout == b"other\n"
    assert run("kyl", "[").returncode == 2  # not one: a clear error
    assert run("kyg", "other").stdout == b"3"  # a key of that name: its value
    assert run("kyg", "user_.*").stdout == b"user_a\t1\nuser_b\t2\n"  # else the matches
    assert run("kyg", "nomatch.*").returncode == 1
    assert run("kys", "piped", stdin=b"from stdin").returncode == 0  # not a terminal: read
    assert run("kyg", "piped").stdout == b"from stdin"
    every = run("kyv").stdout.decode().splitlines()  # every key's history, oldest first
    assert [line.split()[0] for line in every] == ["user_a", "user_b", "other", "piped"]
    assert "'3'" in run("kyv", "other").stdout.decode()
    assert run("create", "work").returncode == 0  # what kyfs migrate kycli fills from work.db
    assert run("-w", "work", "set", "k", "in work").returncode == 0
    kycli = {**os.environ, "KYCLI_DB_PATH": str(kyfs_home / "elsewhere" / "work.db")}
    got = subprocess.run(
        [sys.executable, "-m", "kyfs", "get", "k"], env=kycli, capture_output=True, timeout=60
    )
    assert got.stdout == b"in work"  # KYCLI_DB_PATH before the active workspace
    assert run("get", "other").stdout == b"3"  # without it, the active one


def test_kye_and_kyi_move_keys_through_csv(kyfs_home: Path, tmp_path: Path) -> None:
    """KyCLI's kye (CSV by default) and kyi (the format from the file's name)."""
    values = {"plain": b"hello, world", "lines": b"one\ntwo", "binary": b"\x00\xff"}
    for key, value in values.items():
        assert run("kys", key, stdin=value).returncode == 0
    exported = tmp_path / "keys.csv"
    assert run("kye", str(exported)).returncode == 0
    assert exported.read_bytes().startswith(b"key,value,encoding\r\n")
    assert run("create", "copy").returncode == 0
    assert run("kyi", "-w", "copy", str(exported)).returncode == 0
    for key, value in values.items():
        assert run("-w", "copy", "get", key).stdout == value, key
    kycli = tmp_path / "kycli.csv"  # KyCLI's own two columns
    kycli.write_text('key,value\nk1,v1\nk2,"quoted, value"\n')
    assert run("kyi", "-w", "copy", str(kycli)).returncode == 0
    assert run("-w", "copy", "get", "k2").stdout == b"quoted, value"
    as_json = tmp_path / "keys.json"
    assert run("kye", str(as_json), "json").returncode == 0
    assert {k["key"] for k in json.loads(as_json.read_text())["keys"]} == set(values)
    bad = tmp_path / "bad.csv"
    bad.write_text("nokey\nx\n")
    refused = run("kyi", str(bad))
    assert refused.returncode == 2 and b"needs the columns key and value" in refused.stderr


def test_kys_without_a_value_on_a_terminal_is_refused(kyfs_home: Path) -> None:
    import pexpect

    child = pexpect.spawn(
        sys.executable, ["-c", "from kyfs.cli.short import kys; kys(['k'])"], timeout=30
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2 and b"give a VALUE" in (child.before or b"")
    assert run("kyg", "k").returncode == 1  # nothing was stored


def test_history_shows_what_each_version_held(kyfs_home: Path) -> None:
    assert run("set", "user.name", "Alice").returncode == 0
    assert run("set", "user.name", "Alice Smith\nsecond line").returncode == 0
    assert run("set", "user.name", stdin=b"\x00\x01\x02").returncode == 0
    lines = run("history", "user.name").stdout.decode().splitlines()
    assert lines[0].endswith("'Alice'") and lines[1].endswith("'Alice Smith'")
    assert lines[2].endswith("<binary, 3 bytes>")
    versions = json.loads(run("history", "user.name", "--json").stdout)
    assert versions[1]["value"] == "Alice Smith\nsecond line"
    assert versions[2]["value_base64"] == "AAEC"


def test_json_on_set_delete_ttl_retention(kyfs_home: Path) -> None:
    done = json.loads(run("set", "k", "value", "--ttl", "1h", "--json").stdout)
    assert done["action"] == "set" and done["size"] == 5 and done["expires"]
    assert json.loads(run("ttl", "k", "--json").stdout)["seconds_left"] > 3500
    assert json.loads(run("retention", "--json").stdout) == {
        "workspace": "default", "versions": 10, "all_hours": 1.0, "hourly_hours": 24.0,
        "days": 30.0,
    }  # fmt: skip
    assert json.loads(run("delete", "k", "--json").stdout) == {
        "action": "delete", "workspace": "default", "key": "k",
    }  # fmt: skip


def test_the_active_workspace_in_colour_unless_no_color(
    kyfs_home: Path, monkeypatch: object
) -> None:
    from click.testing import CliRunner

    from kyfs.cli import cli

    runner = CliRunner()
    assert runner.invoke(cli, ["create", "default"]).exit_code == 0
    coloured = runner.invoke(cli, ["workspaces"], color=True).output
    assert "\x1b[" in coloured and "default" in coloured
    plain = runner.invoke(cli, ["workspaces"], color=True, env={"NO_COLOR": "1"}).output
    assert "\x1b[" not in plain


def test_kycli_future_expiry_times_are_kept(tmp_path: Path, kyfs_home: Path) -> None:
    import sqlite3
    import time

    source = tmp_path / "kydata.db"
    conn = sqlite3.connect(source)
    conn.execute("CREATE TABLE kvstore (key TEXT PRIMARY KEY, value TEXT, expires_at DATETIME)")
    soon = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 3600))
    conn.executemany(
        "INSERT INTO kvstore VALUES (?, ?, ?)",
        [("later", "v", soon), ("never", "v", None), ("past", "v", "2001-01-01 00:00:00"),
         ("absurd", "v", 1e300)],
    )  # fmt: skip
    conn.commit()
    conn.close()
    done = run("migrate", "kycli", str(source), "--yes", "--quiet")
    assert done.returncode == 0, done.stderr
    later = json.loads(run("ttl", "later", "--json").stdout)
    assert 3500 < later["seconds_left"] <= 3600
    assert json.loads(run("ttl", "never", "--json").stdout)["expires"] is None
    assert json.loads(run("ttl", "absurd", "--json").stdout)["expires"] is None  # unreadable
    assert run("get", "past").returncode == 1  # expired: in the archive


def test_schema_rules_in_the_short_form_and_existing_keys(tmp_path: Path, kyfs_home: Path) -> None:
    assert run("set", "users/ann", '{"name": "Ann", "age": 30}').returncode == 0
    assert run("set", "users/bob", '{"age": "old"}').returncode == 0
    rule = tmp_path / "rule.json"
    rule.write_text('{"name": "str", "age": "int?"}')
    checked = run("schema", "set", "--keys", "users/*", "--check", str(rule))
    assert checked.returncode == 2 and b"users/bob" in checked.stderr
    assert run("set", "users/eve", "{}").returncode == 0  # --check set nothing
    done = run("schema", "set", "--keys", "users/*", str(rule))
    assert done.returncode == 0 and b"users/bob" in done.stderr
    assert run("set", "users/eve", '{"age": 3}').returncode == 2  # name is required
    assert run("set", "users/eve", '{"name": "Eve"}').returncode == 0  # age is optional
    assert run("set", "users/eve", '{"name": "Eve", "age": "x"}').returncode == 2
    neither = tmp_path / "neither.json"
    neither.write_text('{"name": "string"}')  # no JSON Schema keyword, no short type
    assert run("schema", "set", "--keys", "x/*", str(neither)).returncode == 2


def test_scan_lists_keys_with_values(kyfs_home: Path) -> None:
    assert run("set", "config/a", "one\ntwo").returncode == 0
    assert run("set", "config/bin", stdin=b"\x00\x01").returncode == 0
    assert run("set", "other", "y").returncode == 0
    assert run("scan", "config/").stdout == b"config/a\tone\nconfig/bin\t<binary, 2 bytes>\n"
    rows = json.loads(run("scan", "config/", "--json").stdout)
    assert rows == [
        {"key": "config/a", "size": 7, "value": "one\ntwo"},
        {"key": "config/bin", "size": 2, "value_base64": "AAE="},
    ]


def test_the_address_form_names_workspace_and_key(kyfs_home: Path) -> None:
    assert run("create", "project_alpha").returncode == 0
    assert run("set", "user.name@project_alpha", "Alice").returncode == 0
    assert run("-w", "project_alpha", "get", "user.name").stdout == b"Alice"
    assert run("get", "user.name@project_alpha").stdout == b"Alice"
    assert json.loads(run("get", "user.name@project_alpha", "--json").stdout)["key"] == "user.name"
    assert run("keys").stdout == b""  # nothing went to the active workspace
    # A key with an '@' of its own: the workspace it would name is missing, said clearly.
    done = run("set", "alice@example.com", "x")
    assert done.returncode == 1 and b"-w NAME" in done.stderr
    assert run("-w", "default", "set", "alice@example.com", "x").returncode == 0
    assert run("-w", "default", "get", "alice@example.com").stdout == b"x"
    assert run("delete", "user.name@project_alpha").returncode == 0
    assert run("-w", "project_alpha", "keys").stdout == b""


def test_db_names_one_workspace_file(kyfs_home: Path, tmp_path: Path) -> None:
    assert run("set", "k", "v").returncode == 0
    file = tmp_path / "copy.db"
    file.write_bytes((kyfs_home / "workspaces" / "default.db").read_bytes())
    assert run("--db", str(file), "get", "k").stdout == b"v"
    assert run("--db", str(file), "set", "k", "w").returncode == 0
    env_run = subprocess.run(
        [sys.executable, "-m", "kyfs", "get", "k"], capture_output=True, check=False,
        env={**__import__("os").environ, "KYFS_DB_PATH": str(file)},
    )  # fmt: skip
    assert env_run.stdout == b"w"
    assert run("get", "k").stdout == b"v"  # the data directory's own is untouched
    other = tmp_path / "notes.txt"
    other.write_text("not a workspace")
    done = run("--db", str(other), "keys")
    assert done.returncode == 4 and b"Traceback" not in done.stderr
    assert other.read_text() == "not a workspace"
    done = run("--db", str(tmp_path / "missing.db"), "keys")
    assert done.returncode == 1 and b"missing.db" in done.stderr
    assert run("--db", str(file), "-w", "default", "keys").returncode == 2


def test_use_of_a_missing_workspace(kyfs_home: Path) -> None:
    done = run("use", "beta")  # not a terminal: no question, the hint
    assert done.returncode == 1 and b"kyfs use beta --create" in done.stderr
    assert run("use", "beta", "--create").returncode == 0
    assert run("drop", "beta", "--yes").returncode == 0
    done = run("keys")  # the active workspace was dropped
    assert done.returncode == 1 and b"kyfs trash restore beta" in done.stderr
    done = run("use", "beta")
    assert done.returncode == 1 and b"kyfs trash restore beta" in done.stderr


def test_use_asks_on_a_terminal(kyfs_home: Path) -> None:
    asked = ("Workspace 'gamma' does not exist. Create it\\?", "y")
    done = ("active workspace: gamma", None)
    assert on_terminal("use", "gamma", dialogue=(asked, done))[0] == 0
    assert on_terminal("use", "delta", dialogue=(("Create it\\?", "n"),))[0] == 1
    names = [w["name"] for w in json.loads(run("workspaces", "--json").stdout)]
    assert "gamma" in names and "delta" not in names


@pytest.fixture
def kycli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a KyCLI user: a HOME whose ~/kydata.db holds user.name=Alice."""
    import os
    import sqlite3

    home = tmp_path / "user-home"
    home.mkdir()
    conn = sqlite3.connect(home / "kydata.db")
    conn.execute("CREATE TABLE kvstore (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO kvstore VALUES ('user.name', 'Alice')")
    conn.commit()
    conn.close()
    return {**os.environ, "HOME": str(home)}


def test_first_run_offers_the_kycli_migration(kycli_env: dict[str, str], kyfs_home: Path) -> None:
    dialogue = (
        ("Import your KyCLI data into kyfs now\\?", "y"),
        ("imported 1 keys into 1 workspaces", None),
        ("Alice", None),
    )
    assert on_terminal("get", "user.name", dialogue=dialogue, env=kycli_env)[0] == 0
    # asked once: the next run on a terminal goes straight to the command
    _, printed = on_terminal("keys", env=kycli_env)
    assert b"Import" not in printed and b"user.name" in printed


def test_first_run_without_a_terminal_only_hints(
    kycli_env: dict[str, str], kyfs_home: Path
) -> None:
    env = kycli_env
    done = subprocess.run([sys.executable, "-m", "kyfs", "keys"], capture_output=True, env=env,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert done.returncode == 0 and b"kyfs migrate kycli" in done.stderr
    again = subprocess.run([sys.executable, "-m", "kyfs", "keys"], capture_output=True, env=env,
                           stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert b"kycli" not in again.stderr  # once


def test_the_migration_after_a_first_command_is_not_refused(
    kycli_env: dict[str, str], kyfs_home: Path
) -> None:
    """A KyCLI user's first command makes an empty default; the migration they then run
    writes into it instead of refusing (found walking through the first five minutes)."""
    env = kycli_env

    def kyfs(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "kyfs", *args], capture_output=True,
                              env=env, stdin=subprocess.DEVNULL, check=False)  # fmt: skip

    assert kyfs("keys").returncode == 0  # default now exists, empty
    done = kyfs("migrate", "kycli", "--yes", "--quiet")
    assert done.returncode == 0, done.stderr
    assert kyfs("get", "user.name").stdout == b"Alice"
    assert kyfs("set", "mine", "x").returncode == 0
    again = kyfs("migrate", "kycli", "--yes", "--quiet")  # now default holds keys: refused
    assert again.returncode == 3 and b"--merge" in again.stderr
