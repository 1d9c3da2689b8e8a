"""Many agents, many projects: users, cursors, project workspaces, TTL, history, schemas, exec."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kyfs.cli import cli
from tests.conftest import Mount


def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env)


def kyfs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kyfs", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


# --- users and cursors ---------------------------------------------------------------------
def test_two_users_use_workspaces_concurrently() -> None:
    for user, name in (("alice", "a1"), ("alice", "a2"), ("bob", "b1"), ("bob", "b2")):
        assert run("--user", user, "create", name).exit_code == 0  # each identity's own
    loop = (
        "import subprocess, sys\n"
        "user, names = sys.argv[1], sys.argv[2:]\n"
        "for i in range(12):\n"
        "    name = names[i % 2]\n"
        "    subprocess.run([sys.executable, '-m', 'kyfs', '--user', user, 'use', name],"
        " check=True, capture_output=True)\n"
        "    got = subprocess.run([sys.executable, '-m', 'kyfs', '--user', user, 'status',"
        " '--json'], capture_output=True).stdout\n"
        "    import json; assert json.loads(got)['active_workspace'] == name, (user, got)\n"
    )
    agents = [
        subprocess.Popen([sys.executable, "-c", loop, "alice", "a1", "a2"], stderr=subprocess.PIPE),
        subprocess.Popen([sys.executable, "-c", loop, "bob", "b1", "b2"], stderr=subprocess.PIPE),
    ]
    for agent in agents:
        _, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err.decode()
    assert (
        json.loads(kyfs("--user", "alice", "status", "--json").stdout)["active_workspace"] == "a2"
    )
    assert json.loads(kyfs("--user", "bob", "status", "--json").stdout)["user"] == "bob"
    assert run("--user", "../x", "keys").exit_code == 2


def test_cursors_point_at_other_data_directories(tmp_path: Path) -> None:
    other = tmp_path / "other-data"
    assert run("cursor", "set", "work", str(other), "-w", "proj").exit_code == 0
    assert run("--cursor", "work", "create", "proj").exit_code == 0
    assert run("--cursor", "work", "set", "k", "in other").exit_code == 0
    assert (other / "workspaces" / "proj.db").exists()
    assert run("--cursor", "work", "get", "k").output == "in other"
    assert run("get", "k").exit_code == 1  # the default data directory does not have it
    listed = json.loads(run("cursor", "list", "--json").output)
    assert listed == [{"name": "work", "active": False, "path": str(other), "workspace": "proj"}]
    assert run("cursor", "active", "work").output.strip() == "work"
    assert run("get", "k").output == "in other"
    assert run("cursor", "active", "--none").output.strip() == "(none)"
    assert run("cursor", "delete", "work").exit_code == 0
    assert run("cursor", "delete", "work").exit_code == 1
    assert run("--cursor", "nope", "keys").exit_code == 1


@pytest.mark.mount
def test_second_mount_serves_a_cursor(mounted: Mount, tmp_path: Path) -> None:
    other = tmp_path / "other-data"
    assert kyfs("cursor", "set", "work", str(other), env=mounted.env()).returncode == 0
    second = tmp_path / "second"
    done = kyfs("--cursor", "work", "mount", str(second), env=mounted.env())
    try:
        assert done.returncode == 0, done.stderr
        (second / "default" / "k").write_text("second mount")
        assert not (mounted.path / "default" / "k").exists()
        assert (other / "workspaces" / "default.db").exists()
    finally:
        assert kyfs("unmount", str(second), env=mounted.env()).returncode == 0


# --- projects and shared ---------------------------------------------------------------------
def test_project_workspaces_and_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "my-project"
    project.mkdir()
    expected = "project_" + hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:8]
    monkeypatch.chdir(project)
    assert run("project").output.strip() == expected
    assert run("use", "--project").output.strip() == f"active workspace: {expected}"
    assert run("use", "--project", str(project)).exit_code == 0
    listing = json.loads(run("workspaces", "--json").output)
    mine = [w for w in listing if w["name"] == expected]
    assert mine and mine[0]["project"] == str(project.resolve()) and mine[0]["active"]
    assert str(project.resolve()) in run("workspaces").output
    assert "shared" in [w["name"] for w in listing]
    assert run("drop", "shared", "--yes").exit_code == 6
    assert run("rename", "shared", "other").exit_code == 6


# --- TTL ---------------------------------------------------------------------------------------
def test_ttl_expiry_archives_the_key() -> None:
    run("use", "w", "--create")
    assert run("set", "short", "lived", "--ttl", "1s").exit_code == 0
    run("set", "forever", "stays")
    assert "expires" in run("ttl", "short").output
    assert run("ttl", "forever").output == "forever: no TTL\n"
    assert run("search", "lived", "--keys-only").output == "w/short\n"
    time.sleep(1.2)
    assert run("get", "short").exit_code == 1
    assert run("keys").output == "forever\n"
    assert run("search", "lived", "--keys-only").output == ""
    archived = json.loads(run("archive", "--json").output)
    assert [a["key"] for a in archived] == ["short"]
    assert run("restore", "short").exit_code == 0
    assert run("ttl", "forever", "1h").exit_code == 0
    assert (
        "in 3600 s" in run("ttl", "forever").output or "in 3599 s" in run("ttl", "forever").output
    )
    assert run("ttl", "forever", "--clear").output == "forever: no TTL\n"
    assert run("set", "k", "v", "--ttl", "soon").exit_code == 2
    assert run("set", "k", "v", "--ttl", "0").exit_code == 2


@pytest.mark.mount
def test_cache_workspace_and_ttl_xattrs_through_the_mount(mounted: Mount) -> None:
    assert kyfs("create", "cache", "--ttl", "1s", env=mounted.env()).returncode == 0
    cached = mounted.path / "cache" / "token"
    deadline = time.monotonic() + 5
    while not (mounted.path / "cache").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    cached.write_text("short-lived")
    assert int(os.getxattr(cached, "user.kyfs.ttl")) <= 1
    listed = json.loads(kyfs("workspaces", "--json", env=mounted.env()).stdout)
    assert [w["ttl_s"] for w in listed if w["name"] == "cache"] == [1.0]
    time.sleep(1.3)
    deadline = time.monotonic() + 5
    while cached.exists() and time.monotonic() < deadline:  # the kernel may cache 1 s
        time.sleep(0.1)
    assert not cached.exists()
    archived = json.loads(kyfs("archive", "-w", "cache", "--json", env=mounted.env()).stdout)
    assert [a["key"] for a in archived] == ["token"]
    plain = mounted.path / "default" / "note"
    plain.write_text("kept")
    with pytest.raises(OSError) as info:
        os.getxattr(plain, "user.kyfs.ttl")
    assert info.value.errno == errno.ENODATA
    assert os.getxattr(plain, "user.kyfs.created_at").endswith(b"Z")
    os.setxattr(plain, "user.kyfs.ttl", b"1h")
    assert 3590 <= int(os.getxattr(plain, "user.kyfs.ttl")) <= 3600
    assert os.getxattr(plain, "user.kyfs.expires_at").endswith(b"Z")
    assert os.listxattr(plain) == []  # kyfs's own are never listed: copies do not carry them
    os.removexattr(plain, "user.kyfs.ttl")
    with pytest.raises(OSError) as info:
        os.getxattr(plain, "user.kyfs.ttl")
    assert info.value.errno == errno.ENODATA
    with pytest.raises(OSError) as info:  # another user.kyfs.* name is not stored
        os.setxattr(plain, "user.kyfs.other", b"x")
    assert info.value.errno == errno.ENOTSUP
    os.setxattr(plain, "user.other", b"x")  # any other user.* is
    assert os.listxattr(plain) == ["user.other"]


@pytest.mark.mount
def test_no_xattr_mount_leaves_attributes_out(mount_factory: Any) -> None:
    mount = mount_factory(flags=("--no-xattr",))
    path = mount.path / "default" / "k"
    path.write_text("v")
    with pytest.raises(OSError) as info:
        os.getxattr(path, "user.kyfs.created_at")
    assert info.value.errno == errno.EOPNOTSUPP
    text = (mount.path / ".kyfs" / "metrics").read_text()
    assert "getxattr" not in text  # the kernel never asks: no round trips for it


# --- history -------------------------------------------------------------------------------------
def test_history_records_every_change_and_restores() -> None:
    run("use", "w", "--create")
    run("set", "k", "one")
    run("set", "k", "two")
    run("delete", "k")
    run("restore", "k")
    run("set", "k", "three")
    history = json.loads(run("history", "k", "--json").output)
    assert [(h["action"], h["detail"]) for h in history] == [
        ("set", None),
        ("set", None),
        ("delete", None),
        ("set", "restored from the archive"),
        ("set", None),
    ]
    first = history[0]["version"]
    assert run("restore", "k", "--version", str(first)).exit_code == 0
    assert run("get", "k").output == "one"
    assert json.loads(run("history", "k", "--json").output)[-1]["detail"] == (
        f"restored version {first}"
    )
    assert run("restore", "k", "--at", history[1]["time"]).exit_code == 0
    assert run("get", "k").output == "two"
    assert run("restore", "k", "--at", "1999-01-01T00:00:00Z").exit_code == 1
    assert run("history", "absent", "--json").exit_code == 1  # no such key (issue 30)


def test_history_retention_keeps_what_it_promises() -> None:
    run("use", "w", "--create")
    shown = run("retention").output
    assert "every version of 1 hours" in shown and "newest 10 versions" in shown
    assert "one a day up to 30 days" in shown
    thin = ("--versions", "3", "--all-hours", "0", "--hourly-hours", "0", "--days", "0")
    assert run("retention", *thin).exit_code == 0
    for i in range(40):  # enough writes for pruning (every 16 history rows) to run
        run("set", "k", f"v{i}")
    versions = json.loads(run("history", "k", "--json").output)
    assert 3 <= len(versions) < 40  # pruned, but never below the promised 3
    assert run("restore", "k", "--version", str(versions[-1]["version"])).exit_code == 0
    assert run("get", "k").output == "v39"


@pytest.mark.mount
def test_versions_directory_through_the_mount(mounted: Mount) -> None:
    ws = mounted.path / "default"
    (ws / "conf").mkdir()
    for text in ("v1", "v2", "v3"):  # three processes: three versions
        subprocess.run(["sh", "-c", f"printf {text} > conf/app.toml"], cwd=ws, check=True)
    os.rename(ws / "conf" / "app.toml", ws / "conf" / "app2.toml")
    versions = ws / ".versions" / "conf" / "app.toml"
    names = sorted(os.listdir(versions), key=lambda n: int(n.split("-")[0]))
    assert [(versions / n).read_text() for n in names] == ["v1", "v2", "v3"]
    assert ".versions" not in os.listdir(ws)
    assert os.listdir(ws / ".versions") == ["conf"]
    grep = subprocess.run(["grep", "-rl", "v1", str(ws)], capture_output=True)
    assert grep.stdout == b""  # the old values are only under .versions, which grep skips
    history = json.loads(kyfs("history", "-w", "default", "conf/app2.toml", "--json",
                              env=mounted.env()).stdout)  # fmt: skip
    assert history[-1]["action"] == "rename" and history[-1]["detail"] == "from conf/app.toml"
    with pytest.raises(OSError) as info:
        (versions / names[0]).write_text("no")
    assert info.value.errno in (errno.EROFS, errno.EACCES)


@pytest.mark.mount
def test_sed_i_and_git_style_saves_keep_the_history_of_the_file(mounted: Mount) -> None:
    """sed -i writes a temporary file and renames it over the key: the rename is a
    version of the key, so kyfs history lists it and kyfs restore brings back either
    side."""
    ws = mounted.path / "default"
    (ws / "app.conf").write_text("mode = old\n")
    subprocess.run(["sed", "-i", "s/old/new/", "app.conf"], cwd=ws, check=True)
    assert (ws / "app.conf").read_text() == "mode = new\n"
    history = json.loads(kyfs("history", "-w", "default", "app.conf", "--json",
                              env=mounted.env()).stdout)  # fmt: skip
    versions = [h for h in history if h["size"] is not None]
    assert [v["value"] for v in versions] == ["mode = old\n", "mode = new\n"]
    assert versions[-1]["action"] == "rename" and versions[-1]["detail"].startswith("from ")
    for version, text in ((versions[0], "mode = old\n"), (versions[-1], "mode = new\n")):
        done = kyfs("restore", "-w", "default", "app.conf", "--version",
                    str(version["version"]), env=mounted.env())  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert kyfs("get", "-w", "default", "app.conf", env=mounted.env()).stdout == text


# --- schemas -------------------------------------------------------------------------------------
SCHEMA = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
}


def test_schema_rules_refuse_bad_writes(tmp_path: Path) -> None:
    run("use", "w", "--create")
    schema_file = tmp_path / "user.json"
    schema_file.write_text(json.dumps(SCHEMA))
    assert run("schema", "set", "--keys", "users/*", str(schema_file)).exit_code == 0
    assert run("set", "users/alice", '{"name": "Alice", "age": 30}').exit_code == 0
    bad = run("set", "users/alice", '{"name": "Alice", "age": -1}')
    assert bad.exit_code == 2 and "/age" in bad.output and "Traceback" not in bad.output
    assert run("get", "users/alice").output == '{"name": "Alice", "age": 30}'
    assert run("set", "users/bob", "not json").exit_code == 2
    assert run("set", "other/x", "anything goes").exit_code == 0
    assert json.loads(run("schema", "show", "--json").output)[0]["glob"] == "users/*"
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": 12}')
    assert run("schema", "set", "--keys", "x", str(broken)).exit_code == 2
    assert run("schema", "clear").output == "removed 1 schema rule(s)\n"
    assert run("set", "users/bob", "not json").exit_code == 0


@pytest.mark.mount
def test_schema_refuses_a_bad_write_through_the_mount(mounted: Mount, tmp_path: Path) -> None:
    schema_file = tmp_path / "user.json"
    schema_file.write_text(json.dumps(SCHEMA))
    done = kyfs("schema", "set", "-w", "default", "--keys", "users/*", str(schema_file),
                env=mounted.env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    users = mounted.path / "default" / "users"
    users.mkdir()
    (users / "alice").write_text('{"name": "Alice", "age": 30}')
    handle = (users / "alice").open("w")
    handle.write('{"name": "Alice"}')
    with pytest.raises(OSError) as info:
        handle.close()
    assert info.value.errno == errno.EINVAL
    assert (users / "alice").read_text() == '{"name": "Alice", "age": 30}'
    # An empty value is judged like any other: close fails EINVAL and no key is left ...
    with pytest.raises(OSError) as info:
        os.close(os.open(users / "frank", os.O_WRONLY | os.O_CREAT, 0o644))
    assert info.value.errno == errno.EINVAL
    assert not (users / "frank").exists()
    touched = subprocess.run(["touch", str(users / "frank")], capture_output=True, check=False)
    assert touched.returncode != 0 and b"Invalid argument" in touched.stderr
    assert kyfs("keys", "-w", "default", "users/", env=mounted.env()).stdout == "users/alice\n"
    time.sleep(0.5)  # a round of the daemon's watcher
    assert kyfs("keys", "-w", "default", "users/", env=mounted.env()).stdout == "users/alice\n"
    # ... while the shell's create-then-write (echo > key) of a valid value still works,
    # and touch of a key that exists keeps it.
    subprocess.run(["sh", "-c", f"echo '{{\"name\": \"Frank\", \"age\": 4}}' > {users}/frank"],
                   check=True)  # fmt: skip
    assert json.loads((users / "frank").read_text())["name"] == "Frank"
    subprocess.run(["touch", str(users / "frank")], check=True)
    assert (mounted.path / "default" / "free").touch() is None  # no rule: an empty key stands


# --- exec ----------------------------------------------------------------------------------------
def test_exec_exports_keys_as_environment() -> None:
    run("use", "w", "--create")
    run("set", "API_URL", "https://example.invalid\nsecond line")
    run("set", "not-a-name", "x")
    run("set", "dir/KEY", "x")
    code = "import os, sys; print(os.environ['API_URL']); sys.exit(3)"
    result = kyfs("exec", "--", sys.executable, "-c", code)
    assert result.returncode == 3
    assert result.stdout == "https://example.invalid\n"
    assert "not-a-name" in result.stderr and "dir/KEY" in result.stderr
    assert kyfs("exec", "--", "no-such-command-here").returncode == 127  # as a shell says
    # The workspace as a word before --, as -w; the active one (w) is not used then.
    run("create", "other")
    run("set", "-w", "other", "ONLY_IN_OTHER", "yes")
    code = "import os; print(os.environ.get('ONLY_IN_OTHER'), os.environ.get('API_URL'))"
    assert kyfs("exec", "other", "--", sys.executable, "-c", code).stdout == "yes None\n"
    assert kyfs("exec", "-w", "other", "--", sys.executable, "-c", code).stdout == "yes None\n"
    assert kyfs("exec", "missing_ws", "--", "true").returncode == 1


def test_exec_leaves_out_names_that_choose_what_runs() -> None:
    """A key may not choose the code another user's kyfs exec runs: LD_PRELOAD, PATH,
    PYTHON*, BASH_ENV, ENV, IFS and the like are left out and named on stderr, unless
    named with --allow-env."""
    run("use", "w", "--create")
    dangerous = ["LD_PRELOAD", "PATH", "PYTHONSTARTUP", "BASH_ENV", "ENV", "IFS",
                 "BASH_FUNC_ls%%", "NODE_OPTIONS", "GIT_SSH_COMMAND"]  # fmt: skip
    for name in dangerous:
        run("set", name, "/tmp/evil")
    run("set", "SAFE_SETTING", "kept")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    done = kyfs("exec", "--", sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["SAFE_SETTING"] == "kept"
    assert [name for name in dangerous if seen.get(name) == "/tmp/evil"] == []
    assert seen["PATH"] == os.environ["PATH"]  # the caller's own stays
    for name in ("LD_PRELOAD", "PATH", "PYTHONSTARTUP", "BASH_ENV", "NODE_OPTIONS"):
        assert name in done.stderr
    assert "--allow-env" in done.stderr
    done = kyfs("exec", "--allow-env", "PYTHONSTARTUP", "--allow-env", "IFS", "--",
                sys.executable, "-c", code)  # fmt: skip
    seen = json.loads(done.stdout)
    assert seen["PYTHONSTARTUP"] == "/tmp/evil" and seen["IFS"] == "/tmp/evil"
    assert seen.get("LD_PRELOAD") != "/tmp/evil"


def on_a_terminal(*args: str) -> bytes:
    """What ``kyfs ARGS`` writes to a terminal (a pseudo-terminal as standard output)."""
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "kyfs", *args], stdout=follower,
                              stderr=subprocess.PIPE, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        os.close(follower)
        out = b""
        while True:
            try:
                piece = os.read(leader, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not piece:
                break
            out += piece
        return out
    finally:
        os.close(leader)
        with contextlib.suppress(OSError):
            os.close(follower)


def test_keys_and_values_cannot_drive_the_terminal() -> None:
    """Printed to a terminal, control characters (ESC, BEL, C1) and bidi controls in keys
    and values are escaped; to a pipe the bytes are the stored ones."""
    run("use", "w", "--create")
    hostile = "\x1b]52;c;ZXZpbA==\x07\x1b[2J\u202eexe.txt"
    run("set", "k\x1b[31mred", "x")
    run("set", "note", hostile + "\nsecond\tline\n")
    shown = on_a_terminal("get", "note")
    assert b"\x1b" not in shown and b"\x07" not in shown and "\u202e".encode() not in shown
    assert b"\\x1b]52;c;ZXZpbA==\\x07" in shown and b"\\u202e" in shown
    assert b"second\tline" in shown  # tabs and newlines stay
    listed = on_a_terminal("keys")
    assert b"\x1b" not in listed and b"k\\x1b[31mred" in listed
    assert kyfs("get", "note").stdout == hostile + "\nsecond\tline\n"  # a pipe: as stored
    assert "k\x1b[31mred" in kyfs("keys").stdout.splitlines()


def test_exec_workspace_word_before_allow_env() -> None:
    """``kyfs exec NAME --allow-env X -- CMD``: NAME is the workspace, X the option's
    value, and CMD runs (not NAME)."""
    run("create", "proj")
    run("set", "-w", "proj", "PATH", "/nowhere")
    run("set", "-w", "proj", "IN_PROJ", "yes")
    code = "import os; print(os.environ.get('IN_PROJ'), os.environ['PATH'])"
    done = kyfs("exec", "proj", "--allow-env", "PATH", "--", sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "yes /nowhere\n"
    done = kyfs("exec", "--allow-env", "PATH", "proj", "--", sys.executable, "-c", code)
    assert done.stdout == "yes /nowhere\n"
